"""How sure the model is: temperature scaling and split-conformal intervals and sets.

Needs numpy, pandas and scipy only to predict (scikit-learn to fit and measure), on the
heads' raw outputs: the estimator and the torch-free
:class:`sk_multitask.onnx.OnnxPredictor` share it, so that both give the same
probabilities, intervals and sets. Per task, on that task's labelled cells only (missing
cells, and the NaN rows of unreadable images, never enter):

- classification: one temperature ``T`` fitted on the negative log-likelihood
  (Guo et al. 2017; the logits are divided by ``T``), then split-conformal prediction
  sets with the LAC score ``1 - p(true class)`` (least ambiguous set-valued classifier,
  Sadinle et al. 2019). LAC rather than APS: it gives the smallest sets on average for
  the asked coverage, needs no randomisation to reach it, and its sets are simply
  "every class whose calibrated probability is at least ``1 - q``" (a set may be empty
  on a row the model finds unlike any class);
- regression: split-conformal absolute residuals ``|y - prediction|`` in original units,
  giving intervals ``prediction ± q`` of the same width on every row;
- multi-label: one temperature per label (binary NLL of that label's sigmoid). A
  temperature keeps the 0.5 threshold's decisions (``predict`` is unchanged) and makes
  the per-label probabilities honest; multi-label tasks get no sets;
- ordinal: no temperature. Dividing CORN's conditional logits by a temperature moves
  the median level (a product of probabilities crosses 0.5 elsewhere), so it would
  change ``predict``, which calibration never does (a classification's temperature
  keeps its argmax, a multi-label task's its 0.5 decisions). Split-conformal *ranges*
  of levels instead, with the score ``max(P(y < true), P(y > true))``, how far into a
  tail of the predicted distribution the true level lies
  (:func:`~sk_multitask.targets._ordinal.tail_scores`): the levels scoring at most
  ``q`` are contiguous, and the range is the smallest one holding them and the
  predicted level (the median), so that it is never empty.

``q`` is the ``k``-th smallest of the ``n`` calibration scores with
``k = ceil((n + 1) * coverage)`` (the finite-sample quantile ``k / n``): if the
calibration rows and the new rows are exchangeable, a new row's interval or set holds its
truth with probability at least ``coverage`` (and below ``coverage + 1 / (n + 1)``).
When ``k > n`` there are too few cells for that coverage: the interval is unbounded, the
set holds every class, and a :class:`~sk_multitask.exceptions.CalibrationWarning` names
the task and the count.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import log_softmax, softmax

from ..exceptions import CalibrationWarning
from ..targets import MULTILABEL, ORDINAL, REGRESSION, binarize
from ..targets._ordinal import level_ranges, median_levels, tail_scores

#: The most conformal scores a task's calibration keeps (a random subset beyond): 20,000
#: scores are about 400 kB of JSON.
MAX_CALIBRATION_SCORES = 20_000
#: The temperatures a calibration may hold: fitted within, and checked when read.
TEMPERATURE_RANGE = (1e-2, 1e2)


def nll(logits, codes, temperature=1.0):
    """Mean negative log-likelihood of the true classes ``codes`` under
    ``softmax(logits / temperature)``.

    Examples
    --------
    >>> import numpy as np
    >>> round(nll(np.array([[0.0, 0.0]]), np.array([1])), 4)
    0.6931
    """
    log_p = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-np.mean(log_p[np.arange(len(log_p)), codes]))


def fit_temperature(logits, codes, max_iter=100):
    """The temperature minimising :func:`nll` of ``logits`` (N, n_classes) and true
    class codes ``codes``, within :data:`~sk_multitask.persistence._schema.TEMPERATURE_RANGE`.

    The NLL is convex in ``b = 1 / T`` (a log-sum-exp of linear functions of ``b``, minus
    one), so a safeguarded Newton search on ``b`` (bisection when a step leaves the
    bracket) finds its minimum to machine precision.

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 0.0]])
    >>> round(fit_temperature(logits, np.array([0, 1, 1, 0])), 3)  # over-confident
    3.641
    """
    z = np.asarray(logits, dtype=np.float64)
    onehot = np.zeros_like(z)
    onehot[np.arange(len(z)), codes] = 1.0

    def slopes(b):
        p = softmax(b * z, axis=1)
        mean = (p * z).sum(axis=1)
        return np.mean(mean - (onehot * z).sum(axis=1)), np.mean((p * z * z).sum(axis=1) - mean**2)

    lo, hi = 1 / TEMPERATURE_RANGE[1], 1 / TEMPERATURE_RANGE[0]
    if slopes(lo)[0] >= 0:
        return 1 / lo
    if slopes(hi)[0] <= 0:
        return 1 / hi
    b = 1.0
    for _ in range(max_iter):
        grad, curvature = slopes(b)
        lo, hi = (b, hi) if grad < 0 else (lo, b)
        step = b - grad / curvature if curvature > 0 else np.inf
        new = step if lo < step < hi else (lo + hi) / 2
        if abs(new - b) <= 1e-12 * b:
            b = new
            break
        b = new
    return float(1 / b)


def min_cells(coverage):
    """The fewest calibration cells that give a bounded interval at ``coverage``: the
    smallest ``n`` with ``ceil((n + 1) * coverage) <= n``.

    Examples
    --------
    >>> min_cells(0.9), min_cells(0.95), min_cells(0.8)
    (9, 19, 4)
    """
    n = max(1, math.floor(coverage / (1 - coverage)) - 1)
    while _rank(n, coverage) > n:
        n += 1
    return n


def _rank(n, coverage):
    # The tolerance keeps (n + 1) * coverage exact for the usual coverages (20 * 0.95).
    return math.ceil((n + 1) * coverage - 1e-9)


def conformal_quantile(scores, coverage):
    """The split-conformal threshold of sorted ``scores``: the ``ceil((n+1) * coverage)``-th
    smallest, or ``inf`` when there are too few scores.

    Examples
    --------
    >>> import numpy as np
    >>> conformal_quantile(np.arange(1.0, 11.0), 0.8), conformal_quantile(np.ones(3), 0.9)
    (9.0, inf)
    """
    k = _rank(len(scores), coverage)
    return float(scores[k - 1]) if k <= len(scores) else math.inf


@dataclass(frozen=True, eq=False)
class TaskCalibration:
    """One task's calibration.

    Attributes
    ----------
    kind : {"classification", "regression", "multilabel", "ordinal"}
    n_cells : int
        The labelled cells it was fitted on.
    temperature : float, ndarray or None
        A classification's temperature, a multi-label task's one per label (None for
        a regression or an ordinal task).
    scores : ndarray or None
        The sorted conformal scores (None for a multi-label task); at most
        :data:`~sk_multitask.persistence._schema.MAX_CALIBRATION_SCORES`, a random subset of them
        beyond (a random subset of exchangeable scores keeps the guarantee).
    """

    kind: str
    n_cells: int
    temperature: object = None
    scores: np.ndarray | None = None

    def to_dict(self):
        """JSON-able data :meth:`from_dict` reads back."""
        temperature = self.temperature
        if isinstance(temperature, np.ndarray):
            temperature = temperature.tolist()
        return {
            "kind": self.kind,
            "n_cells": int(self.n_cells),
            "temperature": temperature,
            "scores": None if self.scores is None else self.scores.tolist(),
        }

    @classmethod
    def from_dict(cls, state):
        temperature = state["temperature"]
        if isinstance(temperature, list):
            temperature = np.array(temperature, dtype=np.float64)
        scores = state["scores"]
        scores = None if scores is None else np.sort(np.array(scores, dtype=np.float64))
        return cls(state["kind"], state["n_cells"], temperature, scores)


def _task_calibration(decoder, out, truth, rng):
    """The :class:`TaskCalibration` of one task's scorable rows (outputs and truth); None
    when none holds a label seen in fit."""
    out = np.asarray(out, dtype=np.float64)
    if not len(out):
        return None
    if decoder.kind == MULTILABEL:
        seen = set(decoder.classes.tolist())
        known = np.array([set(cell) <= seen for cell in truth], dtype=bool)  # as for a class
        unseen = {label for cell in truth[~known] for label in cell} - seen
        _warn_unseen(decoder.name, unseen, (~known).sum())
        out, truth = out[known], truth[known]
        if not len(out):
            return None
        indicators = binarize(decoder.name, decoder.classes, truth)
        temperatures = [
            # A label's sigmoid is the softmax of the two logits (0, z).
            fit_temperature(np.stack([np.zeros(len(z)), z], axis=1), indicators[:, j])
            for j, z in enumerate(out.T)
        ]
        return TaskCalibration(MULTILABEL, len(out), np.array(temperatures))
    if decoder.kind == REGRESSION:
        truth = np.asarray(truth, dtype=np.float64)
        scores, temperature = np.abs(truth - decoder.decode(out).to_numpy()), None
    else:
        known = np.isin(truth, decoder.classes)  # a label unseen in fit has no output
        _warn_unseen(decoder.name, pd.unique(truth[~known]), (~known).sum())
        out, codes = out[known], decoder.class_codes(truth[known])
        if not len(out):
            return None
        if decoder.kind == ORDINAL:
            temperature = None  # it would move the median level: see the module's text
            probabilities = decoder.probabilities(out).astype(np.float64)
            scores = tail_scores(probabilities)[np.arange(len(out)), codes]
        else:
            temperature = fit_temperature(out, codes)
            probabilities = decoder.probabilities(out / temperature).astype(np.float64)
            scores = 1 - probabilities[np.arange(len(out)), codes]
    n_cells = len(scores)
    if n_cells > MAX_CALIBRATION_SCORES:
        scores = rng.choice(scores, MAX_CALIBRATION_SCORES, replace=False)
    return TaskCalibration(decoder.kind, n_cells, temperature, np.sort(scores))


def _warn_unseen(name, labels, n_cells):
    """Warn that ``n_cells`` calibration cells of task ``name``, holding ``labels`` that
    fit never saw, are left out (the network has no output for them)."""
    n_cells = int(n_cells)
    if not n_cells:
        return
    labels = sorted((getattr(v, "item", lambda v=v: v)() for v in labels), key=str)
    shown = ", ".join(map(repr, labels[:5])) + (f" and {len(labels) - 5} more" * (len(labels) > 5))
    warnings.warn(
        f"task {name!r}: labels never seen in fit ({shown}), in {n_cells} calibration "
        f"cell{'s' * (n_cells > 1)}, are left out of its calibration (the model has no "
        "output for them)",
        CalibrationWarning,
        stacklevel=5,
    )


def calibrate(decoders, outputs, y, *, skip_unlabelled=False):
    """Fit each task's calibration on its labelled cells.

    Parameters
    ----------
    decoders : dict
        Task name to :class:`~sk_multitask.targets._outputs.OutputDecoder`.
    outputs : dict
        Task name to its raw head outputs, a float array (N, n_outputs).
    y : DataFrame
        The true targets of the same rows; missing cells are left out.
    skip_unlabelled : bool, default=False
        Leave out a task with no labelled cell (``fit``'s validation rows) instead of
        raising.

    Returns
    -------
    Calibration

    Raises
    ------
    ValueError
        Naming a task that has no labelled cell (absent from ``y``, or all missing).
    """
    from ..evaluation._metrics import scorable_rows  # scikit-learn: not needed to predict

    rng = np.random.default_rng(0)
    tasks = {}
    for name, decoder in decoders.items():
        out = np.asarray(outputs[name], dtype=np.float64)
        truth = y[name] if name in y.columns else pd.Series([None] * len(out), dtype=object)
        rows = scorable_rows(truth, out)
        task = _task_calibration(decoder, out[rows], truth.to_numpy()[rows], rng)
        if task is not None:
            tasks[name] = task
        elif not skip_unlabelled:
            raise ValueError(
                f"task {name!r} has no labelled cell in the calibration data: calibrate "
                "needs held-out rows labelled for every task"
            )
    return Calibration(tasks)


def check_coverage(coverage):
    """``coverage`` as a float strictly between 0 and 1, or a ValueError naming it (NaN too).

    Examples
    --------
    >>> check_coverage(0.9)
    0.9
    """
    if isinstance(coverage, bool) or not isinstance(coverage, (float, int, np.floating)):
        raise ValueError(f"coverage must be a number between 0 and 1; got {coverage!r}")
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be between 0 and 1 (exclusive); got {coverage!r}")
    return float(coverage)


@dataclass(frozen=True, eq=False)
class Calibration:
    """Every task's :class:`TaskCalibration`, by task name (fitted attribute
    ``calibration_`` of the estimator, the ``calibration`` of a model document).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sk_multitask.targets._outputs import OutputDecoder
    >>> age = OutputDecoder("age", "regression", np.dtype(float), mean=0.0, scale=1.0)
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.normal(size=1000)
    >>> cal = calibrate({"age": age}, {"age": np.zeros((1000, 1))}, pd.DataFrame({"age": truth}))
    >>> frame = cal.intervals({"age": age}, {"age": np.zeros((2, 1))}, pd.RangeIndex(2), 0.9)
    >>> frame.columns.tolist(), round(float(frame["age", "upper"][0]), 1)
    ([('age', 'lower'), ('age', 'upper')], 1.6)
    """

    tasks: dict

    def scale(self, outputs):
        """``outputs`` (task name to raw outputs) with the logits of each calibrated
        classification or multi-label task divided by its temperature(s): float32 arrays
        whose softmax or sigmoids are the calibrated probabilities."""
        scaled = {}
        for name, out in outputs.items():
            out = np.asarray(out, dtype=np.float32)
            task = self.tasks.get(name)
            if task is not None and task.temperature is not None:
                out = (out / np.asarray(task.temperature, dtype=np.float32)).astype(np.float32)
            scaled[name] = out
        return scaled

    def quantile(self, name, coverage):
        """Task ``name``'s conformal threshold at ``coverage`` (inf, with a
        :class:`~sk_multitask.exceptions.CalibrationWarning`, when its cells are too few)."""
        task = self.tasks[name]
        q = conformal_quantile(task.scores, coverage)
        if math.isinf(q):
            what = {
                REGRESSION: "intervals are unbounded",
                ORDINAL: "ranges hold every level",
            }.get(task.kind, "sets hold every class")
            warnings.warn(
                f"task {name!r} has {len(task.scores)} calibration cells, too few for "
                f"coverage {coverage} (it needs at least {min_cells(coverage)}): its {what}",
                CalibrationWarning,
                stacklevel=3,
            )
        return q

    def check_tasks(self, decoders):
        """Refuse, naming it, a task of ``decoders`` that has intervals or sets (not a
        multi-label one) but no calibration."""
        for name, decoder in decoders.items():
            if decoder.kind != MULTILABEL and name not in self.tasks:
                raise ValueError(
                    f"task {name!r} is not calibrated (no labelled cell in the validation "
                    "rows of fit): call calibrate(X, y) with held-out rows labelled for it"
                )

    def intervals(self, decoders, outputs, index, coverage=0.9):
        """What ``predict_interval`` returns (see the estimator's method).

        Parameters
        ----------
        decoders : dict
            Task name to :class:`~sk_multitask.targets._outputs.OutputDecoder`.
        outputs : dict
            Task name to raw head outputs.
        index : pandas Index
        coverage : float, default=0.9
        """
        coverage = check_coverage(coverage)
        self.check_tasks(decoders)
        columns = {}
        for name, decoder in decoders.items():
            if decoder.kind == MULTILABEL:
                continue
            q = self.quantile(name, coverage)
            out = np.asarray(outputs[name], dtype=np.float32)
            if decoder.kind == REGRESSION:
                centre = decoder.decode(out).to_numpy()
                columns[name, "lower"], columns[name, "upper"] = centre - q, centre + q
            elif decoder.kind == ORDINAL:
                lower, upper = _level_ranges(decoder, out, q, index)
                columns[name, "lower"], columns[name, "upper"] = lower, upper
            else:
                columns[name, "set"] = _prediction_sets(decoder, self.scale({name: out})[name], q)
        frame = pd.DataFrame(columns, index=index)
        names = [list(level) for level in zip(*columns, strict=True)] or [[], []]
        frame.columns = pd.MultiIndex.from_arrays(names, names=["task", "bound"])
        return frame

    def to_dict(self):
        """JSON-able data: ``{"tasks": [[name, state], ...]}`` (names may be numbers)."""
        return {"tasks": [[name, task.to_dict()] for name, task in self.tasks.items()]}

    @classmethod
    def from_dict(cls, state, decoders):
        """The calibration of :meth:`to_dict`'s data, checked against the fitted tasks
        ``decoders`` (names, kinds and output counts)."""
        tasks = {}
        for name, task_state in state["tasks"]:
            name = tuple(name) if isinstance(name, list) else name
            decoder = decoders.get(name)
            task = TaskCalibration.from_dict(task_state)
            if decoder is None or decoder.kind != task.kind:
                raise ValueError(f"the calibration of task {name!r} matches no fitted task")
            if task.kind == MULTILABEL and len(task.temperature) != decoder.n_outputs:
                raise ValueError(f"the calibration of task {name!r} has the wrong temperatures")
            tasks[name] = task
        return cls(tasks)


def calibrated_outputs(calibration, outputs):
    """``outputs`` with ``calibration``'s temperatures applied; as they are when None
    (a model never calibrated)."""
    return outputs if calibration is None else calibration.scale(outputs)


def read_calibration(state, decoders):
    """The :class:`Calibration` of a model document's ``calibration`` (None: None),
    checked against the fitted tasks ``decoders``."""
    return None if state is None else Calibration.from_dict(state, decoders)


def _prediction_sets(decoder, logits, q):
    """LAC sets: per row, the labels whose calibrated probability is at least ``1 - q``;
    None for a missing row."""
    probabilities = decoder.probabilities(logits).astype(np.float64)
    classes = np.asarray(decoder.classes.tolist(), dtype=object)
    return [
        None if np.isnan(row).any() else classes[1 - row <= q].tolist() for row in probabilities
    ]


def _level_ranges(decoder, logits, q, index):
    """An ordinal task's conformal ranges as two Series of levels (lowest, highest), in
    the task's dtype, missing on a missing row: the levels whose tail score is at most
    ``q``, and the level ``predict`` gives (the median)."""
    missing = np.isnan(logits).any(axis=1)
    logits = np.nan_to_num(logits)
    lower, upper = level_ranges(decoder.probabilities(logits), median_levels(logits), q)
    return decoder.labels_at(lower, missing, index), decoder.labels_at(upper, missing, index)


def interval_metrics(calibration, decoders, outputs, y, coverage, sample_weight=None):
    """How sure the model is on labelled rows: the columns ``evaluate(..., coverage=)`` adds.

    Parameters
    ----------
    calibration : Calibration
    decoders : dict
        Task name to :class:`~sk_multitask.targets._outputs.OutputDecoder`, for the
        columns of ``y``.
    outputs : dict
        Task name to raw head outputs.
    y : DataFrame
        True targets; each task is measured on its scorable rows
        (:func:`sk_multitask.evaluation._metrics.scorable_rows`).
    coverage : float
    sample_weight : ndarray of shape (n_rows,), default=None
        Checked row weights: each measure weighted, rows of weight 0 left out.

    Returns
    -------
    DataFrame
        Per task: ``ece`` (classification and ordinal, of the calibrated
        probabilities; an ordinal task's are not temperature-scaled), ``coverage``
        (how often the interval, set or range holds the truth) and ``mean_width``
        (regression) or ``mean_set_size`` (classification; an ordinal task's levels
        in its range); NaN elsewhere.
    """
    from ..evaluation._calibration_metrics import (
        expected_calibration_error,
        interval_scores,
        set_scores,
    )
    from ..evaluation._metrics import scorable_rows

    rows = {}
    for name, decoder in decoders.items():
        scored = scorable_rows(y[name], outputs[name], sample_weight)
        weights = None if sample_weight is None else sample_weight[scored]
        if decoder.kind == MULTILABEL or not len(scored):
            rows[name] = {}
            continue
        out = np.asarray(outputs[name], dtype=np.float32)[scored]
        truth = y[name].to_numpy()[scored]
        frame = calibration.intervals(
            {name: decoder}, {name: out}, pd.RangeIndex(len(out)), coverage
        )
        if decoder.kind == REGRESSION:
            lower, upper = frame[name, "lower"], frame[name, "upper"]
            covered, width = interval_scores(truth, lower, upper, weights)
            rows[name] = {"coverage": covered, "mean_width": width}
            continue
        if decoder.kind == ORDINAL:  # the range's size: the levels it holds
            bounds = [frame[name, "lower"], frame[name, "upper"], truth]
            lower, upper, true = (decoder.class_codes(np.asarray(v)) for v in bounds)
            covered, width = interval_scores(true, lower, upper, weights)
            size = width + 1
        else:
            covered, size = set_scores(truth, frame[name, "set"], weights)
        known = np.isin(truth, decoder.classes)
        probabilities = decoder.probabilities(calibration.scale({name: out[known]})[name])
        codes = decoder.class_codes(truth[known])
        ece = expected_calibration_error(
            probabilities, codes, sample_weight=None if weights is None else weights[known]
        )
        rows[name] = {"ece": ece, "coverage": covered, "mean_set_size": size}
    columns = ["ece", "coverage", "mean_width", "mean_set_size"]
    return pd.DataFrame.from_dict(rows, orient="index").reindex(
        index=list(decoders), columns=columns
    )

"""Which missing cells to label next: ranked by how unsure the model is of them
(torch-free).

Each task's uncertainty, on its own scale:

- a classification (or an ordinal task, its levels as classes): the margin,
  ``1 - (p1 - p2)`` of its two most probable classes (calibrated probabilities once the
  model is calibrated): 1 when two classes tie, 0 when one has all the probability;
- a multi-label task: its most uncertain label's, ``1 - |2p - 1|``;
- a regression: the local residual spread, the median absolute residual (in the
  target's units) of the ``n_neighbors`` labelled cells of ``y`` nearest to the row in
  the network's outputs of every task (standardised): a regression head gives one value
  and no spread, and split-conformal intervals have one width for every row, so the
  residuals of the labelled rows most like it say where the model is wrong more often.
  The median, so that a wrong label or two among the neighbours (a value far off, whose
  residual is large) do not make the cell look uncertain: on the digits of
  ``benchmarks/bench_labels.py``, it ranks the cells the model gets wrong better than
  the mean did.

``score`` is the cell's uncertainty as a quantile among the candidate cells of its task
(1: the most uncertain of its task): scales differ from task to task, so a list across
tasks takes each task's most uncertain cells in turn.
"""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
import pandas as pd

from ..exceptions import LabelsWarning
from ..predicting._calibration import calibrated_outputs
from ..predicting._protocol import checked_outputs
from ..targets import LABEL_KINDS, MULTILABEL, check_task
from ..targets._outputs import decoders

#: The columns of :func:`suggest_labels`' table.
COLUMNS = ["row", "task", "score", "uncertainty", "predicted"]


def suggest_labels(estimator, X, y=None, task=None, n=None, n_neighbors=10):
    """The missing cells to label next, the most useful first.

    Ranked by how unsure the fitted model is of each: a classification's margin
    uncertainty, a multi-label task's most uncertain label, a regression's local residual
    spread (see :mod:`sk_multitask.labels._suggest`, and the page "Know your labels").

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator or OnnxPredictor
    X : image input
        As for ``predict``.
    y : DataFrame or Series, default=None
        The labels known: its missing cells are the candidates (a task absent from
        ``y`` has every cell missing), its labelled cells give the regression residuals.
        None: every cell is a candidate.
    task : hashable, default=None
        One task's cells only; None: every task's.
    n : int, default=None
        The ``n`` first cells only; None: all.
    n_neighbors : int, default=10
        The labelled cells whose residuals measure a regression cell's uncertainty.

    Returns
    -------
    DataFrame
        One row per candidate cell: ``row`` (``X``'s index label), ``task``, ``score``
        (0 to 1, higher: label it first), ``uncertainty`` (the task's own measure),
        ``predicted`` (the model's label, value or label list); highest score first.
        The rows of images skipped as unreadable are left out.

    Warns
    -----
    LabelsWarning
        A regression task without a labelled cell in ``y``: its cells have no score.

    Examples
    --------
    >>> from sk_multitask import MultiTaskImageEstimator
    >>> from sk_multitask.datasets import make_multitask_images
    >>> from sk_multitask.labels import suggest_labels
    >>> df = make_multitask_images(48, image_size=16, missing_rate=0.3, random_state=0)
    >>> y = df[["shape", "area"]]
    >>> est = MultiTaskImageEstimator(
    ...     image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
    ...     image_size=16, max_epochs=1, valid_split=None, random_state=0).fit(df, y)
    >>> next_cells = suggest_labels(est, df, y, n=5)
    >>> list(next_cells.columns), len(next_cells)
    (['row', 'task', 'score', 'uncertainty', 'predicted'], 5)
    """
    if not hasattr(estimator, "tasks_"):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(estimator)
    if task is not None:
        check_task(task, estimator.tasks_)
    for name, value in (("n", n), ("n_neighbors", n_neighbors)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)
                                  or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if y is None:
        outputs, index = estimator.predict_raw(X)
        y = pd.DataFrame(index=range(len(index)))
    else:
        outputs, index, y, _ = checked_outputs(estimator, X, y)
    tasks = list(estimator.tasks_) if task is None else [task]
    table = suggestion_table(estimator, outputs, index, y, tasks, n_neighbors)
    return table if n is None else table.head(n)


def suggestion_table(model, outputs, index, y, tasks, n_neighbors=10):
    """The table of :func:`suggest_labels` from the model's raw outputs of ``X``: the
    candidate cells of ``tasks``."""
    fitted = decoders(model.tasks_)
    calibrated = calibrated_outputs(getattr(model, "calibration_", None), outputs)
    y = y.reset_index(drop=True)
    readable = np.isfinite(np.concatenate(list(outputs.values()), axis=1)).all(axis=1)
    space = _output_space(outputs, readable)
    frames = []
    for name in tasks:
        decoder = fitted[name]
        given = y[name] if name in y.columns else pd.Series(None, index=y.index, dtype=object)
        candidates = readable & given.isna().to_numpy()
        if not candidates.any():
            continue
        if decoder.kind in LABEL_KINDS:  # an ordinal task's levels as classes
            uncertainty = _margin(decoder.probabilities(calibrated[name][candidates]))
        elif decoder.kind == MULTILABEL:
            p = decoder.probabilities(calibrated[name][candidates]).astype(np.float64)
            uncertainty = (1 - np.abs(2 * p - 1)).max(axis=1)
        else:
            labelled = readable & given.notna().to_numpy()
            uncertainty = _local_spread(
                name, decoder, outputs[name], given, space, labelled, candidates, n_neighbors
            )
        uncertainty = pd.Series(uncertainty, dtype=np.float64)
        frames.append(
            pd.DataFrame(
                {
                    "row": index[candidates],
                    "task": name,
                    "score": uncertainty.rank(pct=True).to_numpy(),
                    "uncertainty": uncertainty.to_numpy(),
                    "predicted": decoder.decode(outputs[name][candidates]).to_numpy(dtype=object),
                }
            )
        )
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS}).astype(
            {"score": float, "uncertainty": float}
        )
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(
        ["score", "uncertainty"], ascending=False, na_position="last", kind="stable"
    ).reset_index(drop=True)


def _margin(probabilities):
    """``1 - (p1 - p2)``: the two most probable classes' probabilities."""
    p = np.sort(np.asarray(probabilities, dtype=np.float64), axis=1)
    if p.shape[1] < 2:
        return np.zeros(len(p))
    return 1 - (p[:, -1] - p[:, -2])


def _output_space(outputs, readable):
    """The network's outputs of every task side by side, each column standardised over
    the readable rows: where rows the network sees alike are near."""
    space = np.concatenate(list(outputs.values()), axis=1).astype(np.float64)
    seen = space[readable]
    if not len(seen):
        return space
    scale = seen.std(axis=0)
    return (space - seen.mean(axis=0)) / np.where(scale > 0, scale, 1.0)


def _local_spread(name, decoder, outputs, given, space, labelled, candidates, n_neighbors):
    """A regression cell's uncertainty: the median absolute residual of the labelled cells
    nearest to it in ``space``; NaN, warned, without labelled cells."""
    if not labelled.any():
        warnings.warn(
            f"regression task {name!r} has no labelled cell in y: its missing cells "
            "have no residuals to be ranked by",
            LabelsWarning,
            stacklevel=4,
        )
        return np.full(int(candidates.sum()), np.nan)
    from sklearn.neighbors import NearestNeighbors

    truth = given[labelled].to_numpy(dtype=np.float64)
    residuals = np.abs(truth - decoder.decode(outputs[labelled]).to_numpy())
    k = min(n_neighbors, int(labelled.sum()))
    neighbours = NearestNeighbors(n_neighbors=k).fit(space[labelled])
    _, nearest = neighbours.kneighbors(space[candidates])
    return np.median(residuals[nearest], axis=1)

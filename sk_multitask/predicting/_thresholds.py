"""Decision thresholds: when a binary task or a label of a multi-label task is predicted.

Torch-free (numpy, pandas and scipy), shared by the estimator and the ONNX predictor.
By default a binary task predicts its second class (``classes_[1]``, scikit-learn's
positive label) when its probability is the larger one, and a multi-label task each label
whose probability is above 0.5. The estimator's ``decision_thresholds`` changes that:

- ``None``: as above;
- ``"tuned"``: per binary classification task and per label of each multi-label task,
  the threshold that maximises ``threshold_metric`` (:data:`THRESHOLD_METRICS`) on the
  validation rows of ``fit`` (or on the rows of ``calibrate``), as scikit-learn's
  ``TunedThresholdClassifierCV`` does for one binary output;
- a dict: task name to a threshold, or for a multi-label task to one threshold for every
  label or a dict label to threshold (a task or label left out keeps 0.5).

A class (a label) is predicted when its probability, the one ``predict_proba`` returns
(calibrated once the model is), is at least its threshold. The fitted thresholds
(``decision_thresholds_``: task to a float, or to a dict label to float) are in the model
document, so that a loaded model and the ONNX predictor decide alike. ``predict_proba``
is unchanged by them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Real

import numpy as np
from scipy.special import expit

from ..exceptions import CalibrationWarning
from ..targets import CLASSIFICATION, MULTILABEL, binarize
from ..targets._outputs import OutputDecoder, decoders, prediction_frame
from ._calibration import calibrated_outputs


def _ratio(numerator, denominator):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def _mcc(tp, fp, fn, tn):
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return _ratio(tp * tn - fp * fn, denominator)


#: The metrics a threshold may be tuned for, by scikit-learn's scorer names, from the
#: counts of true and false positives and negatives (a 0/0 counts 0, as scikit-learn's
#: ``zero_division=0``).
THRESHOLD_METRICS = {
    "f1": lambda tp, fp, fn, tn: _ratio(2 * tp, 2 * tp + fp + fn),
    "balanced_accuracy": lambda tp, fp, fn, tn: (_ratio(tp, tp + fn) + _ratio(tn, tn + fp)) / 2,
    "accuracy": lambda tp, fp, fn, tn: (tp + tn) / (tp + fp + fn + tn),
    "jaccard": lambda tp, fp, fn, tn: _ratio(tp, tp + fp + fn),
    "matthews_corrcoef": _mcc,
}


def tune_threshold(probabilities, truth, metric="f1"):
    """The threshold on ``probabilities`` that maximises ``metric`` against ``truth``.

    Every threshold between two consecutive distinct probabilities splits the rows
    alike. When 0.5 splits them as well as the best, it is kept: no change without
    evidence (a validation set that 0.5 already separates says nothing for another
    threshold). Otherwise the threshold is halfway between the two probabilities of the
    best split (beyond both ends for the extremes); among equally good splits, the one
    closest to 0.5.

    Parameters
    ----------
    probabilities : array of shape (n,)
        The positive class's (or label's) probability.
    truth : array of shape (n,) of bool
    metric : str, default="f1"
        A key of :data:`THRESHOLD_METRICS`.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([0.1, 0.2, 0.3, 0.45, 0.9])
    >>> tune_threshold(p, np.array([False, False, True, True, True]))
    0.25
    >>> tune_threshold(p, np.array([False, False, False, False, True]))  # 0.5 as good
    0.5
    """
    p = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    values = np.unique(p)
    candidates = np.concatenate([[values[0] / 2], (values[1:] + values[:-1]) / 2,
                                 [(values[-1] + 1) / 2]])  # fmt: skip
    order = np.argsort(p)
    p, truth = p[order], truth[order]
    # Rows predicted negative at each candidate: those with p below it.
    below = np.searchsorted(p, candidates, side="left")
    negatives_below = np.concatenate([[0], np.cumsum(~truth)])[below]
    positives_below = below - negatives_below
    tp = truth.sum() - positives_below
    fp = (~truth).sum() - negatives_below
    scores = THRESHOLD_METRICS[metric](tp, fp, positives_below, negatives_below)
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    # Candidate i stands for the thresholds in (values[i - 1], values[i]].
    low, high = np.r_[-np.inf, values][best], np.r_[values, np.inf][best]
    if ((low < 0.5) & (0.5 <= high)).any():
        return 0.5
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def thresholded_tasks(tasks):
    """The tasks of ``tasks`` (name to fitted task or decoder) that decision thresholds
    apply to: binary classifications and multi-label tasks."""
    return {
        name: decoder
        for name, decoder in decoders(tasks).items()
        if decoder.kind == MULTILABEL or (decoder.kind == CLASSIFICATION and decoder.n_outputs == 2)
    }


def check_thresholds(spec, tasks):
    """Refuse, in one line naming it, a ``decision_thresholds`` dict entry that is not a
    binary or multi-label task of ``tasks``, a label of it, or a number from 0 to 1; and
    ``"tuned"`` where no task has a threshold to tune (it would silently do nothing)."""
    allowed = thresholded_tasks(tasks)
    if spec == "tuned" and not allowed:
        raise ValueError(
            "decision_thresholds='tuned' tunes the thresholds of binary classification and "
            f"multi-label tasks, and this model has none (tasks: {list(tasks)})"
        )
    if not isinstance(spec, dict):
        return
    for name, value in spec.items():
        if name not in allowed:
            raise ValueError(
                f"decision_thresholds names {name!r}, which is not a binary classification "
                f"or multi-label task; those are {list(allowed)}"
            )
        decoder = allowed[name]
        values = value.items() if isinstance(value, dict) else [(None, value)]
        for label, threshold in values:
            if label is not None and (decoder.kind != MULTILABEL or label not in decoder.classes):
                raise ValueError(
                    f"decision_thresholds[{name!r}] names {label!r}, which is not a label of "
                    f"the multi-label task {name!r}"
                )
            if isinstance(threshold, bool) or not (
                isinstance(threshold, Real) and 0 <= threshold <= 1
            ):
                raise ValueError(
                    f"decision_thresholds[{name!r}] must be a number from 0 to 1 (or, for a "
                    f"multi-label task, a dict label to such a number); got {threshold!r}"
                )


def fit_thresholds(spec, metric, tasks, outputs=None, y=None, rows="validation rows"):
    """The fitted ``decision_thresholds_`` of the estimator's ``decision_thresholds``.

    Parameters
    ----------
    spec : None, "tuned" or dict
    metric : str
        ``threshold_metric``.
    tasks : dict
        Task name to fitted task or decoder.
    outputs : dict, default=None
        Task name to calibrated outputs of the rows ``y`` (``"tuned"`` only).
    y : DataFrame, default=None
        Their true targets; None: no such rows.
    rows : str
        What the rows are, for the warning.

    Returns
    -------
    dict or None
        None for ``spec`` None; otherwise every binary task to its threshold, every
        multi-label task to a dict label to threshold.
    """
    from ..evaluation._metrics import scorable_rows  # scikit-learn: not needed to predict

    if spec is None:
        return None
    check_thresholds(spec, tasks)
    fitted = {}
    for name, decoder in thresholded_tasks(tasks).items():
        given = spec.get(name, 0.5) if isinstance(spec, dict) else 0.5
        labels = decoder.classes.tolist() if decoder.kind == MULTILABEL else [None]
        if isinstance(given, dict):
            thresholds = [float(given.get(label, 0.5)) for label in labels]
        else:
            thresholds = [float(given)] * len(labels)
        if spec == "tuned":
            truth = None if y is None or name not in y.columns else y[name]
            scored = [] if truth is None else scorable_rows(truth, outputs[name])
            if len(scored):
                scored = scored[_seen(decoder, truth.to_numpy()[scored])]
            if len(scored):
                p, indicators = _positives(decoder, outputs[name][scored], truth.to_numpy()[scored])
                thresholds = [tune_threshold(p[:, j], indicators[:, j], metric)
                              for j in range(p.shape[1])]  # fmt: skip
            else:
                warnings.warn(
                    f"decision_thresholds='tuned': no {rows} labelled for task {name!r}, "
                    "whose thresholds stay 0.5 (calibrate(X, y) tunes them on held-out rows)",
                    CalibrationWarning,
                    stacklevel=3,
                )
        fitted[name] = (
            dict(zip(labels, thresholds, strict=True))
            if decoder.kind == MULTILABEL
            else thresholds[0]
        )
    return fitted


def _seen(decoder, truth):
    """Which cells of ``truth`` hold only labels seen in fit (the others have no output)."""
    if decoder.kind == MULTILABEL:
        seen = set(decoder.classes.tolist())
        return np.array([set(cell) <= seen for cell in truth], dtype=bool)
    return np.isin(truth, decoder.classes)


def positive_probabilities(kind, outputs):
    """The probabilities a threshold decides on, float64 ``(n, 1 or n_labels)``: a binary
    task's second class (the sigmoid of its logits' difference: its softmax), or each
    label of a multi-label task."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if kind == MULTILABEL:
        return expit(outputs)
    return expit(outputs[:, 1:] - outputs[:, :1])


def _positives(decoder, outputs, truth):
    """The positive probabilities (n, 1 or n_labels) of a task's rows and their truth."""
    if decoder.kind == MULTILABEL:
        truth = binarize(decoder.name, decoder.classes, truth).astype(bool)
    else:
        truth = (truth == decoder.classes[1])[:, None]
    return positive_probabilities(decoder.kind, outputs), truth


@dataclass(frozen=True, eq=False)
class ThresholdDecoder(OutputDecoder):
    """An :class:`~sk_multitask.targets._outputs.OutputDecoder` that decides a binary
    task's class, or a multi-label task's labels, at ``threshold`` (a float, or an array
    per label) of the probabilities of the outputs it decodes (calibrated ones)."""

    threshold: object = None

    def decode(self, outputs, index=None):
        outputs = np.asarray(outputs, dtype=np.float64)
        if not len(outputs):
            return super().decode(outputs, index)
        p = positive_probabilities(self.kind, outputs)
        decided = np.where(p >= self.threshold, 1.0, -1.0)
        if self.kind == CLASSIFICATION:  # the logits (-1, 1) decode to the second class
            decided = np.concatenate([-decided, decided], axis=1)
        decided[np.isnan(outputs).any(axis=1)] = np.nan
        return super().decode(decided, index)


def decision_decoders(model):
    """Task name to the decoder ``model`` (an estimator or ONNX predictor) predicts with:
    its fitted tasks' decoders, at its ``decision_thresholds_`` where it has them."""
    fitted = decoders(model.tasks_)
    thresholds = getattr(model, "decision_thresholds_", None) or {}
    for name, threshold in thresholds.items():
        decoder = fitted[name]
        if isinstance(threshold, dict):
            threshold = np.array([threshold[label] for label in decoder.classes.tolist()])
        fitted[name] = ThresholdDecoder(**vars(decoder), threshold=threshold)
    return fitted


def decided_predictions(model, outputs, index):
    """What ``model.predict`` returns for its raw ``outputs`` (task name to array) and
    ``index``: labels decided at its thresholds on its calibrated probabilities."""
    calibrated = calibrated_outputs(getattr(model, "calibration_", None), outputs)
    return prediction_frame(decision_decoders(model), calibrated, index)


def thresholds_to_list(thresholds, tasks, name_of):
    """``decision_thresholds_`` as JSON-able data: ``[[name, threshold or [one per
    label, in the order of the classes]], ...]`` (None: None); ``name_of`` writes a name."""
    if thresholds is None:
        return None
    fitted = decoders(tasks)
    return [
        [
            name_of(name),
            [float(t[label]) for label in fitted[name].classes.tolist()]
            if isinstance(t, dict)
            else float(t),
        ]
        for name, t in thresholds.items()
    ]


def read_thresholds(state, tasks):
    """The ``decision_thresholds_`` of :func:`thresholds_to_list`'s data (None: None),
    checked against the fitted tasks ``tasks`` (names, kinds and label counts)."""
    if state is None:
        return None
    allowed = thresholded_tasks(tasks)
    thresholds = {}
    for name, value in state:
        name = tuple(name) if isinstance(name, list) else name
        decoder = allowed.get(name)
        multilabel = decoder is not None and decoder.kind == MULTILABEL
        if (
            decoder is None
            or multilabel != isinstance(value, list)
            or (multilabel and len(value) != decoder.n_outputs)
        ):
            raise ValueError(f"the decision thresholds of task {name!r} match no fitted task")
        labels = decoder.classes.tolist()
        thresholds[name] = dict(zip(labels, value, strict=True)) if multilabel else value
    return thresholds

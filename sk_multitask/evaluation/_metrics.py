"""Per-task scores and the scorer for scikit-learn's model selection.

Every score is computed on the labelled cells of its task only, in original labels and
units, and is higher-is-better. A multi-label task is scored on its label indicator
matrices (one column per label, as scikit-learn's multi-label metrics take them). With
``sample_weight`` each metric is scikit-learn's weighted one (its ``sample_weight``
argument); a row of weight 0 is not scored.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.base import BaseEstimator

from ..targets import (
    CLASSIFICATION,
    LABEL_KINDS,
    MULTILABEL,
    ORDINAL,
    REGRESSION,
    binarize,
    check_task_names,
)
from ..targets._ordinal import median_levels

#: The metrics by name: scikit-learn's scorers of those names (higher-is-better). The
#: F1 and Jaccard scores are made with ``zero_division=0``: without any positive (true
#: or predicted) they are 0, scikit-learn's value, unwarned.
METRICS = {
    "accuracy": skm.get_scorer("accuracy"),
    "balanced_accuracy": skm.get_scorer("balanced_accuracy"),
    "f1_macro": skm.make_scorer(skm.f1_score, average="macro", zero_division=0),
    "f1_micro": skm.make_scorer(skm.f1_score, average="micro", zero_division=0),
    "jaccard_samples": skm.make_scorer(skm.jaccard_score, average="samples", zero_division=0),
    "r2": skm.get_scorer("r2"),
    "neg_mean_absolute_error": skm.get_scorer("neg_mean_absolute_error"),
    "neg_root_mean_squared_error": skm.get_scorer("neg_root_mean_squared_error"),
}
DEFAULT_METRICS = {
    CLASSIFICATION: "accuracy",
    REGRESSION: "r2",
    MULTILABEL: "f1_micro",
    ORDINAL: "accuracy",
}


class _Predictions(BaseEstimator):
    """What a scorer calls ``predict`` on when the predictions are already made:
    ``predict(X)`` returns ``X``, so that ``scorer(_Predictions(), y_pred, y_true)``
    scores ``y_pred``."""

    def predict(self, X):
        return X


def _metric(spec):
    """A function ``(y_true, y_pred, **weights) -> float`` for a metric name or callable."""
    if callable(spec):
        return spec
    if spec not in METRICS:
        raise ValueError(f"unknown metric {spec!r}; expected a callable or one of {list(METRICS)}")
    return functools.partial(_scored, METRICS[spec])


def _scored(scorer, truth, predicted, **weights):
    return scorer(_Predictions(), predicted, truth, **weights)


def _weights(sample_weight, scored):
    """The keyword arguments that weight a metric on the ``scored`` rows: none unweighted,
    so that a callable metric without ``sample_weight`` works as before."""
    return {} if sample_weight is None else {"sample_weight": sample_weight[scored]}


def plain_labels(values):
    """Labels as a plain numpy array (bool, int, float, str).

    pandas' nullable columns (``boolean``, ``Int64``, ``string``) give object arrays,
    whose type scikit-learn's metrics cannot tell ("unknown" targets).
    """
    return np.array(list(values)) if values.dtype == object else values


def scorable_rows(truth, outputs, sample_weight=None):
    """The rows where a task's cell is scored: its truth labelled and its prediction made.

    The one rule of :func:`task_scores` (``score``, the scorer), :func:`evaluate_tasks`
    and :func:`per_class_metrics` (``evaluate``, the report): a missing truth (NaN,
    None, ``pd.NA``) is not scored, nor is a missing prediction, the NaN row of an
    image skipped as unreadable (``on_bad_image="skip"``), nor a row of weight 0.

    Parameters
    ----------
    truth : Series
        The task's column of true targets.
    outputs : ndarray (N, n_outputs)
        The task's raw head outputs.
    sample_weight : ndarray (N,), optional
        Row weights (checked: finite, non-negative).

    Returns
    -------
    ndarray of int
        Positions of the scorable rows.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> scorable_rows(pd.Series(["a", None, "b"]), np.array([[0.0], [1.0], [np.nan]]))
    array([0])
    """
    predicted = ~np.isnan(np.asarray(outputs, dtype=np.float64)).any(axis=1)
    weighted = True if sample_weight is None else sample_weight > 0
    return np.flatnonzero(truth.notna().to_numpy() & predicted & weighted)


def check_metrics(metrics, tasks=None):
    """``metrics`` (task name to a scorer name of ``METRICS`` or a callable), if each
    is one and, with ``tasks``, names a task of ``tasks``."""
    for spec in (metrics or {}).values():
        _metric(spec)
    if tasks is not None:
        check_task_names(metrics, tasks, "metrics")
    return metrics


def task_scores(tasks, outputs, y, metrics=None, sample_weight=None):
    """Score each task of ``y`` on its labelled cells.

    Parameters
    ----------
    tasks : dict
        Task name to :class:`~sk_multitask.targets._outputs.OutputDecoder`.
    outputs : dict
        Task name to raw outputs, for the rows of ``y``.
    y : DataFrame
        True targets, checked (:func:`sk_multitask.predicting._protocol.checked_outputs`);
        its columns are tasks (a subset is fine).
    metrics : dict, optional
        Task name to a scorer name of ``METRICS`` or a callable ``(y_true, y_pred)``;
        by default accuracy for a classification or an ordinal task, R² for a
        regression and micro F1 (on the label indicator matrices) for a multi-label
        task. An ordinal task's levels are scored as their positions (0 the lowest),
        so that ``"neg_mean_absolute_error"`` is in levels.
    sample_weight : ndarray of shape (n_rows,), optional
        Checked row weights, passed to each metric as its ``sample_weight`` (a callable
        metric must then take that keyword argument).

    Returns
    -------
    dict
        Task name to its score, in ``y``'s column order. A task with no labelled cell
        (of positive weight) in ``y`` is left out.
    """
    metrics = dict(metrics or {})
    scores = {}
    for name in y.columns:
        scored = scorable_rows(y[name], outputs[name], sample_weight)
        if not len(scored):
            continue
        task = tasks[name]
        metric = _metric(metrics.get(name, DEFAULT_METRICS[task.kind]))
        truth = _comparable(task, y[name].to_numpy()[scored])
        predicted = _comparable(task, task.decode(outputs[name][scored]).to_numpy())
        if task.kind == CLASSIFICATION:
            truth, predicted = label_codes(truth, predicted)
        scores[name] = float(metric(truth, predicted, **_weights(sample_weight, scored)))
    if not scores:
        if sample_weight is not None and not sample_weight.any():
            raise ValueError("sample_weight is zero on every row: there is nothing to score")
        raise ValueError("y has no labelled cell in any task: nothing to score")
    return scores


def label_codes(truth, predicted):
    """Integer codes for class labels of any type, the same label the same code in both.

    scikit-learn's metrics refuse an object array that mixes types or holds booleans (a
    bool column with missing cells is of dtype object); the codes score the same.
    """
    codes, _ = pd.factorize(np.concatenate([truth, predicted]))
    return codes[: len(truth)], codes[len(truth) :]


def _comparable(task, values):
    """Labels or values as metrics take them: indicator matrices for a multi-label task,
    level positions for an ordinal one."""
    if task.kind == MULTILABEL:
        return binarize(task.name, task.classes_, values)
    if task.kind == ORDINAL:
        return level_positions(task, values)
    return plain_labels(values)


def level_positions(task, levels):
    """The positions of an ordinal task's ``levels`` (0 the lowest), refusing a level the
    task does not have: a distance in levels needs both ends among them."""
    positions = task.class_codes(np.asarray(levels))
    if (positions < 0).any():
        unseen = sorted(map(str, set(np.asarray(levels)[positions < 0].tolist())))
        raise ValueError(
            f"target {task.name!r} has levels not seen in fit: {unseen}; its ordinal "
            f"levels are {task.classes_.tolist()}"
        )
    return positions


# The metric columns of evaluate_tasks, in order, and the task kinds that have them.
_EVALUATE_COLUMNS = {
    "accuracy": {CLASSIFICATION, MULTILABEL, ORDINAL},
    "balanced_accuracy": {CLASSIFICATION},
    "f1_macro": {CLASSIFICATION, MULTILABEL},
    "f1_micro": {MULTILABEL},
    "hamming_loss": {MULTILABEL},
    "log_loss": {CLASSIFICATION, MULTILABEL, ORDINAL},
    "mae": {REGRESSION, ORDINAL},
    "rmse": {REGRESSION},
    "r2": {REGRESSION},
}


def evaluate_tasks(tasks, outputs, y, sample_weight=None):
    """The metrics table of :meth:`MultiTaskImageEstimator.evaluate`.

    Parameters
    ----------
    tasks : dict
        Task name to :class:`~sk_multitask.targets._outputs.OutputDecoder`, for the columns of
        ``y``.
    outputs : dict
        Task name to the head's raw outputs (float array (N, n_outputs)).
    y : DataFrame
        True targets, missing cells as NaN, None or ``pd.NA``.
    sample_weight : ndarray (N,), optional
        Checked row weights: every metric weighted, ``n_labelled`` the count of
        labelled cells of positive weight.

    An ordinal task has ``accuracy``, ``mae`` in levels (the predicted level's distance
    from the true one, 0 the lowest level, 1 the next...) and ``log_loss``.
    """
    rows = {}
    for name, task in tasks.items():
        scored = scorable_rows(y[name], outputs[name], sample_weight)
        row = {"kind": task.kind, "n_labelled": len(scored)}
        if len(scored):
            truth = y[name].to_numpy()[scored]
            if task.kind != MULTILABEL:  # a multi-label cell is a list, not a label
                truth = plain_labels(truth)
            weights = _weights(sample_weight, scored)
            row.update(_KIND_SCORES[task.kind](task, truth, outputs[name][scored], **weights))
        rows[name] = row
    kinds = {task.kind for task in tasks.values()}
    columns = ["kind", "n_labelled"] + [
        column for column, used_by in _EVALUATE_COLUMNS.items() if kinds & used_by
    ]
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)


def _multilabel_scores(task, truth, out, **weights):
    truth = binarize(task.name, task.classes_, truth)
    predicted = binarize(task.name, task.classes_, task.decode(out))
    # The log loss is per label: each row's weight for each of its labels.
    cell_weights = {k: np.repeat(w, truth.shape[1]) for k, w in weights.items()}
    return dict(
        accuracy=skm.accuracy_score(truth, predicted, **weights),
        f1_macro=_metric("f1_macro")(truth, predicted, **weights),
        f1_micro=_metric("f1_micro")(truth, predicted, **weights),
        hamming_loss=skm.hamming_loss(truth, predicted, **weights),
        log_loss=skm.log_loss(
            truth.ravel(), task.proba(out).to_numpy().ravel(), labels=[0, 1], **cell_weights
        ),
    )


def _classification_scores(task, truth, out, **weights):
    predicted = task.decode(out).to_numpy()
    proba = task.proba(out).to_numpy()
    known = np.isin(truth, task.classes_)  # log loss needs a fitted class
    classes = np.arange(len(task.classes_))
    fitted_codes = task.class_codes(truth[known]) if known.any() else classes[:0]
    truth, predicted = label_codes(truth, predicted)
    with warnings.catch_warnings():
        # On a small subset some predicted class may be absent from the truth;
        # balanced accuracy is still defined (over the true classes).
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        balanced = skm.balanced_accuracy_score(truth, predicted, **weights)
    known_weights = {k: w[known] for k, w in weights.items()}
    return dict(
        accuracy=skm.accuracy_score(truth, predicted, **weights),
        balanced_accuracy=balanced,
        f1_macro=skm.f1_score(truth, predicted, average="macro", **weights),
        log_loss=skm.log_loss(fitted_codes, proba[known], labels=classes, **known_weights)
        if known.any()
        else np.nan,
    )


def _ordinal_scores(task, truth, out, **weights):
    truth = level_positions(task, truth)
    predicted = median_levels(out)
    return dict(
        accuracy=skm.accuracy_score(truth, predicted, **weights),
        mae=skm.mean_absolute_error(truth, predicted, **weights),
        log_loss=skm.log_loss(
            truth, task.probabilities(out), labels=np.arange(len(task.classes_)), **weights
        ),
    )


def _regression_scores(task, truth, out, **weights):
    predicted = task.decode(out).to_numpy()
    return dict(
        mae=skm.mean_absolute_error(truth, predicted, **weights),
        rmse=skm.root_mean_squared_error(truth, predicted, **weights),
        r2=skm.r2_score(truth, predicted, **weights) if len(truth) > 1 else np.nan,
    )


#: The metrics of ``evaluate`` by task kind: ``(decoder, truth, outputs, **weights)`` of the
#: scored rows.
_KIND_SCORES = {
    MULTILABEL: _multilabel_scores,
    CLASSIFICATION: _classification_scores,
    REGRESSION: _regression_scores,
    ORDINAL: _ordinal_scores,
}


def per_class_metrics(tasks, outputs, y, sample_weight=None):
    """Per-class precision, recall, F1, support and ROC AUC of the classification (and
    ordinal: per level) tasks.

    The table of :meth:`MultiTaskImageEstimator.evaluate(X, y, per_class=True)
    <sk_multitask.MultiTaskImageEstimator.evaluate>`, on each task's labelled cells.

    Parameters
    ----------
    tasks : dict
        Task name to :class:`~sk_multitask.targets._outputs.OutputDecoder`, for the columns of
        ``y`` (regression tasks are left out).
    outputs : dict
        Task name to the head's raw outputs (float array (N, n_outputs)).
    y : DataFrame
        True targets, missing cells as NaN, None or ``pd.NA``.
    sample_weight : ndarray (N,), optional
        Checked row weights: precision, recall, F1 and ROC AUC weighted, ``support``
        the count of labelled cells of positive weight.

    Returns
    -------
    DataFrame
        Indexed by (``task``, ``class``), every fitted class of every classification
        task: ``precision``, ``recall``, ``f1``, ``support`` (labelled cells of that
        class) and ``roc_auc`` (the class's probability against the rest; NaN when
        the truth holds only that class or none of it).
    """
    rows = {}
    for name, task in tasks.items():
        if task.kind not in LABEL_KINDS:
            continue
        scored = scorable_rows(y[name], outputs[name], sample_weight)
        truth = y[name].to_numpy()[scored]
        out = outputs[name][scored]
        predicted = task.decode(out).to_numpy()
        proba = task.probabilities(out)
        weights = _weights(sample_weight, scored)
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            truth, predicted, labels=task.classes_, zero_division=0.0, **weights
        )
        for i, label in enumerate(task.classes_):
            positive = truth == label
            both = 0 < positive.sum() < len(truth)
            rows[(name, label)] = {
                "precision": precision[i],
                "recall": recall[i],
                "f1": f1[i],
                "support": int(positive.sum()),
                "roc_auc": skm.roc_auc_score(positive, proba[:, i], **weights) if both else np.nan,
            }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(list(rows), names=["task", "class"])
    return frame.reindex(columns=["precision", "recall", "f1", "support", "roc_auc"])

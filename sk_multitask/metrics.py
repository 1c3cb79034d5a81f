"""Per-task scores and the scorer for scikit-learn's model selection.

Every score is computed on the labelled cells of its task only, in original labels and
units, and is higher-is-better.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from .tasks import CLASSIFICATION, check_targets

__all__ = ["evaluate_tasks", "multitask_scorer", "task_scores"]

#: Metrics by name: each takes ``(y_true, y_pred)`` and is higher-is-better.
METRICS = {
    "accuracy": skm.accuracy_score,
    "balanced_accuracy": skm.balanced_accuracy_score,
    "f1_macro": lambda t, p: skm.f1_score(t, p, average="macro"),
    "r2": skm.r2_score,
    "neg_mean_absolute_error": lambda t, p: -skm.mean_absolute_error(t, p),
    "neg_root_mean_squared_error": lambda t, p: -skm.root_mean_squared_error(t, p),
}
DEFAULT_METRICS = {CLASSIFICATION: "accuracy", "regression": "r2"}


def _metric(spec):
    if callable(spec):
        return spec
    if spec not in METRICS:
        raise ValueError(f"unknown metric {spec!r}; expected a callable or one of {list(METRICS)}")
    return METRICS[spec]


def task_scores(estimator, X, y, metrics=None):
    """Score each task of ``y`` on its labelled cells.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    X : image input accepted by the estimator
    y : DataFrame or Series
        True targets; its columns must be tasks of the estimator (a subset is fine).
    metrics : dict, optional
        Task name to a metric name of ``METRICS`` or a callable ``(y_true, y_pred)``;
        by default accuracy for a classification and R² for a regression.

    Returns
    -------
    dict
        Task name to its score, in ``y``'s column order. A task with no labelled cell
        in ``y`` is left out.
    """
    predictions = estimator.predict(X)
    y = check_targets(y, estimator.tasks_, len(predictions))
    metrics = dict(metrics or {})
    scores = {}
    for name in y.columns:
        labelled = y[name].notna().to_numpy()
        if not labelled.any():
            continue
        kind = estimator.tasks_[name].kind
        metric = _metric(metrics.get(name, DEFAULT_METRICS[kind]))
        truth = y[name].to_numpy()[labelled]
        predicted = predictions[name].to_numpy()[labelled]
        scores[name] = float(metric(truth, predicted))
    if not scores:
        raise ValueError("y has no labelled cell in any task: nothing to score")
    return scores


def evaluate_tasks(tasks, outputs, y):
    """The metrics table of :meth:`MultiTaskImageEstimator.evaluate`.

    Parameters
    ----------
    tasks : dict
        Task name to :class:`~sk_multitask.tasks.OutputDecoder` (``Task.decoder``), for
        the columns of ``y``.
    outputs : dict
        Task name to the head's raw outputs (array or tensor (N, n_outputs)).
    y : DataFrame
        True targets, missing cells as NaN, None or ``pd.NA``.
    """
    rows = {}
    for name, task in tasks.items():
        labelled = y[name].notna().to_numpy()
        truth = y[name].to_numpy()[labelled]
        out = outputs[name][np.flatnonzero(labelled)]
        row = {"kind": task.kind, "n_labelled": int(labelled.sum())}
        if labelled.any() and task.kind == CLASSIFICATION:
            predicted = task.decode(out).to_numpy()
            proba = task.probabilities(out)
            known = np.isin(truth, task.classes)  # log loss needs a fitted class
            with warnings.catch_warnings():
                # On a small subset some predicted class may be absent from the truth;
                # balanced accuracy is still defined (over the true classes).
                warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
                balanced = skm.balanced_accuracy_score(truth, predicted)
            row.update(
                accuracy=skm.accuracy_score(truth, predicted),
                balanced_accuracy=balanced,
                f1_macro=skm.f1_score(truth, predicted, average="macro"),
                log_loss=skm.log_loss(truth[known], proba[known], labels=task.classes)
                if known.any()
                else np.nan,
            )
        elif labelled.any():
            predicted = task.decode(out).to_numpy()
            row.update(
                mae=skm.mean_absolute_error(truth, predicted),
                rmse=skm.root_mean_squared_error(truth, predicted),
                r2=skm.r2_score(truth, predicted) if labelled.sum() > 1 else np.nan,
            )
        rows[name] = row
    columns = [
        "kind",
        "n_labelled",
        "accuracy",
        "balanced_accuracy",
        "f1_macro",
        "log_loss",
        "mae",
        "rmse",
        "r2",
    ]
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)


class MultitaskScorer:
    """Callable ``(estimator, X, y) -> {task: score, ..., "mean": mean}``.

    Made by :func:`multitask_scorer`.
    """

    def __init__(self, metrics=None):
        self.metrics = metrics

    def __call__(self, estimator, X, y):
        scores = task_scores(estimator, X, y, self.metrics)
        scores["mean"] = float(np.mean(list(scores.values())))
        return scores

    def __repr__(self):
        return f"multitask_scorer(metrics={self.metrics!r})"


def multitask_scorer(metrics=None):
    """A scorer for ``GridSearchCV``/``cross_validate`` with one key per task.

    Passed as ``scoring=``, it makes ``cv_results_`` hold ``mean_test_<task>`` for
    each task and ``mean_test_mean`` for their mean, so that ``refit=`` can name one
    task (or ``"mean"``). One prediction pass serves every task.

    Parameters
    ----------
    metrics : dict, optional
        Task name to a metric name (``"accuracy"``, ``"balanced_accuracy"``,
        ``"f1_macro"``, ``"r2"``, ``"neg_mean_absolute_error"``,
        ``"neg_root_mean_squared_error"``) or a callable ``(y_true, y_pred)`` giving a
        higher-is-better float. By default accuracy for a classification and R² for a
        regression.

    Returns
    -------
    MultitaskScorer

    Examples
    --------
    >>> from sk_multitask.metrics import multitask_scorer
    >>> multitask_scorer({"age": "neg_mean_absolute_error"})
    multitask_scorer(metrics={'age': 'neg_mean_absolute_error'})
    """
    for spec in (metrics or {}).values():
        _metric(spec)
    return MultitaskScorer(metrics)

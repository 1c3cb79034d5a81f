"""Per-task scores and the scorer for scikit-learn's model selection.

Every score is computed on the labelled cells of its task only, in original labels and
units, and is higher-is-better.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from .tasks import CLASSIFICATION

__all__ = ["multitask_scorer", "task_scores"]

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
    y = estimator._target_frame(y)
    unknown = [name for name in y.columns if name not in estimator.tasks_]
    if unknown:
        raise ValueError(
            f"y has columns {unknown} that are not tasks of the estimator {list(estimator.tasks_)}"
        )
    metrics = dict(metrics or {})
    predictions = estimator.predict(X)
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

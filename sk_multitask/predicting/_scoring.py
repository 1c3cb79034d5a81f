"""Per-task scores of a model on ``X`` and ``y``, and the scorer for scikit-learn's model
selection (torch-free; scikit-learn, which scores, is imported when scoring).

:func:`model_task_scores` is what :meth:`MultiTaskPredictor.score
<sk_multitask.predicting._protocol.MultiTaskPredictor.score>` averages and what
:func:`multitask_scorer` reports: one check of ``X`` against ``y``
(:func:`~sk_multitask.predicting._protocol.checked_outputs`), one prediction pass, then
each task scored on its labelled cells (:func:`sk_multitask.evaluation._metrics.task_scores`).
"""

from __future__ import annotations

import numpy as np

from ..targets import target_frame
from ..targets._outputs import decoders
from ._protocol import checked_outputs, scoring_module


def model_task_scores(model, X, y, metrics=None, sample_weight=None):
    """Each task's score of a fitted ``model`` (an estimator or ONNX predictor) on ``X``
    and ``y``: ``{task: score}`` in ``y``'s column order, a task without a labelled cell
    (of positive weight) left out.

    ``metrics``: task name to a metric (see :func:`multitask_scorer`); by default
    accuracy, R² and micro F1 by task kind.
    """
    scoring = scoring_module("score")
    model._check_fitted()
    scoring.check_metrics(metrics, model.tasks_)
    outputs, _, y, sample_weight = checked_outputs(model, X, y, sample_weight)
    return scoring.task_scores(decoders(model.tasks_), outputs, y, metrics, sample_weight)


class MultitaskScorer:
    """Callable ``(estimator, X, y, sample_weight=None) -> {task: score, ..., "mean": mean}``.

    Made by :func:`multitask_scorer`. Under scikit-learn's metadata routing,
    ``set_score_request(sample_weight=True)`` makes a search or ``cross_validate`` pass
    it the routed ``sample_weight``, as it does scikit-learn's own scorers.

    Every column of ``y`` has its key, so that the folds of a search agree: a task
    with no labelled cell in a fold scores NaN there, and ``"mean"`` is the mean over
    the tasks scored (as :meth:`~MultiTaskImageEstimator.score` is).
    """

    def __init__(self, metrics=None):
        self.metrics = metrics
        self.sample_weight_request = None  # routing's default: not requested

    def __call__(self, estimator, X, y, sample_weight=None):
        scored = model_task_scores(estimator, X, y, self.metrics, sample_weight)
        scores = {name: scored.get(name, np.nan) for name in target_frame(y).columns}
        scores["mean"] = float(np.mean(list(scored.values())))
        return scores

    def set_score_request(self, *, sample_weight=None):
        """Whether the scorer takes ``sample_weight`` from metadata routing.

        Parameters
        ----------
        sample_weight : bool, str or None, default=None
            True: requested; False: not; None: an error if passed; a str: the alias
            it is routed under.

        Returns
        -------
        self
        """
        self.sample_weight_request = sample_weight
        return self

    def get_metadata_routing(self):
        """The scorer's metadata request (scikit-learn's routing reads it)."""
        from sklearn.utils.metadata_routing import MetadataRequest

        request = MetadataRequest(owner=self)
        request.score.add_request(param="sample_weight", alias=self.sample_weight_request)
        return request

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
        Task name to a metric name, scored by scikit-learn's scorer of that name
        (``"accuracy"``, ``"balanced_accuracy"``, ``"f1_macro"``, ``"f1_micro"``,
        ``"jaccard_samples"``, ``"r2"``, ``"neg_mean_absolute_error"``,
        ``"neg_root_mean_squared_error"``), or a callable ``(y_true, y_pred)`` giving a
        higher-is-better float. By default
        accuracy for a classification or an ordinal task, R² for a regression and
        micro F1 for a multi-label task (which metrics get as label indicator
        matrices). An ordinal task's levels are scored as their positions, so that
        ``"neg_mean_absolute_error"`` is in levels.

    Returns
    -------
    MultitaskScorer

    Examples
    --------
    >>> from sk_multitask import multitask_scorer
    >>> multitask_scorer({"age": "neg_mean_absolute_error"})
    multitask_scorer(metrics={'age': 'neg_mean_absolute_error'})
    """
    scoring_module("multitask_scorer").check_metrics(metrics)
    return MultitaskScorer(metrics)

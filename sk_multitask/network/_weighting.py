"""Weighting the loss: class weights for imbalanced labels, dynamic task weights.

:func:`class_weights` turns the estimator's ``class_weight`` into per-class weights of
the classification tasks; :func:`dwa_weights` are the task weights of
``loss_weights="dwa"``, set every epoch by
:class:`~sk_multitask.training.callbacks.DynamicWeightAverage`. The ``"uncertainty"``
weighting is learned inside the loss
(:class:`~sk_multitask.network._loss.MaskedMultiTaskLoss`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import softmax
from sklearn.utils.class_weight import compute_class_weight

from ..targets import LABEL_KINDS, check_task_names
from ..targets._cell_loss import is_weight


def class_weights(class_weight, tasks, y):
    """Per-class weights of classification (and ordinal) tasks, from the estimator's
    ``class_weight``.

    Parameters
    ----------
    class_weight : None, "balanced" or dict
        ``"balanced"`` weighs every classification and ordinal task; a dict maps a task
        name to ``"balanced"`` or to ``{label: weight}`` (labels, or levels, not named
        weigh 1).
    tasks : dict
        Task name to fitted :class:`~sk_multitask.targets.Task`.
    y : DataFrame
        The targets of the training rows.

    Returns
    -------
    dict
        Task name to its weights, an array in the order of the task's ``classes_``.
        ``"balanced"`` weights are scikit-learn's
        ``compute_class_weight("balanced", ...)`` over the task's labelled training
        cells, ``n_labelled / (n_classes * n_label)``; a class seen only in the
        validation rows weighs 1 (no training cell carries it).

    Examples
    --------
    >>> import pandas as pd
    >>> from sk_multitask.targets import fit_tasks
    >>> y = pd.DataFrame({"pet": ["cat", "cat", "cat", "dog", None]})
    >>> class_weights("balanced", fit_tasks(y), y)
    {'pet': array([0.666..., 2. ])}
    >>> class_weights({"pet": {"dog": 5.0}}, fit_tasks(y), y)
    {'pet': array([1., 5.])}
    """
    if class_weight is None:
        return {}
    n_classes = {n: len(t.classes_) for n, t in tasks.items() if t.kind in LABEL_KINDS}
    if class_weight == "balanced":
        class_weight = dict.fromkeys(n_classes, "balanced")
    check_task_names(class_weight, tasks, "class_weight", _WEIGHTED, n_classes)
    weights = {
        name: _task_class_weights(tasks[name], spec, y[name].dropna().to_numpy())
        for name, spec in class_weight.items()
    }
    return check_class_weights(weights, tasks, n_classes)


def check_class_weight_option(class_weight):
    """Check ``class_weight`` before the tasks are known: its shape and its weights.

    Raises
    ------
    ValueError
        Naming the task whose entry is not ``"balanced"`` or ``{label: weight}`` of
        finite non-negative weights.

    Examples
    --------
    >>> check_class_weight_option({"pet": {"dog": -2}})
    Traceback (most recent call last):
    ...
    ValueError: class_weight of task 'pet' must be 'balanced' or a dict from label to ...
    """
    if class_weight is None or isinstance(class_weight, str):
        return  # "balanced" (the parameter constraints refuse other strings)
    for name, spec in class_weight.items():
        balanced = isinstance(spec, str) and spec == "balanced"
        if not (balanced or (isinstance(spec, dict) and all(map(is_weight, spec.values())))):
            raise ValueError(
                f"class_weight of task {name!r} must be 'balanced' or a dict from label to "
                f"a finite non-negative weight, got {spec!r}"
            )


def check_class_weights(class_weight, task_names, n_classes):
    """Per-class weights checked against the tasks: the one check of class weights.

    Parameters
    ----------
    class_weight : dict or None
        Classification (or ordinal) task name to its weights, one per class or level
        (``classes_`` order).
    task_names : iterable
        Every task.
    n_classes : dict
        Classification (and ordinal) task name to its number of classes (levels).

    Returns
    -------
    dict
        Task name to its weights, a float64 array.

    Raises
    ------
    ValueError
        Naming an unknown or non-classification task, or a task whose weights are not
        ``n_classes`` finite non-negative numbers.
    """
    class_weight = dict(class_weight or {})
    check_task_names(class_weight, task_names, "class_weight", _WEIGHTED, n_classes)
    arrays = {}
    for name, weights in class_weight.items():
        weights = list(weights)
        if len(weights) != n_classes[name] or not all(map(is_weight, weights)):
            raise ValueError(
                f"class_weight of task {name!r} must be {n_classes[name]} finite "
                f"non-negative numbers (one per class), got {weights}"
            )
        arrays[name] = np.array(weights, dtype=np.float64)
    return arrays


#: The task kinds class weights apply to, as messages name them.
_WEIGHTED = "classification or ordinal"


def _task_class_weights(task, spec, labels):
    classes = task.classes_
    if isinstance(spec, str) and spec == "balanced":
        weights = np.ones(len(classes))
        present = np.isin(classes, labels)
        weights[present] = compute_class_weight("balanced", classes=classes[present], y=labels)
        return weights
    if not isinstance(spec, dict):
        raise ValueError(
            f"class_weight of task {task.name!r} must be 'balanced' or a dict from "
            f"label to weight, got {spec!r}"
        )
    known = classes.tolist()
    unknown = [label for label in spec if label not in known]
    if unknown:
        raise ValueError(
            f"class_weight of task {task.name!r} names labels {unknown} that are not "
            f"among its classes {known}"
        )
    return [spec.get(label, 1.0) for label in known]  # checked by check_class_weights


def dwa_weights(history, names, temperature=2.0):
    """Dynamic weight average (Liu, Johns & Davison 2019) after the epochs of ``history``.

    ``w_t = K * softmax(r / T)_t`` with ``r_t = L_t(e-1) / L_t(e-2)``, the ratio of
    task ``t``'s training loss (``train_<t>_loss``) in the last two epochs and ``K``
    the number of tasks, so that the weights sum to ``K``. Before two epochs every
    weight is 1; a ratio that cannot be formed (a task without label in an epoch)
    counts as 1.

    Parameters
    ----------
    history : sequence of dict
        The finished epochs' rows (skorch's ``History``).
    names : sequence
        Task names, in the loss's order.
    temperature : float, default=2.0

    Examples
    --------
    >>> rows = [{"train_a_loss": 1.0, "train_b_loss": 1.0},
    ...         {"train_a_loss": 0.5, "train_b_loss": 1.0}]
    >>> dwa_weights(rows, ["a", "b"]).round(3)  # b improved less: it weighs more
    array([0.876, 1.124])
    """
    if len(history) < 2:
        return np.ones(len(names))
    last, before = history[-1], history[-2]
    ratios = np.array(
        [_ratio(last.get(f"train_{n}_loss"), before.get(f"train_{n}_loss")) for n in names]
    )
    return len(names) * softmax(ratios / temperature)


def _ratio(last, before):
    if last is None or before is None or not (math.isfinite(last) and before > 0):
        return 1.0
    return last / before

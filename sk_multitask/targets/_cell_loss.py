"""The training loss of each labelled cell, in numpy: the top-loss table without torch.

:class:`CellLoss` computes, from a model's raw outputs and true targets, the per-cell
losses that :meth:`sk_multitask.network._loss.MaskedMultiTaskLoss.cell_losses` computes in torch
for training (tests/test_loss.py checks that both agree on every task kind, class
weights and regression loss). The estimator's ``top_losses``, the report and the
torch-free :class:`sk_multitask.onnx.OnnxPredictor` rank rows with it, so that they
rank the same rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax

from ._ordinal import level_nll
from ._tasks import (
    CLASSIFICATION,
    MULTILABEL,
    ORDINAL,
    REGRESSION,
    check_task_names,
    encode_targets,
)

__all__ = [
    "REGRESSION_LOSS_NAMES",
    "CellLoss",
    "is_weight",
    "regression_loss_names",
    "static_task_weights",
]

#: The per-cell regression losses ``regression_loss`` names (on the standardised scale).
REGRESSION_LOSS_NAMES = ("mse", "l1", "huber")


def is_weight(value):
    """Whether ``value`` is a usable loss weight: a finite, non-negative number."""
    try:
        return math.isfinite(value) and value >= 0
    except TypeError:
        return False


def static_task_weights(loss_weights, names):
    """The task weights of a dict ``loss_weights`` (or None), in the order of ``names``:
    tasks not named weigh 1. A ValueError names a weight that is not finite and
    non-negative, or a name that is not a task."""
    loss_weights = dict(loss_weights or {})
    check_task_names(loss_weights, names, "loss_weights")
    weights = [loss_weights.get(name, 1.0) for name in names]
    if not all(map(is_weight, weights)):
        raise ValueError(f"loss_weights must be finite non-negative numbers, got {loss_weights}")
    return [float(w) for w in weights]


def regression_loss_names(regression_loss, task_specs):
    """Task name to the name of its per-cell loss, for every regression task.

    Parameters
    ----------
    regression_loss : {"mse", "l1", "huber"} or dict
        One for every regression task, or a dict from regression task name to one
        (tasks not named: ``"mse"``).
    task_specs : sequence of (name, kind, n_outputs)
    """
    names = [name for name, _, _ in task_specs]
    regression = [name for name, kind, _ in task_specs if kind == REGRESSION]
    chosen = regression_loss if isinstance(regression_loss, dict) else {}
    check_task_names(chosen, names, "regression_loss", REGRESSION, regression)
    default = "mse" if isinstance(regression_loss, dict) else regression_loss
    losses = {}
    for name in regression:
        loss = chosen.get(name, default)
        if loss not in REGRESSION_LOSS_NAMES:
            raise ValueError(
                f"unknown regression_loss {loss!r} for task {name!r}; "
                f"expected one of {list(REGRESSION_LOSS_NAMES)}"
            )
        losses[name] = loss
    return losses


@dataclass(frozen=True)
class CellLoss:
    """The per-cell losses of a fitted model's training loss, from its outputs.

    Attributes
    ----------
    tasks : dict
        Task name to fitted :class:`~sk_multitask.targets.Task` (which encodes ``y``), in
        the order of the network's heads.
    class_weights : dict
        Classification (or ordinal) task name to its class weights (one per class or
        level), as trained.
    regression_losses : dict
        Regression task name to ``"mse"``, ``"l1"`` or ``"huber"``.
    task_weights : ndarray (n_tasks,)
        The task weights in effect at the end of training.
    """

    tasks: dict
    class_weights: dict
    regression_losses: dict
    task_weights: np.ndarray

    def cell_losses(self, outputs, y):
        """Each cell's loss, zero where the target is missing, as in training.

        Parameters
        ----------
        outputs : dict
            Task name to its head's raw outputs ``(N, n_outputs)`` (arrays or CPU tensors).
        y : DataFrame
            A column per task (checked by :func:`~sk_multitask.targets.check_targets`).

        Returns
        -------
        losses : float64 ndarray (N, n_tasks)
            Cross-entropy (times the true label's class weight), binary cross-entropy
            averaged over the labels, an ordinal task's negative log-likelihood of the
            true level (times its class weight), or the regression loss of the
            standardised value;
            not weighted by the task weights. NaN on a row of NaN outputs.
        labelled : bool ndarray (N, n_tasks)
        """
        targets = encode_targets(y, self.tasks).astype(np.float64)
        widths = np.cumsum([task.width for task in self.tasks.values()])[:-1]
        losses, labelled = [], []
        for (name, task), target in zip(
            self.tasks.items(), np.split(targets, widths, axis=1), strict=True
        ):
            out = np.asarray(outputs[name], dtype=np.float64)
            known = ~np.isnan(target[:, 0])
            filled = np.where(np.isnan(target), 0.0, target)
            with np.errstate(invalid="ignore"):  # NaN outputs: unreadable images' rows
                cell = self._task_cells(name, task.kind, out, filled)
            losses.append(np.where(known, cell, 0.0))
            labelled.append(known)
        return np.stack(losses, axis=1), np.stack(labelled, axis=1)

    def _task_cells(self, name, kind, out, filled):
        """One task's per-cell loss from its outputs and encoded targets (0 if missing)."""
        if kind == CLASSIFICATION:
            return self._cross_entropy(name, out, filled[:, 0].astype(np.intp))
        if kind == ORDINAL:
            levels = filled[:, 0].astype(np.intp)
            return self._class_weighted(name, level_nll(out, levels), levels)
        if kind == MULTILABEL:
            # log(1 + exp(x)) - x t, numpy's logaddexp keeping it finite for any logit.
            cell = np.logaddexp(0, out) - out * filled
            return cell.mean(axis=1)
        return _REGRESSION[self.regression_losses[name]](out[:, 0] - filled[:, 0])

    def _cross_entropy(self, name, logits, classes):
        log_p = log_softmax(logits, axis=1)
        cell = -np.take_along_axis(log_p, classes[:, None], axis=1)[:, 0]
        return self._class_weighted(name, cell, classes)

    def _class_weighted(self, name, cell, classes):
        """``cell`` times the class weight of each row's true class, if the task has them."""
        if name in self.class_weights:
            cell = cell * np.asarray(self.class_weights[name], dtype=np.float64)[classes]
        return cell


def _huber(residual):
    """The Huber loss of delta 1 (one standard deviation)."""
    size = np.abs(residual)
    return np.where(size < 1.0, 0.5 * residual**2, size - 0.5)


#: Per-cell regression loss of the standardised residual, by name.
_REGRESSION = {"mse": np.square, "l1": np.abs, "huber": _huber}

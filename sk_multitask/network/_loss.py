"""The masked multitask loss.

Each task's term is the mean of its per-cell loss over the *labelled* cells of the
batch: cross-entropy for a classification (a weighted mean with class weights),
binary cross-entropy averaged over the labels for a multi-label task, CORN's loss for
an ordinal task (the negative log-likelihood of the true level, which is the sum of the
binary cross-entropies of the conditional outputs that row trains:
:mod:`sk_multitask.targets._ordinal`), and the squared error (or absolute error, or
Huber loss) of the standardised value for a regression.
The loss is the weighted sum of the terms. A task with no label in the batch adds
exactly zero, with zero gradient: never NaN.

Row weights (the estimator's ``sample_weight``) travel as one more column after the
encoded targets: each cell's loss is then weighted by its row's weight, each task's term
being ``sum(w * loss * labelled) / sum(w * labelled)``. A row of weight zero counts as
unlabelled (exactly as if it were left out); a weight of one changes nothing, bit for bit.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..targets import LABEL_KINDS, MULTILABEL, ORDINAL, target_width
from ..targets._cell_loss import CellLoss, regression_loss_names, static_task_weights
from ._weighting import check_class_weights

#: Per-cell regression losses by the name ``regression_loss`` takes, on the
#: standardised scale (Huber: delta 1, i.e. one standard deviation); their numpy
#: counterparts are :class:`sk_multitask.targets._cell_loss.CellLoss`'s.
REGRESSION_LOSSES = {
    "mse": functools.partial(F.mse_loss, reduction="none"),
    "l1": functools.partial(F.l1_loss, reduction="none"),
    "huber": functools.partial(F.huber_loss, reduction="none", delta=1.0),
}

#: The task weightings ``loss_weights`` takes by name (else a dict of static weights).
LOSS_WEIGHTINGS = ("uncertainty", "dwa")


class MaskedMultiTaskLoss(nn.Module):
    """Weighted sum of per-task losses, each over its labelled cells only.

    Parameters
    ----------
    task_specs : sequence of (name, kind, n_outputs)
        In the order of the network's concatenated outputs and of the target columns
        (one column per task, ``n_outputs`` columns for a multi-label task). The targets
        may have one more column, last: the row weights.
    loss_weights : dict, "uncertainty", "dwa" or None, default=None
        A dict: task name to a finite non-negative weight; tasks not named weigh 1.
        ``"uncertainty"`` (Kendall, Gal & Cipolla 2018, in LibMTL's form, without
        1/2 factors): a learned log-variance ``s_t`` per task (the parameter
        ``log_vars``, starting at 0), the loss being ``sum_t exp(-s_t) * L_t + s_t``
        over the tasks labelled in the batch. ``"dwa"``: weights in the buffer
        ``task_weights``, 1 until set by
        :class:`~sk_multitask.training.callbacks.DynamicWeightAverage` each epoch.
    class_weight : dict, optional
        Classification (or ordinal) task name to its class weights, one per class
        (level), in order. The task's term is then the weighted mean of the
        cross-entropy (an ordinal task's negative log-likelihood) over its labelled
        cells, each weighted by its true class, as
        ``torch.nn.functional.cross_entropy(weight=...)``.
    regression_loss : {"mse", "l1", "huber"} or dict, default="mse"
        The per-cell loss of the regression tasks, on their standardised scale, or a
        dict from regression task name to one (unnamed tasks: ``"mse"``).

    Attributes
    ----------
    weights : tensor (n_tasks,)
        The task weights in effect: the static or DWA weights, or ``exp(-s_t)``.

    Examples
    --------
    >>> import torch
    >>> loss = MaskedMultiTaskLoss([("gender", "classification", 2), ("age", "regression", 1)])
    >>> y_pred = torch.tensor([[2.0, 0.0, 0.5], [0.0, 1.0, -1.0]])
    >>> y_true = torch.tensor([[0.0, float("nan")], [float("nan"), float("nan")]])
    >>> float(loss(y_pred, y_true))  # only row 0's gender is labelled
    0.126928...
    """

    def __init__(self, task_specs, loss_weights=None, class_weight=None, regression_loss="mse"):
        super().__init__()
        self.task_specs = [tuple(spec) for spec in task_specs]
        self.names = [name for name, _, _ in self.task_specs]
        self.loss_weights = loss_weights
        if isinstance(loss_weights, str):
            if loss_weights not in LOSS_WEIGHTINGS:
                raise ValueError(
                    f"loss_weights={loss_weights!r} is not a weighting; expected a dict, "
                    f"None or one of {list(LOSS_WEIGHTINGS)}"
                )
            weights = [1.0] * len(self.names)
        else:
            weights = static_task_weights(loss_weights, self.names)
        self.register_buffer("task_weights", torch.tensor(weights))
        if loss_weights == "uncertainty":
            self.log_vars = nn.Parameter(torch.zeros(len(self.names)))
        self.regression_loss_names = regression_loss_names(regression_loss, self.task_specs)
        self.regression_losses = {
            name: REGRESSION_LOSSES[loss] for name, loss in self.regression_loss_names.items()
        }
        self.class_weights = {}
        for name, weights in self._class_weights(class_weight).items():
            self.register_buffer(f"class_weight_{self.names.index(name)}", weights)
            self.class_weights[name] = f"class_weight_{self.names.index(name)}"

    @property
    def weights(self):
        """The task weights in effect (a tensor without gradient)."""
        if self.loss_weights == "uncertainty":
            return torch.exp(-self.log_vars.detach())
        return self.task_weights

    def _class_weights(self, class_weight):
        """Task name to a float tensor of class weights, checked against the task."""
        weights = check_class_weights(class_weight, self.names, class_counts(self.task_specs))
        return {name: torch.tensor(w, dtype=torch.float32) for name, w in weights.items()}

    def split_outputs(self, y_pred):
        """The network's concatenated outputs, split into one tensor per task."""
        return torch.split(y_pred, [n for _, _, n in self.task_specs], dim=1)

    def split_targets(self, y_true):
        """The encoded targets, split into one tensor (N, width) per task (the row
        weights' column, if any, left out)."""
        widths = [target_width(kind, n) for _, kind, n in self.task_specs]
        return torch.split(y_true[:, : sum(widths)], widths, dim=1)

    def row_weights(self, y_true):
        """The row weights: the column after the encoded targets, else ones ``(N,)``."""
        width = sum(target_width(kind, n) for _, kind, n in self.task_specs)
        if y_true.shape[1] == width:
            return torch.ones(len(y_true), dtype=y_true.dtype, device=y_true.device)
        if y_true.shape[1] != width + 1:
            raise ValueError(
                f"targets have {y_true.shape[1]} columns; the tasks take {width} "
                f"(or {width + 1} with row weights)"
            )
        return y_true[:, width]

    def _cells(self, y_pred, y_true):
        """Per cell: the loss (times its class and row weights), its weight, whether
        labelled (a row of weight zero is not)."""
        losses, weights, labelled = [], [], []
        outputs = self.split_outputs(y_pred)
        rows = self.row_weights(y_true).to(y_pred.dtype)
        for out, target, (name, kind, _) in zip(
            outputs, self.split_targets(y_true), self.task_specs, strict=True
        ):
            known = ~torch.isnan(target[:, 0]) & (rows > 0)
            filled = torch.where(torch.isnan(target), torch.zeros_like(target), target)
            weight = rows
            if kind in LABEL_KINDS:
                classes = filled[:, 0].long()
                if kind == ORDINAL:
                    log_p = corn_log_probabilities(out)
                    cell = -log_p.gather(1, classes[:, None])[:, 0]
                else:
                    cell = F.cross_entropy(out, classes, reduction="none")
                if name in self.class_weights:
                    weight = weight * getattr(self, self.class_weights[name])[classes]
            elif kind == MULTILABEL:
                cell = F.binary_cross_entropy_with_logits(out, filled, reduction="none")
                cell = cell.mean(dim=1)
            else:
                cell = self.regression_losses[name](out[:, 0], filled[:, 0])
            # where(), not a product, so that masked cells give exactly zero gradient
            # (and a weight of 1 multiplies exactly).
            zeros = torch.zeros_like(cell)
            losses.append(torch.where(known, cell * weight, zeros))
            weights.append(torch.where(known, weight, zeros))
            labelled.append(known)
        return torch.stack(losses, dim=1), torch.stack(weights, dim=1), torch.stack(labelled, 1)

    def cell_losses(self, y_pred, y_true):
        """Each cell's loss, zero where the target is missing.

        Returns
        -------
        losses : float tensor (N, n_tasks)
            Cross-entropy (classification; times the class weight of the true label
            with ``class_weight``), binary cross-entropy averaged over the labels
            (multi-label), the negative log-likelihood of the true level (ordinal;
            times its class weight) or the regression loss of the standardised value, times
            the row weight; not weighted by the task weights.
        labelled : bool tensor (N, n_tasks)
        """
        losses, _, labelled = self._cells(y_pred, y_true)
        return losses, labelled

    def numpy_cell_loss(self, tasks):
        """This loss's :class:`~sk_multitask.targets._cell_loss.CellLoss` (the per-cell losses of
        :meth:`cell_losses` in numpy), for the fitted ``tasks`` it was built for."""
        class_weights = {
            name: getattr(self, buffer).numpy().astype("float64")
            for name, buffer in self.class_weights.items()
        }
        weights = self.weights.numpy().astype("float64")
        return CellLoss(dict(tasks), class_weights, dict(self.regression_loss_names), weights)

    def task_terms(self, y_pred, y_true):
        """Per task: the loss summed over labelled cells, and the sum of their weights.

        Each task's term of the loss is the ratio (zero when the weight sum is zero).
        Without class or row weights, a cell weighs 1 and the weight sum is the count
        of labelled cells.

        Returns
        -------
        sums, norms : tensors of shape (n_tasks,)
        """
        losses, weights, _ = self._cells(y_pred, y_true)
        return losses.sum(dim=0), weights.sum(dim=0)

    def forward(self, y_pred, y_true):
        sums, norms = self.task_terms(y_pred, y_true)
        present = norms > 0
        # A safe divisor, so that an absent task's zero term has a zero (not NaN) gradient.
        means = sums / torch.where(present, norms, torch.ones_like(norms))
        if self.loss_weights == "uncertainty":
            terms = torch.exp(-self.log_vars) * means + self.log_vars
            return torch.where(present, terms, torch.zeros_like(terms)).sum()
        return (self.task_weights * means).sum()


def check_loss_options(loss_weights, regression_loss):
    """Check what can be checked of ``loss_weights`` and ``regression_loss`` before the
    tasks are known: the values (not yet the task names).

    Raises
    ------
    ValueError
        Naming the parameter and the value.

    Examples
    --------
    >>> check_loss_options({"age": -1.0}, "mse")
    Traceback (most recent call last):
    ...
    ValueError: loss_weights must be finite non-negative numbers, got {'age': -1.0}
    """
    if isinstance(loss_weights, str):
        if loss_weights not in LOSS_WEIGHTINGS:
            raise ValueError(
                f"loss_weights={loss_weights!r} is not a weighting; expected a dict, "
                f"None or one of {list(LOSS_WEIGHTINGS)}"
            )
    else:
        static_task_weights(loss_weights, list(loss_weights or {}))
    chosen = regression_loss if isinstance(regression_loss, dict) else {None: regression_loss}
    for name, loss in chosen.items():
        if not isinstance(loss, str) or loss not in REGRESSION_LOSSES:
            task = "" if name is None else f" for task {name!r}"
            raise ValueError(
                f"unknown regression_loss {loss!r}{task}; expected one of {list(REGRESSION_LOSSES)}"
            )


def check_task_losses(task_specs, loss_weights=None, class_weight=None, regression_loss="mse"):
    """Check the loss parameters against the tasks, as :class:`MaskedMultiTaskLoss` will
    use them, and warn when they train nothing.

    Parameters
    ----------
    task_specs, loss_weights, class_weight, regression_loss
        As for :class:`MaskedMultiTaskLoss`.

    Warns
    -----
    UserWarning
        When every task's loss weight is 0, or every class weight of a task is 0.
    """
    names = [name for name, _, _ in task_specs]
    if not isinstance(loss_weights, str):
        weights = static_task_weights(loss_weights, names)
        if not any(weights):
            warnings.warn(
                f"every loss weight is 0 (loss_weights={loss_weights}): the network trains nothing",
                UserWarning,
                stacklevel=3,
            )
    regression_loss_names(regression_loss, task_specs)
    for name, weights in check_class_weights(class_weight, names, class_counts(task_specs)).items():
        if not weights.any():
            warnings.warn(
                f"every class weight of task {name!r} is 0: the task trains nothing",
                UserWarning,
                stacklevel=3,
            )


def class_counts(task_specs):
    """Task name to its number of classes (levels), for the tasks class weights apply to:
    classification and ordinal ones, from their ``(name, kind, n_outputs)``."""
    return {
        name: n + 1 if kind == ORDINAL else n for name, kind, n in task_specs if kind in LABEL_KINDS
    }


def corn_log_probabilities(logits):
    """``log P(y = k)`` of each level of an ordinal task from its head's CORN logits:
    the torch twin of :func:`sk_multitask.targets._ordinal.level_log_probabilities`.

    Parameters
    ----------
    logits : tensor of shape (N, n_levels - 1)

    Returns
    -------
    tensor of shape (N, n_levels), differentiable
    """
    first = logits.new_zeros(len(logits), 1)
    reach = torch.cat([first, F.logsigmoid(logits).cumsum(dim=1)], dim=1)  # log P(y >= k)
    return reach + torch.cat([F.logsigmoid(-logits), first], dim=1)  # + log P(y = k | y >= k)


def level_score(logits, level=None):
    """One number per row of an ordinal task's CORN logits, to explain (Grad-CAM):
    the log-probability of level position ``level``, or the expected level position
    (``level=None``).

    Parameters
    ----------
    logits : tensor of shape (N, n_levels - 1)
        The task's head outputs (``split_outputs`` of the network's outputs).
    level : int or None, default=None
        A level's position among the task's ``classes_`` (0 the lowest).

    Returns
    -------
    tensor of shape (N,), differentiable

    Examples
    --------
    >>> import torch
    >>> logits = torch.zeros(1, 2)  # P = 0.5, 0.25, 0.25
    >>> float(level_score(logits)), round(float(level_score(logits, 0).exp()), 3)
    (0.75, 0.5)
    """
    log_p = corn_log_probabilities(logits)
    if level is None:
        positions = torch.arange(log_p.shape[1], dtype=log_p.dtype, device=log_p.device)
        return (log_p.exp() * positions).sum(dim=1)
    return log_p[:, level]

"""The masked multitask loss.

Each task's term is the mean of its per-cell loss over the *labelled* cells of the
batch (cross-entropy for a classification, squared error of the standardised value
for a regression); the loss is the weighted sum of the terms. A task with no label in
the batch adds exactly zero, with zero gradient: never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tasks import CLASSIFICATION, check_task_names

__all__ = ["MaskedMultiTaskLoss"]


class MaskedMultiTaskLoss(nn.Module):
    """Weighted sum of per-task losses, each over its labelled cells only.

    Parameters
    ----------
    task_specs : sequence of (name, kind, n_outputs)
        In the order of the network's concatenated outputs and of the target columns.
    loss_weights : dict, optional
        Task name to a non-negative weight; tasks not named weigh 1.

    Examples
    --------
    >>> import torch
    >>> loss = MaskedMultiTaskLoss([("gender", "classification", 2), ("age", "regression", 1)])
    >>> y_pred = torch.tensor([[2.0, 0.0, 0.5], [0.0, 1.0, -1.0]])
    >>> y_true = torch.tensor([[0.0, float("nan")], [float("nan"), float("nan")]])
    >>> float(loss(y_pred, y_true))  # only row 0's gender is labelled
    0.126928...
    """

    def __init__(self, task_specs, loss_weights=None):
        super().__init__()
        self.task_specs = [tuple(spec) for spec in task_specs]
        names = [name for name, _, _ in self.task_specs]
        loss_weights = dict(loss_weights or {})
        check_task_names(loss_weights, names, "loss_weights")
        weights = [float(loss_weights.get(name, 1.0)) for name in names]
        if any(not w >= 0 for w in weights):  # also refuses NaN
            raise ValueError(f"loss_weights must be non-negative numbers, got {loss_weights}")
        self.register_buffer("weights", torch.tensor(weights))

    def split_outputs(self, y_pred):
        """The network's concatenated outputs, split into one tensor per task."""
        return torch.split(y_pred, [n for _, _, n in self.task_specs], dim=1)

    def cell_losses(self, y_pred, y_true):
        """Each cell's loss, zero where the target is missing.

        Returns
        -------
        losses : float tensor (N, n_tasks)
            Cross-entropy (classification) or squared error of the standardised value
            (regression); unweighted.
        labelled : bool tensor (N, n_tasks)
        """
        losses = []
        labelled = ~torch.isnan(y_true)
        filled = torch.where(labelled, y_true, torch.zeros_like(y_true))
        outputs = self.split_outputs(y_pred)
        for column, (out, (_, kind, _)) in enumerate(zip(outputs, self.task_specs, strict=True)):
            target = filled[:, column]
            if kind == CLASSIFICATION:
                cell = F.cross_entropy(out, target.long(), reduction="none")
            else:
                cell = (out[:, 0] - target) ** 2
            # where(), not a product, so that masked cells give exactly zero gradient.
            losses.append(torch.where(labelled[:, column], cell, torch.zeros_like(cell)))
        return torch.stack(losses, dim=1), labelled

    def task_terms(self, y_pred, y_true):
        """Per task: the loss summed over labelled cells, and their count.

        Returns
        -------
        sums, counts : tensors of shape (n_tasks,)
        """
        losses, labelled = self.cell_losses(y_pred, y_true)
        return losses.sum(dim=0), labelled.sum(dim=0)

    def forward(self, y_pred, y_true):
        sums, counts = self.task_terms(y_pred, y_true)
        means = sums / counts.clamp(min=1)
        return (self.weights * means).sum()

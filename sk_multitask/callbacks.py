"""skorch callbacks for multitask training."""

from __future__ import annotations

import math

import torch
from skorch.callbacks import Callback

from .tasks import CLASSIFICATION

__all__ = ["TaskScoring"]


class TaskScoring(Callback):
    """Record each task's loss and metric for every epoch, on train and valid data.

    Statistics are summed on tensors batch by batch (on the training device) from the
    outputs the net computed anyway, over labelled cells only, and read once per
    epoch. History keys, for each ``prefix`` in ``train``/``valid`` and each task:

    - ``{prefix}_{task}_loss``: the task's mean loss over its labelled cells;
    - classification: ``{prefix}_{task}_acc``, the accuracy;
    - regression: ``{prefix}_{task}_mae`` and ``{prefix}_{task}_rmse``, in the
      target's original units.

    A task with no labelled cell in an epoch's data records NaN. Training statistics
    are those of the batches as trained (augmentation and dropout on). In
    data-parallel training the statistics of every process are summed first.

    Parameters
    ----------
    tasks : dict
        Task name to fitted :class:`sk_multitask.tasks.Task`, in output order.
    """

    def __init__(self, tasks):
        self.tasks = tasks

    def initialize(self):
        self.totals_ = {}
        return self

    def on_epoch_begin(self, net, **kwargs):
        self.totals_ = {}

    def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
        y_true = batch[1].to(y_pred.device)
        with torch.no_grad():
            stats = batch_task_stats(net.criterion_, y_pred.detach(), y_true)
        prefix = "train" if training else "valid"
        self.totals_[prefix] = self.totals_[prefix] + stats if prefix in self.totals_ else stats

    def on_epoch_end(self, net, **kwargs):
        # Data-parallel training (sk_multitask.distributed): each process saw its shard.
        accelerator = getattr(net, "accelerator", None)
        for prefix, totals in self.totals_.items():
            if accelerator is not None:
                totals = accelerator.reduce(totals, reduction="sum")
            for (name, task), row in zip(self.tasks.items(), totals.tolist(), strict=True):
                for metric, value in task_metrics(task, *row).items():
                    net.history.record(f"{prefix}_{name}_{metric}", value)

    def metric_keys(self, prefix):
        """The history keys this callback records for ``prefix`` (losses excluded)."""
        return [
            f"{prefix}_{name}_{metric}"
            for name, task in self.tasks.items()
            for metric in task_metrics(task, 0, 0, 0, 0)
            if metric != "loss"
        ]


def batch_task_stats(criterion, y_pred, y_true):
    """Per task ``(loss sum, labelled count, hits or absolute-error sum, squared-error sum)``.

    Returns a float tensor (n_tasks, 4) on ``y_pred``'s device; errors are in
    standardised units.
    """
    sums, counts = criterion.task_terms(y_pred, y_true)
    hits, squares = [], []
    outputs = criterion.split_outputs(y_pred)
    for column, (out, (_, kind, _)) in enumerate(zip(outputs, criterion.task_specs, strict=True)):
        target = y_true[:, column]
        labelled = ~torch.isnan(target)
        if kind == CLASSIFICATION:
            correct = (out.argmax(dim=1) == target) & labelled
            hits.append(correct.sum().float())
            squares.append(torch.zeros((), device=out.device))
        else:
            error = torch.where(labelled, out[:, 0] - target, torch.zeros_like(target))
            hits.append(error.abs().sum())
            squares.append((error**2).sum())
    return torch.stack([sums, counts.float(), torch.stack(hits), torch.stack(squares)], dim=1)


def task_metrics(task, loss_sum, count, hits, squares):
    """Turn summed statistics into the task's loss and metric(s); NaN when unlabelled."""
    if count == 0:
        count = math.nan
    metrics = {"loss": loss_sum / count}
    if task.kind == CLASSIFICATION:
        metrics["acc"] = hits / count
    else:
        scale = float(task.encoder.scale_[0])
        metrics["mae"] = hits / count * scale
        metrics["rmse"] = math.sqrt(squares / count) * scale
    return metrics

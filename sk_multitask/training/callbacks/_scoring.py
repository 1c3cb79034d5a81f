"""Per-task scores of every epoch, and how they are shown: the epoch table, the progress bar."""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from skorch.callbacks import Callback, PrintLog, ProgressBar

from ...targets import CLASSIFICATION, MULTILABEL, ORDINAL

__all__ = [
    "EpochTable",
    "TaskScoring",
    "batch_task_stats",
    "epoch_table",
    "progress_bar",
    "task_metrics",
]


class TaskScoring(Callback):
    """Record each task's loss and metric for every epoch, on train and valid data.

    Statistics are summed on tensors batch by batch (on the training device) from the
    outputs the net computed anyway, over labelled cells only, and read once per
    epoch. History keys, for each ``prefix`` in ``train``/``valid`` and each task:

    - ``{prefix}_{task}_loss``: the task's mean loss over its labelled cells;
    - classification: ``{prefix}_{task}_acc``, the accuracy;
    - regression: ``{prefix}_{task}_mae`` and ``{prefix}_{task}_rmse``, in the
      target's original units;
    - multi-label: ``{prefix}_{task}_f1``, the micro-averaged F1 over labels.

    and ``{task}_weight``, the task's loss weight at the end of the epoch (see
    ``MaskedMultiTaskLoss.weights``). With row weights (``sample_weight``) every figure
    is weighted. A task with no labelled cell in an epoch's data records NaN. Training
    statistics are those of the batches as trained (augmentation and dropout on). In
    data-parallel training the statistics of every process are summed first.

    Parameters
    ----------
    tasks : dict
        Task name to fitted :class:`sk_multitask.targets.Task`, in output order.
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
            stats = batch_task_stats(net.criterion_, y_pred.detach().float(), y_true)
        prefix = "train" if training else "valid"
        self.totals_[prefix] = self.totals_[prefix] + stats if prefix in self.totals_ else stats

    def on_epoch_end(self, net, **kwargs):
        for name, weight in zip(self.tasks, net.criterion_.weights.tolist(), strict=True):
            net.history.record(f"{name}_weight", weight)
        # Data-parallel training (sk_multitask.training._distributed): each process saw its shard.
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
            for metric in task_metrics(task, 0, 0, 0, 0, 0)
            if metric != "loss"
        ]


def batch_task_stats(criterion, y_pred, y_true):
    """Per task, statistics that sum over batches, as a float tensor (n_tasks, 5).

    The columns are the loss sum, the loss weight sum (the term is their ratio),
    the labelled count, then two kind-specific sums: hits and 0 (classification);
    hits and absolute errors in levels of the median level (ordinal);
    absolute and squared errors in standardised units (regression); per-label hits
    and true positives (multi-label). With row weights (``sample_weight``) every
    count and sum but the loss's weighs each cell by its row's weight. On
    ``y_pred``'s device.
    """
    sums, norms = criterion.task_terms(y_pred, y_true)
    counts, firsts, seconds = [], [], []
    outputs = criterion.split_outputs(y_pred)
    targets = criterion.split_targets(y_true)
    row_weights = criterion.row_weights(y_true).to(y_pred.dtype)
    for out, target, (_, kind, _) in zip(outputs, targets, criterion.task_specs, strict=True):
        labelled = ~torch.isnan(target[:, 0])
        # Each labelled cell counts with its row's weight (1 without sample_weight).
        weights = torch.where(labelled, row_weights, torch.zeros_like(row_weights))
        counts.append(weights.sum())
        if kind == CLASSIFICATION:
            correct = out.argmax(dim=1) == target[:, 0]
            firsts.append((correct * weights).sum())
            seconds.append(torch.zeros((), device=out.device))
        elif kind == ORDINAL:
            # The median level, as targets._ordinal.median_levels: how many P(y > j) > 0.5.
            median = (F.logsigmoid(out).cumsum(dim=1) > math.log(0.5)).sum(dim=1)
            error = (median - torch.nan_to_num(target[:, 0])).abs()
            firsts.append(((error == 0) * weights).sum())
            seconds.append((error * weights).sum())
        elif kind == MULTILABEL:
            predicted, truth = out > 0, target > 0.5  # NaN > 0.5 is False: weight 0 below
            rows = weights[:, None]
            firsts.append(((predicted == truth) * rows).sum())
            seconds.append(((predicted & truth) * rows).sum())
        else:
            error = torch.where(labelled, out[:, 0] - target[:, 0], torch.zeros_like(out[:, 0]))
            firsts.append((error.abs() * weights).sum())
            seconds.append((error**2 * weights).sum())
    return torch.stack([sums, norms, *map(torch.stack, (counts, firsts, seconds))], dim=1)


def task_metrics(task, loss_sum, loss_norm, count, first, second):
    """Turn summed statistics (:func:`batch_task_stats`) into the task's loss and metric(s).

    Classification: ``acc``; ordinal: ``acc`` and ``mae`` in levels (of the median
    level); regression: ``mae`` and ``rmse`` in original units;
    multi-label: ``f1``, the micro-averaged F1 over labels (0 when there is no
    positive, true or predicted). NaN when the task has no labelled cell.
    """
    if count == 0:
        count = loss_norm = math.nan
    metrics = {"loss": loss_sum / loss_norm if loss_norm else 0.0}
    if task.kind == CLASSIFICATION:
        metrics["acc"] = first / count
    elif task.kind == ORDINAL:
        metrics["acc"], metrics["mae"] = first / count, second / count
    elif task.kind == MULTILABEL:
        errors = count * task.n_outputs - first
        metrics["f1"] = 2 * second / (2 * second + errors) if 2 * second + errors else 0.0
    else:
        scale = float(task.encoder.scale_[0])
        metrics["mae"] = first / count * scale
        metrics["rmse"] = math.sqrt(second / count) * scale
    return metrics


class EpochTable(PrintLog):
    """skorch's epoch table with its columns in a chosen order, coloured only on a terminal.

    Columns: ``epoch``, then ``columns`` in their order, then any other key that is
    not ignored (a user callback's score, ``event_*``), then ``dur``. The best values
    are highlighted with ANSI colours only when standard output is a terminal, so a
    redirected log holds plain text.

    Parameters
    ----------
    columns : list of str
        History keys to show first, in this order (absent ones are skipped).
    keys_ignored : list of str, optional
        History keys never shown.
    """

    def __init__(self, columns=(), keys_ignored=None, **kwargs):
        super().__init__(keys_ignored=keys_ignored, **kwargs)
        self.columns = columns

    def _sorted_keys(self, keys):
        default = super()._sorted_keys(keys)
        first = [key for key in self.columns if key in default]
        rest = [key for key in default if key not in first and key not in ("epoch", "dur")]
        return (
            [k for k in ("epoch",) if k in default]
            + first
            + rest
            + (["dur"] if "dur" in default else [])
        )

    def format_row(self, row, key, color):
        if not sys.stdout.isatty():
            row = {k: v for k, v in row.items() if not k.endswith("_best")}
        return super().format_row(row, key, color)


def epoch_table(tasks, validation):
    """The epoch table the estimator prints with ``verbose=1``.

    The losses first, then one metric per task (accuracy, micro F1 for a multi-label
    task, the mean absolute error in levels for an ordinal one or in the target's units
    for a regression), on the validation data
    when there is some, else on the training batches; other per-task keys (losses,
    RMSE, loss weights) and the learning rates stay in ``history_`` only. With three
    tasks it is less than 100 characters wide.

    Parameters
    ----------
    tasks : dict
        Task name to fitted :class:`sk_multitask.targets.Task`.
    validation : bool
        Whether the net has validation data.

    Returns
    -------
    EpochTable
    """
    prefix = "valid" if validation else "train"
    shown = [f"{prefix}_{name}_{_table_metric(task)}" for name, task in tasks.items()]
    hidden = [f"{name}_weight" for name in tasks] + ["backbone_lr"] + [
        f"{side}_{name}_{metric}"
        for side in ("train", "valid")
        for name, task in tasks.items()
        for metric in task_metrics(task, 0, 0, 0, 0, 0)
        if f"{side}_{name}_{metric}" not in shown
    ]
    hidden += ["lr"]  # in history_; the table stays within 100 characters
    return EpochTable(["train_loss", "valid_loss", *shown], keys_ignored=hidden)


def _table_metric(task):
    return {CLASSIFICATION: "acc", MULTILABEL: "f1"}.get(task.kind, "mae")


def progress_bar(n_train, n_valid, batch_size, drop_last):
    """skorch's progress bar, its total counting the batches each epoch really has.

    Parameters
    ----------
    n_train, n_valid : int
        Rows trained on and validated on.
    batch_size : int
    drop_last : bool
        Whether the last, smaller training batch is dropped.

    Returns
    -------
    skorch.callbacks.ProgressBar
    """
    train = n_train // batch_size if drop_last else math.ceil(n_train / batch_size)
    return ProgressBar(batches_per_epoch=train + math.ceil(n_valid / batch_size))

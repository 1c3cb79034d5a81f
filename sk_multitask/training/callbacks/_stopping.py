"""Ending a fit: early stopping that restores the best epoch, and the non-finite loss check."""

from __future__ import annotations

import math

import torch
from skorch.callbacks import Callback, EarlyStopping

from ...network._model import load_net_state, net_state
from ._scoring import TaskScoring

__all__ = [
    "FiniteLoss",
    "ResumableEarlyStopping",
    "StopTraining",
    "check_monitor",
    "monitor_direction",
]


class StopTraining(KeyboardInterrupt):
    """Raised by a callback to end training early; unlike a Ctrl-C, it stops only the fit.

    skorch ends a fit on any ``KeyboardInterrupt`` (its ``EarlyStopping`` raises one), and
    :class:`MultiTaskNet` passes a real one on to the caller: this subclass tells them apart.
    """


def monitor_direction(monitor):
    """Whether a lower value of the history key ``monitor`` is better.

    Losses, MAE and RMSE are lower-is-better; accuracies (``_acc``) and F1 scores
    (``_f1``) higher-is-better.
    """
    if monitor.endswith(("_acc", "_f1")):
        return False
    if monitor.endswith(("_loss", "_mae", "_rmse")):
        return True
    raise ValueError(
        f"monitor={monitor!r}: cannot tell whether lower or higher is better; "
        "name a history key ending in _loss, _mae, _rmse (lower) or _acc, _f1 (higher)"
    )


def check_monitor(monitor, tasks, has_valid):
    """Check that early stopping can watch the history key ``monitor``.

    Raises
    ------
    ValueError
        If ``monitor`` is a ``valid_`` key without validation data, is not recorded, or
        has no known direction.
    """
    if monitor.startswith("valid_") and not has_valid:
        raise ValueError(
            f"early_stopping monitors {monitor!r} but there is no validation data "
            "(valid_split=None, or an empty validation column); set valid_split or "
            "monitor a train_ key"
        )
    prefixes = ("train", "valid") if has_valid else ("train",)
    keys = [
        key
        for prefix in prefixes
        for key in [f"{prefix}_loss"]
        + [f"{prefix}_{name}_loss" for name in tasks]
        + TaskScoring(tasks).metric_keys(prefix)
    ]
    if monitor not in keys:
        raise ValueError(f"monitor={monitor!r} is not recorded; choose one of {keys}")
    monitor_direction(monitor)


class ResumableEarlyStopping(EarlyStopping):
    """skorch's ``EarlyStopping(load_best=True)``, resumable, restoring the criterion too.

    What skorch's callback lacks: the best epoch's state of the criterion (learned loss
    weights) is restored with the module's, at the end of training whether or not it
    stopped early; its state is re-derived from the history of the plan (epochs from
    ``start_epoch``) and takes the best weights of a checkpoint (``resumed_weights_``),
    so a resumed fit continues it; it stops with :class:`StopTraining`, which ends the
    fit only. ``best_epoch_`` is the best epoch's number in the history.
    """

    def __init__(self, monitor="valid_loss", patience=5, start_epoch=0):
        super().__init__(
            monitor=monitor,
            patience=patience,
            lower_is_better=monitor_direction(monitor),
            load_best=True,
            sink=print,
        )
        self.start_epoch = start_epoch

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        for row in net.history[self.start_epoch :]:
            self._update(row[self.monitor], row["epoch"])
        if self.best_epoch_ and getattr(self, "resumed_weights_", None) is not None:
            self.best_model_weights_ = self.resumed_weights_
        self.resumed_weights_ = None

    def on_epoch_end(self, net, **kwargs):
        if self._update(net.history[-1, self.monitor], net.history[-1, "epoch"]):
            self.best_model_weights_ = net_state(net)
        if self.misses_ == self.patience:
            if net.verbose:
                self._sink(
                    f"Stopping since {self.monitor} has not improved in the last "
                    f"{self.patience} epochs.",
                    verbose=net.verbose,
                )
            raise StopTraining

    def on_train_end(self, net, **kwargs):
        if self.best_model_weights_ is not None and self.best_epoch_ != net.history[-1, "epoch"]:
            load_net_state(net, self.best_model_weights_)
            self._sink(f"Restoring best model from epoch {self.best_epoch_}.", net.verbose)

    def _update(self, score, epoch):
        """Count the epoch's score; whether it is the best so far."""
        if not self._is_score_improved(score):
            self.misses_ += 1
            return False
        self.misses_ = 0
        self.dynamic_threshold_ = self._calc_new_threshold(score)
        self.best_epoch_ = epoch
        return True


class FiniteLoss(Callback):
    """Stop the fit with an error as soon as a training batch's loss is not finite.

    A diverging fit (a rate too high, huge targets) would otherwise end quietly with a
    model predicting NaN. The error names the tasks whose loss term is not finite.
    """

    def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
        if not training:
            return
        loss = net.history[-1, "batches", -1, "train_loss"]
        if math.isfinite(loss):
            return
        with torch.no_grad():
            sums, _ = net.criterion_.task_terms(y_pred.detach().float(), batch[1].to(y_pred.device))
        names = [name for name, _, _ in net.criterion_.task_specs]
        bad = [n for n, value in zip(names, sums.tolist(), strict=True) if not math.isfinite(value)]
        epoch = len(net.history)
        raise FloatingPointError(
            f"the training loss became {loss} in epoch {epoch}"
            + (f" (tasks {bad})" if bad else "")
            + f": training diverged. Lower lr (now {net.lr:g}), check loss_weights and the "
            "targets' scale; nothing was fitted"
        )

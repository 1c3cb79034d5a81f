"""The learning-rate schedule of a fit, with its frozen first epochs: :class:`FineTuneSchedule`."""

from __future__ import annotations

import warnings

from skorch.callbacks import LRScheduler
from torch.optim import lr_scheduler

from ...network._model import multitask_module

__all__ = ["LR_SCHEDULES", "FineTuneSchedule"]


#: The values of the estimator's ``lr_schedule``.
LR_SCHEDULES = ("onecycle", "cosine", "constant")
_ONECYCLE_PCT_START = 0.3  # fastai's fine_tune
_FROZEN_PCT_START = 0.99  # fastai's fine_tune, for its frozen epochs
_DIV_FACTOR = 25.0  # the first rate is the peak / 25 (torch's and fastai's default)
_DIV_AFTER_FREEZE = 5.0  # fastai's fine_tune: the heads are trained already
_COSINE_WARMUP = 0.1  # fraction of the steps of a cosine schedule spent warming up


class FineTuneSchedule(LRScheduler):
    """Per-batch learning rates of a fit: a frozen phase, then the whole network.

    The plan covers ``max_epochs`` epochs from ``start_epoch`` (the epochs of history
    before it, for a warm start). Its first ``freeze_epochs`` train the heads only (the
    backbone's parameters get no gradient, its BatchNorm statistics stay); the rest train
    everything, the backbone at ``backbone_lr_scale`` times the heads' rate. Each phase
    runs its own schedule, a torch scheduler stepped after every batch through skorch's
    :class:`~skorch.callbacks.LRScheduler`:

    - ``"onecycle"``: :class:`torch.optim.lr_scheduler.OneCycleLR` peaking at ``lr``
      (``pct_start`` 0.3, or 0.99 in a frozen phase; the first rate is the peak / 25,
      or / 5 right after a frozen phase; momentum cycles too): fastai's ``fine_tune``;
    - ``"cosine"``: a linear warm-up over the first 10% of the steps from ``lr`` / 25,
      then cosine annealing to 0 (``LinearLR`` then ``CosineAnnealingLR``);
    - ``"constant"``: ``lr`` throughout.

    Per epoch, ``lr`` (the heads' rate) and ``backbone_lr`` (0 while frozen) of the
    epoch's last batch are recorded in the history; each batch's are in the batch history
    as ``event_lr`` and ``event_backbone_lr``. A resumed fit (more history than
    ``start_epoch``) picks the plan up where it stopped.
    """

    def __init__(
        self,
        schedule="onecycle",
        lr=1e-3,
        backbone_lr_scale=1.0,
        freeze_epochs=0,
        max_epochs=10,
        start_epoch=0,
    ):
        super().__init__(policy=None, step_every="batch", event_name="event_lr")
        self.schedule = schedule
        self.lr = lr
        self.backbone_lr_scale = backbone_lr_scale
        self.freeze_epochs = freeze_epochs
        self.max_epochs = max_epochs
        self.start_epoch = start_epoch

    def phases(self):
        """``(first epoch, end epoch, frozen)`` of each phase, counted within the plan."""
        freeze = min(self.freeze_epochs, self.max_epochs)
        phases = [(0, freeze, True), (freeze, self.max_epochs, False)]
        return [phase for phase in phases if phase[1] > phase[0]]

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.batches_per_epoch_ = len(net.get_iterator(X, training=True))
        self.phase_ = None
        self._enter(net, len(net.history) - self.start_epoch)

    def on_epoch_begin(self, net, **kwargs):
        # skorch has already added this epoch's row to the history.
        self._enter(net, len(net.history) - 1 - self.start_epoch)

    def on_batch_end(self, net, training, **kwargs):
        if training:
            self.lrs_ = self._rates(net)
            net.history.record_batch("event_backbone_lr", self.lrs_[1])
        super().on_batch_end(net, training, **kwargs)

    def on_epoch_end(self, net, **kwargs):
        net.history.record("lr", self.lrs_[0])
        net.history.record("backbone_lr", self.lrs_[1])

    def _rates(self, net):
        """The heads' and the backbone's rate now (the backbone's is 0 while frozen)."""
        groups = net.optimizer_.param_groups
        backbone = _backbone_group(net)
        frozen = self.phase_ is not None and self.phase_[2]
        return groups[0]["lr"], 0.0 if frozen or backbone is None else groups[backbone]["lr"]

    def on_train_end(self, net, **kwargs):
        multitask_module(net).freeze_backbone(False)
        # The scheduler is spent; it holds the optimizer, which need not be pickled.
        self.lr_scheduler_ = None

    def _enter(self, net, epoch):
        """Start the phase that ``epoch`` is in (if not started yet), catching up within it."""
        phase = next((p for p in self.phases() if p[0] <= epoch < p[1]), None)
        if phase is None or phase == self.phase_:
            return
        self.phase_ = start, stop, frozen = phase
        multitask_module(net).freeze_backbone(frozen)
        backbone = _backbone_group(net)
        for i, group in enumerate(net.optimizer_.param_groups):
            group["lr"] = self.lr * (self.backbone_lr_scale if i == backbone else 1.0)
            group.pop("initial_lr", None)  # else a new scheduler keeps the last one's base
        steps = (stop - start) * self.batches_per_epoch_
        self.lr_scheduler_ = self._policy(net.optimizer_, steps, frozen, after_freeze=start > 0)
        with warnings.catch_warnings():
            # Catching up on a resumed phase steps before any optimizer step.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            for _ in range((epoch - start) * self.batches_per_epoch_):
                self.lr_scheduler_.step()

    def _policy(self, optimizer, steps, frozen, after_freeze):
        if self.schedule == "onecycle":
            momentum = {"betas", "momentum"} & set(optimizer.defaults)
            return lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=[group["lr"] for group in optimizer.param_groups],
                total_steps=steps,
                pct_start=_FROZEN_PCT_START if frozen else _ONECYCLE_PCT_START,
                div_factor=_DIV_AFTER_FREEZE if after_freeze else _DIV_FACTOR,
                cycle_momentum=bool(momentum),
            )
        if self.schedule == "cosine":
            warmup = max(1, round(_COSINE_WARMUP * steps))
            return lr_scheduler.SequentialLR(
                optimizer,
                [
                    lr_scheduler.LinearLR(
                        optimizer, start_factor=1 / _DIV_FACTOR, total_iters=warmup
                    ),
                    lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps - warmup)),
                ],
                milestones=[warmup],
            )
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _backbone_group(net):
    """The index of the optimizer's parameter group holding the backbone (None if none)."""
    backbone = {id(p) for p in multitask_module(net).backbone.parameters()}
    for i, group in enumerate(net.optimizer_.param_groups):
        if any(id(p) in backbone for p in group["params"]):
            return i
    return None

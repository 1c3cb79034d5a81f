"""The skorch net that trains a :class:`~sk_multitask.module.MultiTaskModule`, and its wiring.

:class:`MultiTaskNet` is skorch's :class:`~skorch.NeuralNet` with mixed precision, and with
Ctrl-C that stops the caller too. The training recipe is made of skorch callbacks chosen
from the estimator's parameters by :func:`build_net`:

- :class:`FineTuneSchedule`: the learning-rate schedule (one-cycle, cosine with warm-up or
  constant, stepped per batch by torch's schedulers through skorch's ``LRScheduler``), with
  the backbone frozen for the first epochs and trained at a fraction of the heads' rate;
- :class:`EarlyStop`: skorch's ``EarlyStopping`` restoring the best epoch's weights;
- :class:`EpochCheckpoint`: everything needed to resume, written after every epoch;
- :class:`FiniteLoss`: a non-finite loss stops the fit with an error naming the task.

:func:`find_lr` is the learning-rate range test behind ``lr_find``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import os
import warnings
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from sklearn.utils import check_random_state
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from skorch.dataset import unpack_data
from skorch.helper import predefined_split
from skorch.history import History
from skorch.utils import TeeGenerator
from torch.optim import lr_scheduler

from .cache import cached_images
from .callbacks import TaskScoring, check_callbacks, copy_callbacks, epoch_table, progress_bar
from .criterion import MaskedMultiTaskLoss
from .data import split_rows
from .dataset import ImageDataset, bad_image_log, train_transform
from .decoding import as_size, check_image_size, screen_images
from .module import MultiTaskModule, build_backbone, has_pretrained_weights
from .sources import resolve_images
from .tasks import (
    check_aligned,
    check_not_inputs,
    check_same_tasks,
    check_trainable,
    data_sizes,
    encode_targets,
    fit_tasks,
    target_frame,
)
from .weighting import DynamicWeightAverage, class_weights

__all__ = [
    "OPTIMIZERS",
    "LR_SCHEDULES",
    "EarlyStop",
    "EpochCheckpoint",
    "FineTuneSchedule",
    "FiniteLoss",
    "LRFindResult",
    "MultiTaskNet",
    "StopTraining",
    "build_net",
    "check_monitor",
    "find_lr",
    "load_checkpoint",
    "make_net",
    "multitask_module",
    "prepare_run",
    "resolve_device",
    "resolve_num_workers",
    "restore_net",
    "monitor_direction",
    "run_fingerprint",
    "seeded",
]

#: Optimizers by the name the estimator's ``optimizer`` parameter takes.
OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": functools.partial(torch.optim.SGD, momentum=0.9),
}


class StopTraining(KeyboardInterrupt):
    """Raised by a callback to end training early; unlike a Ctrl-C, it stops only the fit.

    skorch ends a fit on any ``KeyboardInterrupt`` (its ``EarlyStopping`` raises one), and
    :class:`MultiTaskNet` passes a real one on to the caller: this subclass tells them apart.
    """


def _raised_in(exc, function):
    """Whether ``exc`` was raised inside ``function`` (skorch's own ``EarlyStopping``, say)."""
    traceback = exc.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code is function.__code__:
            return True
        traceback = traceback.tb_next
    return False


class MultiTaskNet(NeuralNet):
    """skorch's NeuralNet with mixed precision and an interrupt that reaches the caller.

    - ``precision``: autocast forward pass ("bf16"/"fp16"), fp16 gradient scaling;
    - Ctrl-C (``KeyboardInterrupt``) ends training, drops the unfinished epoch from the
      history, runs the callbacks' ``on_train_end`` and is then raised again, so that a
      script or a search stops (skorch alone swallows it). :class:`StopTraining`, and
      skorch's ``EarlyStopping`` among the user's callbacks, end the fit quietly.
    """

    def __init__(self, *args, precision="fp32", **kwargs):
        super().__init__(*args, **kwargs)
        self.precision = precision

    def notify(self, method_name, **cb_kwargs):
        super().notify(method_name, **cb_kwargs)
        if method_name == "on_epoch_end":
            #: Epochs whose every callback has run: the history rows that are complete.
            self.epochs_completed_ = len(self.history)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        self.epochs_completed_ = len(self.history)
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt as exc:
            if isinstance(exc, StopTraining) or _raised_in(exc, EarlyStopping.on_epoch_end):
                raise  # a callback ending the fit: skorch stops quietly

            del self.history[self.epochs_completed_ :]
            self.interrupted_ = exc
            raise

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        self.interrupted_ = None
        super().partial_fit(X, y, classes, **fit_params)
        interrupted, self.interrupted_ = self.interrupted_, None
        if interrupted is not None:
            raise interrupted
        return self

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dtype)

    def infer(self, x, **fit_params):
        with self._autocast():
            return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        # The loss in float32 whatever the forward pass's precision.
        return super().get_loss(y_pred.float(), y_true, X=X, training=training)

    def train_step(self, batch, **fit_params):
        if self.precision != "fp16":
            return super().train_step(batch, **fit_params)
        # fp16 gradients underflow without a scaler; bf16 has float32's range.
        if getattr(self, "grad_scaler_", None) is None:
            self.grad_scaler_ = torch.amp.GradScaler(torch.device(self.device).type)
        self.optimizer_.zero_grad()
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self.grad_scaler_.scale(loss).backward()
        self.grad_scaler_.unscale_(self.optimizer_)  # callbacks see true gradients
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
        )
        self.grad_scaler_.step(self.optimizer_)
        self.grad_scaler_.update()
        return {"loss": loss, "y_pred": y_pred}


@contextlib.contextmanager
def seeded(seed, device):
    """Seed torch inside the block and restore its global random state after."""
    if seed is None:
        yield
        return
    cuda = device.startswith("cuda")
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


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


def multitask_module(net):
    """The net's :class:`~sk_multitask.module.MultiTaskModule`, unwrapped from DDP if need be."""
    module = net.module_
    if isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return module.module
    return module


def _backbone_group(net):
    """The index of the optimizer's parameter group holding the backbone (None if none)."""
    backbone = {id(p) for p in multitask_module(net).backbone.parameters()}
    for i, group in enumerate(net.optimizer_.param_groups):
        if any(id(p) in backbone for p in group["params"]):
            return i
    return None


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


class EarlyStop(EarlyStopping):
    """skorch's ``EarlyStopping`` that restores the best epoch and stops only the fit.

    The best epoch's weights (module and criterion) are restored at the end of training,
    whether or not it stopped early; ``best_epoch_`` is its number in the history. Its
    state is re-derived from the history of the plan (epochs from ``start_epoch``), so a
    resumed fit continues it.
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
            self.best_model_weights_ = _net_state(net)
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
            _load_net_state(net, self.best_model_weights_)
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


def _net_state(net):
    """A CPU copy of the module's and the criterion's state."""
    return {
        name: {key: value.detach().to("cpu", copy=True) for key, value in state.items()}
        for name, state in (
            ("module_", net.module_.state_dict()),
            ("criterion_", net.criterion_.state_dict()),
        )
    }


def _load_net_state(net, state):
    for name, values in state.items():
        getattr(net, name).load_state_dict(values)


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


def run_fingerprint(params, images, targets, train, valid):
    """A hash of what a fit depends on: parameters, images, targets and the split.

    Two fits with the same fingerprint train the same model from the same data, so one
    may resume the other's checkpoint.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({k: _stable_repr(v) for k, v in sorted(params.items())}).encode())
    if isinstance(images, np.ndarray) and images.dtype != object:
        digest.update(np.ascontiguousarray(images).tobytes())
    else:
        for path in images:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(np.ascontiguousarray(targets).tobytes())
    digest.update(np.asarray(train).tobytes())
    digest.update(b"-" if valid is None else np.asarray(valid).tobytes())
    return digest.hexdigest()


def _stable_repr(value):
    """``repr`` without memory addresses, so that it is the same in every process."""
    if isinstance(value, functools.partial):
        keywords = sorted(value.keywords.items())
        return f"partial({_stable_repr(value.func)}, {value.args!r}, {keywords!r})"
    if isinstance(value, torch.nn.Module):
        state = hashlib.sha256()
        for name, tensor in value.state_dict().items():
            state.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
        return f"{value!r} {state.hexdigest()}"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    if isinstance(value, (list, tuple)):
        return [_stable_repr(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _stable_repr(v) for k, v in value.items()}
    return repr(value)


_CHECKPOINT = "checkpoint.pt"
_CHECKPOINT_FORMAT = 1


class EpochCheckpoint(Callback):
    """After every epoch, write what resuming needs to ``directory``, atomically.

    One file, ``checkpoint.pt`` (torch's format, tensors and plain values only: it loads
    with ``weights_only=True``): the module's, criterion's and optimizer's state, the
    history, torch's random states, the early-stopping callback's best weights and the
    run's fingerprint. It is written to a temporary name and renamed, so a process killed
    while writing leaves the previous checkpoint whole. Only the epochs completed are
    ever in it.
    """

    def __init__(self, directory, fingerprint):
        self.directory = directory
        self.fingerprint = fingerprint

    def on_epoch_end(self, net, **kwargs):
        state = {
            "format": _CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "net": _net_state(net),
            "optimizer": net.optimizer_.state_dict(),
            "history": json.dumps(net.history.to_list()),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.device(net.device).type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        early = dict(net.callbacks_).get("early_stopping")
        if early is not None and early.best_model_weights_ is not None:
            state["best"] = early.best_model_weights_
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, _CHECKPOINT)
        temporary = f"{path}.{os.getpid()}.tmp"
        torch.save(state, temporary)
        os.replace(temporary, path)


def load_checkpoint(net, directory, fingerprint):
    """Restore an initialised ``net`` from the checkpoint in ``directory``, if it is this run's.

    Returns
    -------
    int
        The number of epochs restored: 0 when there is no checkpoint, or when it is of
        another run (other parameters or data), which is then ignored with a warning.
    """
    path = os.path.join(directory, _CHECKPOINT)
    if not os.path.isfile(path):
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file: say so, never train on a half state
        raise ValueError(
            f"cannot read the checkpoint {path!r} ({exc}); delete it or use another checkpoint_dir"
        ) from exc
    if state.get("format") != _CHECKPOINT_FORMAT or state.get("fingerprint") != fingerprint:
        warnings.warn(
            f"the checkpoint in {directory!r} is of another run (other parameters or "
            "data): starting over, and it will be overwritten",
            UserWarning,
            stacklevel=3,
        )
        return 0
    _load_net_state(net, state["net"])
    net.optimizer_.load_state_dict(state["optimizer"])
    net.history_ = History(json.loads(state["history"]))
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    early = dict(net.callbacks_).get("early_stopping")
    if early is not None:
        early.resumed_weights_ = state.get("best")
    return len(net.history)


def resolve_num_workers(estimator, cache):
    """The DataLoader worker count that the estimator's ``num_workers`` stands for.

    ``cache``: whether the images are decoded already (nothing left for workers to do).
    """
    if estimator.num_workers != "auto":
        return estimator.num_workers
    if cache and not estimator.augment:
        return 0
    if resolve_device(estimator.device).startswith("cuda"):
        return min(8, os.cpu_count() or 1)
    # On a CPU every core already trains the network (torch's intra-op threads): a
    # worker process would oversubscribe them, which cost 5-10x per epoch on 2 cores.
    return 0


def resolve_device(device):
    """The torch device that the estimator's ``device`` stands for ("auto": CUDA if any)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"device={device!r} is not a torch device ('auto', 'cpu', 'cuda', "
            f"'cuda:1', 'mps'...): {exc}"
        ) from exc
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return device


def prepare_run(estimator, X, y):
    """Check the data and parameters: everything a fit (or ``lr_find``) needs but the net.

    Resolves the images, screens bad ones (``on_bad_image``), fits the tasks (or checks
    them against the fitted ones, for a warm start), splits the rows, resolves the
    recipe's "auto" values and builds the datasets.

    Returns
    -------
    SimpleNamespace
        ``tasks``, ``train_set``, ``valid_set``, ``freeze_epochs``,
        ``backbone_lr_scale``, ``fingerprint`` and the rest :func:`make_net` and the
        estimator use.
    """
    continuing = estimator.warm_start and hasattr(estimator, "net_")
    image_size = as_size(estimator.image_size)
    if continuing and image_size != estimator.image_size_:
        raise ValueError(
            f"warm_start: image_size {image_size} differs from the fitted {estimator.image_size_}"
        )
    skip = estimator.on_bad_image == "skip"
    images, _ = resolve_images(X, estimator.image_col, estimator.image_root, check_files=not skip)
    check_aligned(X, y)
    y = target_frame(y)
    if len(y) != len(images):
        raise ValueError(f"X has {len(images)} images but y has {len(y)} rows")
    keep, skipped = screen_images(images, estimator.on_bad_image, estimator.check_images)
    if not keep.all():  # rows of files found bad up front ("skip")
        X = X.iloc[keep] if isinstance(X, (pd.DataFrame, pd.Series)) else X
        y, images = y.iloc[keep], images[keep]
    check_not_inputs(
        y,
        image_col=estimator.image_col if isinstance(X, pd.DataFrame) else None,
        valid_col=estimator.valid_split if isinstance(estimator.valid_split, str) else None,
    )
    tasks = fit_tasks(y, estimator.tasks)
    if continuing:
        tasks = check_same_tasks(estimator.tasks_, tasks)
    targets = encode_targets(y, tasks)
    rng = check_random_state(estimator.random_state)
    train, valid = split_rows(X, len(images), estimator.valid_split, rng)
    check_trainable(y.iloc[train])
    if estimator.early_stopping:
        check_monitor(estimator.monitor, tasks, has_valid=valid is not None)
    device = resolve_device(estimator.device)
    seed = None if estimator.random_state is None else int(rng.randint(np.iinfo(np.int32).max))
    check_image_size(images, image_size)
    pretrained = not continuing and has_pretrained_weights(estimator.backbone, estimator.weights)
    freeze_epochs = estimator.freeze_epochs
    if continuing:
        freeze_epochs = 0
    elif freeze_epochs == "auto":
        freeze_epochs = int(pretrained and estimator.max_epochs > 1)
    scale = estimator.backbone_lr_scale
    if scale == "auto":  # a warm start keeps the first fit's choice
        was_pretrained = continuing and getattr(estimator.net_.module_, "pretrained", False)
        scale = 0.1 if pretrained or was_pretrained else 1.0
    fingerprint = None
    if estimator.checkpoint_dir is not None:
        params = estimator.get_params(deep=False)
        for name in ("verbose", "checkpoint_dir", "num_workers", "device"):
            params.pop(name)
        fingerprint = run_fingerprint(params, images, targets, train, valid)
    bad_images = bad_image_log(estimator.on_bad_image)  # None: raise
    images, decoded = cached_images(
        images,
        image_size,
        cache=estimator.cache,
        max_bytes=estimator.cache_max_bytes,
        cache_dir=estimator.cache_dir,
        num_workers=resolve_num_workers(estimator, cache=False),
        bad_images=bad_images,
    )
    if decoded and bad_images is not None:  # rows of images that cannot be decoded train nothing
        targets[list(bad_images.read())] = np.nan
    train_set = ImageDataset(
        images[train],
        targets[train],
        image_size=image_size,
        transform=train_transform(estimator.augment),
        bad_images=bad_images,
    )
    valid_set = (
        None
        if valid is None
        else ImageDataset(
            images[valid], targets[valid], image_size=image_size, bad_images=bad_images
        )
    )
    return SimpleNamespace(
        decoded=decoded,
        weights=estimator.weights,
        bad_images=bad_images,
        skipped=skipped,
        class_weights=class_weights(estimator.class_weight, tasks, y.iloc[train]),
        data_sizes=data_sizes(y, train=train, valid=valid),
        tasks=tasks,
        image_size=image_size,
        device=device,
        seed=seed,
        train_set=train_set,
        valid_set=valid_set,
        n_train=len(train),
        freeze_epochs=freeze_epochs,
        backbone_lr_scale=scale,
        pretrained=pretrained,
        start_epoch=len(estimator.history_) if continuing else 0,
        continuing=continuing,
        fingerprint=fingerprint,
    )


def make_net(estimator, run):
    """The initialised net for ``run`` (:func:`prepare_run`): a new network, or, for a
    warm start, a copy of the fitted one with its optimizer state and history."""
    if run.continuing:
        module = copy.deepcopy(estimator.net_.module_)
        criterion = copy.deepcopy(estimator.net_.criterion_)
    else:
        tasks = run.tasks
        backbone, n_features, (mean, std) = build_backbone(
            estimator.backbone, run.weights, run.image_size
        )
        module = MultiTaskModule(
            backbone, n_features, {n: t.n_outputs for n, t in tasks.items()}, mean, std
        )
        # Channels-last input: 25-35% faster convolutions on a CPU here
        # (docs/performance.md); on CUDA, with channels-last weights, cuDNN's fastest.
        module.channels_last = True
        if run.device.startswith("cuda"):
            module.to(memory_format=torch.channels_last)
        criterion = MaskedMultiTaskLoss(
            [(n, t.kind, t.n_outputs) for n, t in tasks.items()],
            estimator.loss_weights,
            run.class_weights,
            estimator.regression_loss,
        )
    module.pretrained = run.pretrained or getattr(module, "pretrained", False)
    net = build_net(
        estimator,
        module,
        criterion,
        run.tasks,
        run.valid_set,
        run.n_train,
        run.device,
        num_workers=resolve_num_workers(estimator, cache=run.decoded),
        freeze_epochs=run.freeze_epochs,
        backbone_lr_scale=run.backbone_lr_scale,
        start_epoch=run.start_epoch,
        fingerprint=run.fingerprint,
    ).initialize()
    if run.continuing:
        net.optimizer_.load_state_dict(estimator.net_.optimizer_.state_dict())
        net.history_ = copy.deepcopy(estimator.history_)
    return net


def restore_net(estimator, tasks, image_size, device, class_weights=None):
    """An initialised net of the structure ``estimator`` trains, to load saved weights into.

    The backbone is built without weights (nothing is downloaded); ``class_weights``
    (task name to its weights) gives the criterion the buffers the saved state has.
    """
    run = SimpleNamespace(
        continuing=False, tasks=tasks, image_size=image_size, device=device, weights=None,
        decoded=False,
        class_weights=class_weights, pretrained=False, valid_set=None, n_train=0,
        freeze_epochs=0, backbone_lr_scale=1.0, start_epoch=0, fingerprint=None,
    )
    return make_net(estimator, run)


def build_net(
    estimator,
    module,
    criterion,
    tasks,
    valid_set,
    n_train,
    device,
    *,
    num_workers,
    freeze_epochs,
    backbone_lr_scale,
    start_epoch=0,
    fingerprint=None,
):
    """The skorch net that trains ``module`` with the recipe of ``estimator``'s parameters.

    Callbacks, in order: per-task scoring, the non-finite loss check, the learning-rate
    schedule, dynamic weight average (``loss_weights="dwa"``), early stopping
    (``early_stopping``), the progress bar (``verbose``), the user's ``callbacks``
    (copied), and the checkpoint (``checkpoint_dir``), last, so that it saves what every
    other callback recorded.
    """
    scoring = TaskScoring(tasks)
    callbacks = [
        ("task_scoring", scoring),
        ("finite_loss", FiniteLoss()),
        (
            "lr_schedule",
            FineTuneSchedule(
                estimator.lr_schedule,
                lr=estimator.lr,
                backbone_lr_scale=float(backbone_lr_scale),
                freeze_epochs=int(freeze_epochs),
                max_epochs=int(estimator.max_epochs),  # torch's schedulers want int
                start_epoch=start_epoch,
            ),
        ),
    ]
    if estimator.loss_weights == "dwa":
        callbacks.append(("dynamic_weight_average", DynamicWeightAverage()))
    if estimator.early_stopping:
        callbacks.append(
            (
                "early_stopping",
                EarlyStop(estimator.monitor, estimator.patience, start_epoch=start_epoch),
            )
        )
    # A last batch of 1 would break BatchNorm; shuffling still uses every row.
    drop_last = bool(n_train > estimator.batch_size)
    if estimator.verbose:
        n_valid = 0 if valid_set is None else len(valid_set)
        callbacks.append(
            ("progress_bar", progress_bar(n_train, n_valid, estimator.batch_size, drop_last))
        )
    check_callbacks(estimator.callbacks)
    callbacks += copy_callbacks(estimator.callbacks)
    if estimator.checkpoint_dir is not None:
        callbacks.append(
            ("checkpoint", EpochCheckpoint(os.fspath(estimator.checkpoint_dir), fingerprint))
        )
    loader = {"num_workers": num_workers, "pin_memory": device.startswith("cuda")}
    if num_workers:
        loader["persistent_workers"] = True
    optimizer = (
        OPTIMIZERS[estimator.optimizer]
        if isinstance(estimator.optimizer, str)
        else estimator.optimizer
    )
    params = dict(
        module=module,
        precision=estimator.precision,
        criterion=criterion,
        optimizer=optimizer,
        # Heads first (their rate is the one recorded), then the backbone at its own
        # rate, then the rest (learned loss weights).
        optimizer__param_groups=[
            ("heads.*", {}),
            ("backbone.*", {"lr": estimator.lr * backbone_lr_scale}),
        ],
        lr=estimator.lr,
        max_epochs=estimator.max_epochs,
        batch_size=int(estimator.batch_size),  # torch refuses numpy integers (a grid's)
        train_split=None if valid_set is None else predefined_split(valid_set),
        callbacks=callbacks,
        iterator_train__drop_last=drop_last,
        iterator_train__shuffle=True,
        **{f"iterator_train__{k}": v for k, v in loader.items()},
        **{f"iterator_valid__{k}": v for k, v in loader.items()},
        callbacks__print_log=epoch_table(tasks, validation=valid_set is not None),
        device=device,
        verbose=estimator.verbose,
    )
    from .distributed import accelerated_net, uses_accelerate  # it builds on MultiTaskNet

    if uses_accelerate(estimator.accelerator):
        return accelerated_net(**params)
    return MultiTaskNet(**params)


class LRFindResult(NamedTuple):
    """What :meth:`~sk_multitask.MultiTaskImageEstimator.lr_find` returns.

    Attributes
    ----------
    history : DataFrame
        One row per batch: ``lr`` (the heads' rate), ``loss`` and ``smoothed_loss``
        (an exponential moving average, debiased, with factor 0.98).
    suggested_lr : float
        The rate in the "valley" of the smoothed loss curve (fastai's default
        suggestion): two thirds of the way down its longest descent.
    """

    history: pd.DataFrame
    suggested_lr: float


_SMOOTHING = 0.98
_DIVERGED = 4.0  # stop once the smoothed loss exceeds 4 x its minimum (fastai)


def find_lr(net, dataset, start_lr=1e-7, end_lr=10.0, num_it=100, freeze=False):
    """The learning-rate range test (Smith 2015; fastai's ``lr_find``) on an initialised net.

    Trains ``net`` on batches of ``dataset`` (cycling through it as needed) with the rate
    growing exponentially from ``start_lr`` to ``end_lr`` over ``num_it`` batches
    (torch's ``ExponentialLR``; the backbone's group keeps its ratio to the heads'), and
    stops early once the loss diverges. ``net`` is trained: pass a throw-away one.

    Returns
    -------
    LRFindResult
    """
    optimizer = net.optimizer_
    ratios = [group["lr"] / net.lr for group in optimizer.param_groups]
    for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
        group["lr"] = start_lr * ratio
    gamma = (end_lr / start_lr) ** (1 / max(num_it - 1, 1))
    scheduler = lr_scheduler.ExponentialLR(optimizer, gamma)
    multitask_module(net).freeze_backbone(freeze)
    rows, average, best = [], 0.0, math.inf
    while len(rows) < num_it:
        for batch in net.get_iterator(dataset, training=True):
            lr = optimizer.param_groups[0]["lr"]
            loss = net.train_step(batch)["loss"].item()
            average = _SMOOTHING * average + (1 - _SMOOTHING) * loss
            smoothed = average / (1 - _SMOOTHING ** (len(rows) + 1))
            rows.append((lr, loss, smoothed))
            best = min(best, smoothed)
            scheduler.step()
            if not math.isfinite(smoothed) or smoothed > _DIVERGED * best or len(rows) >= num_it:
                break
        if not math.isfinite(smoothed) or smoothed > _DIVERGED * best:
            break
    history = pd.DataFrame(rows, columns=["lr", "loss", "smoothed_loss"])
    return LRFindResult(history, _valley(history))


def _valley(history):
    """fastai's "valley" suggestion: about half-way down the longest valley of the curve.

    The valley is the longest decreasing subsequence of the (finite) smoothed losses; the
    suggestion is the rate at its start plus a third and a sixth of its span.
    """
    finite = np.isfinite(history["smoothed_loss"].to_numpy())
    losses = history["smoothed_loss"].to_numpy()[finite]
    lrs = history["lr"].to_numpy()[finite]
    if len(losses) < 2:
        return float(history["lr"].iloc[0])
    length = np.ones(len(losses), dtype=int)  # of the longest descent ending at each point
    for i in range(1, len(losses)):
        higher = losses[:i] > losses[i]
        if higher.any():
            length[i] = length[:i][higher].max() + 1
    end = int(np.argmax(length))
    start = max(end - int(length[end]), 0)
    third = (end - start) / 3
    return float(lrs[start + int(third) + int(third / 2)])

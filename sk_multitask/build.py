"""Config + plan -> the skorch net: for a fit, and, on the same path, for a loaded model.

:func:`prepare_fit` checks a fit's data against its :class:`~sk_multitask.config.TrainingConfig`
and resolves its :class:`~sk_multitask.config.Plan`; :func:`build_net` builds the network,
the criterion, the callbacks and the net from them; :func:`rebuild_net` is
:func:`build_net` for a model read from a file (no data, no downloaded weights).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Hashable
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from skorch.helper import predefined_split
from torch import nn

from .backbones import (
    build_backbone,
    check_backbone,
    check_single_image_batches,
    default_image_size,
)
from .cache import cached_images
from .callbacks import (
    LR_SCHEDULES,
    DynamicWeightAverage,
    FineTuneSchedule,
    FiniteLoss,
    ResumableEarlyStopping,
    TaskScoring,
    check_callbacks,
    check_monitor,
    checkpoint_callbacks,
    copy_callbacks,
    epoch_table,
    progress_bar,
    run_fingerprint,
)
from .config import (
    Plan,
    check_image_size_bound,
    check_writable_folder,
    resolve_device,
    resolve_num_workers,
    seeded,
)
from .dataset import EpochShuffler, ImageDataset, bad_image_log, train_transform
from .decoding import MAX_TTA, as_size, check_image_size, screen_images
from .distributed import uses_accelerate
from .loss import (
    LOSS_WEIGHTINGS,
    REGRESSION_LOSSES,
    MaskedMultiTaskLoss,
    check_loss_options,
    check_task_losses,
)
from .model import MultiTaskModule
from .net import OPTIMIZERS, AcceleratedMultiTaskNet, MultiTaskNet, make_accelerator
from .sources import input_table, resolve_images
from .targets import (
    check_aligned,
    check_not_inputs,
    check_same_tasks,
    check_sample_weight,
    check_task_names,
    check_trainable,
    data_sizes,
    encode_targets,
    fit_tasks,
    split_rows,
    target_frame,
)
from .weighting import check_class_weight_option, class_weights

__all__ = [
    "DRY_RUN_SIDE",
    "PARAMETER_CONSTRAINTS",
    "FitData",
    "build_net",
    "check_parameters",
    "continue_order",
    "prepare_fit",
    "rebuild_net",
    "rebuild_saved_net",
]


@dataclasses.dataclass(frozen=True)
class FitData:
    """A fit's checked data and plan: everything :func:`build_net` and the estimator use.

    Attributes
    ----------
    tasks : dict
        Task name to fitted :class:`~sk_multitask.targets.Task`.
    plan : Plan
    train_set, valid_set : ImageDataset or None
    n_train : int
        Training rows.
    class_weights : dict or None
        Task name to the class weights of its cross-entropy.
    data_sizes : DataFrame or None
        Rows and labelled cells per task, train and valid.
    skipped : list of (str, str)
        Image files found bad before training, with the reason.
    bad_images : log or None
        The log of images found bad when decoded (``on_bad_image="skip"``).
    fingerprint : str or None
        What the fit depends on, for its checkpoint (``checkpoint_dir``).
    valid_y : DataFrame or None
        The validation rows of ``y``, as given (``fit`` calibrates on them).
    """

    tasks: dict
    plan: Plan
    train_set: Any = None
    valid_set: Any = None
    n_train: int = 0
    class_weights: dict | None = None
    data_sizes: pd.DataFrame | None = None
    skipped: list = dataclasses.field(default_factory=list)
    bad_images: Any = None
    fingerprint: str | None = None
    valid_y: pd.DataFrame | None = None


def prepare_fit(config, X, y, warm=None, sample_weight=None):
    """Check the data and parameters: everything a fit (or ``lr_find``) needs but the net.

    Resolves the images, screens bad ones (``on_bad_image``), splits the rows, fits the
    tasks (or checks them against ``warm``'s, a :class:`~sk_multitask.config.WarmStart`),
    resolves the plan and builds the datasets; ``sample_weight`` (row weights, checked
    here) goes into both datasets, so that the training and the validation loss are
    weighted.

    Every parameter is checked before the first image is opened: those that need no
    data first (:func:`check_parameters`), those that name tasks once ``y`` is read.

    Returns
    -------
    FitData
    """
    image_size = check_parameters(config, warm)
    if warm is not None and image_size != warm.image_size:
        raise ValueError(
            f"warm_start: image_size {image_size} differs from the fitted {warm.image_size}"
        )
    X, y, images, skipped, sample_weight = _screened_inputs(config, X, y, sample_weight)
    rng = check_random_state(config.random_state)
    train, valid = split_rows(X, len(images), config.valid_split, rng)
    tasks, targets, weights = _fitted_targets(config, y, train, valid, warm)
    if sample_weight is not None and not sample_weight[train].any():
        raise ValueError("sample_weight is zero on every training row: there is nothing to train")
    seed = None if config.random_state is None else int(rng.randint(np.iinfo(np.int32).max))
    plan = Plan.resolve(config, image_size, seed=seed, decoded=False, warm=warm)
    check_image_size(images, image_size)
    fingerprint = None
    if config.checkpoint_dir is not None:
        weighted = targets if sample_weight is None else np.column_stack([targets, sample_weight])
        # The resolved size: "auto" and the size it stands for are one run
        params = {**config.learning_params(), "image_size": image_size}
        fingerprint = run_fingerprint(params, images, weighted, train, valid)
    bad_images = bad_image_log(config.on_bad_image)  # None: raise
    images, decoded = cached_images(
        images,
        image_size,
        cache=config.cache,
        max_bytes=config.cache_max_bytes,
        cache_dir=config.cache_dir,
        num_workers=plan.num_workers,
        bad_images=bad_images,
    )
    if decoded and bad_images is not None:  # rows of images that cannot be decoded train nothing
        targets[list(bad_images.read())] = np.nan
    train_set, valid_set = _datasets(
        config, image_size, images, (targets, sample_weight), train, valid, bad_images
    )
    return FitData(
        tasks=tasks,
        plan=dataclasses.replace(plan, num_workers=resolve_num_workers(config, cache=decoded)),
        train_set=train_set,
        valid_set=valid_set,
        n_train=len(train),
        class_weights=weights,
        data_sizes=data_sizes(y, train=train, valid=valid),
        skipped=skipped,
        bad_images=bad_images,
        fingerprint=fingerprint,
        valid_y=None if valid is None else y.iloc[valid],
    )


def _fitted_targets(config, y, train, valid, warm):
    """The tasks fitted on the ``train`` rows (or checked against ``warm``'s), the encoded
    targets and the class weights, with the checks that need the task names."""
    kinds = config.tasks
    if warm is not None:  # a chunk of the data must not infer other kinds than the fit's
        kinds = {n: t.kind for n, t in warm.tasks.items() if n in y.columns} | (kinds or {})
    tasks = fit_tasks(y, kinds, train=train)
    if warm is not None:
        tasks = check_same_tasks(warm.tasks, tasks, warm.method)
    targets = encode_targets(y, tasks)
    check_trainable(y.iloc[train])
    if config.early_stopping:
        check_monitor(config.monitor, tasks, has_valid=valid is not None)
    weights = class_weights(config.class_weight, tasks, y.iloc[train])
    if warm is None:  # a warm start keeps the fitted criterion
        check_task_losses(_task_specs(tasks), config.loss_weights, weights, config.regression_loss)
    return tasks, targets, weights


def check_parameters(config, warm=None):
    """Check every parameter of ``config`` that needs no data; return the image size.

    Run first by :func:`prepare_fit`, so that a bad value fails before any image is
    read: the image size and its bound, the device, the backbone and its weights (by
    name: nothing is downloaded), the callbacks, the values of ``loss_weights``,
    ``class_weight`` and ``regression_loss``, the folders written to, and
    ``batch_size=1`` against the backbone's BatchNorm. ``image_size="auto"`` is the
    backbone's :func:`~sk_multitask.backbones.default_image_size`, or the fitted size
    of the network ``warm`` (a :class:`~sk_multitask.config.WarmStart`) continues.
    """
    check_backbone(config.backbone, config.weights)
    if not isinstance(config.image_size, str) or config.image_size != "auto":
        image_size = as_size(config.image_size)
    elif warm is not None:
        image_size = warm.image_size
    else:
        image_size = default_image_size(config.backbone, config.weights)
    check_image_size_bound(image_size)
    resolve_device(config.device)
    check_callbacks(config.callbacks)
    check_loss_options(config.loss_weights, config.regression_loss)
    check_class_weight_option(config.class_weight)
    check_writable_folder(config.cache_dir, "cache_dir")
    check_writable_folder(config.checkpoint_dir, "checkpoint_dir")
    if config.batch_size == 1:
        check_single_image_batches(config.backbone, image_size)
    return image_size


def _check_named_tasks(config, y):
    """Refuse a per-task parameter naming a column that ``y`` does not have."""
    for parameter in ("tasks", "loss_weights", "class_weight", "regression_loss"):
        mapping = getattr(config, parameter)
        if isinstance(mapping, dict):
            check_task_names(mapping, y.columns, parameter)


def _screened_inputs(config, X, y, sample_weight):
    """``X``, ``y`` and ``sample_weight`` checked and aligned, the image sources, and the
    bad files left out."""
    if y is None:  # scikit-learn's wording, which its tools and checks recognise
        raise ValueError(
            "This MultiTaskImageEstimator estimator requires y to be passed, but the target "
            "y is None: pass one column of targets per task"
        )
    skip = config.on_bad_image == "skip"
    check_aligned(X, y)
    X = input_table(X, config.image_col, config.valid_split)  # a datasets.Dataset: a frame
    images, _ = resolve_images(
        X,
        config.image_col,
        config.image_root,
        check_files=not skip,
        storage_options=config.storage_options,
    )
    y = target_frame(y)
    _check_named_tasks(config, y)
    if len(y) != len(images):
        raise ValueError(f"X has {len(images)} images but y has {len(y)} rows")
    sample_weight = check_sample_weight(sample_weight, len(images))
    keep, skipped = screen_images(images, config.on_bad_image, config.check_images)
    if not keep.all():  # rows of files found bad up front ("skip")
        X = X.iloc[keep] if isinstance(X, (pd.DataFrame, pd.Series)) else X
        y, images = y.iloc[keep], images[keep]
        sample_weight = None if sample_weight is None else sample_weight[keep]
    check_not_inputs(
        y,
        image_col=config.image_col if isinstance(X, pd.DataFrame) else None,
        valid_col=config.valid_split if isinstance(config.valid_split, str) else None,
    )
    return X, y, images, skipped, sample_weight


def _datasets(config, image_size, images, labels, train, valid, bad_images):
    """The training and validation datasets (None: no validation); ``labels`` are the
    encoded targets and the row weights (or None)."""
    targets, weights = labels

    def rows(part):
        return targets[part], None if weights is None else weights[part]

    train_set = ImageDataset(
        images[train],
        *rows(train),
        image_size=image_size,
        transform=train_transform(config.augment),
        bad_images=bad_images,
    )
    if valid is None:
        return train_set, None
    valid_set = ImageDataset(
        images[valid], *rows(valid), image_size=image_size, bad_images=bad_images
    )
    return train_set, valid_set


def build_net(config, data, warm=None):
    """The initialised skorch net that trains on ``data`` (a :class:`FitData`).

    A new network, or, for a warm start (``warm``, a
    :class:`~sk_multitask.config.WarmStart`), a copy of the fitted one with its
    optimizer state and history.
    """
    if warm is None:
        module, criterion = _network(config, data)
    else:
        module = copy.deepcopy(warm.net.module_)
        criterion = copy.deepcopy(warm.net.criterion_)
    params = _net_params(config, data, module, criterion)
    if uses_accelerate(config.accelerator):
        net = _accelerated_net(config, data.plan, params)
    else:
        net = MultiTaskNet(**params)
    net.initialize()
    if warm is not None:
        net.optimizer_.load_state_dict(warm.net.optimizer_.state_dict())
        net.history_ = copy.deepcopy(warm.net.history)
    return net


def continue_order(net):
    """After a checkpoint restored ``net``'s history: the training order (and augmentation)
    continues at the epoch the history reached, as in a run that was never stopped."""
    net.iterator_train__sampler.epoch = len(net.history)


def rebuild_net(config, tasks, image_size, *, device, class_weights=None):
    """An initialised net of the structure ``config`` trains, to load saved parameters into.

    :func:`build_net` without data: the backbone is built without its weights (nothing
    is downloaded); ``class_weights`` (task name to its weights) gives the criterion the
    buffers the saved state has.
    """
    plan = Plan(image_size=as_size(image_size), device=device)
    data = FitData(tasks=tasks, plan=plan, class_weights=class_weights)
    return build_net(dataclasses.replace(config, weights=None), data)


def _network(config, data):
    """A new :class:`~sk_multitask.model.MultiTaskModule` and its loss."""
    tasks, plan = data.tasks, data.plan
    backbone, n_features, (mean, std) = build_backbone(
        config.backbone, config.weights, plan.image_size
    )
    module = MultiTaskModule(
        backbone, n_features, {n: t.n_outputs for n, t in tasks.items()}, mean, std
    )
    # Channels-last input: 25-35% faster convolutions on a CPU here
    # (docs/performance.md); on CUDA, with channels-last weights, cuDNN's fastest.
    module.channels_last = True
    if plan.device.startswith("cuda"):
        module.to(memory_format=torch.channels_last)
    criterion = MaskedMultiTaskLoss(
        _task_specs(tasks),
        config.loss_weights,
        data.class_weights,
        config.regression_loss,
    )
    return module, criterion


def _task_specs(tasks):
    """The loss's ``(name, kind, n_outputs)`` of each task."""
    return [(n, t.kind, t.n_outputs) for n, t in tasks.items()]


def _callbacks(config, data, drop_last):
    """The recipe's callbacks, in order: per-task scoring, the non-finite loss check, the
    learning-rate schedule, dynamic weight average (``loss_weights="dwa"``), early
    stopping, the progress bar (``verbose``), the user's ``callbacks`` (copied), and the
    checkpoint (``checkpoint_dir``: the files, then ``run.pt``), last, so that it saves what
    every other recorded."""
    plan = data.plan
    schedule = FineTuneSchedule(
        config.lr_schedule,
        lr=config.lr,
        backbone_lr_scale=plan.backbone_lr_scale,
        freeze_epochs=plan.freeze_epochs,
        max_epochs=int(config.max_epochs),  # torch's schedulers want int
        start_epoch=plan.start_epoch,
    )
    callbacks = [
        ("task_scoring", TaskScoring(data.tasks)),
        ("finite_loss", FiniteLoss()),
        ("lr_schedule", schedule),
    ]
    if isinstance(config.loss_weights, str) and config.loss_weights == "dwa":
        callbacks.append(("dynamic_weight_average", DynamicWeightAverage()))
    if config.early_stopping:
        stopping = ResumableEarlyStopping(
            config.monitor, config.patience, start_epoch=plan.start_epoch
        )
        callbacks.append(("early_stopping", stopping))
    if config.verbose:
        n_valid = 0 if data.valid_set is None else len(data.valid_set)
        bar = progress_bar(data.n_train, n_valid, config.batch_size, drop_last)
        callbacks.append(("progress_bar", bar))
    check_callbacks(config.callbacks)
    callbacks += copy_callbacks(config.callbacks)
    if config.checkpoint_dir is not None:
        callbacks += checkpoint_callbacks(os.fspath(config.checkpoint_dir), data.fingerprint)
    return callbacks


def _net_params(config, data, module, criterion):
    """The keyword arguments of the :class:`~sk_multitask.net.MultiTaskNet`."""
    plan = data.plan
    # A last batch of 1 would break BatchNorm; shuffling still uses every row.
    drop_last = bool(data.n_train > config.batch_size)
    loader = {"num_workers": plan.num_workers, "pin_memory": plan.device.startswith("cuda")}
    if plan.num_workers:
        loader["persistent_workers"] = True
    # The order and the augmentation come from the seed and the epoch alone, and the
    # loaders' own seed draws from a generator of theirs, never torch's global one: the
    # number of workers changes nothing that trains.
    seed = np.random.SeedSequence().entropy if plan.seed is None else plan.seed
    shuffler = EpochShuffler(data.n_train, seed, epoch=plan.start_epoch)
    loader["generator"] = torch.Generator()
    optimizer = config.optimizer
    if isinstance(optimizer, str):
        optimizer = OPTIMIZERS[optimizer]
    return dict(
        module=module,
        precision=config.precision,
        criterion=criterion,
        optimizer=optimizer,
        # Heads first (their rate is the one recorded), then the backbone at its own
        # rate, then the rest (learned loss weights).
        optimizer__param_groups=[
            ("heads.*", {}),
            ("backbone.*", {"lr": config.lr * plan.backbone_lr_scale}),
        ],
        lr=config.lr,
        max_epochs=config.max_epochs,
        batch_size=int(config.batch_size),  # torch refuses numpy integers (a grid's)
        train_split=None if data.valid_set is None else predefined_split(data.valid_set),
        callbacks=_callbacks(config, data, drop_last),
        iterator_train__drop_last=drop_last,
        iterator_train__sampler=shuffler,
        **{f"iterator_train__{k}": v for k, v in loader.items()},
        **{f"iterator_valid__{k}": v for k, v in loader.items()},
        callbacks__print_log=epoch_table(data.tasks, validation=data.valid_set is not None),
        device=plan.device,
        verbose=config.verbose,
    )


def _accelerated_net(config, plan, params):
    """An :class:`~sk_multitask.net.AcceleratedMultiTaskNet` for this launched process group.

    ``device`` is left to Accelerate (each process its own GPU, or the CPU); the net
    keeps ``params`` for the plain net it becomes after training (``to_local``).
    """
    accelerator = make_accelerator(config.precision, plan.device, params["batch_size"])
    module = params["module"]
    if plan.device.startswith("cuda"):
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    accelerated = {**params, "module": module, "precision": "fp32", "device": None}
    net = AcceleratedMultiTaskNet(accelerator=accelerator, **accelerated)
    net.local_params_ = params
    return net


#: The estimator's parameters and the values each may take (scikit-learn's
#: ``_parameter_constraints``, checked by ``_fit_context`` before anything else).
PARAMETER_CONSTRAINTS = {
    "image_col": [Hashable],
    "image_root": [str, os.PathLike, None],
    "backbone": [str, nn.Module],
    "weights": [str, os.PathLike, None],
    "image_size": [
        Interval(Integral, 1, None, closed="left"),
        tuple,
        list,
        np.ndarray,
        StrOptions({"auto"}),
    ],
    "on_bad_image": [StrOptions({"raise", "skip"})],
    "check_images": ["boolean"],
    "tasks": [dict, None],
    "loss_weights": [dict, StrOptions(set(LOSS_WEIGHTINGS)), None],
    "class_weight": [dict, StrOptions({"balanced"}), None],
    "regression_loss": [dict, StrOptions(set(REGRESSION_LOSSES))],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "lr_schedule": [StrOptions(set(LR_SCHEDULES))],
    "freeze_epochs": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
    "backbone_lr_scale": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
    "early_stopping": ["boolean"],
    "patience": [Interval(Integral, 1, None, closed="left")],
    "monitor": [str],
    "warm_start": ["boolean"],
    "checkpoint_dir": [str, os.PathLike, None],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "optimizer": [StrOptions(set(OPTIMIZERS)), callable],
    "valid_split": [Interval(Real, 0, 1, closed="neither"), str, None],
    "augment": ["boolean"],
    "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
    "cache": ["boolean", StrOptions({"auto"})],
    "cache_max_bytes": [Interval(Integral, 0, None, closed="left"), None],
    "cache_dir": [str, os.PathLike, None],
    "precision": [StrOptions({"fp32", "bf16", "fp16"})],
    "device": [str],
    "accelerator": [StrOptions({"auto"}), None],
    "callbacks": [list, None],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "storage_options": [dict, None],
    "tta": [Interval(Integral, 0, MAX_TTA, closed="both")],
}


#: The largest image side a loaded model's backbone is first tried on, to find its
#: feature size: a file's image size of 4096 must not cost gigabytes at load.
DRY_RUN_SIDE = 256


def rebuild_saved_net(config, saved, device):
    """The net to load ``saved`` (a :class:`~sk_multitask.safe_file.SavedModel`) into.

    The backbone's dry run is at an image size of at most :data:`DRY_RUN_SIDE`: the
    feature size of the built-in backbones (global pooling) does not depend on it.
    A backbone of your own whose features do is rebuilt at the saved image size.
    """
    size = saved.model.image_size
    features = saved.state["module.heads.0.weight"].shape[1]
    with seeded(0, device):  # building draws initial weights: keep torch's RNG as it was
        for dry_run in (tuple(min(side, DRY_RUN_SIDE) for side in size), size):
            net = rebuild_net(
                config, saved.tasks, dry_run, device=device, class_weights=saved.class_weights
            )
            if net.module_.heads[0].in_features == features or isinstance(config.backbone, str):
                break
    return net

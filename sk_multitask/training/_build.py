"""Config + plan -> the skorch net: for a fit, and, on the same path, for a loaded model.

:func:`sk_multitask.training._fit_data.prepare_fit` checks a fit's data against its
:class:`~sk_multitask.training._config.TrainingConfig` and resolves its
:class:`~sk_multitask.training._config.Plan`; :func:`build_net` builds the network,
the criterion, the callbacks and the net from them; :func:`rebuild_net` is
:func:`build_net` for a model read from a file (no data, no downloaded weights).
"""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import torch
from skorch.helper import predefined_split

from ..inputs._dataset import EpochShuffler
from ..inputs._decoding import as_size
from ..network._backbones import build_backbone
from ..network._loss import MaskedMultiTaskLoss
from ..network._model import MultiTaskModule
from ._config import Plan, seeded
from ._distributed import uses_accelerate
from ._fit_data import FitData, task_specs
from ._net import OPTIMIZERS, AcceleratedMultiTaskNet, MultiTaskNet, make_accelerator
from .callbacks import (
    DynamicWeightAverage,
    FineTuneSchedule,
    FiniteLoss,
    ResumableEarlyStopping,
    TaskScoring,
    check_callbacks,
    checkpoint_callbacks,
    copy_callbacks,
    epoch_table,
    progress_bar,
)


def build_net(config, data, warm=None):
    """The initialised skorch net that trains on ``data`` (a :class:`FitData`).

    A new network, or, for a warm start (``warm``, a
    :class:`~sk_multitask.training._config.WarmStart`), a copy of the fitted one with its
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


def rebuild_net(config, tasks, image_size, *, device, class_weights=None, table_encoder=None):
    """An initialised net of the structure ``config`` trains, to load saved parameters into.

    :func:`build_net` without data: the backbone is built without its weights (nothing
    is downloaded); ``class_weights`` (task name to its weights) gives the criterion the
    buffers the saved state has; ``table_encoder`` the width of the table it fuses.
    """
    plan = Plan(image_size=as_size(image_size), device=device)
    data = FitData(
        tasks=tasks, plan=plan, class_weights=class_weights, table_encoder=table_encoder
    )
    return build_net(dataclasses.replace(config, weights=None), data)


def _network(config, data):
    """A new :class:`~sk_multitask.network._model.MultiTaskModule` and its loss."""
    tasks, plan = data.tasks, data.plan
    backbone, n_features, (mean, std) = build_backbone(
        config.backbone, config.weights, plan.image_size
    )
    module = MultiTaskModule(
        backbone,
        n_features,
        {n: t.n_outputs for n, t in tasks.items()},
        mean,
        std,
        n_table=data.n_table,
        fusion_width=config.fusion_width,
        fusion_depth=config.fusion_depth,
    )
    # Channels-last input: 25-35% faster convolutions on a CPU here
    # (docs/performance.md); on CUDA, with channels-last weights, cuDNN's fastest.
    module.channels_last = True
    if plan.device.startswith("cuda"):
        module.to(memory_format=torch.channels_last)
    criterion = MaskedMultiTaskLoss(
        task_specs(tasks),
        config.loss_weights,
        data.class_weights,
        config.regression_loss,
    )
    return module, criterion


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
    """The keyword arguments of the :class:`~sk_multitask.training._net.MultiTaskNet`."""
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
    """An :class:`~sk_multitask.training._net.AcceleratedMultiTaskNet` for this launched
    process group.

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


#: The largest image side a loaded model's backbone is first tried on, to find its
#: feature size: a file's image size of 4096 must not cost gigabytes at load.
DRY_RUN_SIDE = 256


def rebuild_saved_net(config, saved, device, table_encoder=None):
    """The net to load ``saved`` (a :class:`~sk_multitask.persistence._safe_file.SavedModel`) into.

    The backbone's dry run is at an image size of at most :data:`DRY_RUN_SIDE`: the
    feature size of the built-in backbones (global pooling) does not depend on it.
    A backbone of your own whose features do is rebuilt at the saved image size.
    ``table_encoder``: the model's encoding of its table columns (None: images only).
    """
    size = saved.model.image_size
    encoder = table_encoder
    # The first linear layer reading the backbone's features: the fusion MLP's (after its
    # BatchNorm), else the heads'.
    first = "module.fusion.1.weight" if encoder is not None else "module.heads.0.weight"
    features = saved.state[first].shape[1]
    with seeded(0, device):  # building draws initial weights: keep torch's RNG as it was
        for dry_run in (tuple(min(side, DRY_RUN_SIDE) for side in size), size):
            net = rebuild_net(
                config, saved.tasks, dry_run, device=device, class_weights=saved.class_weights,
                table_encoder=encoder,
            )
            layer = net.module_.fusion[1] if encoder is not None else net.module_.heads[0]
            if layer.in_features == features or isinstance(config.backbone, str):
                break
    return net

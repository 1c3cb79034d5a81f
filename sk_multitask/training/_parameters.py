"""The estimator's parameters: the values each may take, and the checks that need no data.

:data:`PARAMETER_CONSTRAINTS` is scikit-learn's ``_parameter_constraints`` of
:class:`~sk_multitask.estimator.MultiTaskImageEstimator` (the command line takes its
choices from it too); :func:`check_parameters` checks what the constraints cannot (the
image size's bound, the device, the backbone and its weights by name, the callbacks,
the loss options, the folders written to) before any image is read.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ..inputs._decoding import MAX_TTA, as_size
from ..network._backbones import check_backbone, check_single_image_batches, default_image_size
from ..network._loss import LOSS_WEIGHTINGS, REGRESSION_LOSSES, check_loss_options
from ..network._weighting import check_class_weight_option
from ..targets import check_task_names
from ._config import check_image_size_bound, check_writable_folder, resolve_device
from ._net import OPTIMIZERS
from .callbacks import LR_SCHEDULES, check_callbacks


def check_parameters(config, warm=None):
    """Check every parameter of ``config`` that needs no data; return the image size.

    Run first by :func:`~sk_multitask.training._fit_data.prepare_fit`, so that a bad value fails
    before any image is read: the image size and its bound, the device, the backbone and
    its weights (by name: nothing is downloaded), the callbacks, the values of
    ``loss_weights``, ``class_weight`` and ``regression_loss``, the folders written to, and
    ``batch_size=1`` against the backbone's BatchNorm. ``image_size="auto"`` is the
    backbone's :func:`~sk_multitask.network._backbones.default_image_size`, or the fitted size
    of the network ``warm`` (a :class:`~sk_multitask.training._config.WarmStart`) continues.
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


def check_named_tasks(config, y):
    """Refuse a per-task parameter naming a column that ``y`` does not have."""
    for parameter in ("tasks", "loss_weights", "class_weight", "regression_loss"):
        mapping = getattr(config, parameter)
        if isinstance(mapping, dict):
            check_task_names(mapping, y.columns, parameter)


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

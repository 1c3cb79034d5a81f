"""What a fit is asked (:class:`TrainingConfig`) and what it resolves that to (:class:`Plan`).

The training machinery (:mod:`sk_multitask.training._build`) reads these two frozen dataclasses,
never the estimator: the config is the estimator's parameters as given
(``get_params(deep=False)``), the plan the values its ``"auto"`` settings stand for on
this machine and data (device, workers, frozen epochs, the backbone's rate), the seed
drawn from ``random_state``, and whether the fit continues a fitted network. The config's
fields are the rows of the parameter table (:mod:`sk_multitask.training._parameters`);
:func:`check_parameters` checks what their constraints cannot (the image size's bound,
the device, the backbone and its weights by name, the callbacks, the loss options, the
folders written to) before any image is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import torch

from ..inputs._decoding import MAX_IMAGE_SIZE, as_size
from ..inputs._files import check_folder_named, unwritable
from ..network._backbones import (
    check_backbone,
    check_single_image_batches,
    default_image_size,
    has_pretrained_weights,
)
from ..network._loss import check_loss_options
from ..network._weighting import check_class_weight_option
from ..targets import check_task_names
from ._net import check_optimizer
from ._parameters import DEFAULTS, FINGERPRINT_PARAMS, NETWORK_PARAMS, check_secret_params
from .callbacks import check_callbacks


class _ConfigMethods:
    """The methods of :class:`TrainingConfig`, whose fields are the parameter table's."""

    @classmethod
    def from_estimator(cls, estimator):
        """The config of ``estimator``'s parameters (``get_params(deep=False)``)."""
        params = estimator.get_params(deep=False)
        return cls(**{field.name: params[field.name] for field in dataclasses.fields(cls)})

    def learning_params(self):
        """The parameters that decide what a fit learns (a checkpoint's fingerprint):
        :data:`~sk_multitask.training._parameters.FINGERPRINT_PARAMS`."""
        return {name: getattr(self, name) for name in FINGERPRINT_PARAMS}

    def network_params(self):
        """The parameters that decide the network a fit builds (fixed by the fit):
        :data:`~sk_multitask.training._parameters.NETWORK_PARAMS`."""
        return {name: getattr(self, name) for name in NETWORK_PARAMS}

    def one_epoch(self):
        """The config of one ``partial_fit`` call: one epoch, continuing the fitted
        network as ``warm_start`` does, without early stopping or checkpoints (as
        scikit-learn's ``MLPClassifier.partial_fit`` ignores ``early_stopping``)."""
        return dataclasses.replace(
            self, max_epochs=1, warm_start=True, early_stopping=False, checkpoint_dir=None
        )


#: The estimator's parameters, as given, frozen: one field per row of the parameter
#: table (:data:`~sk_multitask.training._parameters.PARAMETERS`), with its default.
TrainingConfig = dataclasses.make_dataclass(
    "TrainingConfig",
    [(name, Any, dataclasses.field(default=default)) for name, default in DEFAULTS.items()],
    bases=(_ConfigMethods,),
    namespace={
        "__module__": __name__,
        "__doc__": "The estimator's parameters, as given: see "
        ":class:`~sk_multitask.MultiTaskImageEstimator` for each.",
    },
    frozen=True,
)


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """The fitted state a ``warm_start`` fit (or a ``partial_fit`` call) continues from."""

    net: Any
    tasks: dict
    image_size: tuple
    #: Whether the first fit started from pretrained weights (it keeps their recipe).
    pretrained: bool
    #: What continues it, for the errors: ``"warm_start"`` or ``"partial_fit"``.
    method: str = "warm_start"
    #: The fitted encoding of the table columns (None: images only), kept by the fit.
    table_encoder: Any = None


@dataclasses.dataclass(frozen=True)
class Plan:
    """The resolved values of one fit: what its ``"auto"`` parameters stand for.

    Attributes
    ----------
    image_size : (int, int)
    device : str
        A torch device.
    seed : int or None
        torch's seed, drawn from ``random_state`` after the validation split.
    num_workers : int
        DataLoader worker processes.
    freeze_epochs : int
    backbone_lr_scale : float
    pretrained : bool
        Whether the backbone started from pretrained weights (in this fit or, for a
        warm start, in the first).
    start_epoch : int
        Epochs of history before this fit (a warm start's).
    continuing : bool
        Whether the fit continues a fitted network (``warm_start``).
    """

    image_size: tuple
    device: str
    seed: int | None = None
    num_workers: int = 0
    freeze_epochs: int = 0
    backbone_lr_scale: float = 1.0
    pretrained: bool = False
    start_epoch: int = 0
    continuing: bool = False

    @classmethod
    def resolve(cls, config, image_size, *, seed, decoded, warm=None):
        """The plan of a fit of ``config``; ``decoded``: whether the images are decoded
        already (cached), ``warm``: the :class:`WarmStart` it continues, if any."""
        continuing = warm is not None
        pretrained = not continuing and has_pretrained_weights(config.backbone, config.weights)
        freeze_epochs = config.freeze_epochs
        if continuing:
            freeze_epochs = 0
        elif freeze_epochs == "auto":
            freeze_epochs = int(pretrained and config.max_epochs > 1)
        scale = config.backbone_lr_scale
        if scale == "auto":  # a warm start keeps the first fit's choice
            scale = 0.1 if pretrained or (continuing and warm.pretrained) else 1.0
        return cls(
            image_size=image_size,
            device=resolve_device(config.device),
            seed=seed,
            num_workers=resolve_num_workers(config, cache=decoded),
            freeze_epochs=int(freeze_epochs),
            backbone_lr_scale=float(scale),
            pretrained=pretrained or (continuing and warm.pretrained),
            start_epoch=len(warm.net.history) if continuing else 0,
            continuing=continuing,
        )


def check_parameters(config, warm=None):
    """Check every parameter of ``config`` that needs no data; return the image size.

    Run first by :func:`~sk_multitask.training._fit_data.prepare_fit`, so that a bad value fails
    before any image is read: the image size and its bound, the device, the backbone and
    its weights (by name: nothing is downloaded), a callable optimizer (one probe call),
    the callbacks, the values of
    ``loss_weights``, ``class_weight`` and ``regression_loss``, the folders written to, and
    ``batch_size=1`` against the backbone's BatchNorm. ``image_size="auto"`` is the
    backbone's :func:`~sk_multitask.network._backbones.default_image_size`, or the fitted size
    of the network ``warm`` (a :class:`WarmStart`) continues.
    """
    check_secret_params(vars(config))
    check_backbone(config.backbone, config.weights)
    if not isinstance(config.image_size, str) or config.image_size != "auto":
        image_size = as_size(config.image_size)
    elif warm is not None:
        image_size = warm.image_size
    else:
        image_size = default_image_size(config.backbone, config.weights)
    check_image_size_bound(image_size)
    resolve_device(config.device)
    check_optimizer(config.optimizer, config.lr)
    check_callbacks(config.callbacks)
    check_loss_options(config.loss_weights, config.regression_loss)
    check_class_weight_option(config.class_weight)
    check_writable_folder(config.cache_dir, "cache_dir", readable=True)
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



def resolve_num_workers(config, cache):
    """The DataLoader worker count that the ``num_workers`` parameter stands for.

    ``config``: a :class:`TrainingConfig` (or the estimator: the same names); ``cache``:
    whether the images are decoded already (nothing left for workers to do).
    """
    if config.num_workers != "auto":
        return config.num_workers
    if cache and not config.augment:
        return 0
    if resolve_device(config.device).startswith("cuda"):
        return min(8, os.cpu_count() or 1)
    # On a CPU every core already trains the network (torch's intra-op threads): a
    # worker process would oversubscribe them, which cost 5-10x per epoch on 2 cores.
    return 0


def check_image_size_bound(image_size):
    """Refuse an ``image_size`` (a ``(height, width)`` pair) with a side over
    :data:`sk_multitask.inputs._decoding.MAX_IMAGE_SIZE`."""
    if max(image_size) > MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size {tuple(image_size)} is too large: each side must be at most "
            f"{MAX_IMAGE_SIZE} pixels (images are resized to it, in memory, batch by batch)"
        )


def check_writable_folder(path, parameter, readable=False):
    """Refuse a folder (``cache_dir``, ``checkpoint_dir``) that is named by an empty
    string, or cannot be created or written, before any data is read; a folder that
    does not exist yet is not created.

    With ``readable`` (a disk cache, which may hold every image already), an existing
    folder that can be read passes: whether something must be written into it is known
    once the images are (:func:`~sk_multitask.inputs._disk_cache.disk_cached_images`).

    Raises
    ------
    ValueError
        Naming the parameter, the path and the cause.
    """
    if path is None:
        return
    check_folder_named(path, parameter)
    path = os.path.abspath(os.fspath(path))
    if readable and os.path.isdir(path) and os.access(path, os.R_OK | os.X_OK):
        return
    cause = unwritable(path)
    if cause is not None:
        raise ValueError(f"{parameter}={path!r} cannot be written: {cause}")


def resolve_device(device):
    """The torch device that the ``device`` parameter stands for ("auto": CUDA if any)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"device={device!r} is not a torch device ('auto', 'cpu', 'cuda', "
            f"'cuda:1', 'mps'...): {exc}"
        ) from exc
    if torch.device(device).type == "meta":
        raise ValueError(
            f"device={device!r} holds no data (tensors of shapes only); use 'auto', 'cpu' "
            "or 'cuda'"
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return device


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

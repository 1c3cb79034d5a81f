"""Backbones: the feature extractor a :class:`~sk_multitask.model.MultiTaskModule` starts with.

The backbone comes from torchvision's model registry (its classifier replaced by the
identity), is the small built-in :class:`SimpleCNN`, or is the user's own module. Its
``weights`` (torchvision's pretrained weights or a local state-dict file) are handled here.
"""

from __future__ import annotations

import copy
import os
import pickle

import torch
import torchvision
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SimpleCNN",
    "build_backbone",
    "check_backbone",
    "check_single_image_batches",
    "has_pretrained_weights",
    "is_torchvision_classifier",
]

#: ImageNet's per-channel mean (images in [0, 1]): the normalisation used when the weights
#: carry none.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet's per-channel standard deviation (images in [0, 1]): torchvision's normalisation.
IMAGENET_STD = (0.229, 0.224, 0.225)


class SimpleCNN(nn.Sequential):
    """A small CNN for fast training on a CPU: four conv-BN-ReLU-pool stages.

    Maps ``(N, 3, H, W)`` to ``(N, 8 * width)`` features by global average pooling.

    Parameters
    ----------
    width : int, default=32
        Channels of the first stage; each later stage doubles them.
    """

    def __init__(self, width=32):
        layers, channels = [], 3
        for stage in range(4):
            out = width * 2**stage
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2) if stage < 3 else nn.AdaptiveAvgPool2d(1),
            ]
            channels = out
        super().__init__(*layers, nn.Flatten())


def _is_weights_file(weights):
    if isinstance(weights, os.PathLike):
        return True
    return os.path.sep in weights or weights.endswith((".pt", ".pth")) or os.path.isfile(weights)


def _load_weights_file(model, path, backbone):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}")
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    # UnpicklingError, KeyError: a whole pickled model or not a torch file at all.
    except (
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        RuntimeError,
        TypeError,
        AttributeError,
    ) as exc:
        raise ValueError(
            f"the weights file {path!r} is not a state dict of backbone {backbone!r}: {exc}"
        ) from exc


def _registry_weights(name, weights):
    available = torchvision.models.get_model_weights(name)
    try:
        return available[weights.rsplit(".", 1)[-1]]
    except KeyError:
        raise ValueError(
            f"unknown weights {weights!r} for backbone {name!r}; expected None, a "
            f"local state-dict file, 'DEFAULT' or one of {[w.name for w in available]}"
        ) from None


def _registry_model(name, weights):
    """A torchvision model with the requested weights, and their normalisation."""
    if weights is None or _is_weights_file(weights):
        model = torchvision.models.get_model(name, weights=None)
        if weights is not None:
            _load_weights_file(model, weights, name)
        return model, (IMAGENET_MEAN, IMAGENET_STD)
    enum = _registry_weights(name, weights)
    try:
        model = torchvision.models.get_model(name, weights=enum)
    except OSError as exc:  # urllib's errors when offline are OSErrors
        raise RuntimeError(
            f"could not download the pretrained weights {enum} for backbone {name!r} "
            f"({exc}). Pass weights=None to train from scratch, or weights= the path "
            "of a local state-dict file (as saved by torch.save(model.state_dict()))."
        ) from exc
    preset = enum.transforms()
    return model, (tuple(preset.mean), tuple(preset.std))


def _strip_classifier(model, name):
    """Replace the registry model's last linear layer by the identity."""
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"backbone {name!r} has no linear classifier to replace")
    model.set_submodule(linear[-1], nn.Identity())
    return model


def has_pretrained_weights(backbone, weights):
    """Whether ``build_backbone(backbone, weights)`` starts from trained weights.

    True for a local weights file, and for torchvision weights of a registry backbone;
    ``"DEFAULT"`` names no weights for ``"simple_cnn"`` or a module of the user's.

    Examples
    --------
    >>> has_pretrained_weights("resnet18", "DEFAULT")
    True
    >>> has_pretrained_weights("simple_cnn", "DEFAULT")
    False
    """
    if weights is None:
        return False
    if _is_weights_file(weights):
        return True
    return not (isinstance(backbone, nn.Module) or backbone == "simple_cnn")


def is_torchvision_classifier(module):
    """Whether ``module`` is one of torchvision's classification models (it ends in a classifier).

    Examples
    --------
    >>> import torchvision
    >>> is_torchvision_classifier(torchvision.models.resnet18())
    True
    >>> is_torchvision_classifier(SimpleCNN())
    False
    """
    name = type(module).__module__
    detection = ("detection", "segmentation", "video", "optical_flow")
    return name.startswith("torchvision.models.") and name.split(".")[2] not in detection


def build_backbone(backbone, weights=None, image_size=(224, 224)):
    """The feature extractor, its feature size and its input normalisation.

    Parameters
    ----------
    backbone : str or nn.Module
        ``"simple_cnn"``, a classification model name of torchvision's registry
        (``torchvision.models.list_models(module=torchvision.models)``), or a module
        mapping ``(N, 3, H, W)`` float images to feature vectors (it is copied). A
        torchvision classification model given as an instance (``resnet18()``)
        loses its classifier, as a registry name does: its last linear layer
        becomes the identity.
    weights : str, path or None
        torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``) for a registry
        backbone, or a local state-dict file for any backbone, or None. ``"DEFAULT"``
        means the backbone's default pretrained weights where it has some: random
        weights for ``"simple_cnn"`` and a module of the user's.
    image_size : (int, int)
        Input size for the dry run that finds the feature size.

    Returns
    -------
    module : nn.Module
    n_features : int
    normalisation : ((float, float, float), (float, float, float))
        Per-channel mean and std for images scaled to [0, 1].
    """
    check_backbone(backbone, weights)
    normalisation = (IMAGENET_MEAN, IMAGENET_STD)
    if _is_own(backbone):
        own = isinstance(backbone, nn.Module)
        module = copy.deepcopy(backbone) if own else SimpleCNN()
        label = type(backbone).__name__ if own else backbone
        if weights is not None and weights != "DEFAULT":
            _load_weights_file(module, weights, label)
        if is_torchvision_classifier(module):
            module = _strip_classifier(module, label)
    else:
        model, normalisation = _registry_model(backbone, weights)
        module, label = _strip_classifier(model, backbone), backbone
    return module, _feature_size(module, label, image_size), normalisation


def _is_own(backbone):
    """Whether ``backbone`` is built here (``"simple_cnn"``, a module), not by torchvision."""
    return isinstance(backbone, nn.Module) or backbone == "simple_cnn"


def check_backbone(backbone, weights):
    """Refuse an unknown backbone name or weights it cannot have, building nothing.

    Raises
    ------
    ValueError
        Naming the backbone and the kinds of value accepted, or the weights.
    FileNotFoundError
        For a weights file that does not exist.

    Examples
    --------
    >>> check_backbone("resnet", None)
    Traceback (most recent call last):
    ...
    ValueError: unknown backbone 'resnet': expected 'simple_cnn', a classification model ...
    """
    registry = not _is_own(backbone)
    if registry and backbone not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(
            f"unknown backbone {backbone!r}: expected 'simple_cnn', a classification "
            "model of torchvision's registry (e.g. 'resnet18'), or a torch.nn.Module"
        )
    if weights is None or (weights == "DEFAULT" and not registry):
        return
    if _is_weights_file(weights):
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights file not found: {os.fspath(weights)!r}")
    elif registry:
        _registry_weights(backbone, weights)
    else:
        label = type(backbone).__name__ if isinstance(backbone, nn.Module) else backbone
        raise ValueError(
            f"weights={weights!r} names torchvision weights, which backbone "
            f"{label!r} does not have; pass weights=None (or 'DEFAULT') or the "
            "path of a local state-dict file"
        )


def check_single_image_batches(backbone, image_size):
    """Refuse ``batch_size=1`` where the backbone's BatchNorm cannot train on one image.

    BatchNorm in training needs more than one value per channel: a batch of one image
    fails once a layer's feature map is 1 x 1. A weight-free copy of the backbone trains
    one step's forward pass on one blank image to find out.

    Raises
    ------
    ValueError
        Naming the backbone, the image size and the remedies.
    """
    if isinstance(backbone, nn.Module):
        module = copy.deepcopy(backbone)
    elif backbone == "simple_cnn":
        module = SimpleCNN()
    else:
        module = torchvision.models.get_model(backbone, weights=None)
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return
    module.train()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            module(torch.zeros(1, 3, *image_size))
    except ValueError as exc:
        if "more than 1 value per channel" not in str(exc):
            raise
        label = type(backbone).__name__ if isinstance(backbone, nn.Module) else backbone
        raise ValueError(
            f"batch_size=1 cannot train backbone {label!r} at image_size "
            f"{tuple(image_size)}: its BatchNorm layers need more than one value per "
            "channel; use batch_size >= 2 or a larger image_size"
        ) from None


def _feature_size(module, label, image_size):
    """Find the feature size by a dry run on a small batch."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            features = module(torch.zeros(2, 3, *image_size))
    except Exception as exc:  # any failure of a user's module gets the same context
        raise ValueError(
            f"backbone {label!r} failed on a batch of images of size {tuple(image_size)}: {exc}"
        ) from exc
    finally:
        module.train(was_training)
    if not isinstance(features, torch.Tensor) or features.ndim < 2:
        raise ValueError(
            f"backbone {label!r} must map images (N, 3, H, W) to feature vectors "
            f"(N, F); it returned {type(features).__name__} "
            f"{tuple(getattr(features, 'shape', ()))}"
        )
    return int(features[0].numel())

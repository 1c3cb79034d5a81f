"""Backbones: the feature extractor a :class:`~sk_multitask.network._model.MultiTaskModule`
starts with.

The backbone comes from torchvision's model registry or from timm (``"timm/<name>"``),
their classifier removed, is the small built-in :class:`SimpleCNN`, or is the user's own
module. Its ``weights`` (pretrained weights by name, downloaded once, or a local weights
file read by :mod:`sk_multitask.network._weight_files`) and its input normalisation are resolved
here, by one path for every kind of backbone.
"""

from __future__ import annotations

import copy
import os

import torch
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from ._weight_files import load_weights_file

#: ImageNet's per-channel mean (images in [0, 1]): the normalisation used when the weights
#: carry none.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet's per-channel standard deviation (images in [0, 1]): torchvision's normalisation.
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The input size of a backbone that states none: torchvision's ImageNet crop.
DEFAULT_IMAGE_SIDE = 224
#: The prefix of a timm backbone's name: ``"timm/<name>"`` is its Hugging Face hub id.
TIMM_PREFIX = "timm/"
#: The ``weights`` of a module of the user's whose weights are trained already.
PRETRAINED = "pretrained"
#: The suffixes that make a ``weights`` string a path (as a separator does): the files
#: ``torch.save`` and ``safetensors`` write, by their usual names.
WEIGHTS_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar")


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
    """Whether ``weights`` is a path: a ``Path``, or a string with a folder separator or
    a weights file's suffix. Never whether such a file exists: a name of the registry's
    ("DEFAULT") stays a name whatever the working folder holds."""
    if isinstance(weights, os.PathLike):
        return True
    separators = {"/", os.sep, os.altsep} - {None}
    return any(s in weights for s in separators) or weights.lower().endswith(WEIGHTS_SUFFIXES)


def _as_path_hint(weights):
    # The ambiguous case: a bare word is a name, never a file of the working folder.
    return (
        f"a bare name is never read as a file: to read the file {weights!r}, pass "
        f"'./{weights}' or pathlib.Path({weights!r})"
    )


def _is_timm_name(backbone):
    return isinstance(backbone, str) and backbone.startswith(TIMM_PREFIX)


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError(
            'backbone "timm/<name>" needs timm: pip install "sk-multitask[timm]"'
        ) from None
    return timm


def _label(backbone):
    return type(backbone).__name__ if isinstance(backbone, nn.Module) else backbone


def _bare_model(backbone):
    """The backbone's model, weights as initialised (or, for a module, as given)."""
    if isinstance(backbone, nn.Module):
        return copy.deepcopy(backbone)
    if backbone == "simple_cnn":
        return SimpleCNN()
    if _is_timm_name(backbone):
        return _timm().create_model(backbone.removeprefix(TIMM_PREFIX), num_classes=0)
    return torchvision.models.get_model(backbone, weights=None)


def _registry_weights(name, weights):
    """The torchvision weights ``weights`` names: ``"DEFAULT"``, a member's name
    (``"IMAGENET1K_V1"``) or its qualified name (``"ResNet18_Weights.IMAGENET1K_V1"``)."""
    available = torchvision.models.get_model_weights(name)
    enum, _, member = weights.rpartition(".")
    if enum in ("", available.__name__) and member in available.__members__:
        return available[member]
    raise ValueError(
        f"unknown weights {weights!r} for backbone {name!r}; expected None, the path of "
        f"a local state-dict file, 'DEFAULT' or one of {[w.name for w in available]}; "
        + _as_path_hint(weights)
    )


def _offline_error(weights, backbone, exc):
    # "weights=None" and "weights=PATH": the command line's messages name its option
    # (--weights none, --weights PATH), as for every parameter (cli_options.as_options).
    return RuntimeError(
        f"could not download the pretrained weights {weights} for backbone {backbone!r} "
        f"({exc}). Pass weights=None to train from scratch, or weights=PATH, the path "
        "of a local state-dict file (as saved by torch.save(model.state_dict()))."
    )


def _pretrained_model(backbone, weights):
    """A registry backbone with its downloaded pretrained weights, and their normalisation."""
    if _is_timm_name(backbone):
        name = backbone.removeprefix(TIMM_PREFIX)
        path = _timm_weights_file(_timm().models.get_pretrained_cfg(name), backbone)
        model = _timm().create_model(
            name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": path}
        )
        return model, _normalisation(model)
    enum = _registry_weights(backbone, weights)
    try:
        model = torchvision.models.get_model(backbone, weights=enum)
    except OSError as exc:  # urllib's errors when offline are OSErrors
        raise _offline_error(enum, backbone, exc) from exc
    preset = enum.transforms()
    return model, (tuple(preset.mean), tuple(preset.std))


def _timm_weights_file(cfg, backbone):
    """The local path of a timm model's pretrained weights: cached, or downloaded now."""
    from huggingface_hub import (
        get_hf_file_metadata,
        hf_hub_download,
        hf_hub_url,
        try_to_load_from_cache,
    )
    from huggingface_hub.errors import EntryNotFoundError

    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"timm has no pretrained weights for backbone {backbone!r}")
    repo = cfg.hf_hub_id
    files = (
        [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    )
    for name in files:
        cached = try_to_load_from_cache(repo, name)
        if isinstance(cached, str):
            return cached
    for name in files:
        # One request without retries first: offline, huggingface_hub would retry for
        # about 25 s per file before giving up.
        try:
            get_hf_file_metadata(hf_hub_url(repo, name), timeout=10)
        except EntryNotFoundError:
            continue
        except Exception as exc:  # httpx's, or huggingface_hub's offline-mode error
            raise _offline_error(f"'DEFAULT' ({repo})", backbone, exc) from exc
        return hf_hub_download(repo, name)
    raise ValueError(f"the Hugging Face hub has no weights file for backbone {backbone!r} ({repo})")


def _timm_data_config(backbone):
    """timm's data config (``input_size``, ``mean``, ``std``...) of a timm backbone, by
    name or as a module with a ``pretrained_cfg``; None for the others."""
    if _is_timm_name(backbone):
        cfg = _timm().models.get_pretrained_cfg(backbone.removeprefix(TIMM_PREFIX))
        if cfg is None:
            return None
        return _timm().data.resolve_model_data_config(None, pretrained_cfg=cfg.to_dict())
    if getattr(backbone, "pretrained_cfg", None):
        return _timm().data.resolve_model_data_config(backbone)
    return None


def _normalisation(module):
    """A timm model's normalisation (timm's data config); ImageNet's for the others."""
    config = _timm_data_config(module)
    if config is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(map(float, config["mean"])), tuple(map(float, config["std"]))


def _is_timm_model(module):
    return type(module).__module__.startswith("timm.") and hasattr(module, "reset_classifier")


def _without_classifier(model, label):
    """The model with its classifier removed: timm's ``reset_classifier(0)``, or, for a
    torchvision classifier, its last linear layer replaced by the identity."""
    if _is_timm_model(model):
        model.reset_classifier(0)
        return model
    if not is_torchvision_classifier(model):
        return model
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"backbone {label!r} has no linear classifier to replace")
    model.set_submodule(linear[-1], nn.Identity())
    return model


def _names_weights(backbone, weights):
    """Whether ``weights`` names pretrained weights to download (torchvision's, timm's)."""
    return not (
        weights is None
        or weights == PRETRAINED
        or _is_weights_file(weights)
        or isinstance(backbone, nn.Module)
        or backbone == "simple_cnn"
    )


def has_pretrained_weights(backbone, weights):
    """Whether ``build_backbone(backbone, weights)`` starts from trained weights.

    True for a local weights file, for torchvision or timm weights of a registry
    backbone, and for a module of the user's with ``weights="pretrained"``;
    ``"DEFAULT"`` names no weights for ``"simple_cnn"`` or a module of the user's.

    Examples
    --------
    >>> has_pretrained_weights("resnet18", "DEFAULT")
    True
    >>> has_pretrained_weights("simple_cnn", "DEFAULT")
    False
    >>> has_pretrained_weights(SimpleCNN(), "pretrained")
    True
    """
    if weights is None:
        return False
    return weights == PRETRAINED or _is_weights_file(weights) or _names_weights(backbone, weights)


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
        (``torchvision.models.list_models(module=torchvision.models)``), ``"timm/<name>"``
        (a timm model by its Hugging Face hub id, e.g. ``"timm/resnet18.a1_in1k"``;
        needs the ``timm`` extra), or a module mapping ``(N, 3, H, W)`` float images
        to feature vectors (it is copied). A classifier is removed: a timm model's by
        ``reset_classifier(0)``, a torchvision classification model's (by name or
        instance) by making its last linear layer the identity.
    weights : str, path or None
        ``"DEFAULT"``: a registry backbone's default pretrained weights (a torchvision
        name may also name others, ``"IMAGENET1K_V1"``); the weights as given for
        ``"simple_cnn"`` (random) and a module of the user's. ``"pretrained"``: a
        module of the user's whose weights are trained already (the recipe then
        fine-tunes it). A local weights file for any backbone (see
        :func:`sk_multitask.network._weight_files.load_weights_file`): a ``Path``, or a
        string with a folder separator or a suffix of :data:`WEIGHTS_SUFFIXES`
        (``"./DEFAULT"``, ``"resnet.pth"``); a bare name is a name, never read as a file,
        whatever the working folder holds. None: random weights (a module's as given).
    image_size : (int, int)
        Input size for the dry run that finds the feature size.

    Returns
    -------
    module : nn.Module
    n_features : int
    normalisation : ((float, float, float), (float, float, float))
        Per-channel mean and std for images scaled to [0, 1]: the pretrained weights'
        (torchvision's transforms, timm's data config), else ImageNet's.
    """
    check_backbone(backbone, weights)
    label = _label(backbone)
    if _names_weights(backbone, weights):
        module, normalisation = _pretrained_model(backbone, weights)
    else:
        module = _bare_model(backbone)
        normalisation = _normalisation(module)
    module = _without_classifier(module, label)
    if weights is not None and _is_weights_file(weights):
        load_weights_file(module, weights, label)
    return module, _feature_size(module, label, image_size), normalisation


def default_image_size(backbone, weights=None):
    """The backbone's own input size ``(height, width)``: what ``image_size="auto"`` means.

    A timm backbone's ``input_size`` in timm's data config (by name, whatever its
    ``weights``, or a timm module with a ``pretrained_cfg``); the crop size of a
    torchvision backbone's named weights (their ``transforms()``); 224 x 224 for the
    others (``"simple_cnn"``, a torchvision backbone without named weights, a module of
    the user's). Reads no weights: nothing is downloaded.

    Examples
    --------
    >>> default_image_size("inception_v3", "DEFAULT")
    (299, 299)
    >>> default_image_size("simple_cnn")
    (224, 224)
    """
    if _names_weights(backbone, weights) and not _is_timm_name(backbone):
        crop = _registry_weights(backbone, weights).transforms().crop_size
        return tuple(int(side) for side in (crop * 2)[:2])  # a list of one side or two
    config = _timm_data_config(backbone)
    if config is None:
        return (DEFAULT_IMAGE_SIDE, DEFAULT_IMAGE_SIDE)
    return tuple(int(side) for side in config["input_size"][-2:])


def check_backbone(backbone, weights):
    """Refuse an unknown backbone name or weights it cannot have, building nothing.

    Raises
    ------
    ValueError
        Naming the backbone and the kinds of value accepted, or the weights.
    FileNotFoundError
        For a weights file that does not exist.
    ImportError
        For a timm backbone without timm installed, naming the extra.

    Examples
    --------
    >>> check_backbone("resnet", None)
    Traceback (most recent call last):
    ...
    ValueError: unknown backbone 'resnet': expected 'simple_cnn', a classification model ...
    """
    own = isinstance(backbone, nn.Module) or backbone == "simple_cnn"
    if _is_timm_name(backbone):
        _check_timm_name(backbone)
    elif not own and backbone not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(
            f"unknown backbone {backbone!r}: expected 'simple_cnn', a classification "
            "model of torchvision's registry (e.g. 'resnet18'), 'timm/<name>' (e.g. "
            "'timm/resnet18'), or a torch.nn.Module"
        )
    if weights is None or (weights == "DEFAULT" and own):
        return
    if weights == PRETRAINED and isinstance(backbone, nn.Module):
        return
    if _is_weights_file(weights):
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights file not found: {os.fspath(weights)!r}")
    elif _is_timm_name(backbone):
        if weights != "DEFAULT":
            raise ValueError(
                f"unknown weights {weights!r} for backbone {backbone!r}; expected None, "
                "'DEFAULT' or the path of a local weights file (timm's pretrained tag goes "
                f"in the name: 'timm/resnet18.a1_in1k'); {_as_path_hint(weights)}"
            )
    elif not own:
        _registry_weights(backbone, weights)
    else:
        raise ValueError(
            f"weights={weights!r} names torchvision weights, which backbone "
            f"{_label(backbone)!r} does not have; pass weights=None (or 'DEFAULT'), "
            "'pretrained' for a module whose weights are trained already, or the path "
            f"of a local state-dict file; {_as_path_hint(weights)}"
        )


def _check_timm_name(backbone):
    timm = _timm()
    name = backbone.removeprefix(TIMM_PREFIX)
    if not timm.is_model(name):
        raise ValueError(
            f"unknown backbone {backbone!r}: {name!r} is not a timm model "
            "(timm.list_models() lists them)"
        )
    try:
        timm.models.get_pretrained_cfg(name)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise ValueError(f"unknown backbone {backbone!r}: {exc}") from None


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
    module = _bare_model(backbone)
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return
    module.train()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            module(torch.zeros(1, 3, *image_size))
    except ValueError as exc:
        if "more than 1 value per channel" not in str(exc):
            raise
        raise ValueError(
            f"batch_size=1 cannot train backbone {_label(backbone)!r} at image_size "
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


class _ParametersOnMeta(TorchFunctionMode):
    """Inside it, ``torch.empty``, which layers make their parameters with, makes tensors
    on the meta device (a shape, no memory); every other tensor stays real, so that
    models that compute with tensors while built (a RegNet's widths) build too. Modes are
    per thread: another thread building a model is not affected."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def backbone_state_shapes(backbone):
    """Each tensor's shape in the state of a backbone named by the registry, its
    classifier removed, found without building its weights.

    The model is built with its parameters on the meta device: torchvision's
    ``regnet_y_128gf`` (640 million parameters, 2.6 GB) takes about 10 MB and 0.1 s, and
    nothing is downloaded. A model file is checked against it before its backbone is
    built (:func:`sk_multitask.persistence._safe_file.read_model`).

    Parameters
    ----------
    backbone : str
        ``"simple_cnn"``, a torchvision classification model's name or ``"timm/<name>"``.

    Returns
    -------
    dict
        The state dict's keys to their shapes (tuples).

    Examples
    --------
    >>> backbone_state_shapes("resnet18")["layer4.1.bn2.weight"]
    (512,)
    """
    check_backbone(backbone, None)
    with _ParametersOnMeta():
        module = _without_classifier(_bare_model(backbone), backbone)
    return {key: tuple(tensor.shape) for key, tensor in module.state_dict().items()}

"""The layer of a backbone whose feature map a heatmap is drawn from.

:func:`spatial_layer` finds a backbone's last spatial feature map by a dry run (or checks
the layer a user names): what Grad-CAM (:mod:`sk_multitask.predicting._explain`) weighs.
"""

from __future__ import annotations

import torch
from torch import nn


def spatial_layer(backbone, image_size, target_layer=None, label=None):
    """The backbone's layer whose output a heatmap is drawn from: its last spatial map.

    A dry run (eval mode, no gradient, one blank image of ``image_size``) records every
    submodule's output in the order they run. Found, the layer is the last one run once
    whose output is a feature map ``(N, C, H, W)`` larger than 1 x 1 (so not the global
    pooling): a ResNet's ``layer4``, an EfficientNet's, ConvNeXt's or MobileNet's
    ``features``, a timm model's last stage, the small CNN's last ReLU. A backbone that
    turns its map into a sequence of tokens after it (a vision transformer) has none.

    Parameters
    ----------
    backbone : nn.Module
    image_size : (int, int)
    target_layer : str or nn.Module, optional
        A layer chosen instead: its name in ``backbone.named_modules()`` (``"layer3"``,
        ``"features.6"``) or the module itself; its output must be a map
        ``(N, C, H, W)``.
    label : str, optional
        The backbone's name, for the errors.

    Returns
    -------
    name : str
    layer : nn.Module

    Raises
    ------
    ValueError
        Naming the backbone and the ``target_layer`` to pass, when none is found or the
        one given is no layer of the backbone or outputs no map.

    Examples
    --------
    >>> from sk_multitask.network._backbones import SimpleCNN
    >>> spatial_layer(SimpleCNN(), (32, 32))[0]
    '14'
    >>> import torchvision
    >>> spatial_layer(torchvision.models.resnet18(), (64, 64))[0]
    'layer4'
    """
    label = label if isinstance(label, str) else type(backbone).__name__
    names = {module: name for name, module in backbone.named_modules()}
    if target_layer is not None:
        layers = dict(backbone.named_modules())
        if isinstance(target_layer, nn.Module) and target_layer in names:
            target_layer = names[target_layer]
        if not isinstance(target_layer, str) or target_layer not in layers:
            raise ValueError(
                f"target_layer={target_layer!r} is no layer of backbone {label!r}: pass the "
                "name of one of its modules (as named_modules() gives it, e.g. "
                f"{_last_names(layers)}) or the module itself"
            )
    runs = _layer_outputs(backbone, image_size)
    if target_layer is not None:
        shape = runs.get(target_layer, (None, 0))[0]
        if shape is None or len(shape) != 4:
            raise ValueError(
                f"target_layer={target_layer!r} of backbone {label!r} outputs "
                f"{'nothing' if shape is None else tuple(shape)}; a heatmap needs a layer "
                "whose output is a feature map (N, C, H, W)"
            )
        return target_layer, dict(backbone.named_modules())[target_layer]
    order = list(runs)
    maps = [
        name
        for name, (shape, calls) in runs.items()
        if calls == 1 and _is_feature_map(shape, image_size)
    ]
    tokens = [name for name in order if len(runs[name][0]) == 3]
    if tokens and (not maps or order.index(tokens[-1]) > order.index(maps[-1])):
        before = [name for name in maps if order.index(name) < order.index(tokens[0])]
        remedy = "target_layer=NAME"
        if before:
            remedy = f"target_layer={before[-1]!r} (its map before the tokens, coarse)"
        raise ValueError(
            f"backbone {label!r} ends in layers that work on a sequence of tokens "
            f"({tokens[-1]!r}: a vision transformer), not on a spatial feature map as "
            f"Grad-CAM needs; pass {remedy} or use a convolutional backbone"
        )
    if not maps:
        raise ValueError(
            f"backbone {label!r} has no layer whose output is a feature map (N, C, H, W) "
            f"larger than 1 x 1 at image_size {tuple(image_size)}: pass target_layer=NAME "
            "(a module of it) or a larger image_size"
        )
    return maps[-1], dict(backbone.named_modules())[maps[-1]]


def _is_feature_map(shape, image_size):
    """Whether an output of ``shape`` is a map of the image ``(N, C, H, W)`` larger than
    1 x 1: the image scaled down alike on both sides (not an attention tensor
    ``(N, heads, tokens, dim)`` or a channels-last ``(N, H, W, C)``)."""
    if len(shape) != 4 or shape[2] * shape[3] <= 1:
        return False
    height, width = image_size
    if shape[2] > height or shape[3] > width:
        return False
    strides = (height / shape[2], width / shape[3])
    return max(strides) <= 2 * min(strides)


def _last_names(layers):
    """A few of the last module names, for an error."""
    shown = [repr(name) for name in list(layers)[-4:] if name]
    return ", ".join(shown)


def _layer_outputs(backbone, image_size):
    """Each submodule's output shape (the first tensor's) and how often it ran, in the
    order their runs ended, on one blank image; the backbone left as it was."""
    runs = {}
    names = {module: name for name, module in backbone.named_modules() if name}

    def record(module, args, output):
        name = names[module]
        tensor = output[0] if isinstance(output, (tuple, list)) and output else output
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else ()
        previous = runs.pop(name, (shape, 0))
        runs[name] = (shape, previous[1] + 1)  # popped and set: ordered by last run

    hooks = [module.register_forward_hook(record) for module in names]
    training = {module: module.training for module in backbone.modules()}
    parameter = next(backbone.parameters(), None)
    device = parameter.device if parameter is not None else "cpu"
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, 3, *image_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        for module, mode in training.items():
            module.training = mode
    return runs

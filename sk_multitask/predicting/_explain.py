"""Heatmaps of where the network looked for a task: Grad-CAM through Captum.

:func:`explain_images` runs the fitted net over images through the one batching iterator
(:func:`sk_multitask.predicting._inference.batch_results`: the disk cache, batches of
``batch_size``, the rule for unreadable images) and, for each batch, Captum's
``LayerGradCam`` (Selvaraju et al. 2017) on the backbone's last spatial feature map
(:func:`sk_multitask.network._feature_maps.spatial_layer`): the map's channels weighted by
the mean gradient of one output per row, summed, rectified, upsampled to the input size
(``LayerAttribution.interpolate``, bilinear) and scaled to [0, 1] per row. Which output
is explained for a task and a label is :func:`explained_output`'s one rule per task kind.

The module is left as it was: the run is in eval mode with no parameter requiring a
gradient (so no ``.grad`` is made, and no memory goes to the layers before the map), and
every submodule's mode and every parameter's ``requires_grad`` are put back afterwards,
one explanation of a module at a time.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Hashable

import numpy as np
import pandas as pd
import torch

from ..network._feature_maps import spatial_layer
from ..network._loss import level_score
from ..network._model import multitask_module
from ..targets import CLASSIFICATION, MULTILABEL, ORDINAL, REGRESSION
from ._inference import batch_results

#: One explanation of a module at a time: its modes and flags are set, then put back.
_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def explained_output(task, label=None):
    """Which scalar of a task's head outputs a heatmap explains, for each row: the one
    rule per task kind.

    - classification: the logit of ``label``, else of the row's predicted class;
    - multi-label: the logit of ``label``, else the row's largest (its most probable
      label before calibration, which scales each label on its own);
    - ordinal: the log-probability of ``label``'s level, else the expected level (CORN:
      :func:`~sk_multitask.network._loss.level_score`);
    - regression: the predicted (standardised) value; ``label`` must be None.

    Parameters
    ----------
    task : fitted Task or OutputDecoder
        Its ``name``, ``kind`` and, but for a regression, ``classes_``.
    label : object, optional
        A class (or label) of the task, as ``y`` held it.

    Returns
    -------
    callable
        The task's outputs ``(N, n_outputs)`` (a tensor) to the explained scalars ``(N,)``.

    Raises
    ------
    ValueError
        For a label that is not one of the task's, or any label for a regression.

    Examples
    --------
    >>> import torch
    >>> from sk_multitask.targets._outputs import OutputDecoder
    >>> task = OutputDecoder("shape", "classification", object, classes=["a", "b"])
    >>> explained_output(task)(torch.tensor([[1.0, 3.0]])), explained_output(task, "a")(
    ...     torch.tensor([[1.0, 3.0]]))
    (tensor([3.]), tensor([1.]))
    """
    if task.kind == REGRESSION:
        if label is not None:
            raise ValueError(
                f"task {task.name!r} is a regression: its heatmap explains the predicted "
                f"value, so label must be None; got {label!r}"
            )
        return lambda outputs: outputs[:, 0]
    if task.kind in (CLASSIFICATION, MULTILABEL):
        if label is None:
            return lambda outputs: outputs.gather(1, outputs.argmax(1, keepdim=True))[:, 0]
        code = _label_code(task, label)
        return lambda outputs: outputs[:, code]
    if task.kind == ORDINAL:
        code = None if label is None else _label_code(task, label)
        return lambda outputs: level_score(outputs, code)
    raise ValueError(f"explain has no rule for task {task.name!r} of kind {task.kind!r}")


def _label_code(task, label):
    """The output position of one of ``task``'s labels, or a ValueError naming them."""
    # A list or tuple is no label (pandas would read a tuple as a key of several levels).
    scalar = isinstance(label, Hashable) and not isinstance(label, tuple)
    code = pd.Index(task.classes_).get_indexer([label])[0] if scalar else -1
    if code < 0:
        what, plural = {
            CLASSIFICATION: ("class", "classes"),
            MULTILABEL: ("label", "labels"),
            ORDINAL: ("level", "levels"),
        }[task.kind]
        raise ValueError(
            f"label {label!r} is not a {what} of task {task.name!r}: its {plural} are "
            f"{list(task.classes_)}"
        )
    return int(code)


def explain_images(
    net,
    images,
    image_size,
    task,
    label=None,
    *,
    target_layer=None,
    backbone=None,
    on_bad_image="raise",
    cache_dir=None,
    verbose=0,
    table=None,
):
    """The Grad-CAM heatmap of one task's output for every image.

    Parameters
    ----------
    net : fitted skorch net whose module is a
        :class:`~sk_multitask.network._model.MultiTaskModule`
    images : ndarray of str (resolved paths) or uint8 ndarray
        As :func:`sk_multitask.inputs._sources.resolve_images` returns them.
    image_size : (int, int)
    task : fitted Task
        One of the module's tasks.
    label : object, optional
        See :func:`explained_output`.
    target_layer : str or nn.Module, optional
        See :func:`sk_multitask.network._feature_maps.spatial_layer`; None: found.
    backbone : str, optional
        The backbone's name, for the errors (None: its class's).
    on_bad_image, cache_dir, verbose
        As for :func:`~sk_multitask.predicting._inference.network_outputs`: the row of an
        image skipped as unreadable is NaN.
    table : float32 ndarray of shape (N, n_table), optional
        The encoded table columns of a model that reads them (``tabular_cols``): the
        heatmaps explain the output given the image and its table row.

    Returns
    -------
    ndarray of shape (N, height, width), float32
        In [0, 1]: 1 where the map counts most for the row; all 0 where no part of the
        map raises the output.
    """
    pick = explained_output(task, label)  # a bad label fails before any image is read
    module = multitask_module(net)
    _, layer = spatial_layer(module.backbone, image_size, target_layer, backbone)
    gradcam = _layer_gradcam(_task_forward(module, task.name, pick), layer)
    device = next(module.parameters()).device

    def step(batch):
        images, names, others = _model_inputs(batch[0], device)
        maps = gradcam.attribute(
            images, additional_forward_args=(names, *others), relu_attributions=True
        )
        heat = _interpolate(maps.detach(), image_size)[:, 0]
        peak = heat.flatten(1).amax(1).clamp_min(torch.finfo(heat.dtype).tiny)
        return (heat / peak[:, None, None]).float().cpu()

    with _explaining(module):
        heatmaps = batch_results(
            net, images, image_size, step, on_bad_image=on_bad_image, cache_dir=cache_dir,
            verbose=verbose, desc="explain", table=table,
        )
    return heatmaps.numpy().astype(np.float32, copy=False)


def _layer_gradcam(forward, layer):
    """Captum's ``LayerGradCam`` on ``layer``, or an ImportError naming the extra."""
    try:
        from captum.attr import LayerGradCam
    except ImportError:
        raise ImportError(
            'explain needs captum: pip install "sk-multitask[explain]"'
        ) from None
    return LayerGradCam(forward, layer)


def _interpolate(maps, image_size):
    from captum.attr import LayerAttribution

    return LayerAttribution.interpolate(maps, tuple(image_size), interpolate_mode="bilinear")


def _task_forward(module, name, pick):
    """The module's forward pass, reduced to the explained scalar of task ``name``.

    The images come first; the other inputs of the module (a batch's other entries,
    passed by keyword as skorch passes a dict ``X``) come through Captum's
    ``additional_forward_args``, their names first.
    """
    sizes = [head.out_features for head in module.heads]
    start = sum(sizes[: module.task_names.index(name)])
    stop = start + sizes[module.task_names.index(name)]

    def forward(images, names, *others):
        outputs = module(images, **dict(zip(names, others, strict=True)))
        return pick(outputs[:, start:stop].float())

    return forward


def _model_inputs(x, device):
    """A batch's ``X`` as the module's inputs: the images, and the names and values of
    the others (``X`` is a dict where the model takes more than images)."""
    if isinstance(x, dict):
        names = tuple(key for key in x if key != "images")
        return x["images"].to(device), names, [x[key].to(device) for key in names]
    return x.to(device), (), []


@contextlib.contextmanager
def _explaining(module):
    """Eval mode and no parameter requiring a gradient, both put back afterwards."""
    with _LOCKS_LOCK:
        lock = _LOCKS.setdefault(module, threading.Lock())
    with lock:
        modes = {sub: sub.training for sub in module.modules()}
        flags = {parameter: parameter.requires_grad for parameter in module.parameters()}
        try:
            module.eval()
            for parameter in flags:
                parameter.requires_grad_(False)
            yield
        finally:
            for parameter, flag in flags.items():
                parameter.requires_grad_(flag)
            for sub, mode in modes.items():
                sub.training = mode

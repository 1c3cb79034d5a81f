"""The one inference path: a fitted net run over images, batch by batch.

``predict``, ``predict_proba``, ``transform``, ``score``, ``evaluate``, ``top_losses``,
the report and the command line all get the network's outputs (or the backbone's
features) from :func:`network_outputs`, so that they share one batching iterator, one
use of the disk cache (``cache_dir``) and one rule for images that cannot be read
(:func:`sk_multitask.inputs._bad_images.mark_unreadable`, which the torch-free ONNX predictor
follows too): with ``on_bad_image="skip"`` the row is missing (NaN) and one
:class:`~sk_multitask.exceptions.BadImageWarning` counts such rows; with ``"raise"`` the
error names the file.
"""

from __future__ import annotations

import math
import warnings

import torch
from tqdm.auto import tqdm

from ..exceptions import BadImageWarning, CalibrationWarning
from ..inputs._bad_images import mark_unreadable
from ..inputs._cache import cached_images
from ..inputs._dataset import ImageDataset, bad_image_log
from ..inputs._decoding import tta_views
from ..targets._outputs import decoders, split_outputs
from ..training._distributed import dask_worker_threads
from ._calibration import HELD_BACK, calibrate, calibrated_outputs
from ._thresholds import fit_thresholds


def network_outputs(
    net,
    images,
    image_size,
    *,
    on_bad_image="raise",
    cache_dir=None,
    verbose=0,
    features=False,
    tta=0,
    table=None,
):
    """The fitted network's outputs for every image: a float32 CPU tensor ``(N, width)``.

    Parameters
    ----------
    net : fitted skorch net whose ``module_`` is a
        :class:`~sk_multitask.network._model.MultiTaskModule`
    images : ndarray of str (resolved paths) or uint8 ndarray
        As :func:`sk_multitask.inputs._sources.resolve_images` returns them.
    image_size : (int, int)
    on_bad_image : {"raise", "skip"}, default="raise"
        ``"skip"``: an image that cannot be read gets a row of NaN, and one
        :class:`~sk_multitask.exceptions.BadImageWarning` names the first few such files.
    cache_dir : str or path, optional
        A disk cache folder (:func:`sk_multitask.inputs._disk_cache.disk_cached_images`).
    verbose : int, default=0
        A progress bar when positive.
    features : bool, default=False
        The backbone's features (``forward_features``) instead of the heads' outputs.
    tta : int, default=0
        Test-time augmentation: the outputs are the mean over the plain images and
        this many augmented views of them (:func:`sk_multitask.inputs._decoding.tta_views`).
    table : float32 ndarray of shape (N, n_table), optional
        The encoded table columns of a model that reads them
        (:func:`sk_multitask.inputs._tabular.encoded_table`); test-time views augment the
        images only.

    Returns
    -------
    tensor of shape (N, width), float32
        The heads' concatenated outputs, or the features.
    """
    views = [tuple(map(torch.as_tensor, view)) for view in tta_views(image_size, tta)]
    return batch_results(
        net,
        images,
        image_size,
        lambda batch: _batch_outputs(net, batch, features, views),
        on_bad_image=on_bad_image,
        cache_dir=cache_dir,
        verbose=verbose,
        desc="transform" if features else "predict",
        table=table,
    )


def batch_results(
    net,
    images,
    image_size,
    step,
    *,
    on_bad_image="raise",
    cache_dir=None,
    verbose=0,
    desc="",
    table=None,
):
    """``step`` run on every batch of ``images``: the one batching iterator.

    Every method that runs the network goes through it (:func:`network_outputs`, and
    :func:`sk_multitask.predicting._explain.explain_images` for heatmaps): the disk cache,
    skorch's iterator (batches of ``net.batch_size``), the progress bar and the rule for
    unreadable images are the same for all.

    Parameters
    ----------
    net : fitted skorch net
    images : ndarray of str (resolved paths) or uint8 ndarray
    image_size : (int, int)
    step : callable
        A batch as skorch's iterator gives it (``(X, y)``) to a CPU tensor ``(B, ...)``.
    on_bad_image, cache_dir, verbose
        As for :func:`network_outputs`.
    desc : str
        The progress bar's label.
    table : float32 ndarray of shape (N, n_table), optional
        The encoded table columns: each batch's ``X`` is then ``{"images": ..., "table":
        ...}`` (the module's keyword arguments).

    Returns
    -------
    tensor of shape (N, ...), float32
        The batches' results in order; the rows of images skipped as unreadable are NaN.
    """
    bad_images = bad_image_log(on_bad_image)
    if cache_dir is not None:
        images, _ = cached_images(
            images, image_size, cache=False, cache_dir=cache_dir, bad_images=bad_images
        )
    dataset = ImageDataset(images, table=table, image_size=image_size, bad_images=bad_images)
    batches = map(step, net.get_iterator(dataset, training=False))
    if verbose:
        total = math.ceil(len(dataset) / net.batch_size)
        batches = tqdm(batches, total=total, desc=desc, unit="batch", leave=False)
    results, start = None, 0
    with dask_worker_threads():
        for batch in batches:
            if results is None:
                # One buffer filled batch by batch: kept per-batch tensors fragment the
                # heap, and memory grew with the number of images (docs/performance.md).
                results = torch.empty(len(dataset), *batch.shape[1:])
            results[start : start + len(batch)] = batch
            start += len(batch)
    bad = {} if bad_images is None else bad_images.collect()
    return mark_unreadable(results, bad, stacklevel=4)


def _batch_outputs(net, batch, features, views=()):
    """One batch's outputs, on the CPU: skorch's step, averaged over the plain batch and
    its test-time augmentation ``views``."""
    module = net.module_
    inputs, rest = batch[0], batch[1:]
    images, table = (inputs["images"], inputs["table"]) if isinstance(inputs, dict) else (
        inputs, None
    )
    out = _outputs(net, module, images, table, rest, features).float()
    for rows, cols in views:
        view = images[..., rows[:, None], cols[None, :]]
        out += _outputs(net, module, view, table, rest, features)
    # Logits are averaged (a normalised geometric mean of the views' probabilities),
    # so that regression outputs and temperature scaling follow the same rule.
    return (out / (1 + len(views))).cpu()


def _outputs(net, module, images, table, rest, features):
    """One batch's heads' outputs (or features); ``table``: its encoded table, or None."""
    if features:
        with torch.no_grad():
            module.eval()
            table = None if table is None else table.to(net.device)
            return module.forward_features(images.to(net.device), table)
    inputs = images if table is None else {"images": images, "table": table}
    return net.evaluation_step((inputs, *rest), training=False)


def validation_calibration(net, data, *, on_bad_image, tta, thresholds=None, metric="f1"):
    """The calibration of a fitted ``net`` on ``fit``'s validation rows (``data``, a
    :class:`~sk_multitask.training._fit_data.FitData`; None without any; the rule of
    temperatures below 1 holds without its warning), and the
    decision thresholds of the ``decision_thresholds`` spec ``thresholds`` (tuned for
    ``metric`` on the same rows' calibrated probabilities: see
    :func:`~sk_multitask.predicting._thresholds.fit_thresholds`)."""
    if data.valid_set is None:
        return None, fit_thresholds(thresholds, metric, data.tasks)
    with warnings.catch_warnings():  # fit has warned of its bad images already
        warnings.simplefilter("ignore", BadImageWarning)
        valid = data.valid_set
        table = None if valid.table is None else valid.table.numpy()
        outputs = network_outputs(
            net, valid.images, data.plan.image_size, on_bad_image=on_bad_image, tta=tta,
            table=table,
        )
    # An image found bad while decoding for the cache has all its targets masked.
    outputs[data.valid_set.unlabelled_rows()] = float("nan")
    outputs = split_outputs(decoders(data.tasks), outputs.numpy())
    with warnings.catch_warnings():
        # The rule holds quietly here: a task the network has learnt (few validation
        # misses) is the common case of a fit; calibrate(X, y) warns.
        warnings.filterwarnings("ignore", f".*{HELD_BACK}", CalibrationWarning)
        calibration = calibrate(decoders(data.tasks), outputs, data.valid_y, skip_unlabelled=True)
    scaled = calibrated_outputs(calibration, outputs)
    return calibration, fit_thresholds(thresholds, metric, data.tasks, scaled, data.valid_y)

"""ONNX export of a fitted estimator, its model document in the file's metadata.

:func:`export_onnx` (also ``est.export_onnx(path)``) writes the network as one ONNX
file: input ``images``, uint8 ``(N, 3, H, W)`` with a dynamic batch size, the
normalisation inside the graph (and, for a model with ``tabular_cols``, input ``table``,
float32 ``(N, n_encoded)``: the encoded table columns, which the predictor encodes with
the estimator's encoder, :mod:`sk_multitask.inputs._tabular`); output ``outputs``, every
task's head concatenated.
The model document (:func:`sk_multitask.persistence._document.model_document`: parameters, tasks,
image size, history, data sizes, skipped images, best epoch, class and task weights, versions)
is stored in the file's metadata, under :data:`METADATA_KEY`, where
:class:`sk_multitask.onnx.OnnxPredictor` reads it. With ``quantize="int8"`` the graph is
quantized, calibrated and checked per task first (:mod:`sk_multitask.onnx._quantize`).

Importing this module imports neither torch nor onnx (``export_onnx`` does).
"""

from __future__ import annotations

import json
import os
import warnings

from ..inputs._files import atomic_write
from ..persistence._document import model_document
from ._predictor import INPUT, METADATA_KEY, OUTPUT, TABLE_INPUT, missing_onnx_extra
from ._quantize import check_quantize_options, write_int8

__all__ = ["export_onnx"]


def export_onnx(
    estimator, path, quantize=None, calibration_X=None, calibration_y=None, max_metric_drop=None
):
    """Write a fitted estimator's network to ``path`` as ONNX, with its metadata.

    The graph takes uint8 images ``(N, 3, H, W)`` of the training size (any ``N``)
    and returns the concatenated raw outputs of every task's head, computed in
    float32 whatever the estimator's ``precision``. Exported with torch's
    ``torch.export``-based exporter (which needs onnx and onnxscript).

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    path : str or path
    quantize : {None, "int8"}, default=None
        ``"int8"``: static quantization with ONNX Runtime (QDQ, per-channel int8 weights,
        uint8 activations) of the backbone; the input normalisation and the heads stay
        float. Often twice as fast on x86 CPUs with VNNI, a quarter of the size.
    calibration_X : image input, default=None
        Needed with ``"int8"``: images like those the model will predict on (a few
        hundred), read as ``predict`` reads them; the activations' int8 ranges are
        measured on them. Fewer than 32 warn
        (:class:`~sk_multitask.exceptions.QuantizationWarning`).
    calibration_y : DataFrame or Series, default=None
        Their labels: the float and int8 models are scored per task on these rows
        (accuracy, R², micro F1) and the drops returned and recorded in the file.
        Held-out rows measure what users will see.
    max_metric_drop : float, default=None
        With ``calibration_y``: a task whose score drops by more refuses the export,
        naming the task; nothing is written.

    Returns
    -------
    str or Int8Export
        The path written; with ``quantize="int8"`` an
        :class:`~sk_multitask.onnx._quantize.Int8Export` ``(path, check)``, ``check``
        the per-task scores and drops (None without ``calibration_y``).
    """
    import copy

    import torch
    from sklearn.utils.validation import check_is_fitted

    try:
        import onnx
        import onnxscript  # noqa: F401 -- torch's exporter needs it
    except ImportError as exc:
        raise missing_onnx_extra("export_onnx", exc) from exc
    check_quantize_options(quantize, calibration_X, calibration_y, max_metric_drop)
    check_is_fitted(estimator)
    document = model_document(estimator, action="export_onnx")  # checked first
    metadata = json.dumps(document)
    module = copy.deepcopy(estimator.net_.module_).cpu().float().eval()
    module.channels_last = False  # a memory format means nothing in the graph
    batch = torch.export.Dim("batch")
    example = (torch.zeros(2, 3, *estimator.image_size_, dtype=torch.uint8),)
    names, shapes = [INPUT], {"images": {0: batch}}
    if module.n_table:  # a second input: the encoded table columns
        example += (torch.zeros(2, module.n_table, dtype=torch.float32),)
        names, shapes = [INPUT, TABLE_INPUT], {**shapes, "table": {0: batch}}
    with warnings.catch_warnings():
        # Two inputs share the batch axis; torch says it names it once.
        warnings.filterwarnings("ignore", message="# The axis name: batch will not be used")
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            input_names=names,
            output_names=[OUTPUT],
            dynamic_shapes=shapes,
            verbose=False,
        )
    model = program.model_proto
    onnx.helper.set_model_props(model, {METADATA_KEY: metadata})
    path = os.fspath(path)
    if quantize is not None:
        return write_int8(
            model, document, path, calibration_X, calibration_y, max_metric_drop,
            storage_options=estimator.storage_options,
        )
    with atomic_write(path) as file:
        file.write(model.SerializeToString())
    return path

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
:class:`sk_multitask.onnx.OnnxPredictor` reads it.

Importing this module imports neither torch nor onnx (``export_onnx`` does).
"""

from __future__ import annotations

import json
import os
import warnings

from ..inputs._files import atomic_write
from ..persistence._document import model_document
from ._predictor import INPUT, METADATA_KEY, OUTPUT, TABLE_INPUT, missing_onnx_extra

__all__ = ["export_onnx"]


def export_onnx(estimator, path):
    """Write a fitted estimator's network to ``path`` as ONNX, with its metadata.

    The graph takes uint8 images ``(N, 3, H, W)`` of the training size (any ``N``)
    and returns the concatenated raw outputs of every task's head, computed in
    float32 whatever the estimator's ``precision``. Exported with torch's
    ``torch.export``-based exporter (which needs onnx and onnxscript).

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    path : str or path

    Returns
    -------
    str
        The path written.
    """
    import copy

    import torch
    from sklearn.utils.validation import check_is_fitted

    try:
        import onnx
        import onnxscript  # noqa: F401 -- torch's exporter needs it
    except ImportError as exc:
        raise missing_onnx_extra("export_onnx", exc) from exc
    check_is_fitted(estimator)
    metadata = json.dumps(model_document(estimator, action="export_onnx"))  # checked first
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
    with atomic_write(path) as file:
        file.write(model.SerializeToString())
    return path

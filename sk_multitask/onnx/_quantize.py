"""int8 ONNX: static quantization of an exported model, with a per-task quality check.

:func:`write_int8` turns the float graph that :func:`sk_multitask.onnx.export_onnx`
builds into an int8 one with ONNX Runtime's static quantization (``quantize_static``:
QDQ format, per-channel int8 weights, uint8 activations, which x86 CPUs multiply with
their VNNI instructions), calibrated on images decoded and batched as the ONNX predictor
does (:meth:`sk_multitask.onnx.OnnxPredictor.input_batches`: every input the graph
declares, by name). Only the backbone's nodes are quantized: the uint8-to-float
normalisation at the input and the heads stay float, so that each task's outputs keep
their own float scale (one int8 scale over the concatenated heads would round a
regression's output to the steps of the classes' logits).

With labelled rows, the float and the int8 models are scored per task on them (the
prediction protocol's per-task scores: accuracy, R², micro F1), the drops returned and
recorded in the file's model document (``quantization``); with ``max_metric_drop``, a
task that drops more refuses the export in one line naming it, and nothing is written.

Importing this module imports neither torch nor onnx (its functions import onnx and
onnxruntime).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import warnings
from numbers import Real
from typing import NamedTuple

import pandas as pd

from ..exceptions import QuantizationWarning
from ..inputs._bad_images import BadImageRecords
from ..inputs._files import atomic_write
from ..persistence._document import parse_document
from ..predicting._protocol import scoring_module
from ..predicting._scoring import model_task_scores
from ._predictor import METADATA_KEY, OnnxPredictor, missing_onnx_extra

__all__ = ["MIN_CALIBRATION_IMAGES", "QUANTIZE_OPTIONS", "Int8Export", "check_quantize_options"]

#: What ``quantize`` may be beside None.
QUANTIZE_OPTIONS = ("int8",)
#: Fewer calibration images than this warn (:class:`~sk_multitask.exceptions.QuantizationWarning`).
MIN_CALIBRATION_IMAGES = 32
#: The module of the network whose nodes are quantized (``MultiTaskModule.backbone``).
QUANTIZED = "backbone"


class Int8Export(NamedTuple):
    """What ``export_onnx(quantize="int8")`` returns.

    Attributes
    ----------
    path : str
        The int8 ONNX file written.
    check : DataFrame or None
        With ``calibration_y``: one row per task of it (indexed by task name),
        ``metric`` (accuracy, r2 or f1_micro), ``float``, ``int8`` (the scores on the
        calibration rows) and ``drop`` (float minus int8: positive when int8 is worse).
    """

    path: str
    check: pd.DataFrame | None


def check_quantize_options(quantize, calibration_X, calibration_y, max_metric_drop):
    """A ValueError in one line, before anything is exported, unless the options of
    ``export_onnx`` fit together: ``quantize`` None or ``"int8"``; int8 with
    ``calibration_X``; calibration options only with int8; ``max_metric_drop`` a number
    from 0 with ``calibration_y``.

    Examples
    --------
    >>> check_quantize_options("int4", None, None, None)
    Traceback (most recent call last):
    ...
    ValueError: quantize must be None or 'int8'; got 'int4'
    """
    if quantize is None:
        given = {"calibration_X": calibration_X, "calibration_y": calibration_y}
        given["max_metric_drop"] = max_metric_drop
        for name, value in given.items():
            if value is not None:
                raise ValueError(f"{name} is for quantize='int8'; it was given with quantize=None")
        return
    if not (isinstance(quantize, str) and quantize in QUANTIZE_OPTIONS):
        raise ValueError(f"quantize must be None or 'int8'; got {quantize!r}")
    if calibration_X is None:
        raise ValueError(
            "quantize='int8' needs calibration_X: images like those the model will predict "
            "on, which the int8 ranges are measured on"
        )
    if max_metric_drop is None:
        return
    if calibration_y is None:
        raise ValueError(
            "max_metric_drop needs calibration_y: the labels of calibration_X that the float "
            "and int8 models are scored on"
        )
    number = isinstance(max_metric_drop, Real) and not isinstance(max_metric_drop, bool)
    if not number or not max_metric_drop >= 0:  # NaN is no bound
        raise ValueError(f"max_metric_drop must be a number from 0; got {max_metric_drop!r}")


def write_int8(model, document, path, X, y=None, max_metric_drop=None, storage_options=None):
    """Quantize the float ONNX ``model`` (its metadata holding ``document``), check it
    and write it atomically to ``path``.

    Parameters
    ----------
    model : onnx.ModelProto
        The float graph, its metadata the model document.
    document : dict
        The model document, which gains the ``quantization`` record.
    path : str
    X : image input
        The calibration images (``calibration_X``).
    y : DataFrame or Series, default=None
        Their labels: the float and int8 models are scored on them per task.
    max_metric_drop : float, default=None
        The largest drop of a task's score allowed; a larger one raises.
    storage_options : dict, default=None
        To read image URLs, as the estimator's.

    Returns
    -------
    Int8Export

    Raises
    ------
    ValueError
        Naming the task whose score drops more than ``max_metric_drop`` (nothing is
        written), or saying that no calibration image could be read.
    """
    import onnx

    with tempfile.TemporaryDirectory(prefix="sk_multitask-int8-") as folder:
        float_path = os.path.join(folder, "float.onnx")
        int8_path = os.path.join(folder, "int8.onnx")
        onnx.save(model, float_path)
        float_model = OnnxPredictor(float_path, storage_options=storage_options)
        n_images = _quantize(model, float_path, int8_path, float_model, X)
        int8_model = OnnxPredictor(int8_path, storage_options=storage_options)
        check = None if y is None else _check(float_model, int8_model, X, y, max_metric_drop)
        quantized = onnx.load(int8_path)
    record = _record(n_images, check, max_metric_drop, 0 if y is None else len(y))
    document = {**document, "quantization": record}
    parse_document(document, path)  # what a reader of the file will check
    onnx.helper.set_model_props(quantized, {METADATA_KEY: json.dumps(document)})
    with atomic_write(path) as file:
        file.write(quantized.SerializeToString())
    return Int8Export(path, check)


def backbone_nodes(model):
    """The names of the nodes of ``model`` (a graph torch's exporter wrote) that belong to
    the network's backbone: the exporter records each node's module path in its
    ``namespace`` metadata (``.../backbone: <class>/...``)."""
    nodes = []
    for node in model.graph.node:
        namespace = {p.key: p.value for p in node.metadata_props}.get("namespace", "")
        if f"/{QUANTIZED}:" in namespace:
            nodes.append(node.name)
    return nodes


def _quantize(model, float_path, int8_path, predictor, X):
    """Run ``quantize_static`` from ``float_path`` to ``int8_path``, calibrated on ``X``'s
    batches as ``predictor`` makes them; the number of calibration images."""
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise missing_onnx_extra("export_onnx(quantize='int8')", exc) from exc
    nodes = backbone_nodes(model)
    if not nodes:
        raise ValueError(
            "the exported graph has no node of the network's backbone to quantize (its "
            "nodes carry no 'namespace' naming the backbone): it cannot be made int8"
        )
    reader = _calibration_reader(quantization.CalibrationDataReader, predictor, X)
    with _quiet_quantizer():
        quantization.quantize_static(
            float_path,
            int8_path,
            reader,
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            # uint8 activations and int8 weights: the pair x86 VNNI multiplies (int8
            # activations ran resnet18 1.1 times as fast as float here, uint8 3 times).
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_quantize=nodes,
            # Per batch, the calibrator keeps each tensor's min and max only.
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
    if reader.n_images < MIN_CALIBRATION_IMAGES:
        warnings.warn(
            f"int8 calibrated on {reader.n_images} images, fewer than "
            f"{MIN_CALIBRATION_IMAGES}: the activations' ranges may not cover other images; "
            "calibrate on a few hundred images like those it will predict on",
            QuantizationWarning,
            stacklevel=5,  # the caller of est.export_onnx
        )
    return reader.n_images


def _calibration_reader(base, predictor, X):
    """A ``CalibrationDataReader`` (``base``) giving ``X``'s batches, each input of the
    graph by name, as ``predictor`` feeds them; it counts the images it gave."""
    declared = {graph_input.name for graph_input in predictor.session.get_inputs()}
    bad = BadImageRecords() if predictor.on_bad_image == "skip" else None

    class Reader(base):
        def __init__(self):
            self.n_images = 0
            self.batches = predictor.input_batches(X, bad)[2]

        def get_next(self):
            rows, feeds = next(self.batches, (None, None))
            if feeds is None:
                if self.n_images == 0:  # said here: ONNX Runtime would say "No data"
                    raise ValueError(
                        "no image of calibration_X could be read: nothing to calibrate on"
                    )
                return None
            missing = declared - feeds.keys()
            if missing:
                raise ValueError(f"the calibration batches hold no input {sorted(missing)}")
            self.n_images += len(rows)
            return feeds

    return Reader()


@contextlib.contextmanager
def _quiet_quantizer():
    """Without ONNX Runtime's advice to pre-process the model, which it logs on the root
    logger: torch's exporter has inferred the shapes and fused the batch norms already."""

    def advice(record):
        return not record.getMessage().startswith("Please consider")

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _check(float_model, int8_model, X, y, max_metric_drop):
    """The per-task table of :class:`Int8Export`; a ValueError naming the first task
    whose drop is over ``max_metric_drop``."""
    metrics = scoring_module("export_onnx(calibration_y=...)").DEFAULT_METRICS
    before = model_task_scores(float_model, X, y)
    after = model_task_scores(int8_model, X, y)
    rows = {
        name: (metrics[float_model.tasks_[name].kind], score, after[name], score - after[name])
        for name, score in before.items()
    }
    check = pd.DataFrame.from_dict(
        rows, orient="index", columns=["metric", "float", "int8", "drop"]
    )
    check.index.name = "task"
    if max_metric_drop is not None:
        for name, (metric, old, new, drop) in rows.items():
            if drop > max_metric_drop:
                raise ValueError(
                    f"int8 loses {drop:.4f} of task {name!r}'s {metric} ({old:.4f} -> "
                    f"{new:.4f}) on the calibration rows, more than max_metric_drop="
                    f"{max_metric_drop}: nothing was written"
                )
    return check


def _record(n_images, check, max_metric_drop, n_rows):
    """The document's ``quantization`` record (schema:
    :func:`sk_multitask.persistence._schema.check_fields`)."""
    import onnxruntime

    def score(value):
        return None if math.isnan(value) else float(value)

    tasks = (
        None
        if check is None
        else [
            [name, row["metric"], score(row["float"]), score(row["int8"])]
            for name, row in check.iterrows()
        ]
    )
    return {
        "dtype": "int8",
        "format": "QDQ",
        "per_channel": True,
        "activations": "uint8",
        "weights": "int8",
        "quantized": QUANTIZED,
        "calibration": {"method": "MinMax", "n_images": n_images},
        "onnxruntime": onnxruntime.__version__,
        "check": None
        if check is None
        else {
            "n_rows": n_rows,
            "max_metric_drop": None if max_metric_drop is None else float(max_metric_drop),
            "tasks": tasks,
        },
    }

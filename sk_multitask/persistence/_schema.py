"""The model document's schema, torch-free: its format, keys and types, checked.

:func:`check_document` refuses what is not a model document, or one of a newer format
version; :func:`check_fields` checks every key's type (the tasks, the class arrays and
dtypes, the calibration within :data:`TEMPERATURE_RANGE` and
:data:`MAX_CALIBRATION_SCORES`) before anything is built from a document, so that a
crafted file is refused with an error naming the key, never half-read.
:mod:`sk_multitask.persistence._document` writes and reads documents through these checks.
"""

from __future__ import annotations

import os
import re

import pandas as pd

from .. import __version__
from ..inputs._decoding import MAX_IMAGE_SIZE
from ..inputs._tabular import TableEncoder
from ..predicting._calibration import MAX_CALIBRATION_SCORES, TEMPERATURE_RANGE
from ..targets import CLASSIFICATION, MULTILABEL, ORDINAL, REGRESSION, TASK_KINDS
from ..targets._cell_loss import is_weight

#: The version of the document's layout. A reader refuses a document of a newer
#: version; version 1 (before history, data sizes, skipped images, best epoch and class
#: weights were recorded) is still read.
FORMAT_VERSION = 2
#: The ``format`` entry that marks a model document.
FORMAT = "sk-multitask"


def check_document(document, source):
    """Raise a ValueError naming ``source`` unless ``document`` is of a format this reads."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(source)!r} does not hold an sk-multitask model document")
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{os.fspath(source)!r}: the model document has no format version")
    if version > FORMAT_VERSION:
        versions = document.get("versions")
        saved_by = versions.get("sk_multitask") if isinstance(versions, dict) else None
        raise ValueError(
            f"{os.fspath(source)!r} has format version {version}, written by sk-multitask "
            f"{saved_by or 'a newer version'}; this sk-multitask {__version__} reads format "
            f"versions up to {FORMAT_VERSION}: upgrade sk-multitask to load it"
        )


def _require(condition, what):
    if not condition:
        raise TypeError(what)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value):
    return value is None or isinstance(value, (str, int, float, bool))


def _list_of(check):
    return lambda value: isinstance(value, list) and all(map(check, value))


def _is_class_weights(pair):
    return isinstance(pair, list) and len(pair) == 2 and _list_of(_is_number)(pair[1])


def _is_image_size(size):
    sides = _list_of(_is_count)(size) and len(size) == 2
    return sides and all(0 < side <= MAX_IMAGE_SIZE for side in size)


def _is_backbone(backbone):
    return isinstance(backbone, dict) and isinstance(backbone.get("class"), (str, type(None)))


def _is_temperature(value):
    low, high = TEMPERATURE_RANGE
    return _is_number(value) and low <= value <= high


def _is_task_calibration(state):
    """Whether ``state`` is one task's calibration: its kind, cell count, temperature(s)
    within :data:`TEMPERATURE_RANGE`, and at most :data:`MAX_CALIBRATION_SCORES` finite,
    non-negative scores."""
    if not (
        isinstance(state, dict) and state.keys() == {"kind", "n_cells", "temperature", "scores"}
    ):
        return False
    temperature, scores = state["temperature"], state["scores"]
    temperatures = {
        REGRESSION: temperature is None,
        ORDINAL: temperature is None,
        CLASSIFICATION: _is_temperature(temperature),
        MULTILABEL: _list_of(_is_temperature)(temperature) and bool(temperature),
    }
    return (
        temperatures.get(state["kind"], False)
        and _is_count(state["n_cells"])
        and (scores is None) == (state["kind"] == MULTILABEL)
        and (
            scores is None
            or (
                _list_of(_is_number)(scores)
                and 0 < len(scores) <= MAX_CALIBRATION_SCORES
                and all(0 <= s < float("inf") for s in scores)
            )
        )
    )


def _is_calibration(state):
    return state is None or (
        isinstance(state, dict)
        and state.keys() == {"tasks"}
        and _list_of(
            lambda p: isinstance(p, list)
            and len(p) == 2
            and (_is_scalar(p[0]) or _list_of(_is_scalar)(p[0]))  # a name, or a tuple's
            and _is_task_calibration(p[1])
        )(state["tasks"])
    )


def _check_calibration(state):
    """A ValueError naming the task unless each task of a calibration (checked by
    :func:`_is_calibration`) is listed once, counts as many cells as its scores (all of
    them up to :data:`MAX_CALIBRATION_SCORES`, a subset beyond), and, for a
    classification, has scores ``1 - p`` no higher than 1."""
    if state is None:
        return
    seen = set()
    for name, task in state["tasks"]:
        key = tuple(name) if isinstance(name, list) else name
        if key in seen:
            raise ValueError(f"calibration lists task {name!r} twice")
        seen.add(key)
        scores = task["scores"]
        if scores is not None and len(scores) != min(task["n_cells"], MAX_CALIBRATION_SCORES):
            raise ValueError(
                f"the calibration of task {name!r} counts n_cells={task['n_cells']} but "
                f"holds {len(scores)} scores (all of them, up to {MAX_CALIBRATION_SCORES})"
            )
        if task["kind"] in (CLASSIFICATION, ORDINAL) and max(scores) > 1:
            raise ValueError(
                f"the calibration of task {name!r} has scores above 1 ({max(scores)}): a "
                f"{task['kind']}'s scores are probabilities"
            )


def _is_threshold(value):
    return _is_number(value) and 0 <= value <= 1


def _is_thresholds(state):
    """Whether ``state`` is None or a list of [task, threshold or thresholds] pairs, each
    from 0 to 1."""
    return state is None or _list_of(
        lambda p: isinstance(p, list)
        and len(p) == 2
        and (_is_scalar(p[0]) or _list_of(_is_scalar)(p[0]))
        and (_is_threshold(p[1]) or (_list_of(_is_threshold)(p[1]) and bool(p[1])))
    )(state)


def _is_tabular(state):
    """Whether ``state`` is the ``tabular`` entry: table columns (scalars), the encoded
    width, and the encoder's state (checked by :func:`_check_tabular`) or None."""
    return state is None or (
        isinstance(state, dict)
        and state.keys() == {"columns", "n_encoded", "encoder"}
        and _list_of(lambda c: _is_scalar(c) and c is not None)(state["columns"])
        and len(state["columns"]) > 0
        and _is_count(state["n_encoded"])
        and state["n_encoded"] > 0
    )


def _check_tabular(state):
    """A TypeError naming what is wrong unless the ``tabular`` entry's encoder is as
    :meth:`~sk_multitask.inputs._tabular.TableEncoder.to_dict` writes it, of the width
    the entry declares."""
    if state is None or state["encoder"] is None:
        return
    encoder = TableEncoder.from_dict(state["columns"], state["encoder"])
    _require(
        encoder.n_features == state["n_encoded"],
        f"tabular's encoder gives {encoder.n_features} columns, not n_encoded",
    )


#: The keys of an int8 file's ``quantization`` record, and of its per-task check.
QUANTIZATION_KEYS = {
    "dtype", "format", "per_channel", "activations", "weights", "quantized", "calibration",
    "onnxruntime", "check",
}  # fmt: skip
_CHECK_KEYS = {"n_rows", "max_metric_drop", "tasks"}


def _is_score(value):
    return value is None or _is_number(value)


def _is_task_check(row):
    """[task, metric, float score, int8 score], a score None where there was none."""
    return (
        isinstance(row, list)
        and len(row) == 4
        and (_is_scalar(row[0]) or _list_of(_is_scalar)(row[0]))
        and isinstance(row[1], str)
        and _is_score(row[2])
        and _is_score(row[3])
    )


def _is_quantization(state):
    """Whether ``state`` is None or the record :mod:`sk_multitask.onnx._quantize` writes:
    how the file was quantized and calibrated, and its per-task check (or None)."""
    if state is None:
        return True
    if not (isinstance(state, dict) and state.keys() == QUANTIZATION_KEYS):
        return False
    calibration, check = state["calibration"], state["check"]
    return (
        state["dtype"] == "int8"
        and state["format"] == "QDQ"
        and isinstance(state["per_channel"], bool)
        and state["activations"] in ("int8", "uint8")
        and state["weights"] in ("int8", "uint8")
        and all(isinstance(state[key], str) for key in ("quantized", "onnxruntime"))
        and isinstance(calibration, dict)
        and calibration.keys() == {"method", "n_images"}
        and isinstance(calibration["method"], str)
        and _is_count(calibration["n_images"])
        and (
            check is None
            or (
                isinstance(check, dict)
                and check.keys() == _CHECK_KEYS
                and _is_count(check["n_rows"])
                and (check["max_metric_drop"] is None or _is_number(check["max_metric_drop"]))
                and _list_of(_is_task_check)(check["tasks"])
            )
        )
    )


_REQUIRED = object()
_SIDES = f"image_size is not two integers from 1 to {MAX_IMAGE_SIZE}"
_CALIBRATION = (
    "calibration is not a list of [task, calibration] pairs with temperatures from "
    f"{TEMPERATURE_RANGE[0]} to {TEMPERATURE_RANGE[1]} and at most {MAX_CALIBRATION_SCORES} "
    "finite non-negative scores"
)
_THRESHOLDS = "decision_thresholds is not a list of [task, thresholds from 0 to 1] pairs"
_PAIRS = "class_weights is not a list of [task, weights] pairs"
_WEIGHTS = "task_weights is not a list of non-negative numbers"
_QUANTIZATION = (
    "quantization is not an int8 record (dtype, format, calibration, check...) as "
    "export_onnx(quantize='int8') writes it"
)
#: Key, its default when absent (or _REQUIRED), the check, and what it says when wrong.
_FIELDS = [
    ("params", _REQUIRED, lambda v: isinstance(v, dict), "params is not a dict"),
    ("tasks", _REQUIRED, lambda v: isinstance(v, list) and v, "tasks is not a list of tasks"),
    ("image_size", _REQUIRED, _is_image_size, _SIDES),
    ("backbone", _REQUIRED, _is_backbone, "backbone is not a dict with a class"),
    ("history", [], _list_of(lambda r: isinstance(r, dict)), "history is not a list of dicts"),
    ("skipped_images", [], _list_of(lambda p: isinstance(p, str)), "skipped_images is not a list"),
    ("best_epoch", None, lambda v: v is None or _is_count(v), "best_epoch is not a count"),
    ("class_weights", [], _list_of(_is_class_weights), _PAIRS),
    ("task_weights", None, lambda v: v is None or _list_of(is_weight)(v), _WEIGHTS),
    ("calibration", None, _is_calibration, _CALIBRATION),
    ("decision_thresholds", None, _is_thresholds, _THRESHOLDS),
    ("tabular", None, _is_tabular, "tabular is not (columns, n_encoded, encoder)"),
    ("quantization", None, _is_quantization, _QUANTIZATION),
]
#: Every key a document may hold (``weights_sha256``: the safe file's hash of its weights).
_KEYS = {key for key, *_ in _FIELDS} | {
    "format", "format_version", "versions", "estimator", "normalisation", "data_sizes",
    "weights_sha256",
}  # fmt: skip
_TASK_KEYS = {"name", "kind", "dtype", "classes", "mean", "scale", "n_samples_seen"}
#: The dtypes a class array may have: numbers, booleans, objects; strings as wide as
#: their longest value (a declared ``<U50000000`` would cost 200 MB per class).
_ARRAY_DTYPES = re.compile(r"[<>|=]?(b1|[iu][1248]|f[248]|O)")
_STRING_DTYPE = re.compile(r"[<>|=]?U([0-9]{1,9})")
#: The column dtypes a task may have (pandas' names; categories and strings apart).
_COLUMN_DTYPES = re.compile(
    r"bool|boolean|object|str|u?int(8|16|32|64)|U?Int(8|16|32|64)|float(16|32|64)|Float(32|64)"
)


def _check_array(state, what):
    """A TypeError unless ``state`` is an array as outputs writes one, of an allowed dtype."""
    _require(
        isinstance(state, dict)
        and state.keys() == {"dtype", "values"}
        and _list_of(_is_scalar)(state["values"])
        and isinstance(state["dtype"], str),
        f"{what} is not an array (dtype, values)",
    )
    dtype, values = state["dtype"], state["values"]
    string = _STRING_DTYPE.fullmatch(dtype)
    longest = max((len(v) for v in values if isinstance(v, str)), default=0)
    _require(
        _ARRAY_DTYPES.fullmatch(dtype) or (string and int(string[1]) <= max(longest, 1)),
        f"{what} has dtype {dtype[:40]!r}, not one of numbers, booleans, objects or "
        "strings as wide as their longest value",
    )


def _check_dtype(state, what):
    """A TypeError unless ``state`` is a column dtype as outputs writes one, allowed."""
    _require(isinstance(state, dict) and isinstance(state.get("name"), str), f"{what} has no dtype")
    if state["name"] == "category":
        _require(state.keys() == {"name", "categories", "ordered"}, f"{what}: bad categories")
        _check_array(state["categories"], f"the categories of {what}")
    elif state["name"] == "string":
        _require(
            state.get("storage") in ("python", "pyarrow") and isinstance(state.get("na_nan"), bool),
            f"{what}: bad string dtype",
        )
    else:
        _require(
            _COLUMN_DTYPES.fullmatch(state["name"]) and state.keys() == {"name"},
            f"{what} has dtype {state['name'][:40]!r}, not a number, boolean, object, "
            "string or category",
        )


def _check_task(state):
    """A TypeError unless ``state`` is one task as :func:`task_to_dict` writes it."""
    _require(isinstance(state, dict) and state.keys() <= _TASK_KEYS, "a task is not a task")
    name = state.get("name")
    what = f"target {str(name)[:40]!r}"
    _require(_is_scalar(name) and name is not None, "a task has no name")
    _require(state.get("kind") in TASK_KINDS, f"{what} has an unknown kind")
    _check_dtype(state.get("dtype"), what)
    if state["kind"] == REGRESSION:
        _require(
            _is_number(state.get("mean"))
            and _is_number(state.get("scale"))
            and _is_count(state.get("n_samples_seen", 0)),
            f"{what} has no scaling",
        )
    else:
        _check_array(state.get("classes"), f"the classes of {what}")
        _require(state["classes"]["values"], f"{what} has no classes")
        _require(
            state["kind"] != ORDINAL or len(state["classes"]["values"]) >= 2,
            f"{what} is ordinal with fewer than two levels",
        )


def check_fields(document):
    """TypeError naming the first key of ``document`` unknown, missing or of the wrong type;
    ValueError naming a calibration's task listed twice or at odds with its scores."""
    unknown = sorted(map(str, document.keys() - _KEYS))
    _require(not unknown, f"unknown keys {unknown[:5]}")
    for key, default, check, message in _FIELDS:
        if default is _REQUIRED and key not in document:
            raise KeyError(key)
        _require(check(document.get(key, default)), message)
    _check_calibration(document.get("calibration"))
    _check_tabular(document.get("tabular"))
    for state in document["tasks"]:
        _check_task(state)


def data_sizes_frame(sizes):
    if sizes is None:
        return None
    _require(
        isinstance(sizes, dict) and sizes.keys() == {"index", "columns", "data"},
        "data_sizes is not a table (index, columns, data)",
    )
    _require(
        all(isinstance(row, list) and all(map(_is_count, row)) for row in sizes["data"]),
        "data_sizes holds something other than counts",
    )
    return pd.DataFrame(sizes["data"], index=sizes["index"], columns=sizes["columns"])

"""The model document: the one schema of everything a fitted model knows but its weights.

The safe file (:mod:`sk_multitask.safe_file`) stores it as JSON beside the weights, the
ONNX export (:mod:`sk_multitask.onnx_export`) in the ONNX file's metadata, and a pickle
holds a safe file's bytes (:mod:`sk_multitask.pickling`). A document holds:

- ``format``, ``format_version`` and ``versions`` (sk-multitask, torch, skorch,
  scikit-learn that wrote it);
- ``estimator`` (its class name), ``params`` (its parameters, tagged JSON) and
  ``backbone`` (a registry name, or the class of a backbone module of the user's own);
- ``tasks`` (name, kind, dtype, classes or scaling), ``image_size``, ``normalisation``;
- ``history`` (one dict per epoch), ``data_sizes`` (rows and labelled cells per task in
  training and validation), ``skipped_images``, ``best_epoch`` (None without early
  stopping) and ``class_weights`` (per classification task, as trained).

:func:`parse_document` checks a document's keys and types before anything is built
from it, and returns a :class:`ModelDocument`. Importing this module imports neither
torch nor scikit-learn: the torch-free ONNX predictor reads documents too.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import __version__
from .decoding import MAX_IMAGE_SIZE
from .outputs import OutputDecoder, task_to_dict
from .targets import REGRESSION, TASK_KINDS

__all__ = [
    "FORMAT_VERSION",
    "MAX_DOCUMENT_BYTES",
    "RUNTIME_PARAMS",
    "SECRET_PARAMS",
    "ModelDocument",
    "check_document",
    "decode_params",
    "model_document",
    "package_versions",
    "parse_document",
    "read_document",
]

#: The version of the document's layout. A reader refuses a document of a newer
#: version; version 1 (before history, data sizes, skipped images, best epoch and class
#: weights were recorded) is still read.
FORMAT_VERSION = 2
FORMAT = "sk-multitask"

#: The largest model document read, in bytes (a safe file's JSON member, an ONNX file's
#: metadata entry): a document is read with this cap, so that a small file that
#: inflates to gigabytes is refused after reading this much. Real documents are a few
#: hundred kilobytes (the history and the skipped images are their longest parts).
MAX_DOCUMENT_BYTES = 8 * 2**20
#: The parameters that say how this machine runs a model, not what the model is: they
#: are never written to a file, and a file that holds them has them ignored, so that
#: a file cannot choose where predictions write (``cache_dir``), how many processes
#: they fork (``num_workers``) or what code runs (``callbacks``), and credentials
#: (``storage_options``) never leave the machine in a model file.
RUNTIME_PARAMS = (
    "cache_dir", "checkpoint_dir", "num_workers", "device", "verbose", "callbacks",
    "storage_options",
)
#: The run-time parameters that may hold secrets: a pickle of the estimator has them None.
SECRET_PARAMS = ("storage_options",)

#: Distribution name to the key it is recorded under in ``versions``.
_PACKAGES = {"torch": "torch", "skorch": "skorch", "scikit-learn": "scikit-learn"}


def package_versions():
    """The versions of sk-multitask and of the packages a model depends on.

    Returns
    -------
    dict
        ``"sk_multitask"``, then ``"torch"``, ``"skorch"``, ``"scikit-learn"`` where
        installed (read from the installed distributions: nothing is imported).

    Examples
    --------
    >>> import sk_multitask
    >>> from sk_multitask.document import package_versions
    >>> versions = package_versions()
    >>> versions["sk_multitask"] == sk_multitask.__version__, "torch" in versions
    (True, True)
    """
    versions = {"sk_multitask": __version__}
    for distribution, key in _PACKAGES.items():
        try:
            versions[key] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# -- parameters as JSON ----------------------------------------------------------------


def _encode(value, name):
    """A parameter value as JSON; tuples, paths and non-string keys are tagged."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return {"__path__": os.fspath(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, name) for v in value]}
    if isinstance(value, list):
        return [_encode(v, name) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, name) for k, v in value.items()}
        return {"__items__": [[_encode(k, name), _encode(v, name)] for k, v in value.items()]}
    raise ValueError(
        f"parameter {name!r} holds a {type(value).__name__}, which the safe file cannot "
        "store (it holds strings, numbers, booleans, lists and dicts of them only). Set "
        f"it to such a value before saving (est.set_params({name}=...); it only matters "
        "for training), or save with joblib, whose pickles only load safely from a "
        "source you trust"
    )


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.keys() == {"__path__"}:
        return pathlib.Path(value["__path__"])
    if value.keys() == {"__tuple__"}:
        return tuple(_decode(v) for v in value["__tuple__"])
    if value.keys() == {"__items__"}:
        return {_hashable(_decode(k)): _decode(v) for k, v in value["__items__"]}
    return {k: _decode(v) for k, v in value.items()}


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def decode_params(document):
    """The estimator's parameters from a model document (the backbone as saved), but
    the run-time ones (:data:`RUNTIME_PARAMS`), which never come from a file.

    Examples
    --------
    >>> decode_params({"params": {"image_size": {"__tuple__": [16, 16]},
    ...                           "image_root": {"__path__": "images"}}})
    {'image_size': (16, 16), 'image_root': PosixPath('images')}
    """
    params = document["params"].items()
    return {name: _decode(value) for name, value in params if name not in RUNTIME_PARAMS}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store a {type(value).__name__} in the model document")


def _plain(value):
    """``value`` as plain JSON data (numpy scalars become Python numbers)."""
    return json.loads(json.dumps(value, default=_json_default))


# -- building a document ---------------------------------------------------------------


def model_document(estimator, with_params=True):
    """The document describing a fitted estimator: everything it knows but the weights.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    with_params : bool, default=True
        Record the parameters. A pickle holds them itself (any value, a callable
        optimizer too) and records none.

    Returns
    -------
    dict
        JSON-able, with the keys listed in this module's description.
    """
    params = estimator.get_params(deep=False)
    for name in RUNTIME_PARAMS:  # this machine's settings: a loaded model takes the loader's
        del params[name]
    backbone = params["backbone"]
    own = not isinstance(backbone, str)
    if own:  # a module of the user's own code: load(path, backbone=...) takes it
        params["backbone"] = None
    module, criterion = estimator.net_.module_, estimator.net_.criterion_
    sizes = getattr(estimator, "data_sizes_", None)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": package_versions(),
        "estimator": type(estimator).__name__,
        "params": {n: _encode(v, n) for n, v in params.items()} if with_params else {},
        "backbone": {
            "name": None if own else backbone,
            "class": f"{type(backbone).__module__}.{type(backbone).__qualname__}" if own else None,
        },
        "tasks": [task_to_dict(task) for task in estimator.tasks_.values()],
        "image_size": [int(side) for side in estimator.image_size_],
        "normalisation": {
            "mean": (module.mean / 255).flatten().tolist(),
            "std": (module.std / 255).flatten().tolist(),
        },
        "history": _plain(list(estimator.history_)),
        "data_sizes": None if sizes is None else _plain(sizes.to_dict(orient="split")),
        "skipped_images": [str(path) for path in getattr(estimator, "skipped_images_", [])],
        "best_epoch": getattr(estimator, "best_epoch_", None),
        "class_weights": [
            [task_to_dict(estimator.tasks_[name])["name"], getattr(criterion, buffer).tolist()]
            for name, buffer in criterion.class_weights.items()
        ],
    }


# -- checking and reading a document ---------------------------------------------------


@dataclass
class ModelDocument:
    """A checked model document, read by :func:`parse_document`.

    Attributes
    ----------
    document : dict
        The document as read.
    params : dict
        The estimator's parameters (the backbone as saved).
    task_states : list of dict
        Each task as :func:`sk_multitask.outputs.task_to_dict` wrote it.
    image_size : (int, int)
    backbone_class : str or None
        The class of a backbone module of the user's own; None for a registry backbone.
    history : list of dict
    data_sizes : DataFrame or None
        None in a document of format version 1.
    skipped_images : list of str
    best_epoch : int or None
    class_weights : dict
        Task name to its class weights (a list of floats).
    """

    document: dict
    params: dict
    task_states: list
    image_size: tuple
    backbone_class: str | None = None
    history: list = field(default_factory=list)
    data_sizes: pd.DataFrame | None = None
    skipped_images: list = field(default_factory=list)
    best_epoch: int | None = None
    class_weights: dict = field(default_factory=dict)

    def tasks(self, from_dict):
        """Task name to ``from_dict(state)`` for each task (a Task or an OutputDecoder)."""
        built = [from_dict(state) for state in self.task_states]
        return {task.name: task for task in built}

    def fitted_attributes(self):
        """The fitted attributes the document gives a loaded model, by name."""
        attributes = {
            "image_size_": self.image_size,
            "data_sizes_": self.data_sizes,
            "skipped_images_": list(self.skipped_images),
        }
        if self.best_epoch is not None:
            attributes["best_epoch_"] = self.best_epoch
        return attributes


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


_REQUIRED = object()
_SIDES = f"image_size is not two integers from 1 to {MAX_IMAGE_SIZE}"
_PAIRS = "class_weights is not a list of [task, weights] pairs"

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


def _check_fields(document):
    """TypeError naming the first key of ``document`` unknown, missing or of the wrong type."""
    unknown = sorted(map(str, document.keys() - _KEYS))
    _require(not unknown, f"unknown keys {unknown[:5]}")
    for key, default, check, message in _FIELDS:
        if default is _REQUIRED and key not in document:
            raise KeyError(key)
        _require(check(document.get(key, default)), message)
    for state in document["tasks"]:
        _check_task(state)


def _data_sizes(sizes):
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


def parse_document(document, source):
    """Check a model document (format, keys, types) and read it; nothing is built.

    Parameters
    ----------
    document : dict
        As :func:`model_document` wrote it (of this or an older format version).
    source : str or path
        The file it came from, named in errors.

    Returns
    -------
    ModelDocument

    Raises
    ------
    ValueError
        Naming ``source``: not a model document, of a newer format version, or a key
        missing or of the wrong type.
    """
    check_document(document, source)
    try:
        _check_fields(document)
        for state in document["tasks"]:
            OutputDecoder.from_dict(state)  # the class arrays and dtypes build
        data_sizes = _data_sizes(document.get("data_sizes"))
        params = decode_params(document)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ValueError(
            f"{os.fspath(source)!r}: the model document is incomplete ({exc})"
        ) from exc
    return ModelDocument(
        document=document,
        params=params,
        task_states=document["tasks"],
        image_size=tuple(document["image_size"]),
        backbone_class=document["backbone"]["class"],
        history=document.get("history", []),
        data_sizes=data_sizes,
        skipped_images=document.get("skipped_images", []),
        best_epoch=document.get("best_epoch"),
        class_weights={
            _hashable(name): weights for name, weights in document.get("class_weights", [])
        },
    )


def read_document(raw, source):
    """:func:`parse_document` of the JSON text (or bytes) ``raw``, refused naming ``source``
    when longer than :data:`MAX_DOCUMENT_BYTES` (read it with that cap) or not JSON."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ValueError(
            f"{os.fspath(source)!r}: the model document is over {MAX_DOCUMENT_BYTES} bytes, "
            "more than any model writes; it was not read"
        )
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(
            f"{os.fspath(source)!r}: the model document is not valid JSON: "
            f"{exc or 'nested too deeply'}"
        ) from exc
    return parse_document(document, source)

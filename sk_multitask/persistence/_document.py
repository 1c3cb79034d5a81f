"""The model document: the one schema of everything a fitted model knows but its weights.

The safe file (:mod:`sk_multitask.persistence._safe_file`) stores it as JSON beside the weights, the
ONNX export (:mod:`sk_multitask.onnx._export`) in the ONNX file's metadata, and a pickle
holds a safe file's bytes (:mod:`sk_multitask.persistence._pickling`). A document holds:

- ``format``, ``format_version`` and ``versions`` (sk-multitask, torch, skorch,
  scikit-learn that wrote it);
- ``estimator`` (its class name), ``params`` (its parameters but the run-time settings,
  :data:`sk_multitask.training._parameters.RUNTIME_PARAMS`, tagged JSON) and
  ``backbone`` (a registry name, or the class of a backbone module of the user's own);
- ``tasks`` (name, kind, dtype, classes or scaling), ``image_size``, ``normalisation``;
- ``history`` (one dict per epoch), ``data_sizes`` (rows and labelled cells per task in
  training and validation), ``skipped_images``, ``best_epoch`` (None without early
  stopping), ``class_weights`` (per classification task, as trained) and
  ``task_weights`` (the loss's task weights at the end of training);
- ``calibration`` (None, or per task its temperatures and sorted conformal scores, as
  :class:`sk_multitask.predicting._calibration.Calibration` writes them);
- ``decision_thresholds`` (None, or per binary or multi-label task its threshold(s), as
  :func:`sk_multitask.predicting._thresholds.thresholds_to_list` writes them);
- ``tabular``, only for a model with table columns (``tabular_cols``): their names, the
  width of their encoding and the default preprocessing's fitted state
  (:meth:`sk_multitask.inputs._tabular.TableEncoder.to_dict`; None in a pickle's document
  when a ``tabular_transformer`` of the user's, which the pickle holds, encodes them).
- ``quantization``, in an int8 ONNX file only: how it was quantized and calibrated, and
  its per-task check against the float model (:mod:`sk_multitask.onnx._quantize`).

:func:`parse_document` checks a document's keys and types before anything is built
from it (:mod:`sk_multitask.persistence._schema`), and returns a :class:`ModelDocument`.
Importing this module imports neither torch nor scikit-learn: the torch-free ONNX
predictor reads documents too.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import __version__
from ..inputs._tabular import TableEncoder
from ..predicting._thresholds import thresholds_to_list
from ..targets._cell_loss import CellLoss, regression_loss_names, static_task_weights
from ..targets._outputs import OutputDecoder, task_from_dict, task_to_dict
from ..training._parameters import RUNTIME_PARAMS, check_network_unchanged
from ._schema import FORMAT, FORMAT_VERSION, check_document, check_fields, data_sizes_frame

#: The largest model document read, in bytes (a safe file's JSON member, an ONNX file's
#: metadata entry): a document is read with this cap, so that a small file that
#: inflates to gigabytes is refused after reading this much. Real documents are a few
#: hundred kilobytes (the history and the skipped images are their longest parts).
MAX_DOCUMENT_BYTES = 8 * 2**20

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
    >>> from sk_multitask.persistence._document import package_versions
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
    the run-time ones (:data:`~sk_multitask.training._parameters.RUNTIME_PARAMS`), which
    never come from a file.

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


def model_document(estimator, with_params=True, action="save"):
    """The document describing a fitted estimator: everything it knows but the weights.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    with_params : bool, default=True
        Record the parameters. A pickle holds them itself (any value, a callable
        optimizer too) and records none.
    action : str, default="save"
        What writes the document (``"save"``, ``"pickle"``, ``"export_onnx"``), named
        in the error below.

    Returns
    -------
    dict
        JSON-able, with the keys listed in this module's description.

    Raises
    ------
    ValueError
        When a parameter that built the network was changed after ``fit``
        (:func:`~sk_multitask.training._parameters.check_network_unchanged`): the
        document would describe another network than the weights are.
    """
    params = estimator.get_params(deep=False)
    check_network_unchanged(estimator.network_params_, params, estimator.image_size_, action)
    for name in RUNTIME_PARAMS:  # this machine's settings: a loaded model takes the loader's
        del params[name]
    backbone = params["backbone"]
    own = not isinstance(backbone, str)
    if own:  # a module of the user's own code: load(path, backbone=...) takes it
        params["backbone"] = None
    module, criterion = estimator.net_.module_, estimator.net_.criterion_
    sizes = getattr(estimator, "data_sizes_", None)
    tabular = _tabular_state(getattr(estimator, "table_encoder_", None), action)
    document = {
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
        "task_weights": criterion.weights.tolist(),
        "calibration": _calibration_state(estimator),
        "decision_thresholds": thresholds_to_list(
            getattr(estimator, "decision_thresholds_", None),
            estimator.tasks_,
            lambda name: task_to_dict(estimator.tasks_[name])["name"],
        ),
    }
    if tabular is not None:  # a model of images only: the document of before
        document["tabular"] = tabular
    return document


def _tabular_state(encoder, action):
    """The document's ``tabular`` entry of a fitted table encoder (None: images only).

    Raises
    ------
    ValueError
        For a ``tabular_transformer`` of the user's, unless pickled (``action``).
    """
    if encoder is None:
        return None
    state = {"columns": list(encoder.columns), "n_encoded": encoder.n_features, "encoder": None}
    if isinstance(encoder, TableEncoder):
        state["encoder"] = encoder.to_dict()
    elif action != "pickle":
        raise ValueError(
            f"{action}: tabular_transformer ({type(encoder.transformer).__name__}) is code, "
            "which a safe file or an ONNX file cannot hold; pickle the model (joblib, skops) "
            "or fit with tabular_transformer=None, whose fitted state is stored as data"
        )
    return _plain(state)


def _calibration_state(estimator):
    """The estimator's ``calibration_`` as JSON-able data (None when not calibrated)."""
    calibration = getattr(estimator, "calibration_", None)
    if calibration is None:
        return None
    state = calibration.to_dict()
    for pair in state["tasks"]:
        pair[0] = task_to_dict(estimator.tasks_[pair[0]])["name"]
    return state


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
        Each task as :func:`sk_multitask.targets._outputs.task_to_dict` wrote it.
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
    task_weights : list of float or None
        The loss's task weights at the end of training; None in a document written
        before they were recorded.
    calibration : dict or None
        The calibration's checked data
        (:meth:`sk_multitask.predicting._calibration.Calibration.from_dict` builds it).
    decision_thresholds : list or None
        The decision thresholds' checked data
        (:func:`sk_multitask.predicting._thresholds.read_thresholds` reads it).
    tabular : dict or None
        The table columns' entry (checked); None for a model of images only.
    quantization : dict or None
        An int8 ONNX file's record (:mod:`sk_multitask.onnx._quantize`); None for a
        float model.
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
    task_weights: list | None = None
    calibration: dict | None = None
    decision_thresholds: list | None = None
    tabular: dict | None = None

    def table_encoder(self):
        """The model's :class:`~sk_multitask.inputs._tabular.TableEncoder`; None for a model
        of images only, or whose table a transformer of the user's encodes (a pickle's)."""
        if self.tabular is None or self.tabular["encoder"] is None:
            return None
        return TableEncoder.from_dict(self.tabular["columns"], self.tabular["encoder"])
    quantization: dict | None = None

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

    def cell_loss(self):
        """The model's :class:`~sk_multitask.targets._cell_loss.CellLoss`: its per-cell training
        losses from its outputs, without torch (needs scikit-learn, which encodes ``y``).

        A document without ``task_weights`` gives the static ``loss_weights`` (1 per
        task for a learned weighting).
        """
        tasks = self.tasks(task_from_dict)
        specs = [(name, task.kind, task.n_outputs) for name, task in tasks.items()]
        weights = self.task_weights
        if weights is None:
            loss_weights = self.params.get("loss_weights")
            static = None if isinstance(loss_weights, str) else loss_weights
            weights = static_task_weights(static, list(tasks))
        return CellLoss(
            tasks,
            {name: np.asarray(w, dtype=np.float64) for name, w in self.class_weights.items()},
            regression_loss_names(self.params.get("regression_loss", "mse"), specs),
            np.asarray(weights, dtype=np.float64),
        )


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
        check_fields(document)
        for state in document["tasks"]:
            OutputDecoder.from_dict(state)  # the class arrays and dtypes build
        data_sizes = data_sizes_frame(document.get("data_sizes"))
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
        task_weights=document.get("task_weights"),
        calibration=document.get("calibration"),
        decision_thresholds=document.get("decision_thresholds"),
        tabular=document.get("tabular"),
        quantization=document.get("quantization"),
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

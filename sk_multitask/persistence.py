"""Saving a fitted estimator without pickle, and version checks of pickles.

:meth:`MultiTaskImageEstimator.save` writes one file (``.skmt`` by convention): a zip
archive holding exactly two members,

- ``sk_multitask.json``: the format and package versions, the estimator's parameters,
  every task (name, kind, dtype, classes or scaling), the image size, the input
  normalisation, the backbone, the training history and the SHA-256 of the weights;
- ``weights.safetensors``: the network's state (module and criterion state dicts) in
  the safetensors format, which holds tensors and nothing else.

Reading either runs no code: a file from a stranger can be loaded by :func:`load`
(a pickle, which joblib writes, cannot: unpickling runs whatever the file says).

A joblib pickle of the estimator records the package version that wrote it; loading
it under another version warns with :class:`InconsistentVersionWarning`.

Importing this module imports neither torch nor scikit-learn: the ONNX predictor
reads the same JSON document.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np

from . import __version__
from .outputs import task_from_dict, task_to_dict

__all__ = [
    "FORMAT_VERSION",
    "InconsistentVersionWarning",
    "SavedModel",
    "VersionedPickleMixin",
    "check_document",
    "decode_params",
    "load",
    "model_document",
    "read_model",
    "save",
]

#: The version of the file format (the JSON document's layout and the members).
#: A reader refuses a file of a newer format version.
FORMAT_VERSION = 1
FORMAT = "sk-multitask"
DOCUMENT = "sk_multitask.json"
WEIGHTS = "weights.safetensors"
_PARTS = ("module", "criterion")  # the net's state dicts, prefixed in the weights


class InconsistentVersionWarning(UserWarning):
    """A pickled estimator is loaded under another sk-multitask version than saved it.

    Like scikit-learn's :class:`~sklearn.exceptions.InconsistentVersionWarning`: the
    model may break or predict differently. Retrain it, or use the version that
    saved it; :meth:`MultiTaskImageEstimator.save` writes a file that does not
    depend on the package's code.

    Attributes
    ----------
    estimator_name : str
    current_version : str
    original_version : str
    """

    def __init__(self, *, estimator_name, current_version, original_version):
        self.estimator_name = estimator_name
        self.current_version = current_version
        self.original_version = original_version

    def __str__(self):
        return (
            f"Trying to unpickle estimator {self.estimator_name} from sk-multitask "
            f"version {self.original_version} when using version {self.current_version}. "
            "This might lead to breaking code or invalid results. Use at your own risk; "
            "est.save(path) writes a file that loads under any later version."
        )


class VersionedPickleMixin:
    """Records the package version in pickles and warns when it differs on load."""

    def __getstate__(self):
        return {**super().__getstate__(), "_sk_multitask_version": __version__}

    def __setstate__(self, state):
        state = dict(state)
        original = state.pop("_sk_multitask_version", "unknown (before 0.1.0)")
        if original != __version__:
            warnings.warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    current_version=__version__,
                    original_version=original,
                ),
                stacklevel=2,
            )
        super().__setstate__(state)


# -- the JSON document -----------------------------------------------------------------


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
        import pathlib

        return pathlib.Path(value["__path__"])
    if value.keys() == {"__tuple__"}:
        return tuple(_decode(v) for v in value["__tuple__"])
    if value.keys() == {"__items__"}:
        return {_hashable(_decode(k)): _decode(v) for k, v in value["__items__"]}
    return {k: _decode(v) for k, v in value.items()}


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def decode_params(document):
    """The estimator's parameters from a model document (the backbone as saved)."""
    return {name: _decode(value) for name, value in document["params"].items()}


def model_document(estimator):
    """The JSON document describing a fitted estimator (everything but the weights).

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator

    Returns
    -------
    dict
        JSON-able: ``format``, ``format_version``, ``versions``, ``estimator``,
        ``params``, ``backbone``, ``tasks``, ``image_size``, ``normalisation``.
    """
    import sklearn
    import skorch
    import torch

    params = estimator.get_params(deep=False)
    backbone = params["backbone"]
    own = isinstance(backbone, torch.nn.Module)
    if own:  # a module of the user's own code: load(path, backbone=...) takes it
        params["backbone"] = None
    module = estimator.net_.module_
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": {
            "sk_multitask": __version__,
            "torch": torch.__version__,
            "skorch": skorch.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "estimator": type(estimator).__name__,
        "params": {name: _encode(value, name) for name, value in params.items()},
        "backbone": {
            "name": None if own else backbone,
            "class": f"{type(backbone).__module__}.{type(backbone).__qualname__}"
            if own
            else None,
        },
        "tasks": [task_to_dict(task) for task in estimator.tasks_.values()],
        "image_size": list(estimator.image_size_),
        "normalisation": {
            "mean": (module.mean / 255).flatten().tolist(),
            "std": (module.std / 255).flatten().tolist(),
        },
    }


def check_document(document, path):
    """Raise a ValueError naming ``path`` unless ``document`` is one this version reads."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)!r} does not hold an sk-multitask model document")
    version = document.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{os.fspath(path)!r}: the model document has no format version")
    if version > FORMAT_VERSION:
        saved_by = document.get("versions", {}).get("sk_multitask", "a newer version")
        raise ValueError(
            f"{os.fspath(path)!r} has format version {version}, written by sk-multitask "
            f"{saved_by}; this sk-multitask {__version__} reads format versions up to "
            f"{FORMAT_VERSION}: upgrade sk-multitask to load it"
        )


# -- the file ------------------------------------------------------------------------


def save(estimator, path):
    """Write a fitted estimator to ``path`` as a safe file (zip: JSON + safetensors).

    See :meth:`MultiTaskImageEstimator.save`.

    Returns
    -------
    str
        The path written.
    """
    from safetensors.torch import save as save_tensors
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    document = model_document(estimator)
    document["history"] = json.loads(json.dumps(list(estimator.history_), default=_json_default))
    net = estimator.net_
    tensors = {
        f"{part}.{key}": tensor.detach().cpu().contiguous().clone()
        for part in _PARTS
        for key, tensor in getattr(net, f"{part}_").state_dict().items()
    }
    weights = save_tensors(tensors)
    document["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    path = os.fspath(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(DOCUMENT, json.dumps(document, indent=1), zipfile.ZIP_DEFLATED)
        archive.writestr(WEIGHTS, weights, zipfile.ZIP_STORED)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot save a {type(value).__name__} of the training history")


@dataclass
class SavedModel:
    """What :func:`read_model` found in a safe file: all a fitted estimator needs.

    Attributes
    ----------
    document : dict
        The JSON document, as written by :func:`save`.
    params : dict
        The estimator's parameters (with the ``backbone`` to build).
    tasks : dict
        Task name to fitted :class:`~sk_multitask.targets.Task`.
    image_size : (int, int)
    history : list of dict
    state : dict
        ``"module"`` and ``"criterion"`` to their state dicts.
    path : str
    """

    document: dict
    params: dict
    tasks: dict
    image_size: tuple
    history: list
    state: dict
    path: str

    @property
    def class_weights(self):
        """Task name to the class weights the saved criterion holds (its buffers)."""
        criterion = self.state["criterion"]
        return {
            name: criterion[f"class_weight_{i}"]
            for i, name in enumerate(self.tasks)
            if f"class_weight_{i}" in criterion
        }

    def restore(self, net):
        """Load the saved state into an initialised net of the same structure."""
        from skorch.history import History

        for part in _PARTS:
            try:
                getattr(net, f"{part}_").load_state_dict(self.state[part])
            except RuntimeError as exc:
                raise ValueError(
                    f"the weights in {self.path!r} do not fit the network the file "
                    f"describes ({part}): {exc}"
                ) from exc
        net.history = History(self.history)
        return net


def read_model(path, backbone=None):
    """Read and check a safe file; no code in the file runs.

    Parameters
    ----------
    path : str or path
    backbone : torch.nn.Module, optional
        The backbone to build when the model was trained with one of your own
        (required then); it replaces the saved one otherwise.

    Returns
    -------
    SavedModel

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        Naming the file: not a safe file (a pickle, say), truncated or modified, of a
        newer format version, or a backbone of your own is needed.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path!r}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(archive.namelist())
            if names != sorted([DOCUMENT, WEIGHTS]):
                raise ValueError(
                    f"{path!r} is not an sk-multitask model file: its archive holds "
                    f"{names}, not exactly {DOCUMENT!r} and {WEIGHTS!r}; nothing in it "
                    "was read"
                )
            raw_document, weights = archive.read(DOCUMENT), archive.read(WEIGHTS)
    except zipfile.BadZipFile as exc:
        raise ValueError(
            f"{path!r} is not an sk-multitask model file (the zip archive est.save "
            f"writes), or it is truncated or damaged: {exc}. load() never unpickles; "
            "a joblib or pickle file loads with joblib.load, which can run any code: "
            "only for files from a source you trust"
        ) from exc
    try:
        document = json.loads(raw_document)
    except ValueError as exc:
        raise ValueError(f"{path!r}: the model document is not valid JSON: {exc}") from exc
    check_document(document, path)
    if hashlib.sha256(weights).hexdigest() != document.get("weights_sha256"):
        raise ValueError(
            f"{path!r}: the weights do not match the model document (their SHA-256 "
            "differs): the file was modified after it was saved"
        )
    try:
        tensors = load_tensors(weights)
    except SafetensorError as exc:
        raise ValueError(f"{path!r}: the weights are not a safetensors file: {exc}") from exc
    try:
        params = decode_params(document)
        tasks = {}
        for task_state in document["tasks"]:
            task = task_from_dict(task_state)
            tasks[task.name] = task
        image_size = tuple(int(side) for side in document["image_size"])
        saved = document["backbone"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path!r}: the model document is incomplete ({exc!r})") from exc
    if backbone is not None:
        params["backbone"] = backbone
    elif saved["class"] is not None:
        raise ValueError(
            f"{path!r} holds a model whose backbone is a module of your own, "
            f"{saved['class']}: its code cannot be saved in the file. Pass an instance "
            f"built like the one trained: load(path, backbone={saved['class']}(...))"
        )
    state = {part: {} for part in _PARTS}
    for key, tensor in tensors.items():
        part, _, name = key.partition(".")
        if part not in state:
            raise ValueError(f"{path!r}: unexpected tensor {key!r} in the weights")
        state[part][name] = tensor
    return SavedModel(
        document=document,
        params=params,
        tasks=tasks,
        image_size=image_size,
        history=document.get("history", []),
        state=state,
        path=path,
    )


def load(path, backbone=None):
    """Load an estimator saved by :meth:`MultiTaskImageEstimator.save`.

    Safe for files from elsewhere: the file holds JSON and tensors, and reading it
    runs no code. See :meth:`MultiTaskImageEstimator.load`.

    Parameters
    ----------
    path : str or path
    backbone : torch.nn.Module, optional
        Required when the model was trained with a backbone module of your own: an
        instance built the same way (its weights are loaded from the file).

    Returns
    -------
    MultiTaskImageEstimator
    """
    from .estimator import MultiTaskImageEstimator

    return MultiTaskImageEstimator.load(path, backbone=backbone)

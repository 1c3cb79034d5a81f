"""The safe file: a fitted model saved without pickle, and read back without running code.

:meth:`MultiTaskImageEstimator.save` writes one file (``.skmt`` by convention): a zip
archive holding exactly two members,

- ``sk_multitask.json``: the model document (:mod:`sk_multitask.persistence._document`: parameters,
  tasks, image size, history, data sizes, skipped images, best epoch, class weights,
  package versions) and the SHA-256 of the weights;
- ``weights.safetensors``: the network's state (module and criterion state dicts) in
  the safetensors format, which holds tensors and nothing else.

Reading either runs no code: a file from a stranger can be loaded by
:func:`sk_multitask.load` (a pickle, which joblib writes, cannot: unpickling runs
whatever the file says). The file is written atomically: a temporary file, synced,
then renamed over ``path``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass

from ..inputs._files import atomic_write
from ..network._backbones import backbone_state_shapes
from ..network._model import NET_PARTS, load_net_state, net_state
from ..targets import REGRESSION, head_outputs
from ..targets._outputs import task_from_dict
from ._document import MAX_DOCUMENT_BYTES, ModelDocument, model_document, read_document

DOCUMENT = "sk_multitask.json"
WEIGHTS = "weights.safetensors"
#: The first bytes of a safe file (a zip archive's first member).
ZIP_SIGNATURE = b"PK\x03\x04"


def save(estimator, path):
    """Write a fitted estimator to ``path`` as a safe file (zip: JSON + safetensors).

    See :meth:`MultiTaskImageEstimator.save`.

    Returns
    -------
    str
        The path written.
    """
    path = os.fspath(path)
    with atomic_write(path) as file:
        _write(estimator, file)
    return path


def model_bytes(estimator, with_params=True):
    """The safe file of a fitted estimator, as bytes: what :func:`save` writes.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    with_params : bool, default=True
        Record the parameters in the document (a pickle holds them itself: see
        :mod:`sk_multitask.persistence._pickling`).

    Returns
    -------
    bytes
        :func:`read_model` reads them back.
    """
    buffer = io.BytesIO()
    _write(estimator, buffer, with_params)
    return buffer.getvalue()


def _write(estimator, file, with_params=True):
    from safetensors.torch import save as save_tensors
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    document = model_document(estimator, with_params, action="save" if with_params else "pickle")
    weights = save_tensors(net_state(estimator.net_))
    document["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    with zipfile.ZipFile(file, "w") as archive:
        archive.writestr(DOCUMENT, json.dumps(document, indent=1), zipfile.ZIP_DEFLATED)
        archive.writestr(WEIGHTS, weights, zipfile.ZIP_STORED)


@dataclass
class SavedModel:
    """What :func:`read_model` found in a safe file: all a fitted estimator needs.

    Attributes
    ----------
    model : ModelDocument
        The checked document (:class:`sk_multitask.persistence._document.ModelDocument`).
    params : dict
        The estimator's parameters (with the ``backbone`` to build).
    tasks : dict
        Task name to fitted :class:`~sk_multitask.targets.Task`.
    state : dict
        The weights, as :func:`net_state` gives them.
    path : str
    """

    model: ModelDocument
    params: dict
    tasks: dict
    state: dict
    path: str

    @property
    def class_weights(self):
        """Task name to the class weights the saved criterion was trained with."""
        if "class_weights" in self.model.document:
            return self.model.class_weights
        # Format version 1 kept them only as the criterion's buffers.
        return {
            name: self.state[f"criterion.class_weight_{i}"]
            for i, name in enumerate(self.tasks)
            if f"criterion.class_weight_{i}" in self.state
        }

    def restore(self, net):
        """Load the saved weights and history into an initialised net of the same structure."""
        from skorch.history import History

        load_net_state(net, self.state, self.path)
        net.history = History(self.model.history)
        return net


def _read_archive(file, path):
    """The raw document and weights of the safe file ``file`` (named ``path``), each read
    with a cap."""
    try:
        # A zip archive may sit anywhere in a file, and a pickle holds one (its model's
        # bytes): a safe file starts with it.
        if file.read(len(ZIP_SIGNATURE)) != ZIP_SIGNATURE:
            raise zipfile.BadZipFile("it does not start with a zip archive")
        with zipfile.ZipFile(file) as archive:
            names = sorted(archive.namelist())
            if names != sorted([DOCUMENT, WEIGHTS]):
                raise ValueError(
                    f"{path!r} is not an sk-multitask model file: its archive holds "
                    f"{names[:5]}, not exactly {DOCUMENT!r} and {WEIGHTS!r}; nothing in it "
                    "was read"
                )
            with archive.open(DOCUMENT) as member:
                raw_document = member.read(MAX_DOCUMENT_BYTES + 1)
            model = read_document(raw_document, path)
            return model, _read_weights_member(archive, path)
    except zipfile.BadZipFile as exc:
        raise ValueError(
            f"{path!r} is not an sk-multitask model file (the zip archive est.save "
            f"writes), or it is truncated or damaged: {exc}. load() never unpickles; "
            "a joblib or pickle file loads with joblib.load, which can run any code: "
            "only for files from a source you trust"
        ) from exc


def _read_weights_member(archive, path):
    """The weights member, stored uncompressed (so it costs no more than the file) and
    no longer than the tensors its safetensors header declares; and that header."""
    if archive.getinfo(WEIGHTS).compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path!r}: the weights are compressed; est.save stores them as they are")
    with archive.open(WEIGHTS) as member:
        start = member.read(8)
        length = int.from_bytes(start, "little") if len(start) == 8 else -1
        if not 0 < length <= MAX_DOCUMENT_BYTES:
            raise ValueError(f"{path!r}: the weights are not a safetensors file (no header)")
        raw_header = member.read(length)
        try:
            header = json.loads(raw_header)
            size = max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__")
        except (ValueError, RecursionError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(
                f"{path!r}: the weights are not a safetensors file (damaged header)"
            ) from exc
        data = member.read(size + 1) if isinstance(size, int) and size >= 0 else b""
    if len(raw_header) != length or len(data) != size:
        raise ValueError(
            f"{path!r}: the weights are not the {size} bytes of tensors their header "
            "declares: the file is truncated, padded or damaged"
        )
    return header, start + raw_header + data


def _check_tensors(model, header, path):
    """A ValueError unless the tensors the header declares are the network's parts and
    each task's head has one output per class (or one for a regression)."""
    for key in header:
        if key != "__metadata__" and key.partition(".")[0] not in NET_PARTS:
            raise ValueError(f"{path!r}: unexpected tensor {key[:80]!r} in the weights")
    for i, state in enumerate(model.task_states):
        n_classes = None if state["kind"] == REGRESSION else len(state["classes"]["values"])
        outputs = head_outputs(state["kind"], n_classes)
        entry = header.get(f"module.heads.{i}.weight")
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or len(shape) != 2 or shape[0] != outputs:
            raise ValueError(
                f"{path!r}: target {str(state['name'])[:40]!r} has {outputs} outputs in the "
                f"model document but its head in the weights has shape {shape}"
            )
    if f"module.heads.{len(model.task_states)}.weight" in header:
        raise ValueError(f"{path!r}: the weights have more heads than the document has tasks")


#: The prefix of the backbone's tensors in the weights.
_BACKBONE = "module.backbone."


def _check_backbone_tensors(backbone, header, path):
    """A ValueError unless the backbone tensors the header declares are those of the
    registry backbone the document names, key by key and shape by shape: checked
    before the backbone is built, so that a small file naming a huge backbone
    (``regnet_y_128gf``: 2.6 GB) is refused without building it."""
    expected = backbone_state_shapes(backbone)
    saved = {
        key.removeprefix(_BACKBONE): entry.get("shape") if isinstance(entry, dict) else None
        for key, entry in header.items()
        if key.startswith(_BACKBONE)
    }
    for key, shape in expected.items():
        if saved.get(key) != list(shape):
            found = "none" if key not in saved else f"shape {saved[key]}"
            raise ValueError(
                f"{path!r}: the weights do not fit backbone {backbone!r}, which the model "
                f"document names: its tensor {key[:80]!r} has shape {list(shape)}, the "
                f"file's {found}; nothing was built"
            )
    extra = sorted(saved.keys() - expected.keys())
    if extra:
        raise ValueError(
            f"{path!r}: the weights do not fit backbone {backbone!r}, which the model "
            f"document names: it has no tensor {extra[0][:80]!r}; nothing was built"
        )


def _read_weights(path, document, weights):
    """The tensors of ``weights``, once their hash matches the document's."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    if hashlib.sha256(weights).hexdigest() != document.get("weights_sha256"):
        raise ValueError(
            f"{path!r}: the weights do not match the model document (their SHA-256 "
            "differs): the file was modified after it was saved"
        )
    try:
        return load_tensors(weights)
    except SafetensorError as exc:
        raise ValueError(f"{path!r}: the weights are not a safetensors file: {exc}") from exc


def _tasks(model, path):
    try:
        return model.tasks(task_from_dict)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path!r}: the model document is incomplete ({exc!r})") from exc


def read_model(path, backbone=None):
    """Read and check a safe file; no code in the file runs.

    Parameters
    ----------
    path : str, path or bytes
        The file, or its contents (:func:`model_bytes`; a pickle holds them).
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
    if isinstance(path, bytes):
        data, path = path, "<model bytes>"
        model, (header, weights) = _read_archive(io.BytesIO(data), path)
    else:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file not found: {path!r}")
        with open(path, "rb") as file:
            model, (header, weights) = _read_archive(file, path)
    _check_tensors(model, header, path)
    state = _read_weights(path, model.document, weights)
    tasks = _tasks(model, path)
    params = dict(model.params)
    if backbone is not None:
        params["backbone"] = backbone
    elif isinstance(params.get("backbone"), str):
        _check_backbone_tensors(params["backbone"], header, path)
    elif model.backbone_class is not None:
        raise ValueError(
            f"{path!r} holds a model whose backbone is a module of your own, "
            f"{model.backbone_class}: its code cannot be saved in the file. Pass an "
            f"instance built like the one trained: load(path, backbone={model.backbone_class}(...))"
        )
    return SavedModel(model=model, params=params, tasks=tasks, state=state, path=path)

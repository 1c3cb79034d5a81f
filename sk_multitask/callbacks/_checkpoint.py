"""Checkpoints: everything needed to resume a fit, written after every epoch."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import joblib
import numpy as np
import torch
from skorch.callbacks import Callback
from skorch.history import History

from ._stopping import load_net_state, net_state

__all__ = ["EpochCheckpoint", "load_checkpoint", "run_fingerprint"]


def run_fingerprint(params, images, targets, train, valid):
    """A hash (``joblib.hash``) of what a fit depends on: parameters, images, targets, split.

    Two fits with the same fingerprint train the same model from the same data, so one
    may resume the other's checkpoint. Image files count by path, size and modification
    time; a user's callback that cannot be pickled (one holding a live writer) counts by
    its class.
    """
    if isinstance(images, np.ndarray) and images.dtype != object:
        files = images
    else:
        files = [(os.fspath(path), *_file_stamp(path)) for path in images]
    valid = None if valid is None else np.asarray(valid)
    data = [files, np.asarray(targets), np.asarray(train), valid]
    try:
        return joblib.hash([params, *data])
    except (pickle.PicklingError, TypeError, AttributeError):
        callbacks = [_class_name(entry) for entry in params.get("callbacks") or []]
        return joblib.hash([{**params, "callbacks": callbacks}, *data])


def _file_stamp(path):
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def _class_name(entry):
    name, callback = entry if isinstance(entry, (tuple, list)) else (None, entry)
    kind = callback if isinstance(callback, type) else type(callback)
    return name, f"{kind.__module__}.{kind.__qualname__}"


_CHECKPOINT = "checkpoint.pt"
_CHECKPOINT_FORMAT = 1


class EpochCheckpoint(Callback):
    """After every epoch, write what resuming needs to ``directory``, atomically.

    One file, ``checkpoint.pt`` (torch's format, tensors and plain values only: it loads
    with ``weights_only=True``): the module's, criterion's and optimizer's state, the
    history, torch's random states, the early-stopping callback's best weights and the
    run's fingerprint. It is written to a temporary name and renamed, so a process killed
    while writing leaves the previous checkpoint whole. Only the epochs completed are
    ever in it.
    """

    def __init__(self, directory, fingerprint):
        self.directory = directory
        self.fingerprint = fingerprint

    def on_epoch_end(self, net, **kwargs):
        state = {
            "format": _CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "net": net_state(net),
            "optimizer": net.optimizer_.state_dict(),
            "history": json.dumps(net.history.to_list()),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.device(net.device).type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        early = dict(net.callbacks_).get("early_stopping")
        if early is not None and early.best_model_weights_ is not None:
            state["best"] = early.best_model_weights_
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, _CHECKPOINT)
        temporary = f"{path}.{os.getpid()}.tmp"
        torch.save(state, temporary)
        os.replace(temporary, path)


def load_checkpoint(net, directory, fingerprint):
    """Restore an initialised ``net`` from the checkpoint in ``directory``, if it is this run's.

    Returns
    -------
    int
        The number of epochs restored: 0 when there is no checkpoint, or when it is of
        another run (other parameters or data), which is then ignored with a warning.
    """
    path = os.path.join(directory, _CHECKPOINT)
    if not os.path.isfile(path):
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file: say so, never train on a half state
        raise ValueError(
            f"cannot read the checkpoint {path!r} ({exc}); delete it or use another checkpoint_dir"
        ) from exc
    if state.get("format") != _CHECKPOINT_FORMAT or state.get("fingerprint") != fingerprint:
        warnings.warn(
            f"the checkpoint in {directory!r} is of another run (other parameters or "
            "data): starting over, and it will be overwritten",
            UserWarning,
            stacklevel=3,
        )
        return 0
    load_net_state(net, state["net"])
    net.optimizer_.load_state_dict(state["optimizer"])
    net.history_ = History(json.loads(state["history"]))
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    early = dict(net.callbacks_).get("early_stopping")
    if early is not None:
        early.resumed_weights_ = state.get("best")
    return len(net.history)

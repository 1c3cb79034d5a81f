"""Checkpoints and resume: skorch's ``Checkpoint`` (safetensors), made atomic, plus the run state.

After every epoch, a fit with ``checkpoint_dir`` writes there:

- ``params-<epoch>.safetensors``, ``criterion-<epoch>.safetensors`` and ``history.json``:
  skorch's :class:`~skorch.callbacks.Checkpoint` (``monitor=None``: every epoch;
  ``use_safetensors=True``), as :class:`AtomicCheckpoint`, which writes each file to a
  temporary name in the same folder, fsyncs it and renames it (``os.replace``);
- ``run.pt``, last, by :class:`RunState`: what skorch's files lack. The epoch, the run's
  fingerprint (:func:`run_fingerprint`), the optimizer's state (safetensors holds tensors
  only, so skorch saves no optimizer with it), torch's random states and the early-stopping
  callback's best weights; torch's format, tensors and plain values only, so it loads with
  ``torch.load(weights_only=True)``. Its rename commits the epoch: that epoch's files are
  complete before it, the earlier epochs' files are removed after it.

Hand-written where skorch cannot meet a constraint: the files carry their epoch in their
names (skorch's format specifiers), so a kill before ``run.pt`` is renamed leaves the previous
epoch whole; and resuming is :func:`load_checkpoint`, not skorch's ``LoadInitState``, which
loads in ``on_train_begin`` (after ``partial_fit`` has fixed how many epochs to run), loads
whatever files it finds (another run's, an epoch cut short) and restores no random state.
:func:`load_checkpoint` reads ``run.pt`` first, then loads the committed epoch's files with
skorch's ``net.load_params`` (safetensors).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings

import joblib
import numpy as np
import torch
from skorch.callbacks import Callback, Checkpoint
from skorch.history import History

from ...inputs._files import atomic_path
from ...inputs._sources import MemoryImage
from ...inputs._storage import is_url

__all__ = [
    "RUN_FILE",
    "AtomicCheckpoint",
    "RunState",
    "checkpoint_callbacks",
    "load_checkpoint",
    "run_fingerprint",
]


def run_fingerprint(params, images, targets, train, valid):
    """A hash (``joblib.hash``) of what a fit depends on: parameters, images, targets, split.

    Two fits with the same fingerprint train the same model from the same data, so one
    may resume the other's checkpoint. Image files count by path, size and modification
    time, images held in memory by their content; a user's callback that cannot be
    pickled (one holding a live writer) counts by its class.
    """
    if isinstance(images, np.ndarray) and images.dtype != object:
        files = images
    else:
        files = [_image_stamp(source) for source in images]
    valid = None if valid is None else np.asarray(valid)
    data = [files, np.asarray(targets), np.asarray(train), valid]
    try:
        return joblib.hash([params, *data])
    except (pickle.PicklingError, TypeError, AttributeError):
        callbacks = [_class_name(entry) for entry in params.get("callbacks") or []]
        return joblib.hash([{**params, "callbacks": callbacks}, *data])


def _image_stamp(source):
    """A file's path, size and modification time; an image in memory's content digest; a
    URL's text (as the disk cache keys it: nothing remote is asked)."""
    if isinstance(source, MemoryImage):
        return source.digest()
    if is_url(source):
        return str(source)
    stat = os.stat(source)
    return os.fspath(source), stat.st_size, stat.st_mtime_ns


def _class_name(entry):
    name, callback = entry if isinstance(entry, (tuple, list)) else (None, entry)
    kind = callback if isinstance(callback, type) else type(callback)
    return name, f"{kind.__module__}.{kind.__qualname__}"


#: The file that commits an epoch (written last) and tells whose files these are.
RUN_FILE = "run.pt"
_RUN_FORMAT = 2
_PARAMS = "params-{last_epoch[epoch]}.safetensors"
_CRITERION = "criterion-{last_epoch[epoch]}.safetensors"
_EPOCH_FILE = re.compile(r"^(params|criterion)-(\d+)\.safetensors$")


class AtomicCheckpoint(Checkpoint):
    """skorch's ``Checkpoint`` of every epoch (safetensors), each file written atomically.

    The module's and the criterion's parameters go to ``params-<epoch>.safetensors`` and
    ``criterion-<epoch>.safetensors``, the history to ``history.json``, in ``dirname``.
    Unlike skorch's, a file that cannot be written is an error, not a line in a log.
    """

    def __init__(self, dirname):
        super().__init__(
            monitor=None,
            f_params=_PARAMS,
            f_optimizer=None,  # safetensors cannot hold it: RunState saves it
            f_criterion=_CRITERION,
            f_history="history.json",
            dirname=dirname,
            event_name=None,  # the history stays that of a fit without checkpoints
            use_safetensors=True,
        )

    def _save_params(self, f, net, f_name, log_name):
        # skorch's one method that writes a file
        with atomic_path(f) as temporary:
            net.save_params(**{f_name: temporary, "use_safetensors": self.use_safetensors})


class RunState(Callback):
    """After :class:`AtomicCheckpoint`, write ``run.pt`` atomically: it commits the epoch.

    ``run.pt`` holds the epoch, the run's ``fingerprint``, the optimizer's state, torch's
    random states and the early-stopping callback's best weights; then the files of other
    epochs are removed.
    """

    def __init__(self, dirname, fingerprint):
        self.dirname = dirname
        self.fingerprint = fingerprint

    def on_epoch_end(self, net, **kwargs):
        epoch = net.history[-1, "epoch"]
        state = {
            "format": _RUN_FORMAT,
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "optimizer": net.optimizer_.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if torch.device(net.device).type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        early = dict(net.callbacks_).get("early_stopping")
        if early is not None and early.best_model_weights_ is not None:
            state["best"] = early.best_model_weights_
        with atomic_path(os.path.join(self.dirname, RUN_FILE)) as temporary:
            torch.save(state, temporary)
        for name in os.listdir(self.dirname):
            match = _EPOCH_FILE.match(name)
            if match and int(match[2]) != epoch:
                os.remove(os.path.join(self.dirname, name))


def checkpoint_callbacks(dirname, fingerprint):
    """The named callbacks that checkpoint a fit in ``dirname``, in order: last in a fit's.

    Examples
    --------
    >>> [(name, type(callback).__name__) for name, callback in checkpoint_callbacks("ckpt", "f")]
    [('checkpoint', 'AtomicCheckpoint'), ('run_state', 'RunState')]
    """
    return [
        ("checkpoint", AtomicCheckpoint(dirname)),
        ("run_state", RunState(dirname, fingerprint)),
    ]


def load_checkpoint(net, directory, fingerprint):
    """Restore an initialised ``net`` from the checkpoint in ``directory``, if it is this run's.

    Returns
    -------
    int
        The number of epochs restored: 0 when there is no checkpoint, or when it is of
        another run (other parameters or data), which is then ignored with a warning.

    Raises
    ------
    ValueError
        If the checkpoint cannot be read.
    """
    path = os.path.join(directory, RUN_FILE)
    if not os.path.isfile(path):
        return 0
    with _unreadable(path):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != _RUN_FORMAT or state.get("fingerprint") != fingerprint:
        warnings.warn(
            f"the checkpoint in {directory!r} is of another run (other parameters or "
            "data): starting over, and it will be overwritten",
            UserWarning,
            stacklevel=3,
        )
        return 0
    epoch = state["epoch"]
    checkpoint = AtomicCheckpoint(directory)
    with _unreadable(directory):
        history = History.from_file(checkpoint.f_history_)
        if len(history) < epoch:
            raise ValueError(f"history.json has {len(history)} epochs, {RUN_FILE} {epoch}")
        # Epochs written after the last committed one (a kill before run.pt) are dropped.
        net.history_ = History(list(history)[:epoch])
        files = checkpoint.get_formatted_files(net)
        net.load_params(
            f_params=files["f_params"], f_criterion=files["f_criterion"], use_safetensors=True
        )
    net.optimizer_.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    early = dict(net.callbacks_).get("early_stopping")
    if early is not None:
        early.resumed_weights_ = state.get("best")
    return epoch


@contextlib.contextmanager
def _unreadable(path):
    """Any error reading the checkpoint: say so, never train on a half state."""
    try:
        yield
    except Exception as exc:
        raise ValueError(
            f"cannot read the checkpoint {path!r} ({exc}); delete it or use another checkpoint_dir"
        ) from exc

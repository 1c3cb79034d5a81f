"""Weight files as users have them, loaded into a backbone.

A file holds a state dict (``torch.save(model.state_dict(), path)``, or a ``.safetensors``
file), possibly wrapped the way training scripts save checkpoints (``{"state_dict": ...}``,
``{"model": ...}``), with the prefixes of ``DataParallel`` (``module.``), ``torch.compile``
(``_orig_mod.``) or a whole network (``backbone.``, as in a fitted estimator's
``est.net_.module_.state_dict()``). Its classifier, of any size, is not part of the
backbone: every entry that is ignored is named in one
:class:`~sk_multitask.exceptions.IgnoredWeightsWarning`.
Files are read without running pickled code (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
import pickle
import warnings

import torch

from ..exceptions import IgnoredWeightsWarning

#: The keys under which checkpoints keep their state dict (PyTorch Lightning, timm's
#: train script, DeiT...).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")
#: Prefixes that wrappers add to every name: DataParallel / DistributedDataParallel,
#: torch.compile, and a network whose feature extractor is its ``backbone`` (this
#: package's MultiTaskModule) or ``model`` (a Lightning module).
PREFIXES = ("module.", "_orig_mod.", "backbone.", "model.")
#: How many ignored names the warning lists.
SHOWN = 20
#: How the files ``torch.save`` writes begin: a zip archive (since torch 1.6), or the
#: pickle protocol opcode of the legacy format.
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")



def read_state_dict(path, label=None):
    """The state dict a weights file holds, unwrapped (``{"state_dict": ...}`` and the like).

    Parameters
    ----------
    path : str or path
        A ``.safetensors`` file, or a file written by ``torch.save`` holding a state
        dict or a dict wrapping one.
    label : str, optional
        The backbone the weights are for, named in messages.

    Returns
    -------
    dict
        Parameter name to tensor, as in the file (prefixes kept).

    Raises
    ------
    FileNotFoundError
        For a file that does not exist.
    ValueError
        Naming the file, for one that holds no state dict (a whole pickled model, a
        tensor), or is not a weights file at all (a text file: neither torch.save's
        format nor safetensors').
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}")
    refused = f"the weights file {path!r} is not a state dict" + (
        f" of backbone {label!r}" if label else ""
    )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    safetensors = path.endswith(".safetensors")
    if not safetensors:
        with open(path, "rb") as file:
            head = file.read(8)
        if not head.startswith(TORCH_MAGIC):  # torch's unpickler fails on text in raw errors
            raise ValueError(
                f"{refused}: it is not a weights file (neither torch.save's format nor a "
                f".safetensors file; it begins {head!r})"
            )
    try:
        if safetensors:
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's advice (weights_only=False) runs code
        raise ValueError(
            f"{refused}: it holds objects other than tensors (a whole model saved by "
            "torch.save(model)? save model.state_dict() instead) or is not a torch file"
        ) from exc
    # A damaged file: the unpickler's own errors (KeyError, IndexError...) included.
    except (EOFError, RuntimeError, OSError, SafetensorError, LookupError) as exc:
        raise ValueError(f"{refused}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    while isinstance(state, dict) and not _is_state_dict(state):
        inner = [state[key] for key in WRAPPER_KEYS if isinstance(state.get(key), dict)]
        if not inner:
            break
        state = inner[0]
    if not (isinstance(state, dict) and state and _is_state_dict(state)):
        found = sorted(map(str, state))[:5] if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{refused}: it holds {found}, not "
            "parameter names mapped to tensors (save one with "
            "torch.save(model.state_dict(), path))"
        )
    return state


def _is_state_dict(state):
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def load_weights_file(module, path, label):
    """Load the weights in ``path`` into ``module`` (in place), as users have them.

    The file's names are matched to the module's after removing the wrappers'
    prefixes (:data:`PREFIXES`), whichever way matches the most. Entries the module has
    no place for (a classifier of any size, a network's heads) are ignored and named
    in one :class:`~sk_multitask.exceptions.IgnoredWeightsWarning`; BatchNorm's
    ``num_batches_tracked``, which old checkpoints lack, may be missing.

    Parameters
    ----------
    module : nn.Module
        The backbone, without its classifier.
    path : str or path
        The weights file (see :func:`read_state_dict`).
    label : str
        The backbone's name, for messages.

    Raises
    ------
    ValueError
        Naming the file and the backbone when the file holds none of its weights,
        lacks some (naming them), holds one of another shape or with NaN or infinite
        values (naming it).
    """
    path = os.fspath(path)
    state = read_state_dict(path, label)
    expected = module.state_dict()
    names = _match_names(state, expected)
    matched = {new: state[old] for new, old in names.items() if new in expected}
    if not matched:
        raise ValueError(
            f"the weights file {path!r} is not a state dict of backbone {label!r}: none "
            f"of its names (e.g. {sorted(state)[:3]}) are among the backbone's "
            f"(e.g. {list(expected)[:3]})"
        )
    for name, tensor in matched.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"the weights file {path!r} does not fit backbone {label!r}: "
                f"{name!r} has shape {tuple(tensor.shape)} in the file and "
                f"{tuple(expected[name].shape)} in the backbone"
            )
    for name, tensor in matched.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(
                f"the weights file {path!r} holds non-finite values (NaN or infinity) in "
                f"tensor {names[name]!r}: the network would predict NaN (the file is "
                "damaged, or was saved from a run that diverged)"
            )
    missing = [k for k in expected if k not in matched and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"the weights file {path!r} lacks {len(missing)} of backbone {label!r}'s "
            f"weights: {missing[:SHOWN]}"
        )
    used = {names[new] for new in matched}
    ignored = [old for old in state if old not in used]
    if ignored:
        more = f" and {len(ignored) - SHOWN} more" if len(ignored) > SHOWN else ""
        warnings.warn(
            f"the weights file {path!r}: {len(ignored)} entries that backbone {label!r} "
            f"has no place for are ignored: {ignored[:SHOWN]}{more}",
            IgnoredWeightsWarning,
            stacklevel=2,
        )
    module.load_state_dict(matched, strict=False)


def _match_names(state, expected):
    """Module name to file name: the file's names with wrapper prefixes removed, as many
    times as doing so matches more of ``expected``."""
    names = {name: name for name in state}
    while True:
        score = sum(name in expected for name in names)
        options = [
            {new.removeprefix(p): old for new, old in names.items() if new.startswith(p)}
            for p in PREFIXES
        ]
        best = max(options, key=lambda o: sum(name in expected for name in o))
        if sum(name in expected for name in best) <= score:
            return names
        names = best

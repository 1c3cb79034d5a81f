"""The user's own skorch callbacks: checked, and copied for each fit."""

from __future__ import annotations

import copy

from skorch.callbacks import Callback

__all__ = ["check_callbacks", "copy_callbacks"]


def check_callbacks(callbacks):
    """Refuse, naming its position, an entry of ``callbacks`` that skorch cannot use.

    Each entry is a skorch :class:`~skorch.callbacks.Callback` (an instance or a
    class) or a ``(name, callback)`` pair of a string and one.
    """
    for position, entry in enumerate(callbacks or []):
        pair = isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)
        callback = entry[1] if pair else entry
        is_class = isinstance(callback, type) and issubclass(callback, Callback)
        if not (is_class or isinstance(callback, Callback)):
            raise TypeError(
                f"callbacks[{position}] is {entry!r}: expected a skorch Callback or a "
                "(name, callback) pair"
            )


def copy_callbacks(callbacks):
    """Copies of the user's callbacks (or ``(name, callback)`` pairs) for one fit.

    skorch sets fitted state on the callbacks it runs; working on copies leaves the
    estimator's ``callbacks`` parameter as it was given. A callback holding a live
    resource that cannot be deep-copied (skorch's ``TensorBoard`` and its
    ``SummaryWriter``) is copied shallowly: the copy writes to the same resource.

    Parameters
    ----------
    callbacks : list or None

    Returns
    -------
    list
    """
    copies = []
    for item in callbacks or []:
        try:
            copies.append(copy.deepcopy(item))
        except TypeError:  # "cannot pickle '_thread.lock' object" and the like
            name, callback = item if isinstance(item, (tuple, list)) else (None, item)
            shallow = copy.copy(callback)
            copies.append(shallow if name is None else (name, shallow))
    return copies

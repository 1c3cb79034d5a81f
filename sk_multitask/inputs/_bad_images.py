"""The one rule for images that cannot be read, torch-free: find, record, skip, warn.

The torch Dataset (:mod:`sk_multitask.inputs._dataset`) and the ONNX predictor
(:mod:`sk_multitask.onnx._predictor`) decode through :func:`decode_or_record` and make
the rows of unreadable images missing with :func:`mark_unreadable`: with
``on_bad_image="raise"`` the :class:`~sk_multitask.exceptions.BadImageError` naming the
file propagates; with ``"skip"`` its row of outputs is missing (NaN) and one
:class:`~sk_multitask.exceptions.BadImageWarning` counts such rows. Before training,
:func:`screen_images` leaves out the files found bad without decoding them. This module
imports numpy and PIL only (through :mod:`sk_multitask.inputs._decoding`).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..exceptions import BadImageError, BadImageWarning
from ._decoding import PIL_ERRORS, decode_image, no_pixels, open_image, source_name
from ._sources import MemoryImage, is_pixel_array
from ._storage import is_url

#: The values of the estimator's (and the ONNX predictor's) ``on_bad_image``.
BAD_IMAGE_OPTIONS = ("raise", "skip")


def decode_or_record(source, image_size, position, bad_images=None):
    """:func:`decode_image`, or None after recording an unreadable image.

    The one rule for an image that cannot be read, shared by the torch Dataset and the
    ONNX predictor: without ``bad_images`` (``on_bad_image="raise"``) the
    :class:`~sk_multitask.exceptions.BadImageError` naming the file propagates; with it
    (``"skip"``) the error is passed to ``bad_images.record(position, error)`` and None
    returned, and
    :func:`mark_unreadable` later makes that row's outputs missing.
    """
    try:
        return decode_image(source, image_size)
    except BadImageError as exc:
        if bad_images is None:
            raise
        bad_images.record(position, exc)
        return None


class BadImageRecords:
    """The images one process could not decode: ``record`` them, ``collect`` them.

    The in-process log of :func:`decode_or_record` (the ONNX predictor's);
    :class:`sk_multitask.inputs._dataset.BadImageLog` is the one DataLoader workers share.
    """

    def __init__(self):
        self.records = {}

    def record(self, position, error):
        """Note that the image at ``position`` could not be read (a
        :class:`~sk_multitask.exceptions.BadImageError`)."""
        self.records[int(position)] = (error.path, str(error.reason))

    def collect(self):
        """``{position: (path, reason)}`` of the images recorded, by position."""
        return dict(sorted(self.records.items()))


#: What becomes of an unreadable image's row in predict and the other methods.
MISSING_OUTPUTS = "given missing predictions"


def mark_unreadable(outputs, bad, stacklevel=3):
    """Make the rows of unreadable images missing (NaN) and warn once about them.

    Parameters
    ----------
    outputs : float ndarray or tensor (N, ...)
        Set to NaN in place at the positions of ``bad``.
    bad : dict
        ``{position: (path, reason)}`` as ``collect`` returns it; empty: nothing to do.

    Returns
    -------
    outputs
    """
    if bad:
        outputs[list(bad)] = float("nan")
        warn_skipped(list(bad.values()), MISSING_OUTPUTS, stacklevel=stacklevel + 1)
    return outputs


def find_bad_images(images, verify=False):
    """The images that are missing, empty or, with ``verify``, unreadable.

    Without ``verify`` only the file system is asked (fast). With it each file's
    header is parsed and checked by PIL's :meth:`~PIL.Image.Image.verify` without
    decoding the pixels: a PNG's chunks and checksums are checked, a JPEG's markers
    are parsed but its compressed data is not, so a truncated JPEG is only found
    when decoded. A URL is only checked with ``verify`` (its object read); without,
    a missing object is found when it is decoded.

    Parameters
    ----------
    images : sequence of str and MemoryImage, or uint8 ndarray
        As :func:`~sk_multitask.inputs._sources.resolve_images` returns them: file paths are
        checked, encoded bytes too (an array or a PIL image is decoded already: only
        one without pixels is bad; a URL only with ``verify``).
    verify : bool, default=False

    Returns
    -------
    dict
        ``{position: (path, reason)}`` of the bad images, by position.
    """
    if is_pixel_array(images):
        return {}
    bad = {}
    for position, source in enumerate(images):
        reason = _bad_image_reason(source, verify)
        if reason is not None:
            bad[position] = (source_name(source), reason)
    return bad


def _bad_image_reason(source, verify):
    """Why one image of :func:`find_bad_images` is bad, or None."""
    if isinstance(source, MemoryImage):
        if not isinstance(source.data, bytes):
            return no_pixels(source.data)  # decoded already: only its size can be wrong
        if not source.data:
            return "empty"
    elif is_url(source):
        pass  # an object is not asked for: it is found when read
    elif not os.path.isfile(source):
        return "a directory" if os.path.isdir(source) else "not found"
    elif os.path.getsize(source) == 0:
        return "empty file"
    if verify:
        try:
            with open_image(source) as img:
                img.verify()
        except PIL_ERRORS as exc:
            return str(exc) or type(exc).__name__
    return None


def screen_images(images, on_bad_image="raise", verify=False):
    """The images to train on, after the checks that need no decoding.

    With ``on_bad_image="skip"``, missing and empty files are found by the file system;
    with ``verify`` (``check_images``), unreadable headers too (:func:`find_bad_images`).

    Returns
    -------
    keep : bool ndarray
        False for the bad files, to leave out.
    bad : list of (path, reason)

    Raises
    ------
    ValueError
        With ``on_bad_image="raise"``, naming the files found bad; with ``"skip"``, if
        every file is bad.
    """
    keep = np.ones(len(images), dtype=bool)
    if on_bad_image == "raise" and not verify:
        return keep, []  # resolve_images checked that the files exist
    bad = find_bad_images(images, verify=verify)
    if bad and on_bad_image == "raise":
        raise ValueError(
            f"{len(bad)} image file{'s' if len(bad) > 1 else ''} cannot be read "
            f"(check_images=True): {describe_bad_images(list(bad.values()))}"
        )
    if len(bad) == len(images):
        raise ValueError(f"no image file can be read: {describe_bad_images(list(bad.values()))}")
    keep[list(bad)] = False
    return keep, list(bad.values())


def describe_bad_images(bad, limit=3):
    """``'a.jpg' (not found), 'b.png' (empty file) and 2 more``: the first few of ``bad``.

    ``bad`` is a sequence of ``(path, reason)`` pairs.
    """
    named = [f"{path!r} ({reason})" for path, reason in bad[:limit]]
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return ", ".join(named) + more


def warn_skipped(bad, action, stacklevel=3):
    """One :class:`~sk_multitask.exceptions.BadImageWarning` counting the ``bad`` images,
    naming the first few.

    ``bad`` is a sequence of ``(path, reason)`` pairs; ``action`` says what became of
    them (``"left out of training"``).
    """
    plural = len(bad) > 1
    warnings.warn(
        f"{len(bad)} image file{'s' if plural else ''} could not be read and "
        f"{'were' if plural else 'was'} {action} (on_bad_image='skip'): "
        f"{describe_bad_images(bad)}",
        BadImageWarning,
        stacklevel=stacklevel,
    )

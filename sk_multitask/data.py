"""Image input: turning ``X`` into image sources, and the Dataset that decodes them.

Images stay uint8 ``(3, H, W)`` tensors from decoding to the device; the network
normalises them there (:class:`sk_multitask.module.MultiTaskModule`). Files are
decoded lazily, one item at a time, so a dataset on disk is streamed, never loaded
whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from numbers import Integral

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from sklearn.model_selection import train_test_split
from torchvision.transforms import v2

__all__ = [
    "BadImageError",
    "BadImageLog",
    "BadImageWarning",
    "ImageDataset",
    "check_image_size",
    "ImageNotFoundError",
    "bad_image_log",
    "decode_images",
    "describe_bad_images",
    "find_bad_images",
    "image_references",
    "load_image",
    "median_image_size",
    "resolve_images",
    "split_rows",
    "screen_images",
    "train_transform",
    "warn_skipped",
]

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_WIDE_MODES = {"I", "F", *_SIXTEEN_BIT_MODES}  # more than 8 bits per pixel
_NO_TARGET = torch.empty(0)  # skorch wants (X, y) pairs even when there is no y
_ROOT_HINT = "set image_root to the folder the image paths are relative to"

# What PIL raises on a file it cannot read (DecompressionBombError: above its pixel limit).
_PIL_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


class BadImageError(ValueError):
    """An image file that is empty, truncated or not an image; ``path`` names it."""

    def __init__(self, path, reason, message=None):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(message or f"cannot decode image file {self.path!r}: {reason}")


class ImageNotFoundError(BadImageError, FileNotFoundError):
    """An image file that does not exist (a ``FileNotFoundError`` too)."""

    def __init__(self, path):
        super().__init__(
            path, "not found", f"image file not found: {os.fspath(path)!r}; {_ROOT_HINT}"
        )


class BadImageWarning(UserWarning):
    """Images skipped because they could not be read (``on_bad_image="skip"``)."""


def as_size(image_size):
    """``(height, width)`` from a positive int or a pair of them (numpy integers too).

    Raises
    ------
    ValueError
        Naming ``image_size``, for anything else.
    """
    pair = (image_size, image_size) if isinstance(image_size, Integral) else image_size
    try:
        height, width = pair
        sides = (int(height), int(width))
        valid = all(isinstance(side, Integral) and side >= 1 for side in (height, width))
    except (TypeError, ValueError):
        valid = False
    if not valid or isinstance(image_size, bool):
        raise ValueError(
            "image_size must be a positive int or a (height, width) pair of positive ints; "
            f"got {image_size!r}"
        )
    return sides


def _to_uint8(pixels, sixteen_bit):
    """8-bit pixels from wider ones (16- and 32-bit integers, 32-bit floats).

    16-bit modes are divided by 256. Otherwise the scale follows the values' range:
    floats within [0, 1] are multiplied by 255; values within [0, 255] are kept; within
    [0, 65535] divided by 256; any other range is stretched min-max to [0, 255].
    NaN and infinities count as 0.
    """
    is_float = pixels.dtype.kind == "f"
    pixels = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = pixels.min(), pixels.max()
    if sixteen_bit or (low >= 0 and 255 < high <= 65535):
        pixels = pixels / 256
    elif is_float and low >= 0 and high <= 1:
        pixels = pixels * 255
    elif not (low >= 0 and high <= 255):
        pixels = (pixels - low) * (255 / (high - low)) if high > low else pixels * 0
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _to_rgb(img):
    """RGB from any PIL mode: grayscale, palette, RGBA, CMYK, 16-bit, 32-bit and float."""
    if img.mode in _WIDE_MODES:
        # PIL's own conversion clips wide values at 255 (a float image in [0, 1] turns
        # black); scale them instead.
        img = Image.fromarray(_to_uint8(np.asarray(img), img.mode in _SIXTEEN_BIT_MODES))
    elif img.mode == "P":
        # Through RGBA, so that palette transparency is read, not warned about.
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(path, image_size):
    """Decode one image file to a uint8 tensor ``(3, H, W)`` of ``image_size``.

    EXIF orientation is applied; any mode is converted to RGB; the resize is bilinear
    with antialiasing, by torch on the decoded uint8 pixels (faster than PIL's) and
    skipped when the image already has the size. A JPEG at least twice the target size
    is decoded at a reduced DCT scale (PIL's draft mode), several times faster
    (``benchmarks/bench_decode.py``).

    Raises
    ------
    ImageNotFoundError
        Naming the file, if it does not exist (a ``FileNotFoundError``).
    BadImageError
        Naming the file, if it cannot be decoded (a ``ValueError``).
    """
    size = as_size(image_size)
    try:
        with Image.open(path) as img:
            side = max(size)  # the draft must cover an image that EXIF rotates, too
            if min(img.size) >= 2 * side:  # else the draft cannot reduce the DCT scale
                img.draft("RGB", (side, side))
            # A JPEG's EXIF is read with its header: without one there is nothing to
            # turn. In place, as a copy costs as much as the decode for small images.
            if img.format != "JPEG" or "exif" in img.info:
                ImageOps.exif_transpose(img, in_place=True)
            img.load()  # decode while the file is open
            img = _to_rgb(img)
    except FileNotFoundError:
        raise ImageNotFoundError(path) from None
    except _PIL_ERRORS as exc:
        raise BadImageError(path, exc) from exc
    return _resized(torch.from_numpy(np.array(img)).permute(2, 0, 1), size)


def _resized(image, size):
    if tuple(image.shape[1:]) == size:
        return image
    return v2.functional.resize(image, list(size), antialias=True)


def _array_image(image, image_size):
    """A uint8 tensor ``(3, H, W)`` of ``image_size`` from one ``(H, W[, C])`` array."""
    image = np.asarray(image)
    # torch wants writable memory: copy a read-only (memmap) image, share any other.
    tensor = torch.from_numpy(image if image.flags.writeable else image.copy())
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    channels = tensor.shape[0]
    if channels == 1:
        tensor = tensor.expand(3, -1, -1)
    elif channels == 4:
        tensor = tensor[:3]
    return _resized(tensor, as_size(image_size))


def _decoded_image(image, image_size):
    return image


def decode_images(images, image_size, num_workers=0, batch_size=256, bad_images=None):
    """Decode and resize every image once: a uint8 tensor ``(N, 3, H, W)`` in memory.

    ``images`` are file paths or a uint8 array; decoding runs in ``num_workers``
    DataLoader processes. With a ``bad_images`` log, an unreadable file is recorded
    there (its image is black) instead of raising.
    """
    loader = torch.utils.data.DataLoader(
        ImageDataset(images, image_size=image_size, bad_images=bad_images),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    return torch.cat([batch for batch, _ in loader])


def train_transform(augment):
    """The training-time augmentation (on uint8 tensors), or None."""
    if not augment:
        return None
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ]
    )


class ImageDataset(torch.utils.data.Dataset):
    """Images (file paths or a uint8 array) and their encoded targets.

    Items are ``(image, target)``: ``image`` a uint8 tensor ``(3, H, W)``, ``target``
    a float32 tensor with one entry per task, NaN where missing (empty without
    targets, so that skorch always sees an ``(X, y)`` pair).

    Parameters
    ----------
    images : sequence of str, ndarray (N, H, W[, C]) or tensor (N, 3, H, W)
        Resolved file paths, uint8 images, or images already decoded to the size
        (:func:`decode_images`).
    targets : ndarray of shape (N, n_tasks), optional
    image_size : int or (int, int)
    transform : callable, optional
        Applied to each uint8 image tensor (training augmentation).
    bad_images : BadImageLog, optional
        Where a file that cannot be read is recorded; its item is then a black image
        with an all-missing target, so that it adds nothing to the loss. None: the
        :class:`BadImageError` propagates.
    """

    def __init__(self, images, targets=None, *, image_size, transform=None, bad_images=None):
        self.images = images
        self.targets = None if targets is None else torch.as_tensor(targets)
        self.image_size = image_size
        self.transform = transform
        self.bad_images = bad_images
        if isinstance(images, torch.Tensor):
            self._decode = _decoded_image
        elif isinstance(images, np.ndarray) and images.dtype == np.uint8:
            self._decode = _array_image
        else:
            self._decode = load_image

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        target = _NO_TARGET if self.targets is None else self.targets[i]
        try:
            image = self._decode(self.images[i], self.image_size)
        except BadImageError as exc:
            if self.bad_images is None:
                raise
            self.bad_images.record(i, exc)
            blank = torch.zeros((3, *as_size(self.image_size)), dtype=torch.uint8)
            return blank, torch.full_like(target, float("nan"))
        if self.transform is not None:
            image = self.transform(image)
        return image, target


class BadImageLog:
    """The images that could not be decoded, recorded from any process.

    A DataLoader worker holds its own copy of the dataset, so the records go to a
    temporary file (one JSON line per image, appended) that every process can write
    and the main process reads. :meth:`collect` removes the file (so does garbage
    collection, after an error).
    """

    def __init__(self):
        handle, self.path = tempfile.mkstemp(prefix="sk-multitask-bad-images-", suffix=".jsonl")
        os.close(handle)
        # A forked worker's copy of this object must not remove the file: hence the pid.
        self._remove = weakref.finalize(self, _remove_file, self.path, os.getpid())

    def record(self, position, error):
        """Note that the image at ``position`` could not be read (a :class:`BadImageError`)."""
        line = json.dumps([int(position), error.path, str(error.reason)])
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def read(self):
        """``{position: (path, reason)}`` of the images recorded, by position."""
        with open(self.path, encoding="utf-8") as log:
            records = {position: (path, reason) for position, path, reason in map(json.loads, log)}
        return dict(sorted(records.items()))

    def collect(self):
        """What :meth:`read` returns, and the file removed."""
        records = self.read()
        self._remove()
        return records

    def __getstate__(self):
        return {"path": self.path}  # a worker's copy records into the same file

    def __setstate__(self, state):
        self.path = state["path"]  # and leaves the file to the main process's object


def _remove_file(path, owner_pid):
    if os.getpid() == owner_pid:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def find_bad_images(images, verify=False):
    """The image files that are missing, empty or, with ``verify``, unreadable.

    Without ``verify`` only the file system is asked (fast). With it each file's
    header is parsed and checked by PIL's :meth:`~PIL.Image.Image.verify` without
    decoding the pixels: a PNG's chunks and checksums are checked, a JPEG's markers
    are parsed but its compressed data is not, so a truncated JPEG is only found
    when decoded.

    Parameters
    ----------
    images : sequence of str or uint8 ndarray
        Resolved file paths (an array holds no file: nothing is bad).
    verify : bool, default=False

    Returns
    -------
    dict
        ``{position: (path, reason)}`` of the bad files, by position.
    """
    if is_pixel_array(images):
        return {}
    bad = {}
    for position, path in enumerate(images):
        if not os.path.isfile(path):
            bad[position] = (path, "not found")
        elif os.path.getsize(path) == 0:
            bad[position] = (path, "empty file")
        elif verify:
            try:
                with Image.open(path) as img:
                    img.verify()
            except _PIL_ERRORS as exc:
                bad[position] = (path, str(exc) or type(exc).__name__)
    return bad


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


def bad_image_log(on_bad_image):
    """A :class:`BadImageLog` for ``on_bad_image="skip"``; None for ``"raise"``."""
    return BadImageLog() if on_bad_image == "skip" else None


def describe_bad_images(bad, limit=3):
    """``'a.jpg' (not found), 'b.png' (empty file) and 2 more``: the first few of ``bad``.

    ``bad`` is a sequence of ``(path, reason)`` pairs.
    """
    named = [f"{path!r} ({reason})" for path, reason in bad[:limit]]
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return ", ".join(named) + more


def warn_skipped(bad, action, stacklevel=3):
    """One :class:`BadImageWarning` counting the ``bad`` images and naming the first few.

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


def resolve_images(X, image_col="filename", image_root=None, check_files=True):
    """Image sources from ``X``: resolved, existing file paths, or a uint8 array.

    Parameters
    ----------
    X : DataFrame, Series, list of paths, or uint8 ndarray (N, H, W[, C])
    image_col : hashable
        The column of a DataFrame ``X`` that holds the image paths.
    image_root : str or path, optional
        The folder relative paths are resolved against.
    check_files : bool, default=True
        Check up front that every file exists (``fit`` does, so that it fails before
        training; elsewhere a missing file is reported when it is read).

    Returns
    -------
    images : ndarray of str, or uint8 ndarray
    index : pandas Index for the outputs (X's own for pandas input)
    """
    if isinstance(X, pd.DataFrame):
        if image_col not in X.columns:
            raise ValueError(
                f"image column {image_col!r} is not in X; its columns are "
                f"{list(X.columns)} (set image_col)"
            )
        return _resolve_paths(X[image_col], image_root, check_files), X.index
    if isinstance(X, pd.Series):
        return _resolve_paths(X, image_root, check_files), X.index
    if is_pixel_array(X):
        return _check_array(X), pd.RangeIndex(len(X))
    if isinstance(X, (np.ndarray, Sequence)) and not isinstance(X, (str, bytes)):
        paths = pd.Series(list(X), dtype=object)
        return _resolve_paths(paths, image_root, check_files), pd.RangeIndex(len(paths))
    raise TypeError(
        "X must be a DataFrame with an image column, a Series or list of image "
        f"paths, or a uint8 array of images; got {type(X).__name__}"
    )


def split_rows(X, n, valid_split, rng):
    """Positions of the training and validation rows (validation None: none held out).

    Parameters
    ----------
    X : image input
        A DataFrame when ``valid_split`` names its boolean validation column.
    n : int
        The number of rows.
    valid_split : float, str or None
        A fraction held out at random, a column of ``X``, or None.
    rng : RandomState
    """
    if valid_split is None:
        return np.arange(n), None
    if isinstance(valid_split, str):
        if not isinstance(X, pd.DataFrame) or valid_split not in X.columns:
            raise ValueError(
                f"valid_split={valid_split!r} names a column that X does not "
                "have; pass a DataFrame X with that boolean column, a fraction, or None"
            )
        column = X[valid_split]
        if not pd.api.types.is_bool_dtype(column.dtype) or column.isna().any():
            raise ValueError(
                f"the valid_split column {valid_split!r} must be boolean "
                f"without missing values; its dtype is {column.dtype}"
            )
        is_valid = column.to_numpy(dtype=bool)
        return np.flatnonzero(~is_valid), (np.flatnonzero(is_valid) if is_valid.any() else None)
    try:
        return train_test_split(np.arange(n), test_size=valid_split, random_state=rng)
    except ValueError as exc:
        raise ValueError(f"cannot hold out valid_split={valid_split} of {n} rows: {exc}") from exc


def is_pixel_array(X):
    """Whether ``X`` holds the images' pixels (a numeric array), not their paths."""
    return isinstance(X, np.ndarray) and X.dtype.kind not in "OUS"


def median_image_size(images, n_samples=16):
    """The median (height, width) of up to ``n_samples`` images, spread over ``images``.

    Only the headers of image files are read (fast); an array gives its own shape.

    Parameters
    ----------
    images : ndarray of paths, or uint8 ndarray (N, H, W[, C])
        Image sources as :func:`resolve_images` returns them.
    n_samples : int, default=16

    Returns
    -------
    (int, int) or None
        None when no sampled file could be read.
    """
    if is_pixel_array(images):
        return tuple(int(side) for side in images.shape[1:3])
    positions = np.unique(np.linspace(0, len(images) - 1, n_samples).astype(int))
    sizes = []
    for i in positions:
        try:
            with Image.open(images[i]) as img:
                sizes.append(img.size[::-1])  # PIL gives (width, height)
        except (OSError, SyntaxError, ValueError):
            continue  # a bad file is reported, naming it, when it is decoded
    if not sizes:
        return None
    height, width = np.median(np.array(sizes), axis=0)
    return int(height), int(width)


def check_image_size(images, image_size):
    """Warn when the images are much smaller than ``image_size`` (less than half on both sides).

    Upsampling adds no information but costs time: 32 px images trained at the default
    224 px take ~50 times longer per epoch. The size is measured on a few headers
    (:func:`median_image_size`).

    Parameters
    ----------
    images : ndarray of paths, or uint8 ndarray (N, H, W[, C])
    image_size : (int, int)
    """
    measured = median_image_size(images)
    if measured is not None and all(2 * m < s for m, s in zip(measured, image_size, strict=True)):
        warnings.warn(
            f"the images are about {measured[0]}x{measured[1]} pixels (median of a sample) "
            f"but image_size={image_size[0] if image_size[0] == image_size[1] else image_size} "
            "upsamples them: training is slower for no gain. Pass image_size close to "
            "the images' size",
            UserWarning,
            stacklevel=3,
        )


def image_references(X, image_col="filename"):
    """What names each image of ``X`` for people: its path as given, or its array position."""
    if isinstance(X, pd.DataFrame):
        return X[image_col].to_numpy()
    if isinstance(X, pd.Series):
        return X.to_numpy()
    if is_pixel_array(X):
        return np.arange(len(X))
    return np.asarray(list(X), dtype=object)


def _check_array(X):
    if X.ndim == 3 and X.shape[2] in (3, 4):
        # One (H, W, C) colour image, or N grayscale images of H x C: refuse to guess.
        raise ValueError(
            f"X has shape {X.shape}: a batch of {X.shape[0]} grayscale images of "
            f"{X.shape[1]} x {X.shape[2]} pixels, or one colour image? Pass one colour "
            "image as img[None] (shape (1, H, W, C)) and grayscale images as X[..., None] "
            "(shape (N, H, W, 1))"
        )
    if X.dtype != np.uint8 or X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[3] not in (1, 3, 4)):
        raise ValueError(
            "an array X must hold uint8 images of shape (N, H, W) or (N, H, W, C) "
            f"with C in 1, 3, 4; got dtype {X.dtype} and shape {X.shape}"
        )
    if len(X) == 0:
        raise ValueError("X is empty: there are no images")
    return X


def _resolve_paths(paths, image_root, check_files=True):
    if len(paths) == 0:
        raise ValueError("X is empty: there are no images")
    missing = paths.isna().to_numpy()
    not_paths = [
        (position, path)
        for position, path in enumerate(paths)
        if not (missing[position] or isinstance(path, (str, os.PathLike)))
    ]
    if not_paths:
        position, path = not_paths[0]
        column = "" if paths.name is None else f" of the image column {paths.name!r}"
        raise TypeError(
            f"image paths must be strings or path objects; X holds {path!r} "
            f"({type(path).__name__}) at position {position}{column}"
        )
    if missing.any():
        raise ValueError(f"X has a missing image path at position {int(np.argmax(missing))}")
    root = "" if image_root is None else os.fspath(image_root)
    resolved = np.array([os.path.join(root, os.fspath(p)) for p in paths], dtype=object)
    absent = [p for p in resolved if not os.path.isfile(p)] if check_files else []
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise FileNotFoundError(
            f"image file not found: {absent[0]!r}{more}; {_ROOT_HINT} (image_root={image_root!r})"
        )
    return resolved

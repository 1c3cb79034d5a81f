"""Image input: turning ``X`` into image sources, and the Dataset that decodes them.

Images stay uint8 ``(3, H, W)`` tensors from decoding to the device; the network
normalises them there (:class:`sk_multitask.model.MultiTaskModule`). Files are
decoded lazily, one item at a time, so a dataset on disk is streamed, never loaded
whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
import weakref

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

# The torch-free part (sources, decoding, resizing) is shared with the ONNX predictor.
from .images import (
    PIL_ERRORS,
    BadImageError,
    ImageNotFoundError,
    array_pixels,
    as_size,
    image_references,
    is_pixel_array,
    read_image,
    resolve_images,
)

__all__ = [
    "BadImageError",
    "BadImageLog",
    "BadImageWarning",
    "ImageDataset",
    "ImageNotFoundError",
    "as_size",
    "check_image_size",
    "bad_image_log",
    "decode_images",
    "decoded_batches",
    "describe_bad_images",
    "find_bad_images",
    "image_references",
    "is_pixel_array",
    "load_image",
    "median_image_size",
    "resolve_images",
    "screen_images",
    "train_transform",
    "warn_skipped",
]

_NO_TARGET = torch.empty(0)  # skorch wants (X, y) pairs even when there is no y

class BadImageWarning(UserWarning):
    """Images skipped because they could not be read (``on_bad_image="skip"``)."""


def load_image(path, image_size):
    """Decode one image file to a uint8 tensor ``(3, H, W)`` of ``image_size``.

    The pixels are :func:`sk_multitask.images.read_image`'s (EXIF orientation, any
    mode to RGB, PIL's bilinear resize), so that the ONNX predictor sees the same.

    Raises
    ------
    ImageNotFoundError
        Naming the file, if it does not exist (a ``FileNotFoundError``).
    BadImageError
        Naming the file, if it cannot be decoded (a ``ValueError``).
    """
    return torch.from_numpy(read_image(path, image_size)).permute(2, 0, 1)


def _array_image(image, image_size):
    """A uint8 tensor ``(3, H, W)`` of ``image_size`` from one ``(H, W[, C])`` array."""
    pixels = array_pixels(image, image_size)
    # torch wants writable memory: copy a read-only (memmap) image, share any other.
    return torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy()).permute(2, 0, 1)


def decoded_batches(images, image_size, num_workers=0, batch_size=256, bad_images=None):
    """Decode and resize images in order, yielding uint8 tensors ``(n, 3, H, W)``.

    ``images`` are file paths or a uint8 array; decoding runs in ``num_workers``
    DataLoader processes. With a :class:`BadImageLog`, an image that cannot be
    decoded is recorded there and comes out black.
    """
    loader = torch.utils.data.DataLoader(
        ImageDataset(images, image_size=image_size, bad_images=bad_images),
        batch_size=batch_size,
        num_workers=num_workers,
        generator=torch.Generator(),  # its seed draw must not move torch's global RNG
    )
    for batch, _ in loader:
        yield batch


def decode_images(images, image_size, num_workers=0, batch_size=256, bad_images=None):
    """Decode and resize every image once: a uint8 tensor ``(N, 3, H, W)`` in memory.

    With a ``bad_images`` log, an unreadable file is recorded there (its image is
    black) instead of raising.
    """
    batches = decoded_batches(images, image_size, num_workers, batch_size, bad_images)
    return torch.cat(list(batches))


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
        Resolved file paths, uint8 images, or images already decoded to the size: a
        tensor (:func:`decode_images`) or any sequence of uint8 tensors ``(3, H, W)``
        (:class:`sk_multitask.cache.DiskCachedImages`).
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
        if isinstance(images, np.ndarray) and images.dtype == np.uint8:
            self._decode = _array_image
        else:
            self._decode = load_image

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        target = _NO_TARGET if self.targets is None else self.targets[i]
        try:
            image = self.images[i]
            if not isinstance(image, torch.Tensor):  # a tensor is decoded already
                image = self._decode(image, self.image_size)
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
            except PIL_ERRORS as exc:
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

"""Image input: turning ``X`` into image sources, and the Dataset that decodes them.

Images stay uint8 ``(3, H, W)`` tensors from decoding to the device; the network
normalises them there (:class:`sk_multitask.module.MultiTaskModule`). Files are
decoded lazily, one item at a time, so a dataset on disk is streamed, never loaded
whole.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

__all__ = [
    "ImageDataset",
    "decode_images",
    "decoded_batches",
    "image_references",
    "load_image",
    "resolve_images",
    "train_transform",
]

_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_NO_TARGET = torch.empty(0)  # skorch wants (X, y) pairs even when there is no y


def as_size(image_size):
    """``(height, width)`` from an int or a pair."""
    if isinstance(image_size, int):
        return (image_size, image_size)
    height, width = image_size
    return (int(height), int(width))


def _to_rgb(img):
    """RGB from any PIL mode: grayscale, palette, RGBA, CMYK and 16-bit included."""
    if img.mode in _SIXTEEN_BIT_MODES:
        # PIL's own conversion clips 16-bit values at 255; scale them instead.
        wide = np.asarray(img).astype(np.int64)
        img = Image.fromarray(np.clip(wide >> 8, 0, 255).astype(np.uint8))
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
    ValueError
        Naming the file, if it cannot be decoded.
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
        raise FileNotFoundError(f"image file not found: {os.fspath(path)!r}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's decode errors
        raise ValueError(f"cannot decode image file {os.fspath(path)!r}: {exc}") from exc
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


def decoded_batches(images, image_size, num_workers=0, batch_size=256):
    """Decode and resize images in order, yielding uint8 tensors ``(n, 3, H, W)``.

    ``images`` are file paths or a uint8 array; decoding runs in ``num_workers``
    DataLoader processes.
    """
    loader = torch.utils.data.DataLoader(
        ImageDataset(images, image_size=image_size),
        batch_size=batch_size,
        num_workers=num_workers,
        generator=torch.Generator(),  # its seed draw must not move torch's global RNG
    )
    for batch, _ in loader:
        yield batch


def decode_images(images, image_size, num_workers=0, batch_size=256):
    """Decode and resize every image once: a uint8 tensor ``(N, 3, H, W)`` in memory."""
    return torch.cat(list(decoded_batches(images, image_size, num_workers, batch_size)))


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
    """

    def __init__(self, images, targets=None, *, image_size, transform=None):
        self.images = images
        self.targets = None if targets is None else torch.as_tensor(targets)
        self.image_size = image_size
        self.transform = transform
        if isinstance(images, np.ndarray) and images.dtype == np.uint8:
            self._decode = _array_image
        else:
            self._decode = load_image

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        if not isinstance(image, torch.Tensor):  # a tensor is decoded already
            image = self._decode(image, self.image_size)
        if self.transform is not None:
            image = self.transform(image)
        return image, _NO_TARGET if self.targets is None else self.targets[i]


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


def is_pixel_array(X):
    """Whether ``X`` holds the images' pixels (a numeric array), not their paths."""
    return isinstance(X, np.ndarray) and X.dtype.kind not in "OUS"


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
    if missing.any():
        raise ValueError(f"X has a missing image path at position {int(np.argmax(missing))}")
    root = "" if image_root is None else os.fspath(image_root)
    resolved = np.array([os.path.join(root, os.fspath(p)) for p in paths], dtype=object)
    absent = [p for p in resolved if not os.path.isfile(p)] if check_files else []
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise FileNotFoundError(f"image file not found: {absent[0]!r}{more}")
    return resolved

"""Image input without torch: ``X`` to image sources, and images to uint8 pixels.

The training path (:mod:`sk_multitask.data`) and the torch-free ONNX predictor
(:mod:`sk_multitask.onnx`) both decode and resize images here, so that a model sees the
same pixels in both: this module imports numpy, pandas and PIL only.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from numbers import Integral

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

__all__ = [
    "BadImageError",
    "ImageNotFoundError",
    "PIL_ERRORS",
    "array_pixels",
    "as_size",
    "image_references",
    "is_pixel_array",
    "read_image",
    "resolve_images",
]

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_WIDE_MODES = {"I", "F", *_SIXTEEN_BIT_MODES}  # more than 8 bits per pixel
_ROOT_HINT = "set image_root to the folder the image paths are relative to"

#: What PIL raises on a file it cannot read (DecompressionBombError: above its pixel limit).
PIL_ERRORS = (
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
        # A path, or an open file or buffer, which has no name to give.
        is_path = isinstance(path, (str, os.PathLike))
        self.path = os.fspath(path) if is_path else f"<{type(path).__name__}>"
        self.reason = reason
        super().__init__(message or f"cannot decode image file {self.path!r}: {reason}")


class ImageNotFoundError(BadImageError, FileNotFoundError):
    """An image file that does not exist (a ``FileNotFoundError`` too)."""

    def __init__(self, path):
        super().__init__(
            path, "not found", f"image file not found: {os.fspath(path)!r}; {_ROOT_HINT}"
        )


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


def _resized(img, size):
    """The PIL image resized to ``(height, width)``: bilinear, antialiased when shrinking."""
    height, width = size
    if img.size == (width, height):
        return img
    return img.resize((width, height), Image.Resampling.BILINEAR)


def read_image(path, image_size):
    """Decode one image file (a path, or a binary file object) to uint8 ``(H, W, 3)``.

    EXIF orientation is applied; any mode is converted to RGB; the resize is PIL's
    bilinear (antialiased when shrinking), skipped when the image already has the
    size. A JPEG at least twice the target size is decoded at a reduced DCT scale
    (PIL's draft mode), several times faster (``benchmarks/bench_decode.py``).

    Raises
    ------
    ImageNotFoundError
        Naming the file, if it does not exist (a ``FileNotFoundError``).
    BadImageError
        Naming the file, if it cannot be decoded (a ``ValueError``).

    Examples
    --------
    >>> import tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "red.png")
    >>> Image.new("L", (40, 20), 128).save(path)
    >>> read_image(path, (10, 20)).shape
    (10, 20, 3)
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
    except PIL_ERRORS as exc:
        raise BadImageError(path, exc) from exc
    return np.array(_resized(img, size))


def array_pixels(image, image_size):
    """Uint8 pixels ``(H, W, 3)`` of ``image_size`` from one ``(H, W[, C])`` array image.

    One channel is repeated, a fourth (alpha) dropped; the resize is that of
    :func:`read_image`. An RGB image that already has the size is returned as is
    (no copy).
    """
    image = np.asarray(image)
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    elif image.shape[2] == 4:
        image = image[..., :3]
    size = as_size(image_size)
    if image.shape[:2] == size:
        return image
    return np.array(_resized(Image.fromarray(np.ascontiguousarray(image)), size))


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

"""Image input without torch: ``X`` to image sources, and images to uint8 pixels.

The training path (:mod:`sk_multitask.data`) and the torch-free ONNX predictor
(:mod:`sk_multitask.onnx`) both decode and resize images here, so that a model sees the
same pixels in both: this module imports numpy, pandas and PIL only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

__all__ = [
    "array_pixels",
    "as_size",
    "image_references",
    "is_pixel_array",
    "read_image",
    "resolve_images",
]

_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


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
    ValueError
        Naming the file, if it cannot be decoded.

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
        raise FileNotFoundError(f"image file not found: {_name(path)}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's decode errors
        raise ValueError(f"cannot decode image file {_name(path)}: {exc}") from exc
    return np.array(_resized(img, size))


def _name(path):
    if isinstance(path, (str, os.PathLike)):
        return repr(os.fspath(path))
    return f"<{type(path).__name__}>"  # an open file or a buffer


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

"""``X`` to image references: resolved file paths or URLs, or a uint8 array, and X's index.

The first step of every path through the package (``fit``, ``predict``, the ONNX
predictor, the CLI): torch-free, it imports numpy and pandas only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .storage import StorageUrl, check_protocols, is_url, join_url

__all__ = [
    "ROOT_HINT",
    "image_references",
    "is_pixel_array",
    "resolve_images",
]

#: What to do about an image path that does not resolve to a file.
ROOT_HINT = "set image_root to the folder the image paths are relative to"


def resolve_images(
    X, image_col="filename", image_root=None, check_files=True, storage_options=None
):
    """Image sources from ``X``: resolved, existing file paths, or a uint8 array.

    A path (or ``image_root``) that is a URL (``s3://``, ``gs://``, ``https://``...)
    becomes a :class:`~sk_multitask.storage.StorageUrl` carrying ``storage_options``;
    no request is made (a missing object is reported when it is read).

    Parameters
    ----------
    X : DataFrame, Series, list of paths, or uint8 ndarray (N, H, W[, C])
    image_col : hashable
        The column of a DataFrame ``X`` that holds the image paths.
    image_root : str or path, optional
        The folder (or URL) relative paths are resolved against.
    check_files : bool, default=True
        Check up front that every local file exists (``fit`` does, so that it fails
        before training; elsewhere a missing file is reported when it is read).
    storage_options : dict, optional
        Passed to fsspec for the URLs (:mod:`sk_multitask.storage`).

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
        return _resolve_paths(X[image_col], image_root, check_files, storage_options), X.index
    if isinstance(X, pd.Series):
        return _resolve_paths(X, image_root, check_files, storage_options), X.index
    if is_pixel_array(X):
        return _check_array(X), pd.RangeIndex(len(X))
    if isinstance(X, (np.ndarray, Sequence)) and not isinstance(X, (str, bytes)):
        paths = pd.Series(list(X), dtype=object)
        resolved = _resolve_paths(paths, image_root, check_files, storage_options)
        return resolved, pd.RangeIndex(len(paths))
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


def _resolve_paths(paths, image_root, check_files=True, storage_options=None):
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
    empty = [position for position, path in enumerate(paths) if not os.fspath(path).strip()]
    if empty:  # joined to image_root, it would name the folder itself
        raise ValueError(f"X has an empty image path at position {empty[0]}")
    root = "" if image_root is None else os.fspath(image_root)
    resolved = np.array(
        [_resolved(root, os.fspath(p), storage_options) for p in paths], dtype=object
    )
    urls = [p for p in resolved if isinstance(p, StorageUrl)]
    if urls:
        check_protocols(urls)
    local = resolved if not urls else [p for p in resolved if not isinstance(p, StorageUrl)]
    absent = [p for p in local if not os.path.isfile(p)] if check_files else []
    folders = [p for p in absent if os.path.isdir(p)]
    if folders:
        raise IsADirectoryError(f"image path {folders[0]!r} is a directory, not an image file")
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise FileNotFoundError(
            f"image file not found: {absent[0]!r}{more}; {ROOT_HINT} (image_root={image_root!r})"
        )
    return resolved


def _resolved(root, path, storage_options):
    """``path`` resolved against ``root``: a file path, or a URL with its storage options."""
    if is_url(root) or is_url(path):
        return StorageUrl(join_url(root, path), storage_options)
    return os.path.join(root, path)

"""``X`` to image references: resolved file paths or URLs, images held in memory, or
a uint8 array.

The first step of every path through the package (``fit``, ``predict``, the ONNX
predictor, the CLI): torch-free, it imports numpy, pandas and PIL only. ``X`` may be a
DataFrame (its ``image_col``), a Hugging Face ``datasets.Dataset`` (the same), a Series
or list of images, a uint8 array or tensor of images, or one image; an image is a file
path, encoded bytes, a PIL image, a uint8 array ``(H, W[, C])`` or a ``{"bytes",
"path"}`` dict (a Hugging Face ``Image`` cell). See ``docs/inputs.md``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from ..exceptions import ROOT_HINT, BadImageError
from ._storage import StorageUrl, check_protocols, is_url, join_url

#: The kinds of one image, for the messages.
_IMAGE_KINDS = (
    "a path, encoded bytes, a PIL image, a uint8 array (H, W[, C]) or a "
    "{'bytes', 'path'} dict"
)
_CHANNELS = (1, 3, 4)


@dataclass(frozen=True, eq=False)
class MemoryImage:
    """One image held in memory, and what names it in messages.

    Attributes
    ----------
    data : bytes, PIL.Image.Image or uint8 ndarray (H, W[, C])
        Encoded bytes (a file's contents), a PIL image, or pixels.
    name : str
        The path it came with (a ``{"bytes", "path"}`` dict's), else ``"X[<position>]"``:
        what errors, warnings and ``skipped_images_`` call it.
    """

    data: object
    name: str

    def digest(self):
        """16 bytes identifying the image's content (the key of the caches and checkpoints)."""
        data = self.data
        if isinstance(data, Image.Image):
            record = [f"PIL|{data.mode}|{data.size}".encode(), data.tobytes()]
        elif isinstance(data, np.ndarray):
            record = [f"array|{data.dtype}|{data.shape}".encode(), np.ascontiguousarray(data)]
        else:
            record = [b"bytes|", data]
        hasher = hashlib.blake2b(digest_size=16)
        for part in record:
            hasher.update(part)
        return hasher.digest()


def resolve_images(
    X, image_col="filename", image_root=None, check_files=True, storage_options=None
):
    """Image sources from ``X``: resolved paths and in-memory images, or a uint8 array.

    A path (or ``image_root``) that is a URL (``s3://``, ``gs://``, ``https://``...)
    becomes a :class:`~sk_multitask.inputs._storage.StorageUrl` carrying ``storage_options``;
    no request is made (a missing object is reported when it is read).

    Parameters
    ----------
    X : DataFrame, datasets.Dataset, Series, list, uint8 ndarray or tensor, or one image
        A DataFrame or ``datasets.Dataset`` holds the images in ``image_col``; a Series
        or list holds images (paths, encoded bytes, PIL images, uint8 arrays or
        ``{"bytes", "path"}`` dicts, which may be mixed); an array holds uint8 images
        ``(N, H, W[, C])``, a torch tensor ``(N, C, H, W)`` or ``(N, H, W, C)``; a path,
        bytes or PIL image is one image.
    image_col : hashable
        The column of a DataFrame ``X`` that holds the images.
    image_root : str or path, optional
        The folder (or URL) relative paths are resolved against.
    check_files : bool, default=True
        Check up front that every local file exists (``fit`` does, so that it fails
        before training; elsewhere a missing file is reported when it is read).
    storage_options : dict, optional
        Passed to fsspec for the URLs (:mod:`sk_multitask.inputs._storage`).

    Returns
    -------
    images : object ndarray of str (paths) and :class:`MemoryImage`, or uint8 ndarray
    index : pandas Index for the outputs (X's own for pandas input)

    Examples
    --------
    >>> from PIL import Image
    >>> images, index = resolve_images([Image.new("RGB", (4, 4)), "cat.png"],
    ...                                image_root="photos", check_files=False)
    >>> images[0].name, images[1], list(index)
    ('X[0]', 'photos/cat.png', [0, 1])
    """
    cells, index = _cells(X, image_col)
    if is_pixel_array(cells):
        return cells, index
    return _sources(cells, image_root, check_files, storage_options), index


def is_pixel_array(X):
    """Whether ``X`` holds the images' pixels (a numeric array), not their paths."""
    return isinstance(X, np.ndarray) and X.dtype.kind not in "OUS"


def image_references(X, image_col="filename"):
    """What names each image of ``X`` for people.

    A file's path as given (a ``{"bytes", "path"}`` dict's path too), an image in memory
    ``"X[<position>]"``, and for an array of images the positions in it.
    """
    cells, _ = _cells(X, image_col)
    if is_pixel_array(cells):
        return np.arange(len(cells))
    return _object_array(_reference(cell, position) for position, cell in enumerate(cells))


def input_table(X, image_col, *columns):
    """``X`` as the table it stands for: a ``datasets.Dataset`` becomes a DataFrame.

    The DataFrame of the Dataset's ``image_col`` and of those of ``columns`` it has
    (``Dataset.to_pandas``: an ``Image`` column's cells are ``{"bytes", "path"}``
    dicts, its images stay encoded); anything else is returned as it is.

    Raises
    ------
    ValueError
        If the Dataset has no column ``image_col``, naming its columns.
    """
    if not _instance_of(X, "datasets", "Dataset"):
        return X
    if image_col not in X.column_names:
        raise _missing_column(image_col, X.column_names)
    wanted = [image_col, *(c for c in columns if c in X.column_names and c != image_col)]
    return X.select_columns(wanted).to_pandas()


def input_rows(X, image_col, positions):
    """The rows of ``X`` at ``positions``, as an input of the same meaning.

    A table keeps all its columns (a ``datasets.Dataset`` becomes a DataFrame), an array
    of images stays an array; a list, a tensor or one image becomes what
    :func:`resolve_images` reads the same way. The figures use it to run the network on
    the few rows they show.

    Examples
    --------
    >>> input_rows(["a.png", "b.png", "c.png"], "filename", [2, 0]).tolist()
    ['c.png', 'a.png']
    """
    X = input_table(X, image_col)
    if isinstance(X, pd.DataFrame | pd.Series):
        return X.iloc[list(positions)]
    cells, _ = _cells(X, image_col)
    return cells[list(positions)] if is_pixel_array(cells) else cells.iloc[list(positions)]


def _missing_column(image_col, columns):
    return ValueError(
        f"image column {image_col!r} is not in X; its columns are {list(columns)} "
        "(set image_col)"
    )


def _instance_of(X, module, name):
    """Whether ``X`` is a ``module.name`` instance, without importing ``module``: an
    object of a package nobody imported cannot exist (torch, datasets stay optional)."""
    imported = sys.modules.get(module)
    return imported is not None and isinstance(X, getattr(imported, name))


def _cells(X, image_col):
    """``X``'s images as a Series of cells or as a checked uint8 array, and ``X``'s index."""
    X = input_table(X, image_col)
    if isinstance(X, pd.DataFrame):
        if image_col not in X.columns:
            raise _missing_column(image_col, X.columns)
        return X[image_col], X.index
    if isinstance(X, pd.Series):
        return X, X.index
    if isinstance(X, (str, os.PathLike, bytes, Image.Image)):  # one image: one row
        return pd.Series([X], dtype=object), pd.RangeIndex(1)
    if _instance_of(X, "torch", "Tensor"):
        X = _tensor_pixels(X)
    elif hasattr(X, "__array__") and not isinstance(X, np.ndarray):
        X = np.asarray(X)  # an array-like: a dask or xarray array, a pyarrow array...
    if is_pixel_array(X):
        return _check_array(X), pd.RangeIndex(len(X))
    if isinstance(X, (np.ndarray, Sequence)):
        return pd.Series(_object_array(X)), pd.RangeIndex(len(X))
    raise TypeError(
        "X must be a DataFrame (or a datasets.Dataset) with an image column, a Series "
        "or list of images, a uint8 array or tensor of images, or one image (a path, "
        f"bytes or a PIL image); got {type(X).__name__}"
    )


def _tensor_pixels(X):
    """A torch tensor's uint8 images as a numpy ``(N, H, W[, C])`` array.

    ``(N, C, H, W)`` (torch's layout) or ``(N, H, W, C)``, told apart by which axis has
    1, 3 or 4 entries; a shape where both have is refused, as is a 3-D tensor whose
    first axis has (one ``(C, H, W)`` image, or N grayscale images?).
    """
    shape = tuple(X.shape)
    if str(X.dtype) != "torch.uint8":
        raise ValueError(
            f"a tensor X must hold uint8 images; got {X.dtype} of shape {shape} "
            "(convert with (x * 255).round().to(torch.uint8) if it holds floats in [0, 1])"
        )
    pixels = X.detach().cpu().numpy()
    if pixels.ndim == 3 and shape[0] in _CHANNELS:
        raise ValueError(
            f"X has shape {shape}: one (C, H, W) image or {shape[0]} grayscale images? "
            "Pass one image as x[None] (shape (1, C, H, W)) and grayscale images as "
            "x[:, None] (shape (N, 1, H, W))"
        )
    if pixels.ndim != 4:
        return pixels  # _check_array names what is wrong
    first, last = shape[1] in _CHANNELS, shape[3] in _CHANNELS
    if first and last:
        raise ValueError(
            f"X has shape {shape}: channels first (N, C, H, W) or last (N, H, W, C)? "
            "Pass x.permute(0, 2, 3, 1).numpy() for channels-first images, x.numpy() "
            "for channels-last ones: a numpy array is always (N, H, W, C)"
        )
    return pixels.transpose(0, 2, 3, 1) if first else pixels


def _check_array(X):
    if X.ndim == 3 and X.shape[2] in (3, 4):
        # One (H, W, C) colour image, or N grayscale images of H x C: refuse to guess.
        raise ValueError(
            f"X has shape {X.shape}: a batch of {X.shape[0]} grayscale images of "
            f"{X.shape[1]} x {X.shape[2]} pixels, or one colour image? Pass one colour "
            "image as img[None] (shape (1, H, W, C)) and grayscale images as X[..., None] "
            "(shape (N, H, W, 1))"
        )
    if X.dtype != np.uint8 or X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[3] not in _CHANNELS):
        raise ValueError(
            "an array X must hold uint8 images of shape (N, H, W) or (N, H, W, C) "
            f"with C in 1, 3, 4; got dtype {X.dtype} and shape {X.shape}"
        )
    if len(X) == 0:
        raise ValueError("X is empty: there are no images")
    if 0 in X.shape[1:3]:  # every row: nothing would be left to skip
        raise BadImageError(
            "X[0]", "no pixels", f"X has shape {X.shape}: its images have no pixels (a side of 0)"
        )
    return X


def _object_array(items):
    """A 1-D object array of ``items``, one element each (arrays among them are not
    spread over a second axis, as ``np.array`` would)."""
    items = list(items)
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


def _is_image_dict(cell):
    """A Hugging Face ``Image`` cell (``Dataset.to_pandas()``, a hub parquet file)."""
    return isinstance(cell, dict) and set(cell) <= {"bytes", "path"} and len(cell) > 0


def _reference(cell, position):
    """What names one image of ``X`` for people: its path, else ``X[<position>]``."""
    if isinstance(cell, (str, os.PathLike)):
        return cell
    if isinstance(cell, MemoryImage):
        return cell.name
    if _is_image_dict(cell) and cell.get("path"):
        return cell["path"]
    return f"X[{position}]"


def _image(cell, position, column):
    """One cell of ``X`` as a path to resolve (str) or a :class:`MemoryImage`."""
    if isinstance(cell, MemoryImage):  # resolved already (the CLI resolves, then predicts)
        return cell
    if _is_image_dict(cell):
        if cell.get("bytes") is None:
            return None if cell.get("path") is None else os.fspath(cell["path"])
        data = cell["bytes"]
    else:
        data = cell
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return MemoryImage(bytes(data), _reference(cell, position))
    if isinstance(data, Image.Image) or (
        isinstance(data, np.ndarray) and data.dtype == np.uint8
        and (data.ndim == 2 or (data.ndim == 3 and data.shape[2] in _CHANNELS))
    ):
        return MemoryImage(data, _reference(cell, position))
    shown = repr(cell) if len(repr(cell)) <= 60 else repr(cell)[:57] + "..."
    raise TypeError(
        f"an image must be {_IMAGE_KINDS}; X holds {shown} ({type(cell).__name__}) at "
        f"position {position}{column}"
    )


def _sources(cells, image_root, check_files=True, storage_options=None):
    """The images of ``cells``: paths joined to ``image_root`` (local files checked, URLs
    with their storage options), images held in memory as they are."""
    if len(cells) == 0:
        raise ValueError("X is empty: there are no images")
    column = "" if cells.name is None else f" of the image column {cells.name!r}"
    missing = cells.isna().to_numpy()
    images = _object_array(
        None if missing[position] else _image(cell, position, column)
        for position, cell in enumerate(cells)
    )
    unnamed = np.flatnonzero([image is None for image in images])  # a dict without either
    if len(unnamed):
        raise ValueError(f"X has a missing image path at position {unnamed[0]}")
    paths = np.flatnonzero([isinstance(image, str) for image in images])
    empty = [position for position in paths if not images[position].strip()]
    if empty:  # joined to image_root, it would name the folder itself
        raise ValueError(f"X has an empty image path at position {empty[0]}")
    root = "" if image_root is None else os.fspath(image_root)
    for position in paths:  # one by one: numpy would turn the StorageUrls into plain str
        images[position] = _resolved(root, images[position], storage_options)
    urls = [p for p in images[paths] if isinstance(p, StorageUrl)]
    if urls:
        check_protocols(urls)
    local = [p for p in images[paths] if not isinstance(p, StorageUrl)]
    absent = [p for p in local if not os.path.isfile(p)] if check_files else []
    folders = [p for p in absent if os.path.isdir(p)]
    if folders:
        raise IsADirectoryError(f"image path {folders[0]!r} is a directory, not an image file")
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise FileNotFoundError(
            f"image file not found: {absent[0]!r}{more}; {ROOT_HINT} (image_root={image_root!r})"
        )
    return images


def _resolved(root, path, storage_options):
    """``path`` resolved against ``root``: a file path, or a URL with its storage options."""
    if is_url(root) or is_url(path):
        return StorageUrl(join_url(root, path), storage_options)
    return os.path.join(root, path)

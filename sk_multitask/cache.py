"""Decoded-image caches: in memory, and on disk shared across fits.

Decoding images is a share of every epoch that streams them from their files; a set
decoded once trains at the speed of its network. Two caches do that:

- in memory (:func:`fits_in_memory` decides it for ``cache="auto"``): every image decoded
  and resized once at the start of ``fit``, kept as a uint8 tensor;
- on disk (:func:`disk_cached_images`, the estimator's ``cache_dir``): decoded images
  written once to ``.npy`` files in a folder (``np.load(..., mmap_mode="r")`` maps one),
  each image keyed by a fingerprint of its resolved path, file size, modification time
  and the image size. Later epochs, later fits, every fold and candidate of a search and
  ``predict`` read them from there (from the page cache when it holds them) image by
  image, so the process's memory stays flat for a set larger than it.

A disk cache folder holds pairs of files written by one build each: ``<H>x<W>-<id>.npy``
(the images, ``(n, 3, H, W)`` uint8) and ``<H>x<W>-<id>.keys.npy`` (their fingerprints).
Builds write to temporary names and rename when complete, keys last, so that two
processes building at once never see a partial file (at worst, both decode the same
images). A changed file gets a new fingerprint and is decoded again; stale entries stay
until the folder is deleted.
"""

from __future__ import annotations

import glob
import hashlib
import os
import uuid

import numpy as np
import torch

from .dataset import BadImageLog, decode_images, decoded_batches
from .decoding import ImageNotFoundError, as_size
from .sources import is_pixel_array

__all__ = [
    "MEMORY_FRACTION",
    "DiskCachedImages",
    "available_memory",
    "cached_images",
    "disk_cached_images",
    "fits_in_memory",
    "image_fingerprints",
]

#: The share of the available memory that ``cache="auto"`` may fill with decoded images.
MEMORY_FRACTION = 0.25
_FORMAT = b"sk-multitask-cache-1"  # part of every fingerprint: a new format misses old files
_KEY_BYTES = 16
#: The key of an image the cache does not hold: a missing file, or one that cannot be
#: decoded. It is read from its file each time, where the on_bad_image rule applies.
_UNCACHED = b"\xff" * _KEY_BYTES


def available_memory():
    """Bytes of memory available to new allocations, or None where it cannot be read.

    Linux's ``MemAvailable`` (free memory plus the page cache it can reclaim), else the
    free physical pages that ``os.sysconf`` reports.
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def fits_in_memory(n_images, image_size, max_bytes=None):
    """Whether ``n_images`` decoded images (``n * 3 * H * W`` bytes) fit the cache budget.

    Parameters
    ----------
    n_images : int
    image_size : int or (int, int)
    max_bytes : int, optional
        The budget; None: a quarter (:data:`MEMORY_FRACTION`) of :func:`available_memory`
        (nothing is cached where that cannot be read).

    Examples
    --------
    >>> from sk_multitask.cache import fits_in_memory
    >>> fits_in_memory(1000, 32, max_bytes=10_000_000)  # 3 MB of pixels
    True
    >>> fits_in_memory(100_000, 224, max_bytes=10_000_000)
    False
    """
    height, width = as_size(image_size)
    if max_bytes is None:
        available = available_memory()
        if available is None:
            return False
        max_bytes = MEMORY_FRACTION * available
    return n_images * 3 * height * width <= max_bytes


def cached_images(
    images, image_size, *, cache, cache_dir=None, max_bytes=None, num_workers=0, bad_images=None
):
    """Where to read decoded images from, following the estimator's cache parameters.

    Parameters
    ----------
    images : ndarray of str (resolved paths) or uint8 ndarray
    image_size : int or (int, int)
    cache : bool or "auto"
        True: decode into memory; False: stream; ``"auto"``: decode image files into
        memory when they fit ``max_bytes`` (:func:`fits_in_memory`).
    cache_dir : str or path, optional
        A disk cache folder (:func:`disk_cached_images`); for image files it replaces
        ``cache``.
    max_bytes : int, optional
    num_workers : int, default=0
        DataLoader processes decoding images.
    bad_images : BadImageLog, optional
        Where unreadable files are recorded (``on_bad_image="skip"``): when decoded
        into memory, or, with a disk cache, when read. The disk cache never stores an
        image it could not decode; without ``bad_images`` such a file raises, naming it.

    Returns
    -------
    images : the source to give :class:`~sk_multitask.dataset.ImageDataset`
    decoded : bool
        Whether nothing is left to decode (the DataLoader needs no worker for it).
    """
    pixels = is_pixel_array(images)
    if cache_dir is not None and not pixels:
        disk = disk_cached_images(
            images, image_size, cache_dir, num_workers=num_workers, skip=bad_images is not None
        )
        return disk, True
    if cache == "auto":
        # An array is in memory already: decoding it again would only resize it.
        cache = not pixels and fits_in_memory(len(images), image_size, max_bytes)
    if cache:
        return decode_images(images, image_size, num_workers, bad_images=bad_images), True
    return images, False


def image_fingerprints(paths, image_size, skip=False):
    """One 16-byte key per image file: its resolved path, size, mtime and the image size.

    A file that does not exist raises :class:`~sk_multitask.decoding.ImageNotFoundError`;
    with ``skip``, it gets a key that is never cached instead.

    Returns
    -------
    ndarray of shape (n,), dtype ``S16``
    """
    height, width = as_size(image_size)
    salt = _FORMAT + f"|{height}x{width}|".encode()
    keys = np.empty(len(paths), dtype=f"S{_KEY_BYTES}")
    for i, path in enumerate(paths):
        path = os.path.realpath(path)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            if not skip:
                raise ImageNotFoundError(path) from None
            keys[i] = _UNCACHED  # read (and reported) where the image is decoded
            continue
        record = f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()
        keys[i] = hashlib.blake2b(salt + record, digest_size=_KEY_BYTES).digest()
    return keys


class DiskCachedImages:
    """Decoded images read from the files of a disk cache.

    A sequence of uint8 tensors ``(3, H, W)``; indexing with an array of positions
    gives another :class:`DiskCachedImages` (no pixels are read). Each image is read
    with one positioned read into a fresh buffer: the file's pages stay in the
    operating system's page cache (shared by every process reading the cache) and, not
    being mapped, never count in this process's resident memory, which stays flat
    whatever the size of the set. The files are opened lazily, in each process that
    reads them (DataLoader workers included), and never pickled.

    Parameters
    ----------
    files : list of str
        The ``.npy`` files of the cache.
    file_index, rows : ndarray of int, shape (n,)
        For each image, the file it is in and its row there; file -1: not in the
        cache (a missing or unreadable file), the item is then its path in ``paths``.
    paths : sequence of str, optional
        The image files, for the items not in the cache.
    """

    def __init__(self, files, file_index, rows, paths=None):
        self.files = list(files)
        self.file_index = np.asarray(file_index, dtype=np.intp)
        self.rows = np.asarray(rows, dtype=np.intp)
        self.paths = None if paths is None else np.asarray(paths, dtype=object)
        self._opened = None

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        if not np.isscalar(i):
            paths = None if self.paths is None else self.paths[i]
            return DiskCachedImages(self.files, self.file_index[i], self.rows[i], paths)
        if self.file_index[i] < 0:
            return self.paths[i]  # decoded (or reported unreadable) by the Dataset
        if self._opened is None:
            self._opened = [_open_npy(f) for f in self.files]
        file, start, shape = self._opened[self.file_index[i]]
        image = torch.empty(shape[1:], dtype=torch.uint8)
        size = image.numel()
        file.seek(start + int(self.rows[i]) * size)
        if file.readinto(image.numpy()) != size:
            raise ValueError(f"the disk cache file {file.name!r} is truncated")
        return image

    def __getstate__(self):
        return {**self.__dict__, "_opened": None}

    def __del__(self):
        for file, _, _ in self._opened or []:
            file.close()


def _open_npy(path):
    """An unbuffered file of a cache, where its pixels start, and the array's shape."""
    file = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed with the images
    version = np.lib.format.read_magic(file)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, _, _ = read_header(file)
    return file, file.tell(), shape


def disk_cached_images(paths, image_size, cache_dir, num_workers=0, skip=False):
    """The images of ``paths``, decoded and resized, from the disk cache in ``cache_dir``.

    Images not in the cache yet are decoded (in ``num_workers`` DataLoader processes)
    and written to a new file of the cache first; the others are only looked up. With
    ``skip``, a missing or unreadable file is left out of the cache: its item is its
    path, which the Dataset reports as unreadable (``on_bad_image="skip"``); without,
    an unreadable file raises, naming it.

    Parameters
    ----------
    paths : sequence of str
        Resolved image file paths.
    image_size : int or (int, int)
    cache_dir : str or path
        The cache folder (created if needed); share it between fits, processes and
        machines that see the same files at the same paths.
    num_workers : int, default=0
    skip : bool, default=False

    Returns
    -------
    DiskCachedImages

    Examples
    --------
    >>> import tempfile
    >>> from sk_multitask.cache import disk_cached_images
    >>> from sk_multitask.datasets import make_multitask_images
    >>> folder = tempfile.mkdtemp()
    >>> df = make_multitask_images(8, image_size=16, path=folder + "/images", random_state=0)
    >>> paths = [f"{folder}/images/{name}" for name in df["filename"]]
    >>> images = disk_cached_images(paths, 16, folder + "/cache")
    >>> len(images), tuple(images[0].shape)
    (8, (3, 16, 16))
    """
    height, width = as_size(image_size)
    os.makedirs(cache_dir, exist_ok=True)
    keys = image_fingerprints(paths, (height, width), skip)
    files, where = _lookup(cache_dir, (height, width), keys)
    missing = np.array([key != _UNCACHED and key not in where for key in keys], dtype=bool)
    if missing.any():
        wanted = np.flatnonzero(missing)
        # An image listed twice is decoded once.
        _, first = np.unique(keys[wanted], return_index=True)
        wanted = wanted[np.sort(first)]
        new_file, built = _build(cache_dir, np.asarray(paths, dtype=object)[wanted],
                                 keys[wanted], (height, width), num_workers, skip)
        files.append(new_file)
        where.update(
            (key, (len(files) - 1, row)) for row, key in enumerate(built) if key != _UNCACHED
        )
    located = [where.get(key, (-1, -1)) for key in keys]
    located = np.array(located, dtype=np.intp).reshape(len(keys), 2)
    return DiskCachedImages(files, located[:, 0], located[:, 1], paths)


def _lookup(cache_dir, size, keys):
    """The cache's complete files of this size that hold some of ``keys``, and where each is."""
    wanted = set(keys.tolist()) - {_UNCACHED}
    files, where = [], {}
    pattern = os.path.join(glob.escape(os.fspath(cache_dir)), f"{size[0]}x{size[1]}-*.keys.npy")
    for keys_file in sorted(glob.glob(pattern)):
        stored = np.load(keys_file)
        hits = [(row, key) for row, key in enumerate(stored.tolist()) if key in wanted]
        if not hits:
            continue
        files.append(keys_file[: -len(".keys.npy")] + ".npy")
        where.update((key, (len(files) - 1, row)) for row, key in hits if key not in where)
    return files, where


def _build(cache_dir, paths, keys, size, num_workers, skip=False):
    """Decode ``paths`` into a new cache file; returns its name once complete, and its keys.

    An ``.npy`` file written batch by batch (not through a memory map, whose dirty
    pages would count in this process's memory). With ``skip``, an image that cannot be
    decoded is stored black under a key never looked up (:data:`_UNCACHED`).
    """
    bad_images = BadImageLog() if skip else None
    name = os.path.join(os.fspath(cache_dir), f"{size[0]}x{size[1]}-{uuid.uuid4().hex}")
    partial = f"{name}.partial-{os.getpid()}"
    header = {"descr": "|u1", "fortran_order": False, "shape": (len(paths), 3, *size)}
    try:
        with open(partial + ".npy", "wb") as file:
            np.lib.format.write_array_header_1_0(file, header)
            for batch in decoded_batches(paths, size, num_workers, bad_images=bad_images):
                file.write(batch.numpy().data)
        if bad_images is not None:
            keys = keys.copy()
            keys[list(bad_images.collect())] = _UNCACHED
        np.save(partial + ".keys.npy", keys)
        os.replace(partial + ".npy", name + ".npy")
        os.replace(partial + ".keys.npy", name + ".keys.npy")  # last: the file is complete
    finally:
        for leftover in (partial + ".npy", partial + ".keys.npy"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return name + ".npy", keys

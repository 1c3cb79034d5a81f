"""The disk cache of decoded images, shared across fits (the estimator's ``cache_dir``).

:func:`disk_cached_images` writes decoded images once to ``.npy`` files in a folder
(``np.load(..., mmap_mode="r")`` maps one), each image keyed by a fingerprint of its
resolved path, file size, modification and change times, inode and the image size (an
object in storage: of its URL and the image size; an image held in memory: of its content
and the image size), and stored with a checksum verified on every read. Later epochs,
later fits, every fold and candidate of a search and ``predict`` read them from there
(from the page cache when it holds them) image by image, so the process's memory stays
flat for a set larger than it.

A disk cache folder holds pairs of files written by one build each: ``<H>x<W>-<id>.npy``
(the images, ``(n, 3, H, W)`` uint8) and ``<H>x<W>-<id>.keys.npy`` (their fingerprints and
CRC-32 checksums). Builds write each file atomically (:mod:`sk_multitask.inputs._files`: a
temporary name, synced, then renamed), keys last, so that two processes building at once
never see a partial file (at worst, both decode the same images). A build killed midway
leaves a temporary file named for its host and process, never matched, and removed by the
next build once that process is gone (or after a day, for another host's). A changed file
(even one replaced with its size and modification time kept) gets a new fingerprint and
is decoded again; stale entries stay until the folder is deleted.

A damaged pair (a keys file empty or unreadable, images of the wrong size, an image whose
checksum does not match) is never served: a
:class:`~sk_multitask.exceptions.CacheDamageWarning` names it, its images are decoded from
their files, and it is removed so that the next build decodes them into a new pair.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import socket
import time
import uuid
import warnings
import zlib

import numpy as np
import torch

from ..exceptions import CacheDamageWarning, ImageNotFoundError
from ._dataset import BadImageLog, decoded_batches
from ._decoding import as_size
from ._files import atomic_write, check_folder_named, unwritable
from ._sources import MemoryImage
from ._storage import is_url

_FORMAT = b"sk-multitask-cache-2"  # part of every fingerprint: a new format misses old files
_KEY_BYTES = 16
#: A keys file's records: each image's fingerprint and the CRC-32 of its stored pixels.
_KEYS_DTYPE = np.dtype([("key", f"S{_KEY_BYTES}"), ("crc", "<u4")])
#: How long another host's (or a reused process id's) temporary file may be building.
_STALE_SECONDS = 24 * 3600
#: The key of an image the cache does not hold: a missing file, or one that cannot be
#: decoded. It is read from its file each time, where the on_bad_image rule applies.
_UNCACHED = b"\xff" * _KEY_BYTES



def _warn_damaged(path, reason):
    warnings.warn(
        f"the disk cache file {os.fspath(path)!r} is damaged ({reason}): its images are "
        "decoded from their files and stored again",
        CacheDamageWarning,
        stacklevel=4,
    )


def _remove_pair(npy):  # keys first; a reader that has the images open keeps them
    for path in (npy[: -len(".npy")] + ".keys.npy", npy):
        with contextlib.suppress(FileNotFoundError, PermissionError):  # a read-only cache
            os.remove(path)


def image_fingerprints(paths, image_size, skip=False):
    """One 16-byte key per image: its resolved path and identity, or its content; and the
    image size.

    A file's identity is its device, inode, size, modification and change times: a
    file replaced by another, even of the same size with its modification time restored,
    gets a new key (its change time and, mostly, its inode differ). An image held in
    memory (a :class:`~sk_multitask.inputs._sources.MemoryImage`: bytes, a PIL image, an array)
    is keyed by its content (:meth:`~sk_multitask.inputs._sources.MemoryImage.digest`).

    A file that does not exist raises :class:`~sk_multitask.exceptions.ImageNotFoundError`;
    with ``skip``, it gets a key that is never cached instead.

    A URL is keyed by its text alone, so that looking it up reads nothing remote: an
    object replaced under the same URL keeps its cached pixels (give it a new name, or
    use a new ``cache_dir``).

    Returns
    -------
    ndarray of shape (n,), dtype ``S16``
    """
    height, width = as_size(image_size)
    salt = _FORMAT + f"|{height}x{width}|".encode()
    keys = np.empty(len(paths), dtype=f"S{_KEY_BYTES}")
    for i, path in enumerate(paths):
        if isinstance(path, MemoryImage):
            keys[i] = hashlib.blake2b(salt + path.digest(), digest_size=_KEY_BYTES).digest()
            continue
        record = f"url|{path}" if is_url(path) else _file_record(path)
        if record is None:
            if not skip:
                raise ImageNotFoundError(os.path.realpath(path))
            keys[i] = _UNCACHED  # read (and reported) where the image is decoded
            continue
        keys[i] = hashlib.blake2b(salt + record.encode(), digest_size=_KEY_BYTES).digest()
    return keys


def _file_record(path):
    """A file's resolved path and identity, as text; None if it does not exist."""
    path = os.path.realpath(path)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (
        f"{path}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|"
        f"{stat.st_ctime_ns}"
    )


class DiskCachedImages:
    """Decoded images read from the files of a disk cache.

    A sequence of uint8 tensors ``(3, H, W)``; indexing with an array of positions
    gives another :class:`DiskCachedImages` (no pixels are read). Each image is read
    with one positioned read into a fresh buffer: the file's pages stay in the
    operating system's page cache (shared by every process reading the cache) and, not
    being mapped, never count in this process's resident memory, which stays flat
    whatever the size of the set. The files are opened lazily, in each process that
    reads them (DataLoader workers included), and never pickled.

    Every image read is checked against its CRC-32: a file with an image that does not
    match (or that cannot be read) is reported
    (:class:`~sk_multitask.exceptions.CacheDamageWarning`, naming it) and removed from the
    cache, and its items become their paths, which the Dataset decodes from the image files.

    Parameters
    ----------
    files : list of str
        The ``.npy`` files of the cache.
    file_index, rows : ndarray of int, shape (n,)
        For each image, the file it is in and its row there; file -1: not in the
        cache (a missing or unreadable file), the item is then its path in ``paths``.
    paths : sequence of str
        The image files, for the items not in the cache (or in a damaged file).
    checksums : ndarray of uint32, shape (n,)
        The CRC-32 of each cached image's bytes.
    """

    def __init__(self, files, file_index, rows, paths, checksums):
        self.files = list(files)
        self.file_index = np.asarray(file_index, dtype=np.intp)
        self.rows = np.asarray(rows, dtype=np.intp)
        self.paths = np.asarray(paths, dtype=object)
        self.checksums = np.asarray(checksums, dtype=np.uint32)
        self._opened = {}  # file index -> (file, start, shape), or None once damaged

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        if not np.isscalar(i):
            return DiskCachedImages(
                self.files, self.file_index[i], self.rows[i], self.paths[i], self.checksums[i]
            )
        index = int(self.file_index[i])
        opened = self._open(index) if index >= 0 else None
        if opened is None:
            return self.paths[i]  # decoded (or reported unreadable) by the Dataset
        file, start, shape = opened
        image = torch.empty(shape[1:], dtype=torch.uint8)
        size = image.numel()
        file.seek(start + int(self.rows[i]) * size)
        pixels = image.numpy()
        if file.readinto(pixels) != size:
            return self._damaged(index, i, "truncated")
        if zlib.crc32(pixels) != self.checksums[i]:
            return self._damaged(index, i, f"image {self.rows[i]} fails its checksum")
        return image

    def _open(self, index):
        """The open file ``index`` (opened now if needed), or None if it is damaged."""
        if index not in self._opened:
            try:
                self._opened[index] = _open_npy(self.files[index])
            except FileNotFoundError:  # removed by a process that found it damaged
                self._opened[index] = None
            except (OSError, ValueError) as exc:
                self._opened[index] = None
                _warn_damaged(self.files[index], exc)
                _remove_pair(self.files[index])
        return self._opened[index]

    def _damaged(self, index, i, reason):
        """Report file ``index`` damaged, stop reading it and remove it; item i's path."""
        self._opened.pop(index)[0].close()
        self._opened[index] = None
        _warn_damaged(self.files[index], reason)
        _remove_pair(self.files[index])
        return self.paths[i]

    def __getstate__(self):  # each process opens the files itself
        return {**self.__dict__, "_opened": {}}

    def __del__(self):
        for opened in getattr(self, "_opened", {}).values():
            if opened is not None:
                opened[0].close()


def _open_npy(path):
    """An unbuffered file of a cache, where its pixels start, and the array's shape."""
    file = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed with the images
    try:
        version = np.lib.format.read_magic(file)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(file)
    except BaseException:
        file.close()
        raise
    if dtype != np.uint8 or len(shape) != 4 or shape[1] != 3:
        file.close()
        raise ValueError(f"not a cache of images: {dtype} {shape}")
    return file, file.tell(), shape


def disk_cached_images(paths, image_size, cache_dir, num_workers=0, skip=False):
    """The images of ``paths``, decoded and resized, from the disk cache in ``cache_dir``.

    Images not in the cache yet are decoded (in ``num_workers`` DataLoader processes)
    and written to a new file of the cache first; the others are only looked up. With
    ``skip``, a missing or unreadable file is left out of the cache: its item is its
    path, which the Dataset reports as unreadable (``on_bad_image="skip"``); without,
    an unreadable file raises, naming it. Damaged cache files met on the way are
    reported (:class:`~sk_multitask.exceptions.CacheDamageWarning`) and replaced; temporary
    files of builds killed midway are removed.

    Parameters
    ----------
    paths : sequence of str and MemoryImage
        Resolved image file paths, and images held in memory
        (:func:`~sk_multitask.inputs._sources.resolve_images`).
    image_size : int or (int, int)
    cache_dir : str or path
        The cache folder (created if needed); share it between fits, processes and
        machines that see the same files at the same paths. A folder that cannot be
        written serves the images it holds; one missing there is a ValueError naming
        the folder and the count, before any is decoded.
    num_workers : int, default=0
    skip : bool, default=False

    Returns
    -------
    DiskCachedImages

    Examples
    --------
    >>> import tempfile
    >>> from sk_multitask.inputs._cache import disk_cached_images
    >>> from sk_multitask.datasets import make_multitask_images
    >>> folder = tempfile.mkdtemp()
    >>> df = make_multitask_images(8, image_size=16, path=folder + "/images", random_state=0)
    >>> paths = [f"{folder}/images/{name}" for name in df["filename"]]
    >>> images = disk_cached_images(paths, 16, folder + "/cache")
    >>> len(images), tuple(images[0].shape)
    (8, (3, 16, 16))
    """
    height, width = as_size(image_size)
    check_folder_named(cache_dir, "cache_dir")
    if os.path.isdir(cache_dir):
        _remove_stale_partials(cache_dir)
    keys = image_fingerprints(paths, (height, width), skip)
    files, where = _lookup(cache_dir, (height, width), keys)
    missing = np.array([key != _UNCACHED and key not in where for key in keys], dtype=bool)
    if missing.any():
        wanted = np.flatnonzero(missing)
        # An image listed twice is decoded once.
        _, first = np.unique(keys[wanted], return_index=True)
        wanted = wanted[np.sort(first)]
        cause = unwritable(cache_dir)  # a read-only cache serves what it holds, no more
        if cause is not None:
            raise ValueError(
                f"cache_dir={os.fspath(cache_dir)!r} cannot be written: {cause}, and "
                f"{len(wanted)} of the images asked for are not in it yet: make it "
                "writable, or leave cache_dir out"
            )
        os.makedirs(cache_dir, exist_ok=True)
        new_file, built = _build(cache_dir, np.asarray(paths, dtype=object)[wanted],
                                 keys[wanted], (height, width), num_workers, skip)
        files.append(new_file)
        where.update(
            (record["key"], (len(files) - 1, row, record["crc"]))
            for row, record in enumerate(built) if record["key"] != _UNCACHED
        )
    located = [where.get(key, (-1, -1, 0)) for key in keys]
    located = np.array(located, dtype=np.int64).reshape(len(keys), 3)
    return DiskCachedImages(files, located[:, 0], located[:, 1], paths, located[:, 2])


def _read_keys(keys_file, size):
    """The records of a keys file whose images file matches them; None (warned) if damaged."""
    npy = keys_file[: -len(".keys.npy")] + ".npy"
    try:
        with open(keys_file, "rb") as file:  # a .npy file, never anything else (np.load)
            stored = np.lib.format.read_array(file, allow_pickle=False)
        if stored.dtype == f"S{_KEY_BYTES}":  # an older version's pair, never matched again
            _remove_pair(npy)
            return None
        if stored.dtype != _KEYS_DTYPE or stored.ndim != 1:
            raise ValueError(f"unexpected keys {stored.dtype} {stored.shape}")
        file, start, shape = _open_npy(npy)
        file.close()
        if shape != (len(stored), 3, *size):
            raise ValueError(f"{shape} images for {len(stored)} keys")
        if os.path.getsize(npy) != start + int(np.prod(shape)):
            raise ValueError("truncated")
    except FileNotFoundError:
        return None  # removed meanwhile, by a process that found it damaged
    except (OSError, ValueError, EOFError) as exc:
        _warn_damaged(keys_file, str(exc) or type(exc).__name__)
        _remove_pair(npy)
        return None
    return stored


def _lookup(cache_dir, size, keys):
    """The cache's complete files of this size that hold some of ``keys``, and where each is.

    ``where`` maps a key to ``(file, row, checksum)``.
    """
    wanted = set(keys.tolist()) - {_UNCACHED}
    files, where = [], {}
    pattern = os.path.join(glob.escape(os.fspath(cache_dir)), f"{size[0]}x{size[1]}-*.keys.npy")
    for keys_file in sorted(glob.glob(pattern)):
        if not re.fullmatch(r"\d+x\d+-[0-9a-f]{32}\.keys\.npy", os.path.basename(keys_file)):
            continue  # not a complete file of this format
        stored = _read_keys(keys_file, size)
        if stored is None:
            continue
        hits = [(row, key, crc) for row, (key, crc) in enumerate(stored.tolist()) if key in wanted]
        if not hits:
            continue
        files.append(keys_file[: -len(".keys.npy")] + ".npy")
        where.update(
            (key, (len(files) - 1, row, crc)) for row, key, crc in hits if key not in where
        )
    return files, where


def _partial_prefix():
    """The start of this process's temporary file names: ``.sk_multitask-<host>-<pid>-``."""
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())
    return f".sk_multitask-{host}-{os.getpid()}-"


def _remove_stale_partials(cache_dir):
    """Remove the temporary files of builds killed midway: ``.partial-*`` and ``*.tmp``.

    A file of this host whose process is gone is removed; one of another host (or of a
    live process id, which may have been reused) once it is a day old.
    """
    host = _partial_prefix().split("-")[1]
    for name in os.listdir(cache_dir):
        named = re.fullmatch(r"\.sk_multitask-(.+)-(\d+)-.*\.tmp", name)
        legacy = re.search(r"\.partial-(\d+)\.", name)  # the pid of an older version's build
        if not (named or legacy):
            continue
        path = os.path.join(cache_dir, name)
        pid = int(named.group(2) if named else legacy.group(1))
        ours = legacy is not None or named.group(1) == host
        with contextlib.suppress(FileNotFoundError, PermissionError):  # a read-only cache
            if (ours and not _alive(pid)) or time.time() - os.path.getmtime(path) > _STALE_SECONDS:
                os.remove(path)


def _alive(pid):
    """Whether a process ``pid`` runs on this host (on Windows: assumed, left to the age)."""
    if os.name == "nt":  # os.kill would terminate it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by another user (or we cannot tell)
    return True


def _build(cache_dir, paths, keys, size, num_workers, skip=False):
    """Decode ``paths`` into a new cache pair; returns its images file, and its records.

    The images are written batch by batch (not through a memory map, whose dirty pages
    would count in this process's memory) with each image's CRC-32; both files are
    written atomically, keys last. With ``skip``, an image that cannot be decoded is
    stored black under a key never looked up (:data:`_UNCACHED`).
    """
    bad_images = BadImageLog() if skip else None
    name = os.path.join(os.fspath(cache_dir), f"{size[0]}x{size[1]}-{uuid.uuid4().hex}")
    header = {"descr": "|u1", "fortran_order": False, "shape": (len(paths), 3, *size)}
    records = np.zeros(len(paths), dtype=_KEYS_DTYPE)
    records["key"] = keys
    row = 0
    with atomic_write(name + ".npy", prefix=_partial_prefix()) as file:
        np.lib.format.write_array_header_1_0(file, header)
        for batch in decoded_batches(paths, size, num_workers, bad_images=bad_images):
            pixels = batch.numpy()
            file.write(pixels.data)
            records["crc"][row : row + len(pixels)] = [zlib.crc32(image) for image in pixels]
            row += len(pixels)
    if bad_images is not None:
        records["key"][list(bad_images.collect())] = _UNCACHED
    with atomic_write(name + ".keys.npy", prefix=_partial_prefix()) as file:
        np.save(file, records)  # last: the pair is complete
    return name + ".npy", records

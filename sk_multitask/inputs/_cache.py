"""Decoded-image caches: which one a fit or a prediction reads, and the one in memory.

Decoding images is a share of every epoch that streams them from their files; a set
decoded once trains at the speed of its network. Two caches do that:

- in memory (:func:`fits_in_memory` decides it for ``cache="auto"``): every image decoded
  and resized once at the start of ``fit``, kept as a uint8 tensor;
- on disk (:mod:`sk_multitask.inputs._disk_cache`, the estimator's ``cache_dir``): decoded images
  written once to ``.npy`` files shared across fits, read image by image.

:func:`cached_images` chooses between them following the estimator's parameters.
"""

from __future__ import annotations

import os

from ._dataset import decode_images
from ._decoding import as_size
from ._disk_cache import disk_cached_images
from ._sources import is_pixel_array

#: The share of the available memory that ``cache="auto"`` may fill with decoded images.
MEMORY_FRACTION = 0.25


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
    >>> from sk_multitask.inputs._cache import fits_in_memory
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
    images : the source to give :class:`~sk_multitask.inputs._dataset.ImageDataset`
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



"""Decoding one image, torch-free: read, orient, convert, resize; test-time views.

The training path (:mod:`sk_multitask.inputs._dataset`) and the torch-free ONNX predictor
(:mod:`sk_multitask.onnx._predictor`) both decode and resize images here, so that a model
sees the same pixels in both. An image that cannot be read raises
:class:`~sk_multitask.exceptions.BadImageError` naming it; what then becomes of its row is
:mod:`sk_multitask.inputs._bad_images`' rule. This module imports numpy and PIL only.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from numbers import Integral

import numpy as np
from PIL import Image

from ..exceptions import BadImageError, ImageNotFoundError, StorageError
from ._sources import MemoryImage, is_pixel_array
from ._storage import is_url, read_url

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_WIDE_MODES = {"I", "F", *_SIXTEEN_BIT_MODES}  # more than 8 bits per pixel
_ORIENTATION = 0x0112  # the EXIF tag

#: What PIL raises on a file it cannot read (DecompressionBombError: above its pixel limit).
PIL_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)




#: The largest side an image size may have (``image_size``, a model file's): a batch of 64
#: such RGB images is 12 GiB of float32 already (100000 would ask for hundreds of GB).
MAX_IMAGE_SIZE = 4096


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


#: reduce() shrinks an image by whole factors to at least this many times the output
#: size before the bilinear resize: memory and time follow the output size, and the
#: result is indistinguishable from a full resize (PIL's ``reducing_gap``).
_REDUCING_GAP = 3
_BAND_PIXELS = 1 << 18  # pixels converted at a time: the full-size image is never copied
_T = Image.Transpose
#: What displays an image upright, by its EXIF orientation (as ``ImageOps.exif_transpose``).
_TRANSPOSE = dict(enumerate((_T.FLIP_LEFT_RIGHT, _T.ROTATE_180, _T.FLIP_TOP_BOTTOM, _T.TRANSPOSE,
                              _T.ROTATE_270, _T.TRANSVERSE, _T.ROTATE_90), start=2))


def _bands(img, rows):
    """The image in horizontal bands of ``rows`` rows: ``(top, band)`` pairs."""
    width, height = img.size
    for top in range(0, height, rows):
        yield top, img.crop((0, top, width, min(height, top + rows)))


def _wide_scaling(img, rows):
    """``(shift, scale)`` taking a wide image's values to [0, 255] as ``(x - shift) * scale``.

    16-bit modes are divided by 256. Otherwise the scale follows the values' range:
    floats within [0, 1] are multiplied by 255; values within [0, 255] are kept; within
    [0, 65535] divided by 256; any other range is stretched min-max to [0, 255]. NaN and
    infinities count as 0. The range is measured band by band.
    """
    if img.mode in _SIXTEEN_BIT_MODES:
        return 0.0, 1 / 256
    low, high = np.inf, -np.inf
    for _, band in _bands(img, rows):
        pixels = _finite(band)
        low, high = min(low, pixels.min()), max(high, pixels.max())
    if low >= 0 and 255 < high <= 65535:
        return 0.0, 1 / 256
    if img.mode == "F" and low >= 0 and high <= 1:
        return 0.0, 255.0
    if low >= 0 and high <= 255:
        return 0.0, 1.0
    return float(low), (255 / (high - low) if high > low else 0.0)


def _finite(band):  # NaN and infinities count as 0
    return np.nan_to_num(np.asarray(band, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _rgb_converter(img, rows):
    """A function converting a band of ``img`` to RGB: wide modes scaled, not clipped."""
    if img.mode in _WIDE_MODES:
        # PIL's own conversion clips wide values at 255 (a float image in [0, 1] turns
        # black); scale them instead, with one scale for the whole image.
        shift, scale = _wide_scaling(img, rows)

        def convert(band):
            pixels = np.clip(np.round((_finite(band) - shift) * scale), 0, 255)
            return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")

        return convert
    if img.mode == "P":
        # Through RGBA, so that palette transparency is read, not warned about.
        return lambda band: band.convert("RGBA").convert("RGB")
    return lambda band: band if band.mode == "RGB" else band.convert("RGB")


def _reduced_rgb(img, size):
    """The loaded PIL image in RGB, reduced by whole factors toward ``(height, width)``.

    Converted and reduced band by band: the memory used is the decoded image's and a few
    times the output's, whatever the mode (no full-size copy, no float64 image).
    """
    width, height = img.size
    factor = (max(1, width // (_REDUCING_GAP * size[1])),
              max(1, height // (_REDUCING_GAP * size[0])))
    if img.mode == "RGB":
        return img if factor == (1, 1) else img.reduce(factor)
    rows = max(1, _BAND_PIXELS // (width * factor[1])) * factor[1]
    convert = _rgb_converter(img, rows)
    reduced = Image.new("RGB", (-(-width // factor[0]), -(-height // factor[1])))
    for top, band in _bands(img, rows):
        band = convert(band)
        reduced.paste(band if factor == (1, 1) else band.reduce(factor), (0, top // factor[1]))
    return reduced


def _resized(img, size):
    """The PIL image resized to ``(height, width)``: bilinear, antialiased when shrinking."""
    same = img.size == size[::-1]
    return img if same else img.resize(size[::-1], Image.Resampling.BILINEAR)


def source_name(source):
    """A path's text, an in-memory image's name, or the type of an open file or buffer
    (which has no name to give)."""
    if isinstance(source, MemoryImage):
        return source.name
    if isinstance(source, (str, os.PathLike)):
        return str(os.fspath(source))  # a StorageUrl's text, without its storage options
    return f"<{type(source).__name__}>"


def _readable(source):
    """What PIL opens for ``source``: an in-memory image's bytes or an object's (a URL) as
    a file, else the path or file object itself."""
    if isinstance(source, MemoryImage):
        return io.BytesIO(source.data)
    return io.BytesIO(read_url(source)) if is_url(source) else source


def open_image(source):
    """``PIL.Image.open``, with the decompression-bomb warning naming the file.

    ``source`` is a path, a URL (its object read whole), a binary file object or a
    :class:`~sk_multitask.inputs._sources.MemoryImage` of encoded bytes. Above
    ``Image.MAX_IMAGE_PIXELS`` PIL warns (and above twice that raises
    ``DecompressionBombError``, one of :data:`PIL_ERRORS`); the warning is issued again
    with the file's name.
    """
    readable = _readable(source)  # an object is read once
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(readable)
        except Image.DecompressionBombWarning as exc:
            warning = str(exc)
    warnings.warn(f"image {source_name(source)!r}: {warning}",
                  Image.DecompressionBombWarning, stacklevel=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(readable)


def read_image(path, image_size):
    """Decode one image file to uint8 ``(H, W, 3)``.

    ``path`` is a path, a URL, a binary file object, or a
    :class:`~sk_multitask.inputs._sources.MemoryImage` of encoded bytes or of a PIL image (which
    is loaded, never changed otherwise).

    EXIF orientation is applied; any mode is converted to RGB; the resize is PIL's
    bilinear (antialiased when shrinking), skipped when the image already has the
    size. A JPEG at least twice the target size is decoded at a reduced DCT scale
    (PIL's draft mode), several times faster (``benchmarks/bench_decode.py``); a large
    image of any format is converted and reduced band by band, in PIL, before the
    resize, so that memory follows the output size beyond the decoded
    image itself.

    A URL's object is read whole first (:func:`sk_multitask.inputs._storage.read_url`, with
    retries).

    Raises
    ------
    ImageNotFoundError
        Naming the file, if it does not exist (a ``FileNotFoundError``).
    BadImageError
        Naming the file, if it cannot be decoded (a ``ValueError``), a decompression
        bomb (above twice ``PIL.Image.MAX_IMAGE_PIXELS``) and an image without pixels
        (a side of 0) included, or, for a URL, read.

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
        if isinstance(path, MemoryImage) and isinstance(path.data, Image.Image):
            img, orientation = _loaded(path.data, size, draft=False)  # not the user's to draft
        else:
            with open_image(path) as img:
                img, orientation = _loaded(img, size)  # decoded while the file is open
    except FileNotFoundError:
        raise ImageNotFoundError(source_name(path)) from None
    except StorageError as exc:
        raise BadImageError(source_name(path), exc.reason, str(exc)) from exc
    except PIL_ERRORS as exc:
        what = "image" if isinstance(path, MemoryImage) else "image file"
        raise BadImageError(source_name(path), exc, what=what) from exc
    if orientation in _TRANSPOSE:
        img = img.transpose(_TRANSPOSE[orientation])
    return np.array(_resized(img, size))


def _loaded(img, size, draft=True):
    """The opened image decoded, in RGB, reduced toward ``size``; and its EXIF orientation."""
    empty = no_pixels(img)
    if empty:  # resized, it would be a black image predicted with confidence
        raise ValueError(empty)
    # A JPEG's EXIF is read with its header: without one there is nothing to turn.
    has_exif = img.format != "JPEG" or "exif" in img.info
    orientation = img.getexif().get(_ORIENTATION, 1) if has_exif else 1
    side = max(size)  # the draft must cover an image that EXIF rotates, too
    if draft and min(img.size) >= 2 * side:  # else the draft cannot reduce the DCT scale
        img.draft("RGB", (side, side))
    img.load()
    stored = size[::-1] if orientation in (5, 6, 7, 8) else size
    return _reduced_rgb(img, stored), orientation


def no_pixels(image):
    """Why an image (a PIL image or an ``(H, W[, C])`` array) has no pixels, or None.

    Examples
    --------
    >>> no_pixels(np.zeros((0, 32, 3), np.uint8)), no_pixels(Image.new("RGB", (2, 1)))
    ('no pixels (0x32)', None)
    """
    height, width = image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]
    return None if height and width else f"no pixels ({height}x{width})"


def array_pixels(image, image_size):
    """Uint8 pixels ``(H, W, 3)`` of ``image_size`` from one ``(H, W[, C])`` array image.

    One channel is repeated, a fourth (alpha) dropped; the resize is that of
    :func:`read_image`. An RGB image that already has the size is returned as is
    (no copy), unless it is a view with reversed or scattered rows (``X[:, ::-1]``,
    ``X[..., ::-1]``), which is copied: torch takes no negative strides.
    """
    image = np.asarray(image)
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    elif image.shape[2] == 4:
        image = image[..., :3]
    size = as_size(image_size)
    if image.shape[:2] == size:
        return np.ascontiguousarray(image)
    return np.array(_resized(Image.fromarray(np.ascontiguousarray(image)), size))


def decode_image(source, image_size):
    """Uint8 pixels ``(H, W, 3)`` of one image: a file (:func:`read_image`) or an array.

    ``source`` is a path or binary file object, an ``(H, W[, C])`` array
    (:func:`array_pixels`), or a :class:`~sk_multitask.inputs._sources.MemoryImage` of either kind.

    Raises
    ------
    BadImageError
        Naming the image, for an array without pixels (a side of 0) and as
        :func:`read_image` raises.
    """
    pixels = source.data if isinstance(source, MemoryImage) else source
    if isinstance(pixels, np.ndarray):
        empty = no_pixels(pixels)
        if empty:
            raise BadImageError(source_name(source), empty, what="image")
        return array_pixels(pixels, image_size)
    return read_image(source, image_size)



#: The most test-time augmentation views: the flip, then five crops (four corners and
#: the centre) each as is and flipped.
MAX_TTA = 11
#: A crop's side as a fraction of the image's (fastai's test-time crops are as small).
_TTA_CROP = 0.9
_TTA_CORNERS = ((0, 0), (1, 1), (0, 1), (1, 0), (0.5, 0.5))


def tta_views(image_size, n):
    """The first ``n`` test-time augmentation views of images of ``image_size``.

    A view is a pair of index arrays ``(rows, cols)``: ``images[..., rows[:, None],
    cols[None, :]]`` is the view of a batch ``(N, C, H, W)``, numpy or torch alike, at
    the same size (a crop is resized back by nearest neighbour). The views, in order:
    the horizontal flip, then crops of 90% of each side at the four corners and the
    centre, each as is and flipped; at most :data:`MAX_TTA`.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(16).reshape(1, 1, 4, 4)
    >>> rows, cols = tta_views((4, 4), 1)[0]
    >>> image[..., rows[:, None], cols[None, :]][0, 0, 0].tolist()  # flipped
    [3, 2, 1, 0]
    """
    if not 0 <= n <= MAX_TTA:
        raise ValueError(f"tta must be from 0 to {MAX_TTA} views; got {n!r}")
    height, width = as_size(image_size)
    plain = (np.arange(height), np.arange(width))
    views = [(plain[0], plain[1][::-1].copy())]
    for fy, fx in _TTA_CORNERS:
        rows = _crop_indices(height, fy)
        cols = _crop_indices(width, fx)
        views += [(rows, cols), (rows, cols[::-1].copy())]
    return views[:n]


def _crop_indices(side, position):
    """Indices of a crop of ``_TTA_CROP`` of ``side`` at ``position`` (0: start, 1: end),
    resized back to ``side`` by nearest neighbour."""
    crop = max(1, round(_TTA_CROP * side))
    start = round(position * (side - crop))
    return start + np.arange(side) * crop // side


def median_image_size(images, n_samples=16):
    """The median (height, width) of up to ``n_samples`` images, spread over ``images``.

    Only the headers of image files are read (fast); an array gives its own shape.

    Parameters
    ----------
    images : ndarray of paths and MemoryImages, or uint8 ndarray (N, H, W[, C])
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
        if is_url(images[i]):
            continue  # no remote read just to warn: a cached fit reads nothing remote
        try:
            with warnings.catch_warnings():
                # Warned about (naming it), skipped or raised when it is decoded.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                sizes.append(_stored_size(images[i]))
        except PIL_ERRORS:
            continue  # a bad file is reported, naming it, when it is decoded
    if not sizes:
        return None
    height, width = np.median(np.array(sizes), axis=0)
    return int(height), int(width)


def _stored_size(source):
    """``(height, width)`` of one image, from its header if it is encoded."""
    data = source.data if isinstance(source, MemoryImage) else None
    if isinstance(data, np.ndarray):
        return data.shape[:2]
    if isinstance(data, Image.Image):
        return data.size[::-1]  # PIL gives (width, height)
    with Image.open(_readable(source)) as img:
        return img.size[::-1]


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

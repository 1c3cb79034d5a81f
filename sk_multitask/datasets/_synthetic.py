"""A learnable synthetic multitask image set, written as JPEG files."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from numbers import Integral, Real

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "purple": (160, 60, 200),
}
SHAPES = ("circle", "square", "triangle")
TARGETS = ("color", "shape", "area")
_SUPERSAMPLE = 4  # draw larger, then downscale: anti-aliased edges, a continuous area


def _draw(rng, image_size):
    """One image, its colour and shape, and the fraction of it the shape covers."""
    big = image_size * _SUPERSAMPLE
    color = rng.choice(list(COLORS))
    shape = rng.choice(SHAPES)
    side = rng.uniform(0.3, 0.8) * big
    left, top = rng.uniform(0, big - side, size=2)
    box = [left, top, left + side, top + side]
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "square":
        draw.rectangle(box, fill=255)
    else:
        draw.polygon(
            [(left, top + side), (left + side, top + side), (left + side / 2, top)], fill=255
        )
    mask = mask.resize((image_size, image_size), Image.Resampling.BOX)
    alpha = np.asarray(mask, dtype=np.float64)[..., None] / 255
    background = rng.uniform(0, 110) + rng.uniform(-15, 15, size=3)
    foreground = np.array(COLORS[color]) + rng.uniform(-20, 20, size=3)
    pixels = alpha * foreground + (1 - alpha) * background
    pixels += rng.normal(0, 6, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image, color, shape, float(alpha.mean())


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "image_size": [Interval(Integral, 8, None, closed="left")],
        "missing_rate": [Interval(Real, 0, 1, closed="left")],
        "path": [str, os.PathLike, None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_multitask_images(
    n_samples=1000, *, image_size=32, missing_rate=0.1, path=None, random_state=None
):
    """Generate a learnable multitask image set as JPEG files.

    Each image is a coloured shape on a grey, noisy background. Targets:

    - ``color``: classification, 5 classes (red, green, blue, yellow, purple);
    - ``shape``: classification, 3 classes (circle, square, triangle);
    - ``area``: regression, the fraction of the image the shape covers (0.03-0.64).

    Parameters
    ----------
    n_samples : int, default=1000
    image_size : int, default=32
        Side of the square images, in pixels.
    missing_rate : float, default=0.1
        Fraction of target cells made missing, independently per cell (at least one
        cell of each target stays labelled).
    path : str or path, default=None
        Folder to write the images into (created if needed), kept. None: a new
        folder ``sk_multitask_*`` in the system's temporary folder
        (:func:`tempfile.gettempdir`), deleted when the Python process exits; pass
        ``path`` to keep the images for a later session.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    DataFrame
        Columns ``filename`` (relative to the folder), ``color``, ``shape``, ``area``
        and ``is_valid`` (a boolean marking about 20% of the rows for validation).
        The folder is in ``df.attrs["image_root"]``.

    Examples
    --------
    >>> from sk_multitask.datasets import make_multitask_images
    >>> df = make_multitask_images(8, image_size=16, random_state=0)
    >>> list(df.columns)
    ['filename', 'color', 'shape', 'area', 'is_valid']
    """
    rng = check_random_state(random_state)
    if path is None:
        root = tempfile.mkdtemp(prefix="sk_multitask_")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    else:
        root = os.fspath(path)
    os.makedirs(root, exist_ok=True)
    rows = []
    for i in range(n_samples):
        image, color, shape, area = _draw(rng, image_size)
        filename = f"img_{i:05d}.jpg"
        image.save(os.path.join(root, filename), quality=90)
        rows.append((filename, color, shape, area))
    df = pd.DataFrame(rows, columns=["filename", *TARGETS])
    for target in TARGETS:
        missing = rng.random_sample(n_samples) < missing_rate
        missing[rng.randint(n_samples)] = False
        df[target] = df[target].mask(missing)
    df["is_valid"] = rng.random_sample(n_samples) < 0.2
    df.attrs["image_root"] = root
    return df

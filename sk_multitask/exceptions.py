"""The warnings and errors of sk-multitask that users may catch or filter.

Every class here is the one the package raises or warns with (the same object wherever
it is used). Importing this module imports neither torch nor scikit-learn; only
:class:`InconsistentVersionWarning`, a subclass of scikit-learn's warning of that name
(defined in :mod:`sk_multitask.persistence._versions`), imports scikit-learn, on first use.

Examples
--------
>>> import warnings
>>> from sk_multitask.exceptions import BadImageWarning
>>> warnings.simplefilter("ignore", BadImageWarning)  # skipped images, said once per call
"""

import importlib
import os

__all__ = [
    "BadImageError",
    "BadImageWarning",
    "CacheDamageWarning",
    "CalibrationWarning",
    "IgnoredWeightsWarning",
    "ImageNotFoundError",
    "MissingLikeLabelWarning",
    "LabelsWarning",
    "QuantizationWarning",
    "InconsistentVersionWarning",  # noqa: F822 -- imported on first use (__getattr__)
    "StorageError",
    "TableColumnWarning",
]

#: What a relative image path that is not found most likely needs.
ROOT_HINT = "set image_root to the folder the image paths are relative to"


class BadImageError(ValueError):
    """An image (file or bytes) that is empty, truncated or not an image.

    Parameters
    ----------
    path : str
        The image's name: its path, URL or in-memory name.
    reason : object
        Why it could not be decoded.
    message : str, default=None
        The whole message; by default, one naming ``what`` and ``path``.
    what : str, default="image file"
        What the image is, in the default message (``"image"`` for one held in memory).

    Attributes
    ----------
    path : str
    reason : object
    """

    def __init__(self, path, reason, message=None, what="image file"):
        self.path = path
        self.reason = reason
        super().__init__(message or f"cannot decode {what} {path!r}: {reason}")


class ImageNotFoundError(BadImageError, FileNotFoundError):
    """An image file that does not exist (a ``FileNotFoundError`` too).

    Its message suggests setting ``image_root``, which relative paths are joined to.

    Parameters
    ----------
    path : str or path-like
        The image's path or URL.
    """

    def __init__(self, path):
        path = os.fspath(path)
        super().__init__(path, "not found", f"image file not found: {path!r}; {ROOT_HINT}")


class BadImageWarning(UserWarning):
    """Images skipped because they could not be read (``on_bad_image="skip"``).

    Warned once per call (``fit``, ``predict``, ``evaluate``..., and the ONNX predictor's),
    counting the images left out and naming the first few; after ``fit``,
    ``skipped_images_`` lists them all.

    Examples
    --------
    >>> import warnings
    >>> from sk_multitask.exceptions import BadImageWarning
    >>> warnings.simplefilter("ignore", BadImageWarning)
    """


class StorageError(OSError):
    """An object that could not be read (after retries, for a transient error).

    Parameters
    ----------
    url : str
        The object's URL.
    reason : str
        The last error, in one line.

    Attributes
    ----------
    url : str
    reason : str
        The last error, in one line.
    """

    def __init__(self, url, reason):
        self.url = url
        self.reason = reason
        super().__init__(f"cannot read {url!r}: {reason}")


class CacheDamageWarning(UserWarning):
    """A disk cache file found damaged: its images are decoded from their files again.

    Warned when a file of the disk cache (``cache_dir``) fails its checksum or cannot be
    read, naming it; the damaged files are removed, so that the next fit stores them again.
    """


class IgnoredWeightsWarning(UserWarning):
    """Entries of a weights file that the backbone has no place for (a classifier...).

    Warned once when a weights file (``weights=path``) is loaded, naming the entries
    ignored.
    """


class MissingLikeLabelWarning(UserWarning):
    """A classification or multi-label target holds, beside its labels, a string that
    usually means missing (``'NA'``, ``''``, ``'nan'``...:
    :data:`sk_multitask.targets.MISSING_LIKE_LABELS`): it trains as a class, where a
    missing cell (NaN, None, ``pd.NA``) would be left out."""


class CalibrationWarning(UserWarning):
    """Too few calibration cells of a task for the asked coverage, calibration labels
    the model never saw, too few misses for a temperature below 1, or no row to tune a
    decision threshold on.

    Warned when intervals or sets are asked at a coverage that a task has too few
    calibration cells for (fewer than ``coverage / (1 - coverage)``: 9 for 0.9), naming the
    task and its count: its intervals are then unbounded, its sets hold every class. Also
    warned by ``calibrate`` when rows of ``y`` hold labels that ``fit`` never saw, naming
    the task and the labels: the model has no output for them, so those cells are left
    out of the calibration. Warned by ``calibrate`` too when a task's calibration cells
    hold fewer than ten misses, too few for a temperature below 1: it is kept at 1
    (``fit``'s own calibration applies that rule without the warning); and when
    ``decision_thresholds="tuned"`` finds no labelled row to tune a task's thresholds
    on: they stay 0.5.
    """


class LabelsWarning(UserWarning):
    """A task whose labels :func:`~sk_multitask.labels.find_label_issues` cannot judge, or
    whose missing cells :func:`~sk_multitask.labels.suggest_labels` cannot rank.

    Warned naming the task: one with fewer labelled cells than folds, or with one class
    only among them, is not judged; a regression task without labelled cells in ``y``
    has no residuals to rank its missing cells by.
    """


class TableColumnWarning(UserWarning):
    """A table column (``tabular_cols``) that is constant or all missing in the training
    rows: it tells the network nothing. Warned by ``fit``, naming the column."""


class QuantizationWarning(UserWarning):
    """Fewer calibration images than an int8 export needs to be trusted.

    Warned by ``export_onnx(quantize="int8")`` when ``calibration_X`` gave fewer than
    :data:`sk_multitask.onnx._quantize.MIN_CALIBRATION_IMAGES` images (32): the int8
    ranges of the activations are measured on them, and a handful of images rarely
    shows the range that other images reach.
    """


def __getattr__(name):
    # scikit-learn's warning is its base class: imported only when asked for.
    if name == "InconsistentVersionWarning":
        module = importlib.import_module(".persistence._versions", __package__)
        return module.InconsistentVersionWarning
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "InconsistentVersionWarning"])

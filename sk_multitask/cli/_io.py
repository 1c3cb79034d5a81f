"""The command line's files: tables in and out, image inputs, and model files.

Every command of :mod:`sk_multitask.cli` reads and writes through these: tables as CSV,
parquet or JSON (:func:`read_table`, :func:`write_table`, atomically, never over an
input: :func:`refuse_overwriting`), the data of ``predict`` and ``evaluate`` as a
table, an image file or a folder of images (:func:`images_input`), and a model of any
kind by its file name's format (:func:`load_model`, :func:`save_model`): only a file
named as a pickle is unpickled. Errors are :class:`~sk_multitask.cli._options.CommandError`
lines naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile

import pandas as pd
from PIL import Image

from ..inputs._files import atomic_path, model_format, same_file
from ..inputs._sources import resolve_images
from ._options import CommandError, absolute

__all__ = [
    "OUTPUT_FORMATS",
    "check_output",
    "check_writable",
    "images_input",
    "integer_classes",
    "model_targets",
    "interval_columns",
    "is_image_file",
    "known_model_format",
    "load_model",
    "read_images_input",
    "read_table",
    "refuse_overwriting",
    "require_columns",
    "save_model",
    "write_table",
]

_PARQUET = (".parquet", ".pq")
#: Output formats by file extension; "-" (standard output) is CSV.
OUTPUT_FORMATS = (".csv", *_PARQUET, ".json")


def read_table(path):
    """A DataFrame from a CSV or parquet file."""
    if not os.path.isfile(path):
        raise CommandError(f"data file not found: {path}")
    try:
        if path.lower().endswith(_PARQUET):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CommandError(f"cannot read {path} as a CSV or parquet table: {exc}") from exc


def is_image_file(path):
    """Whether ``path``'s extension is one PIL reads (``.jpg``, ``.png``, ``.webp``...)."""
    return os.path.splitext(path)[1].lower() in Image.registered_extensions()


def read_images_input(path, image_col):
    """The table to predict on: a CSV/parquet table, one image file, or a folder of images.

    Returns
    -------
    data : DataFrame
        A table as read; for an image or a folder, ``image_col`` holds the paths
        (relative to the folder, or as given for one file).
    root : str or None
        The folder the paths are relative to (a folder input), else None.
    """
    if os.path.isdir(path):
        names = sorted(
            os.path.relpath(os.path.join(folder, name), path)
            for folder, _, files in os.walk(path)
            for name in files
            if is_image_file(name)
        )
        if not names:
            raise CommandError(f"no image file in the folder {path}")
        return pd.DataFrame({image_col: names}), os.path.abspath(path)
    if is_image_file(path):
        if not os.path.isfile(path):
            raise CommandError(f"image file not found: {path}")
        return pd.DataFrame({image_col: [os.path.abspath(path)]}), None
    return read_table(path), None


def check_output(path):
    """Refuse an output file whose format is unknown, before any work is done."""
    if path != "-" and not path.lower().endswith(OUTPUT_FORMATS):
        raise CommandError(
            f"--out {path}: unknown output format; name a {', '.join(OUTPUT_FORMATS)} "
            "file, or - for CSV on standard output"
        )


def write_table(frame, path):
    """Write ``frame`` as CSV, parquet or JSON (records) by ``path``'s extension; ``-``: stdout."""
    if path == "-":
        frame.to_csv(sys.stdout, index=False)
        return
    check_output(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with atomic_path(path) as temporary:
        if path.lower().endswith(_PARQUET):
            frame.to_parquet(temporary, index=False)
        elif path.lower().endswith(".json"):
            frame.to_json(temporary, orient="records", indent=2)
        else:
            frame.to_csv(temporary, index=False)


def require_columns(data, names, what):
    """``data[names]``, or a CommandError naming the ``what`` missing and the columns."""
    missing, columns = [n for n in names if n not in data.columns], list(data.columns)
    if missing:
        raise CommandError(f"{what} {missing} not in the data; its columns are {columns}")
    return data[names]


def model_targets(model, data):
    """The columns of ``data`` that are tasks of ``model``, in its order, with the class
    codes and levels of its integer-label tasks read as integers (:func:`integer_classes`:
    a column with an empty cell is read as floats); None where there is none."""
    from ..targets import LABEL_KINDS
    from ..targets._outputs import decoders

    fitted = decoders(model.tasks_)
    present = [t for t in fitted if t in data.columns]
    integers = [
        t for t in present
        if fitted[t].kind in LABEL_KINDS and pd.api.types.is_integer_dtype(fitted[t].dtype)
    ]
    return integer_classes(data[present], integers) if present else None


def integer_classes(y, names):
    """``y`` with each float column of ``names`` (classification targets) whose labelled
    values are all integers read as nullable integers (``Int64``): one empty cell makes
    pandas read a CSV column of class codes as floats, whose labels would come back as
    ``3.0``. Other columns are left as read.

    Examples
    --------
    >>> y = pd.DataFrame({"ethnicity": [3.0, None, 0.0], "age": [31.5, None, 5.0]})
    >>> integer_classes(y, ["ethnicity", "age"]).dtypes.tolist()
    [Int64Dtype(), dtype('float64')]
    """
    y = y.copy()
    for name in names:
        column = y.get(name)
        if column is None or column.dtype.kind != "f":
            continue
        labelled = column.dropna()
        if labelled.eq(labelled.round()).all() and labelled.abs().lt(2**53).all():
            y[name] = column.astype("Int64")
    return y


def known_model_format(path):
    """The model format ``path``'s name says, or a CommandError saying which names are known."""
    try:
        return model_format(path)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def refuse_overwriting(inputs, outputs):
    """Refuse, before anything is written, an output path that names one of the inputs."""
    for output in outputs:
        for flag, path in inputs.items():
            if path is not None and output != "-" and same_file(output, path):
                raise CommandError(f"{output} is the {flag} input: write to another file")


def load_model(path, verbose=None, storage_options=None):
    """A saved model of any kind: ONNX (run without torch), a safe file, or a pickle.

    The format is the one ``path``'s name says (:func:`sk_multitask.inputs._files.model_format`),
    decided before the file is read: only a file named as a pickle is unpickled.
    ``verbose`` is set on a model that trains (not on an ONNX one); ``storage_options``
    on every model.
    """
    kind = known_model_format(path)
    if not os.path.isfile(path):
        raise CommandError(f"model file not found: {path}")
    if kind == "onnx":
        from ..onnx import OnnxPredictor

        return OnnxPredictor(path, storage_options=storage_options)
    import joblib

    from ..estimator import MultiTaskImageEstimator

    if kind == "safe file":
        model = MultiTaskImageEstimator.load(path)
    else:
        try:  # a pickle: only for files from a source you trust
            model = joblib.load(path)
        except Exception as exc:  # unpickling arbitrary bytes fails in many ways
            raise CommandError(
                f"{path} is not a model file saved by 'sk-multitask fit' "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    if not isinstance(model, MultiTaskImageEstimator):
        raise CommandError(f"{path} holds a {type(model).__name__}, not a MultiTaskImageEstimator")
    if verbose is not None:
        model.set_params(verbose=verbose)
    return model.set_params(storage_options=storage_options)


def images_input(path, model, images=None):
    """The data of ``predict`` and ``evaluate`` for any model, every image file checked.

    Returns
    -------
    data : DataFrame
        As :func:`read_images_input` reads ``path`` (a table, an image file or a folder).
    X : DataFrame
        ``data`` with the image paths resolved against the folder ``path``, else
        ``images``, else the model's ``image_root``: what the model predicts on (the
        model itself is left as loaded).
    """
    data, root = read_images_input(path, model.image_col)
    if root is None and not is_image_file(path):
        root = model.image_root if images is None else absolute(images)
    require_columns(data, [model.image_col], "image column")
    # Raises naming a missing file (an object in storage is found missing when read).
    paths, _ = resolve_images(data, model.image_col, root, storage_options=model.storage_options)
    X = data.copy()
    X[model.image_col] = paths
    return data, X


def check_writable(path, what):
    """Fail now, not after the work, if ``path`` cannot be written: its folder (made if
    missing) must take a new file, as the atomic write needs, and it is no folder."""
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "it is a folder")
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise CommandError(f"cannot write {what} to {path}: {exc.strerror or exc}") from exc


def save_model(est, path):
    """Save a model in the format ``path``'s name says, atomically: a killed or failed
    write keeps the old file. Quiet (``verbose=0``): a later ``predict`` shows no bars."""
    kind = known_model_format(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if kind == "onnx":
        return est.export_onnx(path)
    if kind == "safe file":
        return est.save(path)
    import joblib

    est.set_params(verbose=0)
    with atomic_path(path) as temporary:
        joblib.dump(est, temporary)
    return path


def interval_columns(frame):
    """``predict_interval``'s frame as flat columns ``TASK_lower``, ``TASK_upper`` and
    ``TASK_set``: a set is a JSON list of its labels (``["red", "a|b"]``, ``[0, 3]``), so
    that any label reads back with ``json.loads``, whatever characters it holds; a missing
    row is empty."""
    flat = pd.DataFrame(index=frame.index)
    for (task, bound), column in frame.items():
        if bound == "set":
            column = column.map(_json_list, na_action="ignore")
        flat[f"{task}_{bound}"] = column
    return flat


def _json_list(labels):
    # A label of a type JSON lacks (a date, a Decimal) is written as its text.
    return json.dumps(list(labels), ensure_ascii=False, default=str)

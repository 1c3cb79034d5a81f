"""Task kinds, their inference from ``y``'s dtypes, per-task target encoders.

Each column of ``y`` is one task. A classification task encodes its observed labels
with :class:`~sklearn.preprocessing.LabelEncoder`; a regression task standardises
with :class:`~sklearn.preprocessing.StandardScaler` (which ignores NaN). Missing cells
(NaN, None, ``pd.NA``) become NaN in the encoded targets and are masked in the loss:
they are never a class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn.preprocessing import LabelEncoder, StandardScaler

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASK_KINDS = (CLASSIFICATION, REGRESSION)

#: An integer column with at most this many distinct labelled values is a
#: classification task; with more it is a regression (an integer ``age``).
MAX_INTEGER_CLASSES = 20

#: A classification target with more labelled cells than MAX_INTEGER_CLASSES and more
#: classes than this fraction of them is taken for an identifier (a file name, an id).
IDENTIFIER_CLASS_FRACTION = 0.9


@dataclass(eq=False)
class Task:
    """One fitted target: its name, kind, encoder and the dtype it came in.

    Attributes
    ----------
    name : hashable
        The column of ``y``.
    kind : {"classification", "regression"}
    encoder : LabelEncoder or StandardScaler
        Fitted on the labelled cells of the training targets.
    dtype : dtype
        The column's dtype; classification predictions are cast back to it.
    """

    name: object
    kind: str
    encoder: LabelEncoder | StandardScaler
    dtype: object

    @property
    def classes_(self):
        """The class labels of a classification task (None for a regression)."""
        return self.encoder.classes_ if self.kind == CLASSIFICATION else None

    @property
    def n_outputs(self):
        """How many outputs the task's head has: one per class, or one."""
        return len(self.encoder.classes_) if self.kind == CLASSIFICATION else 1

    def encode(self, column):
        """Encode a column to float32: class index or standardised value, NaN if missing."""
        encoded = np.full(len(column), np.nan, dtype=np.float32)
        labelled = column.notna().to_numpy()
        values = column.to_numpy()[labelled]
        if not labelled.any():
            return encoded
        if self.kind == CLASSIFICATION:
            unseen = ~np.isin(values, self.encoder.classes_)
            if unseen.any():
                raise ValueError(
                    f"target {self.name!r} has labels not seen in fit: "
                    f"{sorted(map(str, set(values[unseen])))}"
                )
            encoded[labelled] = self.encoder.transform(values)
        else:
            encoded[labelled] = self.encoder.transform(
                values.astype(np.float64).reshape(-1, 1)
            ).ravel()
        return encoded

    def decode(self, outputs, index=None):
        """Turn the head's outputs (N, n_outputs) into a Series of labels or values."""
        outputs = np.asarray(outputs)
        if len(outputs) == 0:
            return pd.Series([], index=index, name=self.name, dtype=self._output_dtype)
        if self.kind == CLASSIFICATION:
            labels = self.encoder.inverse_transform(outputs.argmax(axis=1))
            return pd.Series(labels, index=index, name=self.name).astype(self.dtype)
        values = self.encoder.inverse_transform(outputs.reshape(-1, 1)).ravel()
        return pd.Series(values, index=index, name=self.name, dtype=np.float64)

    @property
    def _output_dtype(self):
        return self.dtype if self.kind == CLASSIFICATION else np.float64

    def __repr__(self):
        detail = f", classes={list(self.classes_)}" if self.kind == CLASSIFICATION else ""
        return f"Task(name={self.name!r}, kind={self.kind!r}{detail})"


def infer_task_kind(column):
    """The task kind of a target column, from its dtype.

    Float is a regression; object, string, category and bool are classifications;
    an integer column is a classification when it has at most
    ``MAX_INTEGER_CLASSES`` distinct labelled values, else a regression.

    Examples
    --------
    >>> import pandas as pd
    >>> infer_task_kind(pd.Series([31.0, None, 62.5]))
    'regression'
    >>> infer_task_kind(pd.Series(["male", None, "female"]))
    'classification'
    >>> infer_task_kind(pd.Series(range(100)))
    'regression'
    """
    dtype = column.dtype
    if ptypes.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return CLASSIFICATION
    if ptypes.is_float_dtype(dtype):
        return REGRESSION
    if ptypes.is_integer_dtype(dtype):
        few = column.nunique(dropna=True) <= MAX_INTEGER_CLASSES
        return CLASSIFICATION if few else REGRESSION
    if ptypes.is_string_dtype(dtype) or ptypes.is_object_dtype(dtype):
        return CLASSIFICATION
    raise ValueError(
        f"cannot infer the task kind of target {column.name!r} from its dtype {dtype}; "
        "pass tasks={name: 'classification' or 'regression'}"
    )


def fit_tasks(y, kinds=None):
    """Infer (or take) each column's kind and fit its encoder on the labelled cells.

    Parameters
    ----------
    y : DataFrame
        One column per task; missing cells are NaN, None or ``pd.NA``.
    kinds : dict, optional
        Task name to ``"classification"`` or ``"regression"``, overriding inference.

    Returns
    -------
    dict
        Task name to fitted :class:`Task`, in ``y``'s column order.
    """
    kinds = dict(kinds or {})
    check_task_names(kinds, y.columns, "tasks")
    for name, kind in kinds.items():
        if kind not in TASK_KINDS:
            raise ValueError(
                f"unknown task kind {kind!r} for target {name!r}; "
                f"expected one of {list(TASK_KINDS)}"
            )
    tasks = {}
    for name in y.columns:
        column = y[name]
        labelled = column.dropna()
        if labelled.empty:
            raise ValueError(f"target {name!r} has no labelled cell: every value is missing")
        kind = kinds.get(name) or infer_task_kind(column)
        tasks[name] = Task(name, kind, _fit_encoder(name, kind, labelled), column.dtype)
    return tasks


def _fit_encoder(name, kind, labelled):
    if kind == CLASSIFICATION:
        encoder = LabelEncoder().fit(labelled.to_numpy())
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"target {name!r} has a single class {encoder.classes_[0]!r}; "
                "a classification task needs at least two"
            )
        n_classes, n_labelled = len(encoder.classes_), len(labelled)
        if n_labelled > MAX_INTEGER_CLASSES and n_classes > IDENTIFIER_CLASS_FRACTION * n_labelled:
            raise ValueError(
                f"target {name!r} looks like an identifier, not a classification: "
                f"{n_classes} classes for {n_labelled} labelled cells (e.g. "
                f"{list(encoder.classes_[:3])}). Leave it out of y; if it is a number, "
                f"pass tasks={{{name!r}: 'regression'}}"
            )
        return encoder
    if not ptypes.is_numeric_dtype(labelled.dtype) or ptypes.is_bool_dtype(labelled.dtype):
        raise ValueError(
            f"target {name!r} is a regression task but its dtype {labelled.dtype} is not numeric"
        )
    return StandardScaler().fit(labelled.to_numpy(dtype=np.float64).reshape(-1, 1))


def check_task_names(mapping, task_names, parameter):
    """Refuse a per-task dict that names something that is not a task.

    Every parameter keyed by task name (``tasks``, ``loss_weights``, the metrics of
    :func:`~sk_multitask.metrics.multitask_scorer`...) calls this, so that a typo is
    an error, never silently ignored.

    Parameters
    ----------
    mapping : dict or None
        Task name to anything.
    task_names : iterable
        The tasks (the columns of ``y``).
    parameter : str
        The parameter's name, for the message.

    Raises
    ------
    ValueError
        Naming the parameter, the unknown keys and the tasks.

    Examples
    --------
    >>> check_task_names({"age": 2.0}, ["age", "gender"], "loss_weights")
    >>> check_task_names({"agge": 2.0}, ["age", "gender"], "loss_weights")
    Traceback (most recent call last):
    ...
    ValueError: loss_weights names unknown tasks ['agge']; the tasks (columns of y) are ...
    """
    names = list(task_names)
    unknown = [key for key in (mapping or {}) if key not in names]
    if unknown:
        raise ValueError(
            f"{parameter} names unknown tasks {unknown}; the tasks (columns of y) are {names}"
        )


def check_not_inputs(y, image_col=None, valid_col=None):
    """Refuse a ``y`` that holds the image column or the validation column of ``X``.

    ``est.fit(df, df)`` or ``y = df.drop(columns="filename")`` would otherwise train a
    head on the file names or on the validation marker.

    Parameters
    ----------
    y : DataFrame
    image_col : hashable, optional
        The column of ``X`` holding the image paths (None: ``X`` is not a DataFrame).
    valid_col : hashable, optional
        The boolean column of ``X`` marking validation rows, if any; a column named
        ``"is_valid"`` counts as one whatever ``valid_split`` is.
    """
    for column, what in ((image_col, "the image column"), (valid_col, "the validation column")):
        if column is not None and column in y.columns:
            raise ValueError(
                f"y holds {what} {column!r} of X as a target; pass the target columns "
                f"only, e.g. y = df[[...]] or df.drop(columns=[{column!r}, ...])"
            )
    if "is_valid" in y.columns and ptypes.is_bool_dtype(y["is_valid"].dtype):
        raise ValueError(
            "y holds a boolean column 'is_valid', which marks validation rows, as a "
            "target; leave it out of y (and pass valid_split='is_valid' to use it), or "
            "rename it if it really is a target"
        )


def data_sizes(targets, task_names, **parts):
    """How many rows, and labelled cells of each task, each part of the data has.

    Parameters
    ----------
    targets : ndarray (N, n_tasks)
        Encoded targets, NaN where missing (:func:`encode_targets`).
    task_names : list
    **parts : array of row positions, or None
        E.g. ``train=..., valid=...``; None: an empty part.

    Returns
    -------
    DataFrame
        Index ``rows`` then the task names; one integer column per part.

    Examples
    --------
    >>> import numpy as np
    >>> targets = np.array([[0.0, np.nan], [1.0, 0.5], [np.nan, 0.1]])
    >>> data_sizes(targets, ["color", "area"], train=[0, 1], valid=[2])
           train  valid
    rows       2      1
    color      2      0
    area       1      1
    """
    columns = {}
    for part, rows in parts.items():
        rows = np.asarray([] if rows is None else rows, dtype=np.intp)
        labelled = ~np.isnan(targets[rows]).reshape(len(rows), len(task_names))
        columns[part] = [len(rows), *labelled.sum(axis=0).tolist()]
    return pd.DataFrame(columns, index=["rows", *task_names])


def encode_targets(y, tasks):
    """Encode every task's column: float32 array (N, n_tasks), NaN where missing."""
    return np.column_stack([task.encode(y[name]) for name, task in tasks.items()])


def target_frame(y):
    """``y`` as a DataFrame of one column per task.

    A Series becomes one column (named ``"target"`` when it has no name); a 1-D or
    2-D array becomes a frame with default column names.

    Raises
    ------
    ValueError
        If ``y`` has more than two dimensions, no column, or duplicate column names.
    """
    if isinstance(y, pd.Series):
        y = y.to_frame(name="target" if y.name is None else y.name)
    elif not isinstance(y, pd.DataFrame):
        array = np.asarray(y)
        if array.ndim == 1:
            y = pd.DataFrame({"target": array})
        elif array.ndim == 2:
            y = pd.DataFrame(array)
        else:
            raise ValueError(f"y must be a DataFrame, a Series or 1-D/2-D; got shape {array.shape}")
    if y.shape[1] == 0:
        raise ValueError("y has no columns: pass one column per task")
    if y.columns.has_duplicates:
        raise ValueError(f"y has duplicate column names: {list(y.columns)}")
    return y


def check_targets(y, tasks, n_rows):
    """``y`` as a frame whose columns are all fitted tasks, with ``n_rows`` rows.

    Parameters
    ----------
    y : DataFrame, Series or array
        True targets for some or all of ``tasks``.
    tasks : dict
        Task name to fitted :class:`Task`.
    n_rows : int
        How many rows (images) ``y`` must have.
    """
    y = target_frame(y)
    unknown = [name for name in y.columns if name not in tasks]
    if unknown:
        raise ValueError(
            f"y has columns {unknown} that are not tasks of the estimator {list(tasks)}"
        )
    if len(y) != n_rows:
        raise ValueError(f"X has {n_rows} images but y has {len(y)} rows")
    return y

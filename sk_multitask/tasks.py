"""Task kinds, their inference from ``y``'s dtypes, per-task target encoders.

Each column of ``y`` is one task. A classification task encodes its observed labels
with :class:`~sklearn.preprocessing.LabelEncoder`; a regression task standardises
with :class:`~sklearn.preprocessing.StandardScaler` (which ignores NaN); a multi-label
task (cells that are lists, sets or tuples of labels) binarises them with
:class:`~sklearn.preprocessing.MultiLabelBinarizer`, one column per label. Missing cells
(NaN, None, ``pd.NA``) become NaN in the encoded targets and are masked in the loss:
they are never a class. An empty list is a labelled cell with no label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from scipy.special import expit, softmax
from sklearn.preprocessing import LabelEncoder, MultiLabelBinarizer, StandardScaler

CLASSIFICATION = "classification"
REGRESSION = "regression"
MULTILABEL = "multilabel"
TASK_KINDS = (CLASSIFICATION, REGRESSION, MULTILABEL)

#: The cell types that hold the labels of a multi-label task.
LABEL_SETS = (list, tuple, set, frozenset)

#: An integer column with at most this many distinct labelled values is a
#: classification task; with more it is a regression (an integer ``age``).
MAX_INTEGER_CLASSES = 20


@dataclass(eq=False)
class Task:
    """One fitted target: its name, kind, encoder and the dtype it came in.

    Attributes
    ----------
    name : hashable
        The column of ``y``.
    kind : {"classification", "regression", "multilabel"}
    encoder : LabelEncoder, StandardScaler or MultiLabelBinarizer
        Fitted on the labelled cells of the training targets.
    dtype : dtype
        The column's dtype; classification predictions are cast back to it.
    """

    name: object
    kind: str
    encoder: LabelEncoder | StandardScaler | MultiLabelBinarizer
    dtype: object

    @property
    def classes_(self):
        """The labels of a classification or multi-label task (None for a regression)."""
        return None if self.kind == REGRESSION else self.encoder.classes_

    @property
    def n_outputs(self):
        """How many outputs the task's head has: one per class or label, or one."""
        return 1 if self.kind == REGRESSION else len(self.encoder.classes_)

    @property
    def width(self):
        """How many columns the task takes in the encoded targets."""
        return target_width(self.kind, self.n_outputs)

    def encode(self, column):
        """Encode a column to float32, NaN where missing.

        Returns
        -------
        ndarray
            ``(N,)`` class indices or standardised values; for a multi-label task
            ``(N, n_labels)`` indicators (a missing cell is a row of NaN).
        """
        if self.kind == MULTILABEL:
            encoded = np.full((len(column), self.width), np.nan, dtype=np.float32)
        else:
            encoded = np.full(len(column), np.nan, dtype=np.float32)
        labelled = column.notna().to_numpy()
        values = column.to_numpy()[labelled]
        if not labelled.any():
            return encoded
        if self.kind == MULTILABEL:
            encoded[labelled] = self.binarize(values)
        elif self.kind == CLASSIFICATION:
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

    def binarize(self, cells):
        """The 0/1 indicator matrix ``(n, n_labels)`` of a multi-label task's labelled cells.

        Raises
        ------
        ValueError
            If a cell is not a list, set or tuple, or holds a label not seen in fit.
        """
        cells = list(cells)
        _check_label_sets(self.name, cells)
        unseen = set().union(*map(set, cells)) - set(self.encoder.classes_.tolist())
        if unseen:
            raise ValueError(
                f"target {self.name!r} has labels not seen in fit: {sorted(map(str, unseen))}"
            )
        return self.encoder.transform(cells)

    def decode(self, outputs, index=None):
        """Turn the head's outputs (N, n_outputs) into a Series of labels or values.

        A multi-label task gives, per row, the list of labels whose probability is
        above 0.5, in the order of ``classes_``.
        """
        outputs = np.asarray(outputs)
        if len(outputs) == 0:
            return pd.Series([], index=index, name=self.name, dtype=self._output_dtype)
        if self.kind == MULTILABEL:
            classes = np.asarray(self.encoder.classes_.tolist(), dtype=object)
            labels = [classes[row > 0].tolist() for row in outputs]  # logit > 0: p > 0.5
            return pd.Series(labels, index=index, name=self.name, dtype=object)
        if self.kind == CLASSIFICATION:
            labels = self.encoder.inverse_transform(outputs.argmax(axis=1))
            return pd.Series(labels, index=index, name=self.name).astype(self.dtype)
        values = self.encoder.inverse_transform(outputs.reshape(-1, 1)).ravel()
        return pd.Series(values, index=index, name=self.name, dtype=np.float64)

    def proba(self, outputs, index=None):
        """The probabilities of a classification (softmax, rows sum to 1) or multi-label
        task (independent sigmoids), from the head's outputs: a DataFrame with the
        labels as columns.
        """
        if self.kind == REGRESSION:
            raise ValueError(f"task {self.name!r} is a regression: it has no probabilities")
        outputs = np.asarray(outputs, dtype=np.float64)
        proba = expit(outputs) if self.kind == MULTILABEL else softmax(outputs, axis=1)
        return pd.DataFrame(proba, index=index, columns=pd.Index(self.classes_))

    @property
    def _output_dtype(self):
        return {CLASSIFICATION: self.dtype, MULTILABEL: object}.get(self.kind, np.float64)

    def __repr__(self):
        detail = "" if self.kind == REGRESSION else f", classes={list(self.classes_)}"
        return f"Task(name={self.name!r}, kind={self.kind!r}{detail})"


def target_width(kind, n_outputs):
    """How many encoded-target columns a task of ``kind`` with ``n_outputs`` takes."""
    return n_outputs if kind == MULTILABEL else 1


def is_missing(value):
    """Whether one target cell is missing (NaN, None, ``pd.NA``); a list never is."""
    return not isinstance(value, LABEL_SETS) and bool(pd.isna(value))


def _check_label_sets(name, cells):
    not_sets = [cell for cell in cells if not isinstance(cell, LABEL_SETS)]
    if not_sets:
        raise ValueError(
            f"target {name!r} is a multilabel task, but some of its labelled cells are "
            f"not lists, sets or tuples of labels, e.g. {not_sets[0]!r}"
        )


def infer_task_kind(column):
    """The task kind of a target column, from its dtype.

    Float is a regression; object, string, category and bool are classifications;
    an integer column is a classification when it has at most
    ``MAX_INTEGER_CLASSES`` distinct labelled values, else a regression. An object
    column whose labelled cells are lists, sets or tuples of labels is a multi-label
    task.

    Examples
    --------
    >>> import pandas as pd
    >>> infer_task_kind(pd.Series([31.0, None, 62.5]))
    'regression'
    >>> infer_task_kind(pd.Series(["male", None, "female"]))
    'classification'
    >>> infer_task_kind(pd.Series(range(100)))
    'regression'
    >>> infer_task_kind(pd.Series([["cat", "dog"], [], None]))
    'multilabel'
    """
    dtype = column.dtype
    if ptypes.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return CLASSIFICATION
    if ptypes.is_float_dtype(dtype):
        return REGRESSION
    if ptypes.is_integer_dtype(dtype):
        few = column.nunique(dropna=True) <= MAX_INTEGER_CLASSES
        return CLASSIFICATION if few else REGRESSION
    if ptypes.is_object_dtype(dtype) and column.dropna().map(_is_label_set).any():
        _check_label_sets(column.name, column.dropna())
        return MULTILABEL
    if ptypes.is_string_dtype(dtype) or ptypes.is_object_dtype(dtype):
        return CLASSIFICATION
    raise ValueError(
        f"cannot infer the task kind of target {column.name!r} from its dtype {dtype}; "
        "pass tasks={name: 'classification', 'regression' or 'multilabel'}"
    )


def _is_label_set(value):
    return isinstance(value, LABEL_SETS)


def fit_tasks(y, kinds=None):
    """Infer (or take) each column's kind and fit its encoder on the labelled cells.

    Parameters
    ----------
    y : DataFrame
        One column per task; missing cells are NaN, None or ``pd.NA``.
    kinds : dict, optional
        Task name to ``"classification"``, ``"regression"`` or ``"multilabel"``,
        overriding inference.

    Returns
    -------
    dict
        Task name to fitted :class:`Task`, in ``y``'s column order.
    """
    kinds = dict(kinds or {})
    unknown = [name for name in kinds if name not in y.columns]
    if unknown:
        raise ValueError(f"tasks names {unknown} that are not columns of y {list(y.columns)}")
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
    if kind == MULTILABEL:
        _check_label_sets(name, labelled)
        encoder = MultiLabelBinarizer().fit(labelled.tolist())
        if len(encoder.classes_) == 0:
            raise ValueError(f"target {name!r} is a multilabel task with no label in any cell")
        return encoder
    if labelled.map(_is_label_set).any():
        raise ValueError(
            f"target {name!r} holds lists of labels, so it cannot be a {kind} task; "
            f"it is a multi-label task (tasks={{{name!r}: 'multilabel'}})"
        )
    if kind == CLASSIFICATION:
        encoder = LabelEncoder().fit(labelled.to_numpy())
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"target {name!r} has a single class {encoder.classes_[0]!r}; "
                "a classification task needs at least two"
            )
        return encoder
    if not ptypes.is_numeric_dtype(labelled.dtype) or ptypes.is_bool_dtype(labelled.dtype):
        raise ValueError(
            f"target {name!r} is a regression task but its dtype {labelled.dtype} is not numeric"
        )
    values = labelled.to_numpy(dtype=np.float64).reshape(-1, 1)
    if not np.isfinite(values).all():
        raise ValueError(f"target {name!r} has infinite values; use NaN for a missing cell")
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        scaler = StandardScaler().fit(values)
    if not (np.isfinite(scaler.mean_).all() and np.isfinite(scaler.var_).all()):
        raise ValueError(
            f"target {name!r} cannot be standardised: its values (up to "
            f"{np.abs(values).max():.3g}) overflow float64 arithmetic; rescale it"
        )
    return scaler


def encode_targets(y, tasks):
    """Encode every task's column: float32 array (N, total width), NaN where missing.

    Each task takes :attr:`Task.width` columns, in ``tasks``' order: one, or one per
    label for a multi-label task.
    """
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


def check_same_tasks(fitted, tasks):
    """``fitted``, if ``tasks`` have the same names and kinds (a warm start continues them).

    Raises
    ------
    ValueError
        Naming both sets of tasks, if they differ.
    """
    new = {name: task.kind for name, task in tasks.items()}
    old = {name: task.kind for name, task in fitted.items()}
    if new != old:
        raise ValueError(
            f"warm_start continues a model of tasks {old} but y has tasks {new}; "
            "fit a new estimator (warm_start=False) to change the tasks"
        )
    return fitted


def check_trainable(y_train):
    """Check that the training rows (their targets ``y_train``) can train every task.

    Raises
    ------
    ValueError
        With fewer than 2 training rows, or a task without a labelled training cell.
    """
    if len(y_train) < 2:
        raise ValueError(
            "need at least 2 training rows (outside the validation split); "
            f"got {len(y_train)}"
        )
    for name in y_train.columns:
        if y_train[name].isna().all():
            raise ValueError(
                f"target {name!r} has no labelled cell among the training rows "
                "(its labels are all in the validation rows)"
            )

"""Task kinds, their inference from dtypes, the fitted Task (its encoder), task names."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from ..exceptions import MissingLikeLabelWarning
from ._ordinal import LevelEncoder

# scikit-learn is imported inside the functions that need it: the torch-free ONNX
# predictor reads task kinds and checks y through this module, without scikit-learn.

#: The kind of a task predicting one of the labels of its column.
CLASSIFICATION = "classification"
#: The kind of a task predicting a number in its column's units.
REGRESSION = "regression"
#: The kind of a task predicting a set of labels (a column of lists).
MULTILABEL = "multilabel"
#: The kind of a task predicting one of ordered levels (an ordered ``Categorical``, or
#: integer levels): CORN's rank-consistent head (:mod:`sk_multitask.targets._ordinal`).
ORDINAL = "ordinal"
#: Every task kind, as ``tasks=`` takes them.
TASK_KINDS = (CLASSIFICATION, REGRESSION, MULTILABEL, ORDINAL)
#: The task kinds whose head predicts one of several labels: classes or levels.
LABEL_KINDS = (CLASSIFICATION, ORDINAL)

#: The cell types that hold the labels of a multi-label task.
LABEL_SETS = (list, tuple, set, frozenset)

#: An integer column with at most this many distinct labelled values is a
#: classification task; with more it is a regression (an integer ``age``).
MAX_INTEGER_CLASSES = 20

#: A classification target with more labelled cells than MAX_INTEGER_CLASSES and more
#: classes than this fraction of them is taken for an identifier (a file name, an id).
IDENTIFIER_CLASS_FRACTION = 0.9

#: The strings ``pandas.read_csv`` reads as missing by default (its documented
#: ``na_values``; pandas keeps the list in a private module). In a label column they are
#: most likely missing cells that were read as text (``keep_default_na=False``, a JSON or
#: database export): :class:`MissingLikeLabelWarning`.

MISSING_LIKE_LABELS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
    "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip


@dataclass(eq=False)
class Task:
    """One fitted target: its name, kind, encoder and the dtype it came in.

    Encoding is the task's; decoding the head's outputs is its
    :class:`~sk_multitask.targets._outputs.OutputDecoder`'s (``OutputDecoder.from_task``).

    Attributes
    ----------
    name : hashable
        The column of ``y``.
    kind : {"classification", "regression", "multilabel", "ordinal"}
    encoder : LabelEncoder, StandardScaler, MultiLabelBinarizer or LevelEncoder
        A regression's scaler is fitted on the labelled cells of the *training* rows
        only, so that the validation labels leave the model unchanged. The classes
        (or labels) are those of every labelled row, the validation rows included:
        a validation label must encode. An ordinal task's levels are an ordered
        categorical's categories (used or not), or its distinct integer values.
    dtype : dtype
        The column's dtype; classification predictions are cast back to it.
    """

    name: object
    kind: str
    encoder: object
    dtype: object

    @property
    def classes_(self):
        """The labels of a classification or multi-label task, the levels of an ordinal
        one, in order (None for a regression)."""
        return None if self.kind == REGRESSION else self.encoder.classes_

    @property
    def n_outputs(self):
        """How many outputs the task's head has: one per class or label, one fewer than
        its levels, or one."""
        return head_outputs(self.kind, None if self.kind == REGRESSION else len(self.classes_))

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
            encoded[labelled] = binarize(self.name, self.classes_, values)
        elif self.kind in LABEL_KINDS:
            unseen = ~np.isin(values, self.encoder.classes_)
            if unseen.any():
                raise ValueError(
                    f"target {self.name!r} has labels not seen in fit: "
                    f"{sorted(map(str, set(values[unseen])))}"
                )
            encoded[labelled] = self.encoder.transform(values)
        else:
            values = _finite_values(self.name, values)
            encoded[labelled] = self.encoder.transform(values.reshape(-1, 1)).ravel()
        return encoded

    def __repr__(self):
        detail = "" if self.kind == REGRESSION else f", classes={list(self.classes_)}"
        return f"Task(name={self.name!r}, kind={self.kind!r}{detail})"


def binarize(name, classes, cells):
    """The 0/1 indicator matrix ``(n, n_labels)`` of a multi-label task's labelled cells.

    Parameters
    ----------
    name : hashable
        The task, for the messages.
    classes : ndarray
        The task's labels, in the order of its outputs.
    cells : iterable of lists, sets or tuples of labels

    Raises
    ------
    ValueError
        If a cell is not a list, set or tuple, or holds a label not in ``classes``.
    """
    cells = list(cells)
    _check_label_sets(name, cells)
    positions = {label: i for i, label in enumerate(classes.tolist())}
    unseen = set().union(*map(set, cells)) - set(positions)
    if unseen:
        raise ValueError(f"target {name!r} has labels not seen in fit: {sorted(map(str, unseen))}")
    indicators = np.zeros((len(cells), len(positions)), dtype=np.int64)
    for row, cell in enumerate(cells):
        indicators[row, [positions[label] for label in cell]] = 1
    return indicators


def head_outputs(kind, n_classes):
    """How many outputs the head of a task of ``kind`` with ``n_classes`` classes (labels,
    levels; None for a regression) has.

    Examples
    --------
    >>> head_outputs("classification", 3), head_outputs("ordinal", 3)
    (3, 2)
    """
    if kind == REGRESSION:
        return 1
    return n_classes - 1 if kind == ORDINAL else n_classes


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

    Float is a regression; an ordered categorical is an ordinal task; object, string,
    (unordered) category and bool are classifications;
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
    >>> infer_task_kind(pd.Series(pd.Categorical(["S", "L"], ["S", "M", "L"], ordered=True)))
    'ordinal'
    """
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype) and dtype.ordered:
        return ORDINAL
    if ptypes.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return CLASSIFICATION
    if ptypes.is_float_dtype(dtype):
        return REGRESSION
    if ptypes.is_integer_dtype(dtype):
        few = column.nunique(dropna=True) <= MAX_INTEGER_CLASSES
        return CLASSIFICATION if few else REGRESSION
    if ptypes.is_object_dtype(dtype) and _has_label_sets(column.dropna()):
        _check_label_sets(column.name, column.dropna())
        return MULTILABEL
    if ptypes.is_string_dtype(dtype) or ptypes.is_object_dtype(dtype):
        return CLASSIFICATION
    raise ValueError(
        f"cannot infer the task kind of target {column.name!r} from its dtype {dtype}; "
        "pass tasks={name: 'classification', 'regression' or 'multilabel'}"
    )


def _has_label_sets(cells):
    # Not Series.map(...).any(): a categorical column maps to a Categorical, which has no any().
    return any(isinstance(cell, LABEL_SETS) for cell in cells)


def fit_tasks(y, kinds=None, train=None):
    """Infer (or take) each column's kind and fit its encoder.

    Parameters
    ----------
    y : DataFrame
        One column per task; missing cells are NaN, None or ``pd.NA``.
    kinds : dict, optional
        Task name to ``"classification"``, ``"regression"``, ``"multilabel"`` or
        ``"ordinal"`` (integer levels or an ordered categorical), overriding inference.
    train : array of row positions, optional
        The training rows: a regression's scaler is fitted on their labelled cells
        only. The classes (or labels) come from every labelled row, so that a
        validation label encodes. None: every row trains.

    Returns
    -------
    dict
        Task name to fitted :class:`Task`, in ``y``'s column order.

    Examples
    --------
    >>> y = pd.DataFrame({"age": [20.0, 40.0, 90.0], "pet": ["cat", "dog", "cat"]})
    >>> tasks = fit_tasks(y, train=[0, 1])  # row 2 is a validation row
    >>> tasks["age"].encoder.mean_, list(tasks["pet"].classes_)
    (array([30.]), ['cat', 'dog'])
    """
    kinds = dict(kinds or {})
    check_task_names(kinds, y.columns, "tasks")
    for name, kind in kinds.items():
        if kind not in TASK_KINDS:
            raise ValueError(
                f"unknown task kind {kind!r} for target {name!r}; "
                f"expected one of {list(TASK_KINDS)}"
            )
    train = np.arange(len(y)) if train is None else np.asarray(train, dtype=np.intp)
    tasks = {}
    for name in y.columns:
        column = y[name]
        labelled = column.dropna()
        if labelled.empty:
            raise ValueError(f"target {name!r} has no labelled cell: every value is missing")
        kind = kinds.get(name)
        if kind is None:
            kind = infer_task_kind(column)
            _warn_if_integer_coded(column, labelled, kind)
        if kind == MULTILABEL:
            encoder = _fit_labels(name, labelled)
        elif _has_label_sets(labelled):
            raise ValueError(
                f"target {name!r} holds lists of labels, so it cannot be a {kind} task; "
                f"it is a multi-label task (tasks={{{name!r}: 'multilabel'}})"
            )
        elif kind == CLASSIFICATION:
            encoder = _fit_classes(name, labelled)
        elif kind == ORDINAL:
            encoder = _fit_levels(name, column, labelled)
        else:
            encoder = _fit_scaler(name, labelled, column.iloc[train].dropna())
        if kind != REGRESSION:
            _check_missing_like(name, labelled, kind)
        tasks[name] = Task(name, kind, encoder, column.dtype)
    return tasks


def _warn_if_integer_coded(column, labelled, kind):
    """Warn about a float column that looks like integer-coded classes read as floats.

    One empty cell in a CSV turns a column of class codes 1, 2, 3 into floats, which
    would then train silently as a regression.
    """
    if kind != REGRESSION or not ptypes.is_float_dtype(column.dtype) or not column.isna().any():
        return
    values = labelled.to_numpy()
    if not np.isfinite(values).all() or (values != np.round(values)).any():
        return
    n_values = len(np.unique(values))
    if n_values <= MAX_INTEGER_CLASSES and len(values) > n_values:
        warnings.warn(
            f"target {column.name!r} is a float column of {n_values} distinct integer "
            "values with missing cells (integer class codes read as floats?): it trains "
            f"as a regression; pass tasks={{{column.name!r}: 'classification'}} if they "
            "are classes",
            UserWarning,
            stacklevel=4,
        )


def _check_missing_like(name, labelled, kind):
    """Warn that the :data:`MISSING_LIKE_LABELS` among a classification's (or multi-label
    task's) labels train as classes; refuse a target that has no other label."""
    cells = labelled.explode().dropna() if kind == MULTILABEL else labelled  # [] -> NaN
    labels = pd.Series(cells.to_numpy(dtype=object))  # a category's unused ones uncounted
    missing_like = labels.isin(MISSING_LIKE_LABELS).to_numpy()
    if not missing_like.any():
        return
    counts = labels[missing_like].value_counts(sort=False)
    held = ", ".join(f"{value!r} ({n} cell{'s' * (n > 1)})" for value, n in counts.items())
    if missing_like.all():
        raise ValueError(
            f"target {name!r} has no labelled cell: it holds only {held}, which mean "
            "missing; replace them with NaN, or leave the column out of y"
        )
    it, is_ = ("it", "is") if len(counts) == 1 else ("they", "are")
    what = "a label" if kind == MULTILABEL else "a class"
    warnings.warn(
        f"target {name!r} holds {held} beside its labels: {it} {is_} trained as {what}. "
        f"If {it} mean{'s' * (it == 'it')} missing, replace {it} with NaN (as "
        "pandas.read_csv does with its default na_values)",
        MissingLikeLabelWarning,
        stacklevel=4,
    )


def _fit_labels(name, labelled):
    from sklearn.preprocessing import MultiLabelBinarizer

    _check_label_sets(name, labelled)
    encoder = MultiLabelBinarizer().fit(labelled.tolist())
    if len(encoder.classes_) == 0:
        raise ValueError(f"target {name!r} is a multilabel task with no label in any cell")
    return encoder


def _fit_classes(name, labelled):
    from sklearn.preprocessing import LabelEncoder

    try:
        encoder = LabelEncoder().fit(labelled.to_numpy())
    except TypeError as exc:  # labels of several types that cannot be sorted together
        types = sorted({type(label).__name__ for label in labelled})
        raise ValueError(
            f"target {name!r} mixes labels of types {types}, which cannot be ordered "
            f"together; convert the column to one type (e.g. y[{name!r}].astype(str))"
        ) from exc
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


def _fit_levels(name, column, labelled):
    """An ordinal task's levels: an ordered categorical's categories, in their order, or
    the distinct integer values (an integer column, or integers read as floats beside
    missing cells), ascending."""
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype) and dtype.ordered:
        levels = np.asarray(dtype.categories)
    elif ptypes.is_integer_dtype(dtype) or (
        ptypes.is_float_dtype(dtype) and _integral(labelled.to_numpy(dtype=np.float64))
    ):
        levels = np.unique(labelled.to_numpy())
    else:
        if isinstance(dtype, pd.CategoricalDtype):
            reason = "its categories are not ordered"
        elif ptypes.is_float_dtype(dtype):
            reason = "it holds values that are not integers"
        else:
            reason = f"its dtype is {dtype}"
        raise ValueError(
            f"target {name!r} cannot be ordinal: {reason}; ordinal levels are integers or "
            f"an ordered categorical (y[{name!r}] = pd.Categorical(y[{name!r}], "
            "categories=[lowest, ..., highest], ordered=True))"
        )
    if len(levels) < 2:
        raise ValueError(f"target {name!r} is ordinal with a single level; it needs at least two")
    return LevelEncoder(levels)


def _integral(values):
    with np.errstate(invalid="ignore"):
        return bool(np.isfinite(values).all() and (values == np.round(values)).all())


def _fit_scaler(name, labelled, training):
    """A regression's scaler, fitted on its labelled training cells ``training``."""
    from sklearn.preprocessing import StandardScaler

    if not ptypes.is_numeric_dtype(labelled.dtype) or ptypes.is_bool_dtype(labelled.dtype):
        raise ValueError(
            f"target {name!r} is a regression task but its dtype {labelled.dtype} is not numeric"
        )
    _finite_values(name, labelled.to_numpy())  # the validation values too
    if training.empty:
        raise no_training_label(name)
    values = training.to_numpy().astype(np.float64).reshape(-1, 1)
    # Arrays whatever scikit-learn's global transform_output ("pandas", "polars").
    scaler = StandardScaler().set_output(transform="default")
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        scaler.fit(values)
    if not (np.isfinite(scaler.mean_).all() and np.isfinite(scaler.var_).all()):
        raise ValueError(
            f"target {name!r} cannot be standardised: its values (up to "
            f"{np.abs(values).max():.3g}) overflow float64 arithmetic; rescale it"
        )
    return scaler


def no_training_label(name):
    """The error of a task with no labelled cell among the training rows."""
    return ValueError(
        f"target {name!r} has no labelled cell among the training rows "
        "(its labels are all in the validation rows)"
    )


def check_task_names(mapping, task_names, parameter, kind=None, of_kind=None):
    """Refuse a per-task dict that names something that is not a task.

    Every parameter keyed by task name (``tasks``, ``loss_weights``, the metrics of
    :func:`~sk_multitask.evaluation._metrics.multitask_scorer`...) calls this, so that a typo is
    an error, never silently ignored.

    Parameters
    ----------
    mapping : dict or None
        Task name to anything.
    task_names : iterable
        The tasks (the columns of ``y``).
    parameter : str
        The parameter's name, for the message.
    kind : str, optional
        The task kind the parameter applies to (e.g. ``class_weight``: classification);
        then ``of_kind`` are the tasks of that kind, and naming another task is an error.
    of_kind : iterable, optional
        The tasks of kind ``kind``.

    Raises
    ------
    ValueError
        Naming the parameter, the unknown keys and the tasks (or the tasks of another
        kind).

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
    if kind is not None:
        of_kind = list(of_kind)
        wrong = [key for key in mapping or {} if key not in of_kind]
        if wrong:
            raise ValueError(f"{parameter} names tasks {wrong} that are not {kind} tasks")


def check_task(name, task_names):
    """Refuse a task name (e.g. ``top_losses(task=...)``) that is not one of ``task_names``.

    Examples
    --------
    >>> check_task("size", ["age", "gender"])
    Traceback (most recent call last):
    ...
    ValueError: unknown task 'size'; tasks are ['age', 'gender']
    """
    names = list(task_names)
    if name not in names:
        raise ValueError(f"unknown task {name!r}; tasks are {names}")


def _finite_values(name, values):
    """A regression target's labelled values as float64, refusing infinities."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(
            f"target {name!r} has infinite values; a regression target must be finite "
            "(use NaN for a missing value)"
        )
    return values


def encode_targets(y, tasks):
    """Encode every task's column: float32 array (N, total width), NaN where missing.

    Each task takes :attr:`Task.width` columns, in ``tasks``' order: one, or one per
    label for a multi-label task.
    """
    return np.column_stack([task.encode(y[name]) for name, task in tasks.items()])

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

# scikit-learn is imported inside the functions that fit or rebuild encoders: the
# torch-free ONNX predictor decodes outputs with OutputDecoder, without scikit-learn.

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASK_KINDS = (CLASSIFICATION, REGRESSION)

#: An integer column with at most this many distinct labelled values is a
#: classification task; with more it is a regression (an integer ``age``).
MAX_INTEGER_CLASSES = 20


@dataclass(frozen=True, eq=False)
class OutputDecoder:
    """Turns one task's head outputs into labels, values or probabilities.

    Needs numpy and pandas only: :class:`Task` (the estimator) and the torch-free
    :class:`sk_multitask.onnx.OnnxPredictor` decode with it, so they agree.

    Attributes
    ----------
    name : hashable
    kind : {"classification", "regression"}
    dtype : dtype
        The target column's dtype; predicted labels are cast back to it.
    classes : ndarray or None
        The class labels, in the order of the head's outputs (classification).
    mean, scale : float
        The standardisation a regression head's output is inverted with.

    Notes
    -----
    A new task kind (e.g. multi-label: a ``MultiLabelBinarizer``, sigmoid outputs) adds
    its branch to :meth:`decode`, :meth:`probabilities` and :attr:`n_outputs`, its
    fitted fields to :meth:`to_dict`/:meth:`from_dict`, its encoder to
    :attr:`Task.decoder` and :meth:`Task.from_dict`, and its kind to the filter of
    :func:`probability_frames`: then the safe file, ONNX metadata and the torch-free
    predictor carry it too.
    """

    name: object
    kind: str
    dtype: object
    classes: np.ndarray | None = None
    mean: float = 0.0
    scale: float = 1.0

    @property
    def n_outputs(self):
        """How many outputs the task's head has: one per class, or one."""
        return len(self.classes) if self.kind == CLASSIFICATION else 1

    def decode(self, outputs, index=None):
        """Turn the head's outputs (N, n_outputs) into a Series of labels or values."""
        outputs = np.asarray(outputs)
        if self.kind == CLASSIFICATION:
            if len(outputs) == 0:
                return pd.Series([], index=index, name=self.name, dtype=self.dtype)
            labels = self.classes[outputs.argmax(axis=1)]
            return pd.Series(labels, index=index, name=self.name).astype(self.dtype)
        values = outputs.reshape(-1).astype(np.float64) * self.scale + self.mean
        return pd.Series(values, index=index, name=self.name, dtype=np.float64)

    def probabilities(self, outputs):
        """Class probabilities (N, n_classes), float32, from a classification head's logits."""
        logits = np.asarray(outputs, dtype=np.float32)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def to_dict(self):
        """JSON-able data that :meth:`from_dict` rebuilds the decoder from."""
        what = f"target {self.name!r}"
        state = {"name": _json_scalar(self.name, "the task name"), "kind": self.kind}
        state["dtype"] = _dtype_to_dict(self.dtype, what)
        if self.kind == CLASSIFICATION:
            state["classes"] = _array_to_dict(self.classes, f"the classes of {what}")
        else:
            state.update(mean=float(self.mean), scale=float(self.scale))
        # A new task kind adds its fitted fields here and in from_dict.
        return state

    @classmethod
    def from_dict(cls, state):
        """The decoder from :meth:`to_dict`'s data."""
        if state["kind"] not in TASK_KINDS:
            raise ValueError(
                f"unknown task kind {state['kind']!r} of target {state['name']!r}; "
                f"this version knows {list(TASK_KINDS)}"
            )
        if state["kind"] == CLASSIFICATION:
            fields = {"classes": _array_from_dict(state["classes"])}
        else:
            fields = {"mean": float(state["mean"]), "scale": float(state["scale"])}
        return cls(state["name"], state["kind"], _dtype_from_dict(state["dtype"]), **fields)


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
    encoder: object
    dtype: object

    @property
    def classes_(self):
        """The class labels of a classification task (None for a regression)."""
        return self.encoder.classes_ if self.kind == CLASSIFICATION else None

    @property
    def n_outputs(self):
        """How many outputs the task's head has: one per class, or one."""
        return len(self.encoder.classes_) if self.kind == CLASSIFICATION else 1

    @property
    def decoder(self):
        """The :class:`OutputDecoder` of the fitted task."""
        if self.kind == CLASSIFICATION:
            fields = {"classes": self.encoder.classes_}
        else:
            fields = {"mean": float(self.encoder.mean_[0]), "scale": float(self.encoder.scale_[0])}
        return OutputDecoder(self.name, self.kind, self.dtype, **fields)

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
        return self.decoder.decode(outputs, index)

    def probabilities(self, outputs):
        """Class probabilities (N, n_classes), float32, of a classification task."""
        return self.decoder.probabilities(outputs)

    def to_dict(self):
        """The fitted task as JSON-able data (name, kind, dtype, classes or scaling)."""
        state = self.decoder.to_dict()
        if self.kind != CLASSIFICATION:
            state["n_samples_seen"] = int(self.encoder.n_samples_seen_)
        return state

    @classmethod
    def from_dict(cls, state):
        """The fitted task from :meth:`to_dict`'s data, its encoder rebuilt."""
        from sklearn.preprocessing import LabelEncoder, StandardScaler

        decoder = OutputDecoder.from_dict(state)
        if decoder.kind == CLASSIFICATION:
            encoder = LabelEncoder()
            encoder.classes_ = decoder.classes
        else:
            encoder = StandardScaler()
            encoder.mean_ = np.array([decoder.mean])
            encoder.scale_ = np.array([decoder.scale])
            encoder.var_ = encoder.scale_**2
            encoder.n_features_in_ = 1
            encoder.n_samples_seen_ = np.int64(state["n_samples_seen"])
        return cls(decoder.name, decoder.kind, encoder, decoder.dtype)

    def __repr__(self):
        detail = f", classes={list(self.classes_)}" if self.kind == CLASSIFICATION else ""
        return f"Task(name={self.name!r}, kind={self.kind!r}{detail})"


def _json_scalar(value, what):
    """``value`` as a JSON scalar (str, int, float, bool or None), else a ValueError."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(
        f"{what} holds {value!r} ({type(value).__name__}), which cannot be saved: only "
        "strings, numbers and booleans can"
    )


def _array_to_dict(array, what):
    return {"dtype": array.dtype.str, "values": [_json_scalar(v, what) for v in array.tolist()]}


def _array_from_dict(state):
    return np.array(state["values"], dtype=np.dtype(state["dtype"]))


def _dtype_to_dict(dtype, what):
    """A column dtype as JSON-able data; categories and string storage are kept."""
    if isinstance(dtype, pd.CategoricalDtype):
        categories = np.asarray(dtype.categories)
        return {
            "name": "category",
            "categories": _array_to_dict(categories, f"the categories of {what}"),
            "ordered": bool(dtype.ordered),
        }
    if isinstance(dtype, pd.StringDtype):
        return {"name": "string", "storage": dtype.storage, "na_nan": dtype.na_value is not pd.NA}
    return {"name": str(dtype)}


def _dtype_from_dict(state):
    if state["name"] == "category":
        categories = _array_from_dict(state["categories"])
        return pd.CategoricalDtype(categories, ordered=state["ordered"])
    if state["name"] == "string":
        if state["na_nan"]:  # pandas 3's default "str"
            return pd.StringDtype(state["storage"], na_value=np.nan)
        return pd.StringDtype(state["storage"])
    return ptypes.pandas_dtype(state["name"])


def prediction_frame(decoders, outputs, index):
    """What ``predict`` returns: one column per task, labels or values, ``index``.

    Parameters
    ----------
    decoders : dict
        Task name to :class:`OutputDecoder`.
    outputs : dict
        Task name to its head's outputs (N, n_outputs).
    index : pandas Index
    """
    return pd.DataFrame(
        {name: decoder.decode(outputs[name], index) for name, decoder in decoders.items()},
        index=index,
    )


def probability_frames(decoders, outputs, index):
    """What ``predict_proba`` returns: per classification task, a DataFrame of classes."""
    return {
        name: pd.DataFrame(
            decoder.probabilities(outputs[name]), index=index, columns=pd.Index(decoder.classes)
        )
        for name, decoder in decoders.items()
        if decoder.kind == CLASSIFICATION
    }


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
    from sklearn.preprocessing import LabelEncoder, StandardScaler

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
    return StandardScaler().fit(labelled.to_numpy(dtype=np.float64).reshape(-1, 1))


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

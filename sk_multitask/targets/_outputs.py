"""Network outputs to DataFrames: labels, values, probabilities and missing rows.

Needs numpy, pandas and scipy only: the estimator and the torch-free
:class:`sk_multitask.onnx.OnnxPredictor` decode with :class:`OutputDecoder`, so they
agree. A row of NaN outputs (an image that could not be read) decodes to a missing
row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from scipy.special import expit, softmax

from ._ordinal import LevelEncoder, level_log_probabilities, median_levels
from ._tasks import (
    CLASSIFICATION,
    LABEL_KINDS,
    MULTILABEL,
    ORDINAL,
    REGRESSION,
    TASK_KINDS,
    Task,
    head_outputs,
)

__all__ = [
    "OutputDecoder",
    "decoders",
    "prediction_frame",
    "probability_frames",
    "probability_table",
    "split_outputs",
    "task_from_dict",
    "task_to_dict",
]


@dataclass(frozen=True, eq=False)
class OutputDecoder:
    """Turns one task's head outputs into labels, values or probabilities.

    Attributes
    ----------
    name : hashable
    kind : {"classification", "regression", "multilabel", "ordinal"}
    dtype : dtype
        The target column's dtype; predicted labels are cast back to it.
    classes : ndarray or None
        The class (or label) names, in the order of the head's outputs; an ordinal
        task's levels, lowest first (its head has one output fewer).
    mean, scale : float
        The standardisation a regression head's output is inverted with.

    Notes
    -----
    A new task kind adds its branch to :meth:`decode`, :meth:`probabilities` and
    :attr:`n_outputs`, its fitted fields to :meth:`from_task`, :meth:`to_dict` and
    :meth:`from_dict`, and its encoder to :func:`task_from_dict`: then the safe file,
    ONNX metadata and the torch-free predictor carry it too.
    """

    name: object
    kind: str
    dtype: object
    classes: np.ndarray | None = None
    mean: float = 0.0
    scale: float = 1.0

    @property
    def n_outputs(self):
        """How many outputs the task's head has: one per class or label, one fewer than
        its levels, or one."""
        return head_outputs(self.kind, None if self.classes is None else len(self.classes))

    @property
    def classes_(self):
        """The labels of a classification or multi-label task, the levels of an ordinal
        one (None for a regression)."""
        return self.classes

    @classmethod
    def from_task(cls, task):
        """The decoder of a fitted :class:`~sk_multitask.targets.Task`."""
        if task.kind == REGRESSION:
            mean, scale = float(task.encoder.mean_[0]), float(task.encoder.scale_[0])
            return cls(task.name, task.kind, task.dtype, mean=mean, scale=scale)
        return cls(task.name, task.kind, task.dtype, classes=task.classes_)

    def to_dict(self):
        """JSON-able data that :meth:`from_dict` rebuilds the decoder from."""
        what = f"target {self.name!r}"
        state = {"name": _json_scalar(self.name, "the task name"), "kind": self.kind}
        state["dtype"] = _dtype_to_dict(self.dtype, what)
        if self.kind == REGRESSION:
            state.update(mean=float(self.mean), scale=float(self.scale))
        else:
            state["classes"] = _array_to_dict(self.classes, f"the classes of {what}")
        # A new task kind adds its fitted fields here and in from_dict.
        return state

    @classmethod
    def from_dict(cls, state):
        """The decoder from :meth:`to_dict`'s (or :func:`task_to_dict`'s) data."""
        if state["kind"] not in TASK_KINDS:
            raise ValueError(
                f"unknown task kind {state['kind']!r} of target {state['name']!r}; "
                f"this version knows {list(TASK_KINDS)}"
            )
        if state["kind"] == REGRESSION:
            fields = {"mean": float(state["mean"]), "scale": float(state["scale"])}
        else:
            fields = {"classes": _array_from_dict(state["classes"])}
        return cls(state["name"], state["kind"], _dtype_from_dict(state["dtype"]), **fields)

    def decode(self, outputs, index=None):
        """Turn the head's outputs (N, n_outputs) into a Series of labels or values.

        A multi-label task gives, per row, the list of labels whose probability is
        above 0.5, in the order of ``classes``. A row of NaN outputs (an image that
        could not be read) decodes to a missing value: NaN, None (object labels) or
        ``pd.NA`` (an integer or boolean dtype becomes its nullable counterpart,
        ``Int64`` or ``boolean``). An ordinal task gives the median level of its
        distribution (:func:`~sk_multitask.targets._ordinal.median_levels`).
        """
        outputs = np.asarray(outputs)
        if len(outputs) == 0:
            dtype = {MULTILABEL: object, REGRESSION: np.float64}.get(self.kind, self.dtype)
            return pd.Series([], index=index, name=self.name, dtype=dtype)
        if self.kind == MULTILABEL:
            classes = np.asarray(self.classes.tolist(), dtype=object)
            labels = [  # logit > 0: probability > 0.5
                None if np.isnan(row).any() else classes[row > 0].tolist() for row in outputs
            ]
            return pd.Series(labels, index=index, name=self.name, dtype=object)
        if self.kind in LABEL_KINDS:
            chosen = median_levels(outputs) if self.kind == ORDINAL else outputs.argmax(axis=1)
            return self.labels_at(chosen, np.isnan(outputs).any(axis=1), index)
        values = outputs.reshape(-1).astype(np.float64) * self.scale + self.mean
        return pd.Series(values, index=index, name=self.name, dtype=np.float64)

    def labels_at(self, positions, missing, index=None):
        """The classes (levels) at ``positions`` as a Series in the task's dtype, missing
        where ``missing`` (a missing value as :meth:`decode` gives it)."""
        labels = pd.Series(self.classes[positions], index=index, name=self.name)
        labels = labels.astype(self.dtype)
        return _with_missing(labels, missing) if missing.any() else labels

    def probabilities(self, outputs):
        """Probabilities, float32: a classification's softmax (rows sum to 1), a
        multi-label task's independent sigmoids, an ordinal task's ``P(y = level)``
        (one column per level, rows sum to 1; from its ``n_levels - 1`` outputs).

        scipy's, which neither overflow nor warn for logits of any size (a calibration
        temperature of 0.01 makes them a hundred times larger).
        """
        logits = np.asarray(outputs, dtype=np.float32)
        if self.kind == REGRESSION:
            raise ValueError(f"task {self.name!r} is a regression: it has no probabilities")
        if self.kind == MULTILABEL:
            return expit(logits)
        if self.kind == ORDINAL:
            return np.exp(level_log_probabilities(logits)).astype(np.float32)
        return softmax(logits, axis=1)

    def proba(self, outputs, index=None):
        """:meth:`probabilities` as a DataFrame with the labels as columns."""
        probabilities = self.probabilities(outputs)
        return pd.DataFrame(probabilities, index=index, columns=pd.Index(self.classes))

    def class_codes(self, labels):
        """The positions of class labels (levels) seen in fit among ``classes`` (for
        the log loss)."""
        if self.kind == ORDINAL:
            return LevelEncoder(self.classes).transform(labels)
        return np.searchsorted(self.classes, labels)


def _with_missing(labels, missing):
    """``labels`` with the rows ``missing`` missing, in a dtype that can hold them."""
    if isinstance(labels.dtype, np.dtype) and labels.dtype.kind in "biu":
        labels = labels.astype(pd.array(labels.to_numpy()[:0]).dtype)  # Int64, boolean...
    return labels.mask(missing, None) if labels.dtype == object else labels.mask(missing)


def task_to_dict(task):
    """A fitted :class:`~sk_multitask.targets.Task` as JSON-able data: its decoder's
    (name, kind, dtype, classes or scaling), and a regression's sample count."""
    state = OutputDecoder.from_task(task).to_dict()
    if task.kind == REGRESSION:
        state["n_samples_seen"] = int(task.encoder.n_samples_seen_)
    return state


def task_from_dict(state):
    """The fitted :class:`~sk_multitask.targets.Task` of :func:`task_to_dict`'s data,
    its scikit-learn encoder rebuilt."""
    from sklearn.preprocessing import LabelEncoder, MultiLabelBinarizer, StandardScaler

    decoder = OutputDecoder.from_dict(state)
    if decoder.kind == REGRESSION:
        encoder = StandardScaler().set_output(transform="default")  # as fit_tasks's
        encoder.mean_ = np.array([decoder.mean])
        encoder.scale_ = np.array([decoder.scale])
        encoder.var_ = encoder.scale_**2
        encoder.n_features_in_ = 1
        encoder.n_samples_seen_ = np.int64(state["n_samples_seen"])
    elif decoder.kind == ORDINAL:
        encoder = LevelEncoder(decoder.classes)
    else:
        encoder = LabelEncoder() if decoder.kind == CLASSIFICATION else MultiLabelBinarizer()
        encoder.classes_ = decoder.classes
    return Task(decoder.name, decoder.kind, encoder, decoder.dtype)


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


def decoders(tasks):
    """Task name to the :class:`OutputDecoder` of each fitted task of ``tasks`` (a
    decoder stays itself: the ONNX predictor's tasks are decoders)."""
    return {
        name: task if isinstance(task, OutputDecoder) else OutputDecoder.from_task(task)
        for name, task in tasks.items()
    }


def split_outputs(decoders, outputs):
    """Each task's columns of the network's concatenated ``outputs`` (an array ``(N,
    width)``, heads in the order of ``decoders``): ``{task: float32 array (N, n_outputs)}``.

    Examples
    --------
    >>> age = OutputDecoder("age", "regression", np.dtype("float64"))
    >>> color = OutputDecoder("color", "classification", np.dtype("O"), np.array(["r", "g"]))
    >>> parts = split_outputs({"age": age, "color": color}, np.zeros((4, 3)))
    >>> {name: part.shape for name, part in parts.items()}
    {'age': (4, 1), 'color': (4, 2)}
    """
    outputs = np.asarray(outputs, dtype=np.float32)
    sizes = [decoder.n_outputs for decoder in decoders.values()]
    if outputs.shape[1] != sum(sizes):
        raise ValueError(f"the outputs have {outputs.shape[1]} columns; the tasks {sum(sizes)}")
    return dict(zip(decoders, np.split(outputs, np.cumsum(sizes)[:-1], axis=1), strict=True))


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


def probability_table(frames, index):
    """``predict_proba``'s frames side by side in one DataFrame, a column
    ``{task}_proba_{label}`` per task and label: what the command line's ``--proba``
    and the MLflow model (:mod:`sk_multitask.mlflow`) give.

    Examples
    --------
    >>> frames = {"color": pd.DataFrame({"red": [0.9], "blue": [0.1]})}
    >>> probability_table(frames, pd.RangeIndex(1)).columns.tolist()
    ['color_proba_red', 'color_proba_blue']
    """
    table = pd.DataFrame(index=index)
    for task, frame in frames.items():
        table = table.join(frame.add_prefix(f"{task}_proba_"))
    return table


def probability_frames(decoders, outputs, index):
    """What ``predict_proba`` returns: per classification, multi-label or ordinal task,
    :meth:`OutputDecoder.proba` (a DataFrame with the labels as columns)."""
    return {
        name: decoder.proba(outputs[name], index)
        for name, decoder in decoders.items()
        if decoder.kind != REGRESSION
    }

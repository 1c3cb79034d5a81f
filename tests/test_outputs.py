"""Decoding the network's outputs: labels, values, probabilities, missing rows."""

import numpy as np
import pandas as pd
import pytest

from sk_multitask.targets import fit_tasks
from sk_multitask.targets._outputs import (
    OutputDecoder,
    decoders,
    prediction_frame,
    probability_frames,
    task_from_dict,
    task_to_dict,
)

TAGS = pd.Series([["dog", "cat"], [], None, ("bird",), {"cat"}, np.nan], name="tags")


def _one_hot(indices, n_classes):
    """Head outputs whose argmax is ``indices``."""
    return np.eye(n_classes, dtype=np.float32)[indices.astype(int)]


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(["a", "b", None, "a", "c"], dtype=object),
        pd.Series(["a", "b", None, "a", "c"]),
        pd.Series(["a", "b", pd.NA, "a", "c"], dtype="string"),
        pd.Series(["lo", "hi", None, "lo", "hi"], dtype=pd.CategoricalDtype(["lo", "mid", "hi"])),
        pd.Series([True, False, True, True, False]),
        pd.Series([True, False, pd.NA, True, False], dtype="boolean"),
        pd.Series([3, 7, 3, 5, 7]),
        pd.Series([3, 7, pd.NA, 5, 7], dtype="Int64"),
    ],
    ids=["object", "str", "string", "category", "bool", "boolean", "int", "Int64"],
)
def test_decode_round_trip_restores_labels_and_dtype(column):
    column = column.rename("t")
    task = fit_tasks(column.to_frame())["t"]
    labelled = column.dropna()
    encoded = task.encode(labelled)
    index = pd.Index([f"r{i}" for i in range(len(labelled))])

    decoded = OutputDecoder.from_task(task).decode(_one_hot(encoded, task.n_outputs), index=index)

    assert decoded.name == "t"
    assert decoded.dtype == column.dtype
    assert decoded.index.equals(index)
    assert decoded.tolist() == labelled.tolist()


def test_decode_category_keeps_all_categories():
    # An unordered one: an ordered categorical is an ordinal task (tests/test_ordinal.py).
    dtype = pd.CategoricalDtype(["lo", "mid", "hi"])
    column = pd.Series(["lo", "hi", "lo"], dtype=dtype, name="level")
    task = fit_tasks(column.to_frame())["level"]
    decoded = OutputDecoder.from_task(task).decode(_one_hot(task.encode(column), task.n_outputs))
    assert decoded.dtype == dtype and list(decoded.cat.categories) == ["lo", "mid", "hi"]


def test_decode_regression_in_original_units():
    column = pd.Series([10.0, np.nan, 20.0, 30.0, 60.0], name="age")
    task = fit_tasks(column.to_frame())["age"]
    decoded = OutputDecoder.from_task(task).decode(task.encode(column.dropna()))
    assert decoded.dtype == np.float64
    assert decoded.name == "age"
    np.testing.assert_allclose(decoded, [10.0, 20.0, 30.0, 60.0], rtol=1e-5)


def test_decode_regression_accepts_column_vector():
    column = pd.Series([1.0, 2.0, 3.0], name="x")
    task = fit_tasks(column.to_frame())["x"]
    decoded = OutputDecoder.from_task(task).decode(np.zeros((2, 1), dtype=np.float32))
    np.testing.assert_allclose(decoded, [2.0, 2.0])


def test_multilabel_decode_thresholds_probabilities_at_one_half_in_class_order():
    task = fit_tasks(TAGS.to_frame())["tags"]
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, -0.1, -2.0], [0.1, 0.2, 0.3]])
    index = pd.Index(["a", "b", "c"])

    decoded = OutputDecoder.from_task(task).decode(logits, index)
    proba = OutputDecoder.from_task(task).proba(logits, index)

    assert decoded.tolist() == [["bird", "dog"], [], ["bird", "cat", "dog"]]
    assert decoded.index.equals(index) and decoded.name == "tags"
    assert list(proba.columns) == ["bird", "cat", "dog"]
    np.testing.assert_allclose(proba.to_numpy(), 1 / (1 + np.exp(-logits)), rtol=1e-6)  # float32
    assert OutputDecoder.from_task(task).decode(np.empty((0, 3))).tolist() == []


def test_classification_proba_is_a_softmax_and_regression_has_none():
    y = pd.DataFrame({"g": ["m", "f"], "age": [1.0, 2.0]})
    tasks = fit_tasks(y)
    proba = OutputDecoder.from_task(tasks["g"]).proba(np.array([[0.0, np.log(3.0)]]))
    assert list(proba.columns) == ["f", "m"]
    np.testing.assert_allclose(proba.to_numpy(), [[0.25, 0.75]], rtol=1e-6)
    with pytest.raises(ValueError, match="task 'age' is a regression: it has no probabilities"):
        OutputDecoder.from_task(tasks["age"]).proba(np.zeros((1, 1)))


@pytest.mark.parametrize(
    "column", [TAGS, pd.Series(["m", "f", "x"], name="tags")], ids=["multilabel", "classification"]
)
def test_huge_logits_give_probabilities_without_overflow(column):
    # A calibration temperature of 0.01 makes a logit of -10 into -1000, whose exp
    # overflows; the suite turns the RuntimeWarning into an error.
    decoder = OutputDecoder.from_task(fit_tasks(column.to_frame())["tags"])
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0]])
    probabilities = decoder.probabilities(logits)
    assert np.isfinite(probabilities).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert probabilities[0, :2].tolist() == [1.0, 0.0]


def test_frames_decode_every_task_and_give_missing_rows_for_nan_outputs():
    y = pd.DataFrame({"g": ["m", "f", "m"], "age": [10.0, 20.0, 30.0], "tags": [["a"], [], ["b"]]})
    fitted = decoders(fit_tasks(y))
    outputs = {
        "g": np.array([[0.0, 1.0], [np.nan, np.nan], [1.0, 0.0]]),
        "age": np.array([[0.0], [np.nan], [1.0]]),
        "tags": np.array([[1.0, -1.0], [np.nan, np.nan], [-1.0, -1.0]]),
    }
    index = pd.Index([7, 8, 9])

    predicted = prediction_frame(fitted, outputs, index)
    probabilities = probability_frames(fitted, outputs, index)

    assert predicted["g"].isna().tolist() == [False, True, False]
    assert predicted["g"][[7, 9]].tolist() == ["m", "f"]
    np.testing.assert_allclose(predicted["age"], [20.0, np.nan, 20.0 + np.sqrt(200 / 3)])
    assert predicted["tags"].tolist() == [["a"], None, []]
    assert list(probabilities) == ["g", "tags"]  # a regression has no probabilities
    for name, frame in probabilities.items():  # the decoder's own frame, not a copy
        pd.testing.assert_frame_equal(frame, fitted[name].proba(outputs[name], index))
    assert probabilities["g"].iloc[1].isna().all()


def test_task_dict_round_trip_keeps_encoder_and_decoder():
    y = pd.DataFrame({"g": pd.Series(["m", "f", None], dtype="category"), "age": [1.0, 2.0, 4.0]})
    tasks = fit_tasks(y, train=[0, 1])
    state = task_to_dict(tasks["age"])
    assert state["mean"] == 1.5 and state["n_samples_seen"] == 2

    for name, task in tasks.items():
        loaded = task_from_dict(task_to_dict(task))
        assert (loaded.name, loaded.kind, loaded.dtype) == (task.name, task.kind, task.dtype)
        np.testing.assert_array_equal(loaded.encode(y[name]), task.encode(y[name]))
        decoder = OutputDecoder.from_dict(task_to_dict(task))
        assert decoder.to_dict() == OutputDecoder.from_task(task).to_dict()

"""Task kinds, their inference from dtypes, and the per-task encoders."""

import numpy as np
import pandas as pd
import pytest

from sk_multitask.exceptions import MissingLikeLabelWarning
from sk_multitask.targets import (
    CLASSIFICATION,
    MAX_INTEGER_CLASSES,
    MISSING_LIKE_LABELS,
    MULTILABEL,
    REGRESSION,
    check_task_names,
    encode_targets,
    fit_tasks,
    infer_task_kind,
    split_rows,
)


def _one_hot(indices, n_classes):
    """Head outputs whose argmax is ``indices``."""
    return np.eye(n_classes, dtype=np.float32)[indices.astype(int)]


@pytest.mark.parametrize(
    "column, kind",
    [
        (pd.Series([31.0, None, 62.5]), REGRESSION),
        (pd.Series([1.5, 2.5], dtype=np.float32), REGRESSION),
        (pd.Series(["male", None, "female"], dtype=object), CLASSIFICATION),
        (pd.Series(["male", None, "female"]), CLASSIFICATION),  # pandas' default str
        (pd.Series(["male", pd.NA, "female"], dtype="string"), CLASSIFICATION),
        (pd.Series(["lo", "hi", None], dtype="category"), CLASSIFICATION),
        (pd.Series([1.0, 2.0, 100.0], dtype="category"), CLASSIFICATION),
        (pd.Series([True, False, True]), CLASSIFICATION),
        (pd.Series([True, pd.NA, False], dtype="boolean"), CLASSIFICATION),
    ],
    ids=[
        "float",
        "float32",
        "object",
        "str",
        "string",
        "category",
        "float-category",
        "bool",
        "boolean",
    ],
)
def test_infer_task_kind_from_dtype(column, kind):
    assert infer_task_kind(column) == kind


def test_infer_task_kind_integer_threshold():
    few = pd.Series(np.arange(MAX_INTEGER_CLASSES).repeat(3))
    many = pd.Series(np.arange(MAX_INTEGER_CLASSES + 1))
    assert infer_task_kind(few) == CLASSIFICATION
    assert infer_task_kind(many) == REGRESSION


def test_infer_task_kind_nullable_integer_ignores_missing():
    few = pd.Series([1, pd.NA, 3, pd.NA], dtype="Int64")
    # MAX_INTEGER_CLASSES values plus pd.NA: pd.NA is not counted as a value
    at_limit = pd.Series([*range(MAX_INTEGER_CLASSES), pd.NA], dtype="Int64")
    many = pd.Series([*range(MAX_INTEGER_CLASSES + 1), pd.NA], dtype="Int64")
    assert infer_task_kind(few) == CLASSIFICATION
    assert infer_task_kind(at_limit) == CLASSIFICATION
    assert infer_task_kind(many) == REGRESSION


def test_infer_task_kind_rejects_datetime_naming_column():
    column = pd.Series(pd.to_datetime(["2020-01-01", "2021-06-30"]), name="taken_at")
    with pytest.raises(ValueError, match="cannot infer the task kind of target 'taken_at'"):
        infer_task_kind(column)


def test_fit_tasks_infers_kinds_in_column_order():
    y = pd.DataFrame(
        {
            "age": [31.0, np.nan, 62.5, 20.0],
            "gender": ["male", None, "female", "male"],
            "grade": pd.Series([1, 2, pd.NA, 1], dtype="Int64"),
        }
    )
    tasks = fit_tasks(y)
    assert list(tasks) == ["age", "gender", "grade"]
    assert [t.kind for t in tasks.values()] == [REGRESSION, CLASSIFICATION, CLASSIFICATION]
    assert [t.n_outputs for t in tasks.values()] == [1, 2, 2]
    assert tasks["age"].classes_ is None
    assert tasks["gender"].name == "gender"
    assert tasks["grade"].dtype == pd.Int64Dtype()


def test_fit_tasks_kinds_override_inference():
    y = pd.DataFrame({"stars": [1, 2, 3, 2], "size": [1.0, 2.0, 1.0, np.nan]})
    tasks = fit_tasks(y, kinds={"stars": REGRESSION, "size": CLASSIFICATION})
    assert tasks["stars"].kind == REGRESSION
    assert tasks["size"].kind == CLASSIFICATION
    assert list(tasks["size"].classes_) == [1.0, 2.0]


def test_fit_tasks_rejects_all_missing_column():
    y = pd.DataFrame({"a": ["x", "y"], "empty": [np.nan, np.nan]})
    with pytest.raises(ValueError, match="target 'empty' has no labelled cell"):
        fit_tasks(y)


def test_fit_tasks_rejects_all_na_nullable_column():
    y = pd.DataFrame({"flags": pd.Series([pd.NA, pd.NA], dtype="boolean")})
    with pytest.raises(ValueError, match="target 'flags' has no labelled cell"):
        fit_tasks(y)


@pytest.mark.parametrize("spelling", ["NA", "N/A", "", "nan", "NaN", "null", "None"])
@pytest.mark.parametrize("dtype", [object, "string", "category"])
def test_a_missing_like_string_beside_labels_warns_naming_the_column_and_value(spelling, dtype):
    y = pd.DataFrame({"gender": pd.Series(["m", spelling, "f", spelling, None], dtype=dtype)})
    with pytest.warns(
        MissingLikeLabelWarning,
        match=rf"target 'gender' holds {spelling!r} \(2 cells\) beside its labels: it is "
        r"trained as a class. If it means missing, replace it with NaN",
    ):
        tasks = fit_tasks(y)
    assert spelling in tasks["gender"].classes_  # warned, not changed


def test_missing_like_labels_of_a_multilabel_task_warn_and_clean_targets_do_not():
    tags = pd.Series([["cat", "NA"], [], ["n/a"], None, ["dog", "NA"]], name="tags")
    with pytest.warns(
        MissingLikeLabelWarning,
        match=r"target 'tags' holds 'NA' \(2 cells\), 'n/a' \(1 cell\) beside its labels: "
        "they are trained as a label. If they mean missing",
    ):
        fit_tasks(tags.to_frame())
    clean = pd.DataFrame(  # the suite makes any warning an error
        {
            "tags": [["cat"], [], None],
            "size": pd.Categorical(["S", "M", None], categories=["S", "M", "NA"]),
            "flag": [True, False, True],
            "age": [1.0, 2.0, 3.0],
        }
    )
    fit_tasks(clean)


def test_a_target_holding_only_missing_like_strings_is_refused():
    y = pd.DataFrame({"a": ["x", "y", "x"], "gender": ["NA", "", "NA"]})
    with pytest.raises(
        ValueError,
        match=r"target 'gender' has no labelled cell: it holds only 'NA' \(2 cells\), '' "
        r"\(1 cell\), which mean missing",
    ):
        fit_tasks(y)


def test_the_missing_like_labels_are_pandas_read_csv_defaults():
    from pandas._libs.parsers import STR_NA_VALUES  # private: the list read_csv documents

    assert set(MISSING_LIKE_LABELS) == STR_NA_VALUES


def test_fit_tasks_rejects_unknown_kind():
    y = pd.DataFrame({"a": [1, 2]})
    with pytest.raises(ValueError, match="unknown task kind 'ranking' for target 'a'"):
        fit_tasks(y, kinds={"a": "ranking"})


def test_fit_tasks_rejects_kinds_for_absent_column():
    y = pd.DataFrame({"a": [1, 2]})
    with pytest.raises(ValueError, match=r"tasks names unknown tasks \[.b.\]"):
        fit_tasks(y, kinds={"b": REGRESSION})


def test_fit_tasks_rejects_single_class():
    y = pd.DataFrame({"only": ["a", None, "a"]})
    with pytest.raises(ValueError, match="target 'only' has a single class 'a'"):
        fit_tasks(y)


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(["1.5", "2.5"], dtype=object),
        pd.Series(["1.5", "2.5"], dtype="string"),
        pd.Series([True, False]),
    ],
    ids=["object", "string", "bool"],
)
def test_fit_tasks_rejects_regression_on_non_numeric(column):
    y = pd.DataFrame({"t": column})
    with pytest.raises(ValueError, match="target 't' is a regression task but its dtype"):
        fit_tasks(y, kinds={"t": REGRESSION})


def test_missing_values_are_never_classes():
    y = pd.DataFrame(
        {
            "object": pd.Series(["a", None, np.nan, pd.NA, "b"], dtype=object),
            "string": pd.Series(["a", pd.NA, pd.NA, "b", "a"], dtype="string"),
            "category": pd.Series(["a", None, None, "b", "a"], dtype="category"),
            "Int64": pd.Series([1, pd.NA, pd.NA, 2, 1], dtype="Int64"),
        }
    )
    tasks = fit_tasks(y)
    for name in ["object", "string", "category"]:
        assert list(tasks[name].classes_) == ["a", "b"]
    assert list(tasks["Int64"].classes_) == [1, 2]
    encoded = encode_targets(y, tasks)
    expected_missing = y.isna().to_numpy()
    np.testing.assert_array_equal(np.isnan(encoded), expected_missing)


def test_encode_classification_gives_class_indices():
    column = pd.Series(["cat", "dog", None, "bird", "dog"], name="pet")
    task = fit_tasks(column.to_frame())["pet"]
    assert list(task.classes_) == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(
        task.encode(column), np.array([1, 2, np.nan, 0, 2], dtype=np.float32)
    )


def test_encode_regression_standardises_labelled_cells():
    column = pd.Series([10.0, np.nan, 20.0, 30.0, None, 60.0], name="age")
    task = fit_tasks(column.to_frame())["age"]
    encoded = task.encode(column)
    assert encoded.dtype == np.float32
    assert np.isnan(encoded[[1, 4]]).all()
    labelled = encoded[~np.isnan(encoded)]
    assert labelled.mean() == pytest.approx(0.0, abs=1e-6)
    assert labelled.std() == pytest.approx(1.0, abs=1e-6)
    expected = (np.array([10.0, 20.0, 30.0, 60.0]) - 30.0) / np.sqrt(350.0)
    np.testing.assert_allclose(labelled, expected, rtol=1e-6)


def test_encode_nullable_integer_regression_with_missing():
    column = pd.Series([*range(0, 50, 2), pd.NA], dtype="Int64", name="age")
    task = fit_tasks(column.to_frame())["age"]
    assert task.kind == REGRESSION
    encoded = task.encode(column)
    assert np.isnan(encoded[-1])
    assert encoded[:-1].mean() == pytest.approx(0.0, abs=1e-6)


def test_encode_targets_shape_and_dtype():
    y = pd.DataFrame(
        {
            "a": ["x", "y", None, "x"],
            "b": [1.0, np.nan, 3.0, 4.0],
            "c": [True, False, True, False],
        }
    )
    tasks = fit_tasks(y)
    encoded = encode_targets(y, tasks)
    assert encoded.shape == (4, 3)
    assert encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded[:, 0], [0, 1, np.nan, 0])
    np.testing.assert_array_equal(encoded[:, 2], [1, 0, 1, 0])
    assert np.isnan(encoded[1, 1])


def test_task_repr_shows_classes():
    y = pd.DataFrame({"g": ["m", "f"], "age": [1.0, 2.0]})
    tasks = fit_tasks(y)
    assert repr(tasks["g"]) == "Task(name='g', kind='classification', classes=['f', 'm'])"
    assert repr(tasks["age"]) == "Task(name='age', kind='regression')"


# -- multi-label tasks ------------------------------------------------------------------

TAGS = pd.Series([["dog", "cat"], [], None, ("bird",), {"cat"}, np.nan], name="tags")


def test_a_column_of_label_lists_sets_or_tuples_is_a_multilabel_task():
    assert infer_task_kind(TAGS) == MULTILABEL
    task = fit_tasks(TAGS.to_frame())["tags"]
    assert task.kind == MULTILABEL
    assert list(task.classes_) == ["bird", "cat", "dog"]
    assert task.n_outputs == task.width == 3
    assert repr(task) == "Task(name='tags', kind='multilabel', classes=['bird', 'cat', 'dog'])"


def test_multilabel_encoding_has_one_column_per_label_an_empty_list_is_labelled():
    task = fit_tasks(TAGS.to_frame())["tags"]

    encoded = task.encode(TAGS)

    assert encoded.shape == (6, 3) and encoded.dtype == np.float32
    np.testing.assert_array_equal(
        encoded,
        [[0, 1, 1], [0, 0, 0], [np.nan] * 3, [1, 0, 0], [0, 1, 0], [np.nan] * 3],
    )


def test_encode_targets_gives_each_task_its_width():
    y = pd.DataFrame({"g": ["m", "f", None, "m", "f", "m"], "tags": TAGS, "age": np.arange(6.0)})
    tasks = fit_tasks(y)

    encoded = encode_targets(y, tasks)

    assert [t.width for t in tasks.values()] == [1, 3, 1]
    assert encoded.shape == (6, 5)
    np.testing.assert_array_equal(encoded[:, 1:4], tasks["tags"].encode(TAGS))
    np.testing.assert_array_equal(encoded[:, 0], [1, 0, np.nan, 1, 0, 1])


def test_multilabel_kind_can_be_forced_and_columns_are_checked():
    tasks = fit_tasks(pd.DataFrame({"t": [["a"], None, []]}), kinds={"t": MULTILABEL})
    assert list(tasks["t"].classes_) == ["a"]
    with pytest.raises(ValueError, match="'t' is a multilabel task, but .* e.g. 'a'"):
        fit_tasks(pd.DataFrame({"t": ["a", "b"]}), kinds={"t": MULTILABEL})
    with pytest.raises(ValueError, match="'t' holds lists of labels, so it cannot be a classif"):
        fit_tasks(pd.DataFrame({"t": [["a"], ["b"]]}), kinds={"t": CLASSIFICATION})
    with pytest.raises(ValueError, match="'t' is a multilabel task, but .* e.g. 'b'"):
        infer_task_kind(pd.Series([["a"], "b"], name="t"))
    with pytest.raises(ValueError, match="'t' is a multilabel task with no label in any cell"):
        fit_tasks(pd.DataFrame({"t": [[], [], None]}))


def test_multilabel_unseen_label_is_an_error_naming_it():
    task = fit_tasks(TAGS.to_frame())["tags"]
    with pytest.raises(ValueError, match="target 'tags' has labels not seen in fit: \\['fish'\\]"):
        task.encode(pd.Series([["cat", "fish"]]))


def test_identifier_column_is_refused_but_many_classes_with_repeats_are_fine():
    names = pd.DataFrame({"id": [f"img_{i}.jpg" for i in range(40)]})
    with pytest.raises(ValueError, match="'id' looks like an identifier.*: 40 classes for 40 "):
        fit_tasks(names)
    repeated = pd.DataFrame({"breed": [f"breed {i % 30}" for i in range(40)]})
    assert fit_tasks(repeated)["breed"].n_outputs == 30


def test_check_task_names_names_the_parameter_and_the_tasks():
    check_task_names(None, ["a"], "class_weight")
    check_task_names({"a": 1}, ["a", "b"], "class_weight")
    with pytest.raises(
        ValueError, match=r"class_weight names unknown tasks \['c'\]; .* \['a', 'b'\]"
    ):
        check_task_names({"a": 1, "c": 2}, ["a", "b"], "class_weight")


def test_a_single_category_column_gets_the_single_class_message():
    """Issue 17: a categorical column crashed in pandas ('Categorical ... does not support
    operation any') where an object column gets the intended message."""
    for dtype in ["category", object]:
        y = pd.DataFrame({"c": pd.Series(["a", "a", None], dtype=dtype)})
        with pytest.raises(ValueError, match="target 'c' has a single class 'a'"):
            fit_tasks(y)
    two = fit_tasks(pd.DataFrame({"c": pd.Series(["a", "b", None], dtype="category")}))
    assert list(two["c"].classes_) == ["a", "b"]


def test_the_scaler_is_fitted_on_the_training_rows_only():
    """Outliers in the validation rows leave the scaling unchanged; a label seen only
    in the validation rows still encodes."""
    age = [20.0, 30.0, np.nan, 40.0, 1000.0, -500.0]
    y = pd.DataFrame({"age": age, "pet": ["cat", "dog", "cat", "dog", "bird", None]})
    train = [0, 1, 2, 3]

    tasks = fit_tasks(y, train=train)

    scaler = tasks["age"].encoder
    assert scaler.mean_[0] == pytest.approx(30.0)  # np.nanmean(age[:4])
    assert scaler.scale_[0] == pytest.approx(np.nanstd([20.0, 30.0, 40.0]))
    assert scaler.n_samples_seen_ == 3
    assert list(tasks["pet"].classes_) == ["bird", "cat", "dog"]
    np.testing.assert_allclose(
        tasks["age"].encode(y["age"])[4:], (np.array([1000.0, -500.0]) - 30.0) / scaler.scale_[0]
    )
    assert fit_tasks(y)["age"].encoder.mean_[0] == pytest.approx(np.nanmean(age))  # train=None


def test_a_regression_without_a_training_label_is_refused():
    y = pd.DataFrame({"age": [np.nan, np.nan, 3.0]})
    with pytest.raises(ValueError, match="'age' has no labelled cell among the training rows"):
        fit_tasks(y, train=[0, 1])


def test_check_task_names_of_a_kind():
    check_task_names({"a": 1}, ["a", "b"], "regression_loss", REGRESSION, ["a"])
    with pytest.raises(ValueError, match=r"regression_loss names tasks \['b'\] that are not regr"):
        check_task_names({"b": 1}, ["a", "b"], "regression_loss", REGRESSION, ["a"])


def test_split_rows_by_column_and_fraction():
    X = pd.DataFrame({"is_valid": [False, True, False, True]})
    train, valid = split_rows(X, 4, "is_valid", np.random.RandomState(0))
    assert train.tolist() == [0, 2] and valid.tolist() == [1, 3]
    train, valid = split_rows(None, 10, 0.3, np.random.RandomState(0))
    assert len(train) == 7 and sorted([*train, *valid]) == list(range(10))
    assert split_rows(None, 3, None, None)[1] is None


def test_fit_scales_the_regression_by_its_training_rows(image_set):
    """A real fit with valid_split: the validation rows' outliers leave the scaler alone."""
    from conftest import small_estimator

    data = image_set.copy()
    valid = data["is_valid"].to_numpy()
    data.loc[valid & data["area"].notna().to_numpy(), "area"] = 1e4
    est = small_estimator(data, max_epochs=1).fit(data, data[["area", "shape"]])

    scaler = est.tasks_["area"].encoder
    training = data.loc[~valid, "area"]
    assert scaler.mean_[0] == pytest.approx(training.mean())
    assert scaler.n_samples_seen_ == training.notna().sum()
    assert scaler.mean_[0] < 1.0  # areas are fractions of the image; the outliers are out


def test_integer_class_codes_read_as_floats_warn_naming_the_column(tmp_path):
    # One empty CSV cell turns the codes 1, 2, 3 into floats: a regression, by dtype.
    (tmp_path / "y.csv").write_text("grade,size\n1,0.5\n2,1.5\n\n3,2.25\n1,\n2,0.75\n")
    y = pd.read_csv(tmp_path / "y.csv", skip_blank_lines=False)
    assert y["grade"].dtype == np.float64
    with pytest.warns(UserWarning, match=r"target 'grade' is a float column of 3 distinct integer"):
        tasks = fit_tasks(y)
    assert tasks["grade"].kind == "regression"
    tasks = fit_tasks(y, {"grade": "classification"})  # given: no warning
    assert tasks["grade"].classes_.tolist() == [1.0, 2.0, 3.0]
    assert fit_tasks(y[["size"]])["size"].kind == "regression"  # fractional: no warning

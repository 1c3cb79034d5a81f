"""Know your labels: find_label_issues (out-of-fold, cleanlab, residuals), suggest_labels,
their bad inputs, the command line's audit and suggest."""

import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TARGETS, run_python_without, small_estimator
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import KFold, ShuffleSplit

from sk_multitask.cli import main
from sk_multitask.exceptions import LabelsWarning
from sk_multitask.labels import find_label_issues, suggest_labels
from sk_multitask.labels._issues import cleanlab_modules
from sk_multitask.labels._out_of_fold import assign_folds
from sk_multitask.onnx import OnnxPredictor


@pytest.fixture(scope="module")
def corrupted(image_set):
    """The image set's targets with 8 colours flipped and 6 areas moved by 0.5 (three
    standard deviations); the positions of each."""
    y = image_set[TARGETS].copy()
    rng = np.random.RandomState(0)
    colors = sorted(y["color"].dropna().unique())
    flipped = rng.choice(np.flatnonzero(y["color"].notna()), 8, replace=False)
    for position in flipped:
        others = [c for c in colors if c != y.iloc[position, 0]]
        y.iloc[position, 0] = others[rng.randint(len(others))]
    moved = rng.choice(np.flatnonzero(y["area"].notna()), 6, replace=False)
    y.iloc[moved, 2] += 0.5
    return y, flipped, moved


@pytest.fixture(scope="module")
def issues(image_set, corrupted):
    y, _, _ = corrupted
    est = small_estimator(image_set, max_epochs=4, lr=3e-3)
    return find_label_issues(est, image_set, y, cv=2, random_state=0)


def _cells(table):
    return set(zip(table["row"], table["task"], strict=True))


def _labelled_cells(y):
    return {(row, task) for task in y.columns for row in y.index[y[task].notna()]}


# -- find_label_issues ------------------------------------------------------------------


def test_every_labelled_cell_is_judged_and_no_missing_one(issues, corrupted):
    y, _, _ = corrupted
    assert list(issues.columns) == [
        "row", "task", "given", "predicted", "label_quality", "is_label_issue"
    ]
    assert len(issues) == len(_cells(issues)) == int(y.notna().sum().sum())
    assert _cells(issues) == _labelled_cells(y)
    assert issues["label_quality"].between(0, 1).all()
    assert issues.attrs["predictions"] == "out of fold: 2 folds, a fit each"


def test_flagged_cells_come_first_worst_first(issues):
    flagged = issues["is_label_issue"].to_numpy()
    assert flagged.any() and not flagged.all()
    assert not (np.diff(flagged.astype(int)) > 0).any()  # True then False
    for part in (issues[flagged], issues[~flagged]):
        assert part["label_quality"].is_monotonic_increasing


def test_flipped_classes_and_moved_values_are_found(issues, corrupted, image_set):
    y, flipped, moved = corrupted
    for task, positions, found in (("color", flipped, 5), ("area", moved, 6)):
        flags = set(issues.loc[(issues["task"] == task) & issues["is_label_issue"], "row"])
        truth = set(image_set.index[positions])
        assert len(flags & truth) >= found, task
    area = issues[issues["task"] == "area"]
    assert set(area.loc[area["is_label_issue"], "row"]) == set(image_set.index[moved])


def test_a_task_with_fewer_labels_than_folds_is_warned_and_skipped(image_set):
    y = image_set[["color", "shape"]].copy()
    y["shape"] = None
    y.iloc[0, 1] = "circle"
    # Parameters keyed by task name it too: the folds fit without it.
    est = small_estimator(image_set, max_epochs=1, tasks={"shape": "classification"},
                          loss_weights={"color": 1.0, "shape": 2.0})
    with pytest.warns(LabelsWarning, match="task 'shape' has 1 labelled cells, fewer than"):
        table = find_label_issues(est, image_set, y, cv=2, random_state=0)
    assert set(table["task"]) == {"color"}


def test_a_task_with_one_class_is_warned_and_not_judged(fitted, image_set):
    y = image_set[["color", "area"]].copy()
    y["color"] = y["color"].where(y["color"].isna(), "red")
    with pytest.warns(LabelsWarning, match="task 'color' has one class among its labelled"):
        table = find_label_issues(fitted, image_set, y, cv="prefit")
    assert set(table["task"]) == {"area"}


def test_more_folds_than_labelled_rows_is_one_line(image_set):
    est = small_estimator(image_set)
    with pytest.raises(ValueError, match=r"^cv=500 folds need at least 500 rows with a lab"):
        find_label_issues(est, image_set, image_set[TARGETS], cv=500)
    for bad in (1, True, "folds"):
        with pytest.raises(ValueError, match="cv must be"):
            find_label_issues(est, image_set, image_set[TARGETS], cv=bad)


def test_a_splitter_must_hold_each_labelled_row_out_once(image_set):
    est = small_estimator(image_set, max_epochs=1)
    y = image_set[["color"]]
    table = find_label_issues(est, image_set, y, cv=KFold(2, shuffle=True, random_state=0))
    assert _cells(table) == _labelled_cells(y)
    with pytest.raises(ValueError, match="hold every row with a labelled cell out exactly once"):
        find_label_issues(est, image_set, y, cv=ShuffleSplit(2, test_size=0.3, random_state=0))


def test_prefit_needs_a_fitted_estimator(image_set):
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        find_label_issues(small_estimator(image_set), image_set, image_set[TARGETS], cv="prefit")


def test_prefit_judges_the_validation_rows_only(fitted, image_set):
    y = image_set[TARGETS]
    table = find_label_issues(fitted, image_set, y, cv="prefit")
    held = image_set[image_set["is_valid"]]
    assert _cells(table) == _labelled_cells(y.loc[held.index])
    assert "its validation rows, X['is_valid']" in table.attrs["predictions"]


def test_prefit_of_the_onnx_predictor_is_the_estimators(fitted, fitted_onnx, image_set):
    y = image_set[TARGETS]
    expected = find_label_issues(fitted, image_set, y, cv="prefit")
    onnx = OnnxPredictor(fitted_onnx, image_root=image_set.attrs["image_root"])
    got = find_label_issues(onnx, image_set.drop(columns="is_valid"), y, cv="prefit")
    assert "X as given" in got.attrs["predictions"]
    assert len(got) == int(y.notna().sum().sum())
    # The same cells of the validation rows, judged alike (on more rows: other flags).
    valid = got[got["row"].isin(image_set.index[image_set["is_valid"]])]
    merged = valid.merge(expected, on=["row", "task"], suffixes=("", "_fitted"))
    assert len(merged) == len(expected)
    area = merged["task"] == "area"
    assert (merged.loc[~area, "predicted"] == merged.loc[~area, "predicted_fitted"]).all()
    np.testing.assert_allclose(
        merged.loc[area, "predicted"].astype(float),
        merged.loc[area, "predicted_fitted"].astype(float), rtol=1e-4,
    )


def test_groups_stay_in_one_fold():
    y = pd.DataFrame({"a": list("xyxyxyxyxy") * 3, "b": np.arange(30.0)})
    groups = np.repeat(np.arange(10), 3)
    folds = assign_folds(y, 3, groups=groups)
    for group in range(10):
        assert len(set(folds[groups == group])) == 1


def test_folds_split_each_task_and_class_evenly():
    rng = np.random.RandomState(0)
    y = pd.DataFrame({
        "a": rng.choice(list("xyz"), 100).astype(object),
        "b": rng.normal(size=100),
    })
    y.loc[rng.rand(100) < 0.3, "a"] = None
    y.loc[rng.rand(100) < 0.3, "b"] = np.nan
    folds = assign_folds(y, 4, random_state=0)
    assert (folds[y.isna().all(axis=1).to_numpy()] == -1).all()
    for task in y.columns:
        counts = np.bincount(folds[y[task].notna().to_numpy()], minlength=4)
        assert counts.max() - counts.min() <= 3  # one per labelling pattern at most
    for label in "xyz":
        counts = np.bincount(folds[(y["a"] == label).to_numpy()], minlength=4)
        assert counts.max() - counts.min() <= 2


@pytest.mark.slow  # two worker processes, each importing torch
def test_folds_in_parallel_give_the_same_table(image_set):
    subset = image_set.iloc[:60]
    y = subset[["color", "area"]]
    est = small_estimator(subset, max_epochs=1)
    one = find_label_issues(est, subset, y, cv=2, random_state=0, n_jobs=1)
    two = find_label_issues(est, subset, y, cv=2, random_state=0, n_jobs=2)
    pd.testing.assert_frame_equal(one, two)


@pytest.mark.slow  # a Dask cluster of two worker processes
def test_folds_on_dask_give_the_same_table(image_set):
    import joblib
    from dask.distributed import Client, LocalCluster

    subset = image_set.iloc[:60]
    y = subset[["color", "area"]]
    est = small_estimator(subset, max_epochs=1)
    sequential = find_label_issues(est, subset, y, cv=2, random_state=0)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster),
        joblib.parallel_backend("dask"),
    ):
        on_dask = find_label_issues(est, subset, y, cv=2, random_state=0)
    # Equal up to float noise: the workers' torch runs 1 thread, this process's maybe more.
    merged = sequential.merge(on_dask, on=["row", "task"], suffixes=("", "_dask"))
    assert len(merged) == len(sequential) == len(on_dask)
    np.testing.assert_allclose(merged["label_quality"], merged["label_quality_dask"], atol=1e-3)


def test_multilabel_cells_are_judged_label_by_label(image_set):
    from test_multilabel import tag_targets

    y = tag_targets(image_set)[["tags"]]
    table = find_label_issues(small_estimator(image_set, max_epochs=1), image_set, y, cv=2,
                              random_state=0)
    assert _cells(table) == _labelled_cells(y)
    assert all(isinstance(cell, list) for cell in table["given"])
    assert table["label_quality"].between(0, 1).all()


def test_ordinal_levels_are_judged_and_suggested_as_classes(image_set):
    from test_ordinal import _ordinal_targets

    y = _ordinal_targets(image_set)[["size", "rank"]]
    est = small_estimator(image_set, max_epochs=1, tasks={"rank": "ordinal"})
    table = find_label_issues(est, image_set, y, cv=2, random_state=0)
    assert _cells(table) == _labelled_cells(y)
    assert set(table.loc[table["task"] == "size", "given"]) <= {"S", "M", "L", "XL"}
    assert table["label_quality"].between(0, 1).all()
    hidden = y.copy()
    hidden.iloc[:40] = None
    est.fit(image_set, hidden)
    suggested = suggest_labels(est, image_set, hidden)
    assert _cells(suggested) == {
        (row, task) for task in y for row in hidden.index[hidden[task].isna()]
    }
    size = suggested[suggested["task"] == "size"]
    proba = est.predict_proba(image_set)["size"].loc[size["row"]].to_numpy()
    top = np.sort(proba, axis=1)
    np.testing.assert_allclose(size["uncertainty"], 1 - (top[:, -1] - top[:, -2]), atol=1e-6)


def test_importing_cleanlab_leaves_the_warnings_filters_alone():
    # cleanlab 2.9's import adds a filter ignoring every warning; a fresh process shows it.
    result = run_python_without(
        """
        import warnings
        from sk_multitask.labels._issues import cleanlab_modules
        before = list(warnings.filters)
        cleanlab_modules()
        print(warnings.filters == before)
        """,
        blocked=(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_without_cleanlab_the_error_names_the_extra(monkeypatch, image_set):
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    with pytest.raises(ImportError, match=r'pip install "sk-multitask\[cleanlab\]"'):
        cleanlab_modules()
    with pytest.raises(ImportError, match="cleanlab"):
        find_label_issues(small_estimator(image_set), image_set, image_set[TARGETS])


# -- suggest_labels ---------------------------------------------------------------------


def test_suggestions_are_the_missing_cells_most_uncertain_first(fitted, image_set):
    y = image_set[TARGETS]
    table = suggest_labels(fitted, image_set, y)
    assert list(table.columns) == ["row", "task", "score", "uncertainty", "predicted"]
    missing = {(row, task) for task in TARGETS for row in y.index[y[task].isna()]}
    assert _cells(table) == missing
    assert table["score"].is_monotonic_decreasing
    assert table["score"].between(0, 1, inclusive="right").all()
    for task in TARGETS:  # within a task, the score ranks the uncertainty
        part = table[table["task"] == task]
        assert part["uncertainty"].is_monotonic_decreasing
    color = table[table["task"] == "color"]
    proba = fitted.predict_proba(image_set)["color"].loc[color["row"]].to_numpy()
    top = np.sort(proba, axis=1)
    np.testing.assert_allclose(color["uncertainty"], 1 - (top[:, -1] - top[:, -2]), atol=1e-6)


def test_suggestions_without_y_task_and_n(fitted, image_set):
    every = suggest_labels(fitted, image_set.iloc[:20], task="color", n=5)
    assert len(every) == 5 and set(every["task"]) == {"color"}
    whole = suggest_labels(fitted, image_set.iloc[:20], task="color")
    assert len(whole) == 20
    pd.testing.assert_frame_equal(every, whole.head(5))


def test_a_regression_without_labelled_cells_is_warned(fitted, image_set):
    with pytest.warns(LabelsWarning, match="regression task 'area' has no labelled cell"):
        table = suggest_labels(fitted, image_set.iloc[:10])
    assert table.loc[table["task"] == "area", "score"].isna().all()
    assert table["score"].iloc[-1:].isna().all()  # last


def test_suggestions_bad_inputs(fitted, image_set):
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        suggest_labels(small_estimator(image_set), image_set)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        suggest_labels(fitted, image_set, n=0)
    with pytest.raises(ValueError, match="nope"):
        suggest_labels(fitted, image_set, task="nope")


# -- the command line -------------------------------------------------------------------


@pytest.fixture(scope="module")
def table_file(image_set, tmp_path_factory):
    path = tmp_path_factory.mktemp("labels") / "data.csv"
    image_set.to_csv(path, index=False)
    return path


def test_audit_writes_the_judged_cells(table_file, image_set, tmp_path, capsys):
    out = tmp_path / "issues.csv"
    code = main([
        "audit", str(table_file), "--images", image_set.attrs["image_root"], "--targets",
        "color,area", "--backbone", "simple_cnn", "--weights", "none", "--image-size", "16",
        "--epochs", "1", "--cv", "2", "--seed", "0", "--out", str(out),
    ])
    assert code == 0
    written = pd.read_csv(out)
    assert len(written) == int(image_set[["color", "area"]].notna().sum().sum())
    assert "out of fold: 2 folds" in capsys.readouterr().out


def test_suggest_writes_the_cells_to_label(table_file, fitted, tmp_path, capsys):
    model = fitted.save(tmp_path / "m.skmt")
    out = tmp_path / "next.csv"
    assert main(["suggest", str(table_file), "--model", str(model), "--n", "7", "--out",
                 str(out)]) == 0
    written = pd.read_csv(out)
    assert len(written) == 7 and list(written.columns)[:3] == ["row", "task", "score"]
    assert main(["suggest", str(table_file), "--model", str(model), "--task", "nope",
                 "--out", str(out)]) == 1
    assert "--task 'nope' is not one of the model's" in capsys.readouterr().err

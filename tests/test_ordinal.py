"""The ordinal task kind: inference and refusals, CORN's outputs, the fitted model's
predictions, metrics and ranges, and the files, the ONNX predictor and the CLI carrying it."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import reload, small_estimator
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sk_multitask.network import class_weights
from sk_multitask.network._loss import corn_log_probabilities, level_score
from sk_multitask.targets import fit_tasks, infer_task_kind
from sk_multitask.targets._ordinal import (
    level_log_probabilities,
    level_ranges,
    median_levels,
    tail_scores,
)

SIZES = ["S", "M", "L", "XL"]


def _ordinal_targets(df):
    """``color`` with two ordinal tasks measured from the shape's area: ``size`` (an
    ordered categorical of 4 levels) and ``rank`` (integer levels 0-2, nullable)."""
    y = df[["color"]].copy()
    y["size"] = pd.qcut(df["area"], 4, labels=SIZES)
    y["rank"] = pd.qcut(df["area"], 3, labels=False).astype("Int64")
    return y


@pytest.fixture(scope="module")
def ordinal(image_set):
    """An estimator fitted (2 epochs) on ``color``, ``size`` and ``rank``, and its y."""
    y = _ordinal_targets(image_set)
    est = small_estimator(image_set, tasks={"rank": "ordinal"}).fit(image_set, y)
    return est, y


def test_an_ordered_categorical_is_ordinal_and_integers_are_on_request():
    y = pd.DataFrame(
        {
            "size": pd.Categorical(["S", None, "L", "S"], SIZES, ordered=True),
            "stars": [1, 5, 3, 3],
            "plain": pd.Categorical(["a", "b", "a", "b"]),
        }
    )
    assert infer_task_kind(y["size"]) == "ordinal"
    assert infer_task_kind(y["plain"]) == "classification"  # unordered: classes
    tasks = fit_tasks(y, {"stars": "ordinal"})
    # An ordered categorical's levels are its categories, used or not, in their order.
    assert tasks["size"].classes_.tolist() == SIZES and tasks["size"].n_outputs == 3
    assert tasks["stars"].classes_.tolist() == [1, 3, 5] and tasks["stars"].n_outputs == 2
    encoded = tasks["size"].encode(y["size"])
    np.testing.assert_array_equal(encoded, [0, np.nan, 2, 0])


@pytest.mark.parametrize(
    ("column", "match"),
    [
        (pd.Series(["low", "high", "low"]), "cannot be ordinal: its dtype is"),
        (pd.Series([1.5, 2.0, None]), "cannot be ordinal: it holds values that are not integers"),
        (pd.Series([1.0, np.inf, 2.0]), "cannot be ordinal: it holds values that are not integers"),
        (pd.Series(pd.Categorical(["a", "b"])), "its categories are not ordered"),
        (pd.Series([True, False]), "cannot be ordinal: its dtype is bool"),
        (pd.Series([3, 3, None]), "is ordinal with a single level"),
    ],
)
def test_what_cannot_be_ordinal_is_refused_in_one_line(column, match):
    with pytest.raises(ValueError, match=match) as info:
        fit_tasks(pd.DataFrame({"x": column}), {"x": "ordinal"})
    assert "\n" not in str(info.value)


def test_integers_read_as_floats_beside_missing_cells_are_levels():
    tasks = fit_tasks(pd.DataFrame({"x": [2.0, None, 4.0, 2.0]}), {"x": "ordinal"})
    assert tasks["x"].classes_.tolist() == [2.0, 4.0]


_LOGITS = arrays(
    np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.floats(-30, 30)
)


@given(_LOGITS)
def test_corn_probabilities_sum_to_one_are_rank_consistent_and_match_torch(logits):
    log_p = level_log_probabilities(logits)
    p = np.exp(log_p)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-9)
    above = 1 - np.cumsum(p, axis=1)[:, :-1]  # P(y > j): never increases with j
    assert (np.diff(above, axis=1) <= 1e-12).all()
    # The median: the level with less than half the mass on either side.
    median = median_levels(logits)
    below = np.cumsum(p, axis=1) - p
    rows = np.arange(len(p))
    assert (below[rows, median] <= 0.5 + 1e-9).all() and (above.sum(axis=1) >= 0).all()
    twin = corn_log_probabilities(torch.from_numpy(logits)).numpy()
    np.testing.assert_allclose(twin, log_p, rtol=1e-9, atol=1e-12)


@given(_LOGITS, st.floats(0.0, 1.0))
def test_conformal_ranges_are_contiguous_and_hold_the_predicted_level(logits, q):
    p = np.exp(level_log_probabilities(logits))
    predicted = median_levels(logits)
    lower, upper = level_ranges(p, predicted, q)
    inside = tail_scores(p) <= q
    inside[np.arange(len(p)), predicted] = True
    span = np.arange(p.shape[1])[None, :]
    # Every level of the range scores at most q (or is the prediction): no gap to fill.
    np.testing.assert_array_equal(inside, (lower[:, None] <= span) & (span <= upper[:, None]))


def test_level_score_gives_a_level_or_the_expected_level_with_gradients():
    logits = torch.tensor([[2.0, -1.0, 0.5]], requires_grad=True)
    p = np.exp(level_log_probabilities(logits.detach().numpy()))[0]
    expected = level_score(logits)
    assert expected.item() == pytest.approx(float((p * np.arange(4)).sum()), rel=1e-6)
    assert level_score(logits, 2).exp().item() == pytest.approx(p[2], rel=1e-6)
    expected.sum().backward()
    assert torch.count_nonzero(logits.grad) == 3


def test_predict_gives_levels_in_their_dtype_the_median_of_predict_proba(ordinal, image_set):
    est, y = ordinal
    assert {n: t.kind for n, t in est.tasks_.items()} == {
        "color": "classification",
        "size": "ordinal",
        "rank": "ordinal",
    }
    predicted = est.predict(image_set)
    assert predicted["size"].dtype == y["size"].dtype  # an ordered categorical, same levels
    assert predicted["rank"].dtype == "Int64" and set(predicted["rank"]) <= {0, 1, 2}
    for name, levels in (("size", SIZES), ("rank", [0, 1, 2])):
        proba = est.predict_proba(image_set)[name]
        assert proba.columns.tolist() == levels
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
        median = (1 - proba.cumsum(axis=1).to_numpy()[:, :-1] > 0.5).sum(axis=1)
        np.testing.assert_array_equal(pd.Index(levels).get_indexer(predicted[name]), median)
    assert "valid_size_mae" in est.history_[-1] and "valid_size_acc" in est.history_[-1]


def test_evaluate_reports_accuracy_and_mae_in_levels(ordinal, image_set):
    est, y = ordinal
    table = est.evaluate(image_set, y)
    labelled = y["size"].notna()
    truth = pd.Index(SIZES).get_indexer(y["size"][labelled])
    predicted = pd.Index(SIZES).get_indexer(est.predict(image_set)["size"][labelled])
    assert table.loc["size", "kind"] == "ordinal"
    assert table.loc["size", "mae"] == pytest.approx(np.abs(truth - predicted).mean())
    assert table.loc["size", "accuracy"] == pytest.approx((truth == predicted).mean())
    assert np.isnan(table.loc["color", "mae"]) and np.isfinite(table.loc["size", "log_loss"])


def test_the_scorer_measures_an_ordinal_task_in_levels(ordinal, image_set):
    from sk_multitask import multitask_scorer

    est, y = ordinal
    scores = multitask_scorer({"size": "neg_mean_absolute_error"})(est, image_set, y)
    assert scores["size"] == pytest.approx(-est.evaluate(image_set, y).loc["size", "mae"])
    assert scores["rank"] == pytest.approx(est.evaluate(image_set, y).loc["rank", "accuracy"])


def test_a_level_unseen_in_fit_is_refused_by_the_metrics(ordinal, image_set):
    est, y = ordinal
    y = y[["rank"]].copy()
    y.loc[y.index[0], "rank"] = 7
    unseen = r"target 'rank' has levels not seen in fit: \['7(\.0)?'\]"
    with pytest.raises(ValueError, match=unseen):
        est.evaluate(image_set, y)


def test_conformal_ranges_are_levels_holding_the_prediction(ordinal, image_set):
    est, y = ordinal
    frame = est.predict_interval(image_set, coverage=0.8)
    assert {("size", "lower"), ("size", "upper"), ("rank", "lower")} <= set(frame.columns)
    assert frame["size", "lower"].dtype == y["size"].dtype
    position = pd.Index(SIZES).get_indexer
    lower, upper = position(frame["size", "lower"]), position(frame["size", "upper"])
    predicted = position(est.predict(image_set)["size"])
    assert ((lower <= predicted) & (predicted <= upper)).all()
    table = est.evaluate(image_set, y, coverage=0.8)
    assert 1 <= table.loc["size", "mean_set_size"] <= 4
    assert 0 <= table.loc["size", "coverage"] <= 1
    assert est.calibration_.tasks["size"].temperature is None  # it would move the median


@pytest.mark.parametrize("how", ["safe file", "joblib"])
def test_a_loaded_model_predicts_the_same_levels_and_ranges(ordinal, image_set, tmp_path, how):
    est, y = ordinal
    loaded = reload(est, tmp_path, how)
    pd.testing.assert_frame_equal(loaded.predict(image_set), est.predict(image_set))
    pd.testing.assert_frame_equal(
        loaded.predict_interval(image_set)[["size", "rank"]],
        est.predict_interval(image_set)[["size", "rank"]],
    )
    assert loaded.tasks_["size"].kind == "ordinal"


def test_the_onnx_predictor_gives_the_same_levels_probabilities_and_ranges(
    ordinal, image_set, tmp_path
):
    pytest.importorskip("onnxruntime")
    from sk_multitask.onnx import OnnxPredictor

    est, y = ordinal
    onnx = OnnxPredictor(est.export_onnx(tmp_path / "model.onnx"))
    pd.testing.assert_frame_equal(onnx.predict(image_set), est.predict(image_set))
    pd.testing.assert_frame_equal(
        onnx.predict_proba(image_set)["size"], est.predict_proba(image_set)["size"], atol=1e-5
    )
    pd.testing.assert_frame_equal(
        onnx.predict_interval(image_set)[["size", "rank"]],
        est.predict_interval(image_set)[["size", "rank"]],
    )
    np.testing.assert_allclose(
        onnx.top_losses(image_set, y, k=5)["loss"], est.top_losses(image_set, y, k=5)["loss"],
        rtol=1e-4,
    )  # fmt: skip


def test_confusion_matrix_and_report_show_an_ordinal_task(ordinal, image_set, tmp_path):
    from sk_multitask.plotting import plot_confusion_matrix
    from sk_multitask.report import write_report

    est, y = ordinal
    figure = plot_confusion_matrix(est, image_set, y, "size")
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == SIZES
    html = write_report(est, image_set, y, tmp_path / "report.html").read_text()
    assert "Confusion matrix: size" in html and "size (ordinal, 4 levels)" in html


def test_balanced_class_weights_weigh_an_ordinal_task_by_level():
    y = pd.DataFrame({"size": pd.Categorical(["S", "S", "S", "L"], SIZES, ordered=True)})
    weights = class_weights("balanced", fit_tasks(y), y)
    # S and L are seen: balanced; M and XL, absent from training, weigh 1.
    np.testing.assert_allclose(weights["size"], [2 / 3, 1.0, 2.0, 1.0])


def test_the_command_line_fits_an_integer_column_as_ordinal(image_set, tmp_path):
    from sk_multitask.cli import main

    data = image_set.assign(rank=_ordinal_targets(image_set)["rank"])
    data.to_csv(tmp_path / "data.csv", index=False)
    args = ["fit", str(tmp_path / "data.csv"), "--images", image_set.attrs["image_root"]]
    args += ["--targets", "rank,color", "--tasks", "rank=ordinal", "--model"]
    small = ["--backbone", "simple_cnn", "--weights", "none", "--image-size", "16"]
    model = tmp_path / "m.skmt"
    assert main([*args, str(model), *small, "--epochs", "1", "--valid-split", "none"]) == 0
    from sk_multitask import load

    loaded = load(model)
    assert loaded.tasks_["rank"].kind == "ordinal"
    assert loaded.tasks_["rank"].classes_.tolist() == [0, 1, 2]
    assert loaded.predict(image_set.head(3))["rank"].dtype == "Int64"


def test_explain_weighs_the_expected_level_or_a_given_level(ordinal, image_set):
    est, _ = ordinal
    X = image_set.iloc[:10]
    expected = est.explain(X, "size")
    assert expected.shape == (10, 16, 16) and np.isfinite(expected).all()
    levels = [est.explain(X, "size", label=level) for level in SIZES]
    assert not any(np.allclose(expected, of_level) for of_level in levels)
    with pytest.raises(ValueError, match=r"'XXL' is not a level of task 'size': its levels are"):
        est.explain(X, "size", label="XXL")

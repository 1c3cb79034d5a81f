"""A multi-label task end to end: fit, predict, probabilities, metrics, figures, joblib."""

import copy
import dataclasses

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import small_estimator
from sklearn import metrics as skm

from sk_multitask import multitask_scorer
from sk_multitask.plotting import plot_history, plot_top_losses, show_batch
from sk_multitask.predicting._calibration import Calibration
from sk_multitask.report import write_report

TAGS = ["round", "warm"]
WARM = ("red", "yellow")


def tag_targets(df):
    """``color``, ``area`` and a multi-label ``tags`` derived from colour and shape.

    ``tags`` is missing where both colour and shape are, and an empty list (a labelled
    "no tag") where neither tag applies.
    """
    tags = [
        None
        if pd.isna(color) and pd.isna(shape)
        else [tag for tag, on in [("round", shape == "circle"), ("warm", color in WARM)] if on]
        for color, shape in zip(df["color"], df["shape"], strict=True)
    ]
    return pd.DataFrame({"color": df["color"], "tags": tags, "area": df["area"]}, index=df.index)


@pytest.fixture(scope="module")
def y(image_set):
    return tag_targets(image_set)


@pytest.fixture(scope="module")
def multilabel_fitted(image_set, y):
    return small_estimator(image_set, lr=3e-3).fit(image_set, y)


def test_targets_hold_lists_empty_lists_and_missing_cells(y):
    cells = y["tags"].tolist()
    assert any(c is None for c in cells)
    assert any(c == [] for c in cells)
    assert any(c and len(c) == 2 for c in cells)


def test_a_column_of_label_lists_becomes_a_multilabel_task(multilabel_fitted):
    task = multilabel_fitted.tasks_["tags"]
    assert task.kind == "multilabel"
    assert list(task.classes_) == sorted(TAGS)
    assert multilabel_fitted.net_.module_.heads[1].out_features == 2


def test_predict_gives_label_lists_and_proba_one_sigmoid_per_label(multilabel_fitted, image_set):
    X = image_set.iloc[:40]

    predicted = multilabel_fitted.predict(X)
    proba = multilabel_fitted.predict_proba(X)

    assert set(proba) == {"color", "tags"}
    tags = proba["tags"]
    assert list(tags.columns) == sorted(TAGS)
    assert tags.index.equals(X.index)
    assert ((tags > 0) & (tags < 1)).all().all()
    assert not np.allclose(tags.sum(axis=1), 1.0)  # independent sigmoids
    expected = [[t for t in sorted(TAGS) if row[t] > 0.5] for _, row in tags.iterrows()]
    assert predicted["tags"].tolist() == expected
    assert all(isinstance(cell, list) for cell in predicted["tags"])


def test_round_trip_through_joblib_gives_identical_predictions(
    multilabel_fitted, image_set, tmp_path
):
    joblib.dump(multilabel_fitted, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")

    pd.testing.assert_frame_equal(loaded.predict(image_set), multilabel_fitted.predict(image_set))
    pd.testing.assert_frame_equal(
        loaded.predict_proba(image_set)["tags"], multilabel_fitted.predict_proba(image_set)["tags"]
    )


def test_proba_at_the_smallest_calibration_temperature_is_finite_without_warnings(
    multilabel_fitted, image_set, y
):
    calibrated = copy.deepcopy(multilabel_fitted).calibrate(image_set, y)
    heads = calibrated.net_.module_.heads
    with torch.no_grad():  # a confident model: logits of about -5 and +5
        heads[0].bias[0] += 5.0  # color
        heads[1].bias -= 5.0  # tags
    # Temperatures of 0.01 (the smallest a calibration holds) make them -500 and 500,
    # whose exp overflows float32: a RuntimeWarning, which the suite makes an error.
    coldest = {
        name: dataclasses.replace(task, temperature=np.full(np.shape(task.temperature), 0.01))
        for name, task in calibrated.calibration_.tasks.items()
        if task.temperature is not None
    }
    calibrated.calibration_ = Calibration({**calibrated.calibration_.tasks, **coldest})

    proba = calibrated.predict_proba(image_set)

    assert set(coldest) == set(proba) == {"color", "tags"}
    for frame in proba.values():
        assert np.isfinite(frame.to_numpy()).all()
        assert ((frame >= 0) & (frame <= 1)).all().all()
    assert (proba["tags"] < 1e-30).all().all()


def _indicators(cells):
    return np.array([[label in cell for label in sorted(TAGS)] for cell in cells], dtype=int)


def test_history_micro_f1_matches_a_recomputation_on_the_validation_rows(
    multilabel_fitted, image_set, y
):
    valid = image_set["is_valid"].to_numpy() & y["tags"].notna().to_numpy()
    truth = _indicators(y["tags"][valid])
    predicted = _indicators(multilabel_fitted.predict(image_set[valid])["tags"])

    history = multilabel_fitted.history_
    assert np.isfinite(history[:, "train_tags_f1"]).all()
    assert np.isfinite(history[:, "valid_tags_loss"]).all()
    assert history[-1, "valid_tags_f1"] == pytest.approx(
        skm.f1_score(truth, predicted, average="micro", zero_division=0), abs=1e-6
    )


def test_evaluate_score_and_scorer_use_multilabel_metrics(multilabel_fitted, image_set, y):
    labelled = y["tags"].notna().to_numpy()
    truth = _indicators(y["tags"][labelled])
    predicted = _indicators(multilabel_fitted.predict(image_set[labelled])["tags"])
    f1_micro = skm.f1_score(truth, predicted, average="micro", zero_division=0)

    table = multilabel_fitted.evaluate(image_set, y)
    row = table.loc["tags"]
    assert row["kind"] == "multilabel" and row["n_labelled"] == labelled.sum()
    assert row["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert row["f1_micro"] == pytest.approx(f1_micro)
    assert row["hamming_loss"] == pytest.approx(skm.hamming_loss(truth, predicted))
    assert 0 < row["log_loss"] < 2
    assert np.isnan(row["r2"]) and np.isnan(table.loc["color", "f1_micro"])

    assert multilabel_fitted.score(image_set, y[["tags"]]) == pytest.approx(f1_micro)
    scores = multitask_scorer({"tags": "jaccard_samples"})(multilabel_fitted, image_set, y)
    jaccard = skm.jaccard_score(truth, predicted, average="samples", zero_division=0)
    assert scores["tags"] == pytest.approx(jaccard)
    assert scores["mean"] == pytest.approx(np.mean([scores[n] for n in y.columns]))


def test_top_losses_rank_multilabel_rows_by_their_bce(multilabel_fitted, image_set, y):
    top = multilabel_fitted.top_losses(image_set, y, k=5, task="tags")

    assert top["tags_true"].notna().all()
    # Training losses: of the raw probabilities, before the calibration's temperatures.
    raw = copy.copy(multilabel_fitted)
    raw.calibration_ = None
    outputs = raw.predict_proba(image_set.loc[top.index])["tags"].to_numpy()
    truth = _indicators(top["tags_true"])
    bce = -(truth * np.log(outputs) + (1 - truth) * np.log(1 - outputs)).mean(axis=1)
    np.testing.assert_allclose(top["loss"], bce, rtol=1e-4)
    assert (np.diff(top["loss"].to_numpy()) <= 0).all()
    combined = multilabel_fitted.top_losses(image_set, y, k=3)
    assert list(combined.columns)[-3:] == ["area_pred", "area_true", "loss"]


def test_figures_and_report_handle_a_multilabel_task(multilabel_fitted, image_set, y, tmp_path):
    history = plot_history(multilabel_fitted)
    assert "tags: micro F1" in [ax.get_title() for ax in history.axes]
    titles = [ax.get_title() for ax in plot_top_losses(multilabel_fitted, image_set, y, k=4).axes]
    assert any("tags [" in title for title in titles)
    rows = [int(np.flatnonzero(y["tags"].isna())[0]), 0, 1]
    batch = show_batch(multilabel_fitted, image_set.iloc[rows], y.iloc[rows], n=3)
    assert any("tags ?" in ax.get_title() for ax in batch.axes)

    text = write_report(multilabel_fitted, image_set, y, tmp_path / "r.html", k=2).read_text()
    assert "tags (multilabel, 2 labels)" in text
    assert text.count("<h2>Confusion matrix:") == 1  # colour only
    assert "f1_micro" in text


def test_safe_file_and_onnx_round_trips_keep_a_multilabel_task(
    multilabel_fitted, image_set, tmp_path
):
    import sk_multitask
    from sk_multitask.onnx import OnnxPredictor

    X = image_set.head(24)
    expected = multilabel_fitted.predict(X)
    expected_proba = multilabel_fitted.predict_proba(X)

    loaded = sk_multitask.load(multilabel_fitted.save(tmp_path / "model.skmt"))
    pd.testing.assert_frame_equal(loaded.predict(X), expected)
    pd.testing.assert_frame_equal(loaded.predict_proba(X)["tags"], expected_proba["tags"])

    multilabel_fitted.export_onnx(tmp_path / "model.onnx")
    predictor = OnnxPredictor(tmp_path / "model.onnx", image_root=image_set.attrs["image_root"])
    onnx_predicted = predictor.predict(X)
    assert onnx_predicted["tags"].tolist() == expected["tags"].tolist()
    np.testing.assert_allclose(
        predictor.predict_proba(X)["tags"].to_numpy(), expected_proba["tags"].to_numpy(), atol=1e-4
    )


def test_explain_draws_the_largest_logits_label_or_the_one_given(multilabel_fitted, image_set):
    X = image_set.iloc[:12]
    # The network's most probable label (calibration scales each label on its own).
    top = np.array(TAGS)[multilabel_fitted.predict_raw(X)[0]["tags"].argmax(axis=1)]
    own = multilabel_fitted.explain(X, "tags")
    assert own.shape == (12, 16, 16) and np.isfinite(own).all()
    for tag in TAGS:
        of_tag = multilabel_fitted.explain(X, "tags", label=tag)
        np.testing.assert_allclose(of_tag[top == tag], own[top == tag], atol=1e-6)
    with pytest.raises(ValueError, match=r"'cold' is not a label of task 'tags': its labels are"):
        multilabel_fitted.explain(X, "tags", label="cold")

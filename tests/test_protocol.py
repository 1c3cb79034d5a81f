"""The one prediction surface: the estimator and its ONNX predictor answer the same
methods with the same parameters, checks, types and (within float error) values, and
every consumer that takes ``y`` refuses one whose index is not ``X``'s."""

import inspect

import numpy as np
import pandas as pd
import pytest
from conftest import TARGETS

from sk_multitask import MultiTaskImageEstimator, multitask_scorer
from sk_multitask.onnx import OnnxPredictor
from sk_multitask.plotting import (
    plot_confusion_matrix,
    plot_intervals,
    plot_regression,
    plot_reliability,
    plot_top_losses,
    show_batch,
)
from sk_multitask.predicting._protocol import MultiTaskPredictor
from sk_multitask.report import write_report

pytest.importorskip("onnxruntime")

PROTOCOL = [
    "predict",
    "predict_proba",
    "predict_interval",
    "predict_raw",
    "evaluate",
    "score",
    "top_losses",
]
MISALIGNED = "y's index does not match X's: rows pair up by position"


@pytest.fixture(scope="module")
def models(fitted, fitted_onnx):
    """The fitted estimator and the ONNX predictor of its export."""
    return {"estimator": fitted, "onnx": OnnxPredictor(fitted_onnx)}


@pytest.fixture(params=["estimator", "onnx"])
def model(request, models):
    return models[request.param]


def _weights(n):
    return np.random.default_rng(0).uniform(0.2, 2.0, n)


@pytest.mark.parametrize("method", PROTOCOL)
def test_both_share_one_implementation_of_each_method(method):
    shared = getattr(MultiTaskPredictor, method)
    assert getattr(MultiTaskImageEstimator, method) is shared
    assert getattr(OnnxPredictor, method) is shared
    assert inspect.signature(getattr(MultiTaskImageEstimator, method)) == inspect.signature(
        getattr(OnnxPredictor, method)
    )


def test_predict_raw_is_numpy_in_both(models, image_set):
    raw = {name: m.predict_raw(image_set)[0] for name, m in models.items()}
    for task in TARGETS:
        for outputs in raw.values():
            assert isinstance(outputs[task], np.ndarray)
            assert outputs[task].dtype == np.float32
        np.testing.assert_allclose(raw["estimator"][task], raw["onnx"][task], atol=1e-4)


def test_predictions_agree(models, image_set):
    est, onnx = models["estimator"], models["onnx"]
    expected, got = est.predict(image_set), onnx.predict(image_set)
    pd.testing.assert_frame_equal(expected[["color", "shape"]], got[["color", "shape"]])
    np.testing.assert_allclose(expected["area"], got["area"], atol=1e-4)
    for task, frame in est.predict_proba(image_set).items():
        pd.testing.assert_frame_equal(frame, onnx.predict_proba(image_set)[task], atol=1e-4)
    intervals = est.predict_interval(image_set, 0.8)
    onnx_intervals = onnx.predict_interval(image_set, 0.8)
    np.testing.assert_allclose(
        intervals["area"].to_numpy(float), onnx_intervals["area"].to_numpy(float), atol=1e-4
    )
    # A label whose probability sits at a set's threshold may fall either side of it
    # with logits 1e-5 apart: all but a few of the sets are the same.
    same = intervals["color", "set"] == onnx_intervals["color", "set"]
    assert same.mean() >= 0.95


def test_weighted_evaluate_and_score_agree(models, image_set):
    y, w = image_set[TARGETS], _weights(len(image_set))
    est, onnx = models["estimator"], models["onnx"]
    for kwargs in ({}, {"per_class": True}):
        pd.testing.assert_frame_equal(
            est.evaluate(image_set, y, sample_weight=w, **kwargs),
            onnx.evaluate(image_set, y, sample_weight=w, **kwargs),
            atol=1e-4,
        )
    # The sets' coverage and size count labels at a threshold (see test_predictions_agree).
    pd.testing.assert_frame_equal(
        est.evaluate(image_set, y, coverage=0.8), onnx.evaluate(image_set, y, coverage=0.8),
        atol=0.05,
    )
    assert onnx.score(image_set, y, sample_weight=w) == pytest.approx(
        est.score(image_set, y, sample_weight=w), abs=1e-4
    )
    scorer = multitask_scorer()
    assert scorer(onnx, image_set, y) == pytest.approx(scorer(est, image_set, y), abs=1e-4)
    pd.testing.assert_frame_equal(
        est.top_losses(image_set, y, k=5), onnx.top_losses(image_set, y, k=5), atol=1e-4
    )


def test_same_checks_in_both(model, image_set):
    y = image_set[TARGETS]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        model.top_losses(image_set, y, k=0)
    with pytest.raises(ValueError, match="'nope'"):
        model.top_losses(image_set, y, task="nope")
    with pytest.raises(ValueError, match="not tasks of the estimator"):
        model.evaluate(image_set, y.assign(other=1.0))
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        model.score(image_set, y, sample_weight=-_weights(len(y)))
    with pytest.raises(ValueError, match="X has 160 images but y has 10 rows"):
        model.evaluate(image_set, y.iloc[:10].reset_index(drop=True))


# -- one check of X against y, in every consumer ----------------------------------------

CONSUMERS = {
    "evaluate": lambda m, X, y, tmp: m.evaluate(X, y),
    "evaluate per_class": lambda m, X, y, tmp: m.evaluate(X, y, per_class=True),
    "score": lambda m, X, y, tmp: m.score(X, y),
    "scorer": lambda m, X, y, tmp: multitask_scorer()(m, X, y),
    "top_losses": lambda m, X, y, tmp: m.top_losses(X, y),
    "report": lambda m, X, y, tmp: write_report(m, X, y, tmp / "report.html"),
}
FIGURES = {
    "plot_confusion_matrix": lambda m, X, y: plot_confusion_matrix(m, X, y, "color"),
    "plot_regression": lambda m, X, y: plot_regression(m, X, y, "area"),
    "plot_reliability": lambda m, X, y: plot_reliability(m, X, y, "color"),
    "plot_intervals": lambda m, X, y: plot_intervals(m, X, y, "area"),
    "plot_top_losses": lambda m, X, y: plot_top_losses(m, X, y),
    "show_batch": lambda m, X, y: show_batch(m, X, y),
}


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_a_shuffled_y_is_refused_by_every_consumer(model, image_set, consumer, tmp_path):
    shuffled = image_set[TARGETS].sample(frac=1, random_state=0)
    with pytest.raises(ValueError, match=MISALIGNED):
        CONSUMERS[consumer](model, image_set, shuffled, tmp_path)
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("figure", FIGURES)
def test_a_shuffled_y_is_refused_by_every_figure(fitted, image_set, figure):
    shuffled = image_set[TARGETS].sample(frac=1, random_state=0)
    with pytest.raises(ValueError, match=MISALIGNED):
        FIGURES[figure](fitted, image_set, shuffled)


def test_a_shuffled_sample_weight_is_refused(model, image_set):
    y = image_set[TARGETS]
    weights = pd.Series(_weights(len(y)), index=y.index).sample(frac=1, random_state=0)
    message = "sample_weight's index does not match X's"
    with pytest.raises(ValueError, match=message):
        model.evaluate(image_set, y, sample_weight=weights)
    with pytest.raises(ValueError, match=message):
        model.score(image_set, y, sample_weight=weights)


def test_fit_refuses_a_shuffled_sample_weight(image_set):
    from conftest import small_estimator

    weights = pd.Series(_weights(len(image_set)), index=image_set.index)
    with pytest.raises(ValueError, match="sample_weight's index does not match X's"):
        small_estimator(image_set, max_epochs=1).fit(
            image_set, image_set[TARGETS], sample_weight=weights.sample(frac=1, random_state=0)
        )


def test_an_aligned_y_in_another_order_of_rows_is_scored_as_given(models, image_set):
    """Reordering X and y together changes nothing: the check refuses only mismatches."""
    est = models["estimator"]
    order = image_set.sample(frac=1, random_state=1)
    assert est.score(order, order[TARGETS]) == pytest.approx(
        est.score(image_set, image_set[TARGETS]), abs=1e-6
    )


def test_weighted_coverage_leaves_out_rows_of_weight_zero(model, image_set):
    """evaluate(coverage=...) weights the coverage, widths and ECE like every metric."""
    y = image_set[TARGETS]
    weights = (np.arange(len(y)) % 2).astype(float)
    odd = image_set.iloc[1::2]
    pd.testing.assert_frame_equal(
        model.evaluate(image_set, y, coverage=0.8, sample_weight=weights),
        model.evaluate(odd, odd[TARGETS], coverage=0.8),
        atol=1e-9,
    )


# -- intervals: what they need is checked before any image is read ----------------------


def _network_never_runs(self, X):
    raise AssertionError("the network ran")


@pytest.mark.parametrize("coverage", [1.5, 0, 1, float("nan"), -0.1, "0.9", True])
def test_a_bad_coverage_is_refused_before_any_image_is_read(
    model, image_set, coverage, monkeypatch
):
    monkeypatch.setattr(type(model), "_raw_outputs", _network_never_runs)
    with pytest.raises(ValueError, match="coverage must be"):
        model.predict_interval(image_set, coverage)
    with pytest.raises(ValueError, match="coverage must be"):
        model.evaluate(image_set, image_set[TARGETS], coverage=coverage)


def test_a_model_or_task_not_calibrated_is_refused_before_any_image_is_read(
    model, image_set, monkeypatch
):
    from sk_multitask.predicting._calibration import Calibration

    monkeypatch.setattr(type(model), "_raw_outputs", _network_never_runs)
    calibrated = model.calibration_
    tasks = {name: task for name, task in calibrated.tasks.items() if name != "area"}
    monkeypatch.setattr(model, "calibration_", Calibration(tasks))
    with pytest.raises(ValueError, match="task 'area' is not calibrated"):
        model.predict_interval(image_set)
    monkeypatch.setattr(model, "calibration_", None)
    with pytest.raises(ValueError, match="the model is not calibrated"):
        model.predict_interval(image_set)
    with pytest.raises(ValueError, match="the model is not calibrated"):
        model.evaluate(image_set, image_set[TARGETS], coverage=0.9)


def test_the_onnx_predictor_averages_over_the_saved_test_time_views(fitted, image_set, tmp_path):
    """tta is saved with the model: both predictors average the same views."""
    import copy

    est = copy.deepcopy(fitted).set_params(tta=3)
    onnx = OnnxPredictor(est.export_onnx(tmp_path / "tta.onnx"))
    assert onnx.tta == 3
    plain = OnnxPredictor(fitted.export_onnx(tmp_path / "plain.onnx")).predict_raw(image_set)[0]
    averaged, expected = onnx.predict_raw(image_set)[0], est.predict_raw(image_set)[0]
    for task in TARGETS:
        np.testing.assert_allclose(averaged[task], expected[task], atol=1e-4)
    assert not np.allclose(averaged["color"], plain["color"], atol=1e-4)

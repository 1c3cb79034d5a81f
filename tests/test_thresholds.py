"""Decision thresholds: tuned per binary task and label, decided with, saved, exported."""

import argparse
import copy

import numpy as np
import pandas as pd
import pytest
from conftest import reload, small_estimator
from sklearn import metrics as skm
from test_multilabel import tag_targets

from sk_multitask.cli._options import add_options, decision_thresholds, estimator_params
from sk_multitask.datasets import make_multitask_images
from sk_multitask.exceptions import CalibrationWarning
from sk_multitask.predicting._thresholds import (
    THRESHOLD_METRICS,
    ThresholdDecoder,
    fit_thresholds,
    tune_threshold,
)
from sk_multitask.targets._outputs import OutputDecoder

SKLEARN = {
    "f1": skm.f1_score,
    "balanced_accuracy": skm.balanced_accuracy_score,
    "accuracy": skm.accuracy_score,
    "jaccard": skm.jaccard_score,
    "matthews_corrcoef": skm.matthews_corrcoef,
}
SMOKER = OutputDecoder("smoker", "classification", np.dtype(object), np.array(["no", "yes"]))
TAGS = OutputDecoder("tags", "multilabel", np.dtype(object), np.array(["round", "warm"]))
COLOR = OutputDecoder("color", "classification", np.dtype(object), np.array(["b", "g", "r"]))


@pytest.mark.parametrize("metric", sorted(THRESHOLD_METRICS))
@pytest.mark.parametrize("seed", [0, 1])
def test_the_tuned_threshold_is_best_of_every_split_by_scikit_learn_s_metric(metric, seed):
    rng = np.random.default_rng(seed)
    truth = rng.random(300) < 0.1
    p = np.clip(0.3 * truth + rng.random(300) * 0.7, 0, 1).round(2)  # ties too
    best = tune_threshold(p, truth, metric)
    score = SKLEARN[metric](truth, p >= best)
    every = [SKLEARN[metric](truth, p >= t) for t in np.unique(np.r_[p, 1.01])]
    assert score == pytest.approx(max(every), abs=1e-12)


def test_among_equal_thresholds_the_closest_to_half_is_taken():
    # Every threshold between 0.2 and 0.8 splits these rows alike.
    assert tune_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 0.5


def test_a_threshold_decoder_decides_at_its_thresholds_and_keeps_missing_rows():
    logits = np.array([[0.0, -1.0], [0.0, 0.0], [np.nan, np.nan]])  # p(yes) 0.27, 0.5
    labels = ThresholdDecoder(**vars(SMOKER), threshold=0.25).decode(logits)
    assert labels.tolist()[:2] == ["yes", "yes"] and pd.isna(labels[2])
    assert ThresholdDecoder(**vars(SMOKER), threshold=0.3).decode(logits).tolist()[:2] == [
        "no",
        "yes",
    ]
    tags = ThresholdDecoder(**vars(TAGS), threshold=np.array([0.2, 0.9]))
    decided = tags.decode(np.array([[-1.0, 2.0], [-2.0, 3.0], [np.nan, np.nan]]))
    assert decided.tolist() == [["round"], ["warm"], None]  # sigmoid(-1) 0.27, (2) 0.88


def test_given_thresholds_fill_the_rest_with_half_and_bad_ones_are_refused():
    tasks = {"smoker": SMOKER, "tags": TAGS, "color": COLOR}
    assert fit_thresholds({"tags": {"warm": 0.7}}, "f1", tasks) == {
        "smoker": 0.5,
        "tags": {"round": 0.5, "warm": 0.7},
    }
    with pytest.raises(ValueError, match="names 'color', which is not a binary classification"):
        fit_thresholds({"color": 0.3}, "f1", tasks)
    with pytest.raises(ValueError, match=r"decision_thresholds\['tags'\] names 'cold'"):
        fit_thresholds({"tags": {"cold": 0.3}}, "f1", tasks)
    with pytest.raises(ValueError, match=r"decision_thresholds\['smoker'\] must be a number"):
        fit_thresholds({"smoker": 1.5}, "f1", tasks)
    with pytest.warns(CalibrationWarning, match="no validation rows labelled for task 'smoker'"):
        assert fit_thresholds("tuned", "f1", {"smoker": SMOKER}) == {"smoker": 0.5}


def test_the_command_line_reads_none_tuned_or_a_json_object():
    assert decision_thresholds("none") is None and decision_thresholds("tuned") == "tuned"
    assert decision_thresholds('{"smoker": 0.3}') == {"smoker": 0.3}
    parser = argparse.ArgumentParser()
    add_options(parser, "fit")
    args = parser.parse_args(["data.csv", "--targets", "smoker", "--model", "m.skmt",
                              "--decision-thresholds", '{"smoker": 0.3}',
                              "--threshold-metric", "balanced_accuracy"])  # fmt: skip
    params = estimator_params(args)
    assert params["decision_thresholds"] == {"smoker": 0.3}
    assert params["threshold_metric"] == "balanced_accuracy"


@pytest.fixture(scope="module")
def rare(tmp_path_factory):
    """Images with a rare binary target (about 10% positive: the largest shapes), a
    multi-label one and a class; is_valid marks 30% of rows for tuning."""
    df = make_multitask_images(
        500, image_size=16, path=tmp_path_factory.mktemp("rare"), random_state=3
    )
    df["is_valid"] = np.random.default_rng(0).random(len(df)) < 0.3
    y = tag_targets(df)
    y["large"] = np.where(df["area"] > df["area"].quantile(0.9), "yes", "no")
    return df, y[["large", "tags", "color"]]


@pytest.fixture(scope="module")
def tuned(rare):
    df, y = rare
    train = df.iloc[:350]
    est = small_estimator(df, max_epochs=6, decision_thresholds="tuned")
    return est.fit(train, y.iloc[:350])  # the temperature rule holds quietly in fit


def test_tuned_thresholds_give_the_rare_task_a_held_out_f1_no_worse_than_half(rare, tuned):
    df, y = rare
    test = df.iloc[350:]
    assert set(tuned.decision_thresholds_) == {"large", "tags"}  # the class has none
    assert set(tuned.decision_thresholds_["tags"]) == {"round", "warm"}
    at_half = copy.deepcopy(tuned)
    at_half.decision_thresholds_ = None
    truth = y["large"].iloc[350:] == "yes"
    f1_tuned = skm.f1_score(truth, tuned.predict(test)["large"] == "yes")
    f1_half = skm.f1_score(truth, at_half.predict(test)["large"] == "yes")
    assert 0.05 < truth.mean() < 0.2
    assert f1_tuned >= f1_half and f1_tuned > 0.4, (f1_tuned, f1_half)
    # predict_proba is unchanged; the class task is decided as before.
    pd.testing.assert_frame_equal(tuned.predict_proba(test)["large"],
                                  at_half.predict_proba(test)["large"])  # fmt: skip
    assert tuned.predict(test)["color"].equals(at_half.predict(test)["color"])
    # evaluate and score decide as predict does.
    table = tuned.evaluate(test, y.iloc[350:][["large"]])
    accuracy = (tuned.predict(test)["large"] == y["large"].iloc[350:]).mean()
    assert table.loc["large", "accuracy"] == pytest.approx(accuracy)


@pytest.mark.parametrize("how", ["safe file", "joblib", "onnx"])
def test_thresholds_survive_the_safe_file_pickle_and_onnx_with_equal_labels(
    rare, tuned, tmp_path, how
):
    df, _ = rare
    test = df.iloc[350:]
    if how == "onnx":
        from sk_multitask.onnx import OnnxPredictor

        loaded = OnnxPredictor(tuned.export_onnx(tmp_path / "model.onnx"))
    else:
        loaded = reload(tuned, tmp_path, how)
    assert loaded.decision_thresholds_ == tuned.decision_thresholds_
    pd.testing.assert_frame_equal(
        loaded.predict(test)[["large", "tags", "color"]],
        tuned.predict(test)[["large", "tags", "color"]],
    )


def test_calibrate_tunes_the_thresholds_on_its_rows(rare, tuned):
    df, y = rare
    est = copy.deepcopy(tuned)
    rows = df.index[350:450]
    est.threshold_metric = "balanced_accuracy"
    with pytest.warns(CalibrationWarning):  # these rows may hold few misses
        est.calibrate(df.loc[rows], y.loc[rows])
    probabilities = est.predict_proba(df.loc[rows])["large"]["yes"]
    expected = tune_threshold(probabilities, y.loc[rows, "large"] == "yes", "balanced_accuracy")
    assert est.decision_thresholds_["large"] == pytest.approx(expected, abs=1e-6)
    assert est.decision_thresholds_["large"] != tuned.decision_thresholds_["large"]


def test_tuned_without_validation_rows_says_so_in_one_line_per_task(rare):
    df, y = rare
    est = small_estimator(df, max_epochs=1, valid_split=None, decision_thresholds="tuned")
    with pytest.warns(CalibrationWarning, match="no validation rows labelled") as record:
        est.fit(df.iloc[:100], y.iloc[:100])
    assert [str(w.message).split("task ")[1][:7] for w in record] == ["'large'", "'tags',"]
    assert est.decision_thresholds_ == {"large": 0.5, "tags": {"round": 0.5, "warm": 0.5}}


def test_tuned_without_a_task_to_tune_is_refused_before_training(image_set):
    est = small_estimator(image_set, decision_thresholds="tuned")
    with pytest.raises(ValueError, match=r"^decision_thresholds='tuned' tunes .* has none"):
        est.fit(image_set, image_set[["color", "area"]])
    assert not hasattr(est, "net_")


def test_a_threshold_of_a_task_that_has_none_is_refused_before_training(rare):
    df, y = rare
    est = small_estimator(df, max_epochs=1, decision_thresholds={"color": 0.3})
    with pytest.raises(ValueError, match="names 'color', which is not a binary"):
        est.fit(df.iloc[:100], y.iloc[:100])
    assert not hasattr(est, "net_")


def test_top_losses_the_figures_and_the_report_show_the_decided_labels(rare, tuned, tmp_path):
    from sk_multitask.plotting import plot_confusion_matrix
    from sk_multitask.report import write_report

    df, y = rare
    test, truth = df.iloc[350:], y.iloc[350:]
    predicted = tuned.predict(test)
    top = tuned.top_losses(test, truth, k=len(test))
    assert top["large_pred"].equals(predicted["large"].loc[top.index])
    figure = plot_confusion_matrix(tuned, test, truth, "large")
    counts = figure.axes[0].images[0].get_array()
    assert counts.sum(axis=0)[1] == (predicted["large"] == "yes").sum()  # predicted "yes"
    page = write_report(tuned, test, truth, tmp_path / "report.html").read_text()
    threshold = tuned.decision_thresholds_["large"]
    assert f"Decision thresholds (large: {threshold:.3g}; tags: round " in page


def test_a_split_that_half_already_makes_keeps_half():
    # 0.5 separates these rows as well as 0.35 or 0.75 would: no evidence to move it.
    p, truth = np.array([0.1, 0.3, 0.8, 0.9]), np.array([False, False, True, True])
    assert tune_threshold(p, truth) == 0.5
    assert tune_threshold(np.array([0.1, 0.2, 0.4, 0.9]), truth) == pytest.approx(0.3)

"""Calibration maths on synthetic arrays with known noise: temperatures, intervals, sets."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from sk_multitask.evaluation._calibration_metrics import (
    expected_calibration_error,
    interval_scores,
    set_scores,
)
from sk_multitask.exceptions import CalibrationWarning
from sk_multitask.persistence._schema import TEMPERATURE_RANGE
from sk_multitask.predicting._calibration import (
    MIN_MISSES,
    Calibration,
    calibrate,
    fit_temperature,
    nll,
)
from sk_multitask.targets._outputs import OutputDecoder

COVERAGES = [0.8, 0.9, 0.95]
AGE = OutputDecoder("age", "regression", np.dtype(float), mean=30.0, scale=10.0)
KIND = OutputDecoder("kind", "classification", np.dtype(object), classes=np.array(["a", "b", "c"]))
TAGS = OutputDecoder("tags", "multilabel", np.dtype(object), classes=np.array(["x", "y"]))


def _classes(rng, n, sharpness=3.0):
    """True logits, labels drawn from their softmax, and over-confident (doubled) logits."""
    true_logits = rng.normal(size=(n, 3)) * sharpness
    p = np.exp(true_logits)
    p /= p.sum(axis=1, keepdims=True)
    codes = (rng.random(n)[:, None] > p.cumsum(axis=1)).sum(axis=1)
    return true_logits, codes, 2 * true_logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_temperature_equals_scipys_minimum_of_the_nll(seed):
    _, codes, logits = _classes(np.random.default_rng(seed), 3000)
    ours = fit_temperature(logits, codes)
    reference = minimize_scalar(
        lambda t: nll(logits, codes, t),
        bounds=TEMPERATURE_RANGE,
        method="bounded",
        options={"xatol": 1e-10},
    ).x
    assert ours == pytest.approx(reference, rel=1e-6)
    assert ours == pytest.approx(2.0, rel=0.15)  # the logits were doubled


def test_per_label_temperatures_of_a_multilabel_task_equal_scipys_binary_fits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 2)) * 4
    truth = rng.random((400, 2)) < 1 / (1 + np.exp(-logits / 3))  # 3x over-confident
    cells = [[label for label, on in zip("xy", row, strict=True) if on] for row in truth]
    cal = calibrate({"tags": TAGS}, {"tags": logits}, pd.DataFrame({"tags": cells}))
    for j in range(2):

        def binary_nll(t, j=j):
            p = 1 / (1 + np.exp(-logits[:, j] / t))
            return -np.mean(np.where(truth[:, j], np.log(p), np.log1p(-p)))

        reference = minimize_scalar(
            binary_nll, bounds=TEMPERATURE_RANGE, method="bounded", options={"xatol": 1e-10}
        ).x
        assert cal.tasks["tags"].temperature[j] == pytest.approx(reference, rel=1e-5)
    scaled = cal.scale({"tags": logits})["tags"]
    assert np.array_equal(scaled > 0, logits > 0)  # the 0.5 decisions are unchanged
    assert cal.intervals({"tags": TAGS}, {"tags": logits}, pd.RangeIndex(400)).shape == (400, 0)


@pytest.mark.parametrize("coverage", COVERAGES)
def test_regression_intervals_cover_as_asked_with_the_noise_s_width(coverage):
    rng = np.random.default_rng(0)
    sigma, n_cal, n_test = 4.0, 2000, 20000
    # The model predicts the mean (30); the truth is the mean plus Gaussian noise.
    cal = calibrate(
        {"age": AGE},
        {"age": np.zeros((n_cal, 1))},
        pd.DataFrame({"age": 30 + sigma * rng.normal(size=n_cal)}),
    )
    frame = cal.intervals(
        {"age": AGE}, {"age": np.zeros((n_test, 1))}, pd.RangeIndex(n_test), coverage
    )
    truth = 30 + sigma * rng.normal(size=n_test)
    covered, width = interval_scores(truth, frame["age", "lower"], frame["age", "upper"])
    assert covered == pytest.approx(coverage, abs=0.02)
    z = {0.8: 1.2816, 0.9: 1.6449, 0.95: 1.96}[coverage]
    assert width == pytest.approx(2 * z * sigma, rel=0.06)


@pytest.mark.parametrize("coverage", COVERAGES)
def test_classification_sets_cover_as_asked_and_temperature_fixes_the_ece(coverage):
    rng = np.random.default_rng(1)
    _, codes, logits = _classes(rng, 3000)
    labels = np.array(["a", "b", "c"], dtype=object)
    cal = calibrate({"kind": KIND}, {"kind": logits}, pd.DataFrame({"kind": labels[codes]}))
    _, test_codes, test_logits = _classes(rng, 20000)
    frame = cal.intervals({"kind": KIND}, {"kind": test_logits}, pd.RangeIndex(20000), coverage)
    covered, size = set_scores(labels[test_codes], frame["kind", "set"])
    assert covered == pytest.approx(coverage, abs=0.02)
    assert 0.5 < size < 3
    before = expected_calibration_error(KIND.probabilities(test_logits), test_codes)
    after = expected_calibration_error(
        KIND.probabilities(cal.scale({"kind": test_logits})["kind"]), test_codes
    )
    assert before > 0.05 and after < 0.02


def test_missing_cells_and_unreadable_rows_never_enter_the_calibration():
    rng = np.random.default_rng(0)
    outputs = {"age": rng.normal(size=(200, 1)), "kind": rng.normal(size=(200, 3))}
    y = pd.DataFrame({"age": rng.normal(30, 5, 200), "kind": rng.choice(["a", "b", "c"], 200)})
    decoders = {"age": AGE, "kind": KIND}
    plain = calibrate(decoders, outputs, y)
    # Absurd outputs on rows whose cell is missing, and a labelled row that is NaN (unreadable).
    absurd = {
        "age": np.vstack([outputs["age"], [[1e6]], [[np.nan]]]),
        "kind": np.vstack([outputs["kind"], [[1e6, -1e6, 0]], [[np.nan] * 3]]),
    }
    extra = pd.DataFrame({"age": [np.nan, 50.0], "kind": [None, "a"]})
    padded = calibrate(decoders, absurd, pd.concat([y, extra], ignore_index=True))
    for name in decoders:
        assert np.array_equal(padded.tasks[name].scores, plain.tasks[name].scores)
        assert padded.tasks[name].temperature == plain.tasks[name].temperature
        assert padded.tasks[name].n_cells == 200


def test_a_task_with_no_labelled_cell_is_an_error_naming_it():
    y = pd.DataFrame({"age": [1.0, 2.0], "kind": [None, None]})
    outputs = {"age": np.zeros((2, 1)), "kind": np.zeros((2, 3))}
    with pytest.raises(ValueError, match="task 'kind' has no labelled cell"):
        calibrate({"age": AGE, "kind": KIND}, outputs, y)
    with pytest.raises(ValueError, match="task 'kind' has no labelled cell"):
        calibrate({"age": AGE, "kind": KIND}, outputs, y[["age"]])
    cal = calibrate({"age": AGE, "kind": KIND}, outputs, y, skip_unlabelled=True)
    assert list(cal.tasks) == ["age"]
    with pytest.raises(ValueError, match="task 'kind' is not calibrated"):
        cal.intervals({"age": AGE, "kind": KIND}, outputs, pd.RangeIndex(2), coverage=0.5)


def test_too_few_cells_warn_naming_the_task_and_count_and_give_unbounded_intervals():
    y = pd.DataFrame({"age": np.arange(10.0), "kind": ["a", "b"] * 5})
    outputs = {"age": np.zeros((10, 1)), "kind": np.zeros((10, 3))}
    cal = calibrate({"age": AGE, "kind": KIND}, outputs, y)
    frame = cal.intervals({"age": AGE, "kind": KIND}, outputs, pd.RangeIndex(10), 0.9)
    assert np.isfinite(frame["age", "upper"]).all()  # 10 cells: enough for 0.9
    with pytest.warns(
        CalibrationWarning,
        match=r"task 'age' has 10 calibration cells, too few "
        r"for coverage 0.95 \(it needs at least 19\)",
    ):
        frame = cal.intervals({"age": AGE}, outputs, pd.RangeIndex(10), 0.95)
    assert np.isinf(frame["age", "upper"]).all()


@pytest.mark.parametrize("coverage", [0, 1, 1.5, "0.9", True])
def test_a_bad_coverage_is_refused(coverage):
    cal = Calibration({})
    with pytest.raises(ValueError, match="coverage must be"):
        cal.intervals({}, {}, pd.RangeIndex(0), coverage)


def test_missing_rows_give_missing_intervals_and_sets():
    y = pd.DataFrame({"age": np.arange(20.0), "kind": ["a", "b"] * 10})
    outputs = {"age": np.zeros((20, 1)), "kind": np.zeros((20, 3))}
    cal = calibrate({"age": AGE, "kind": KIND}, outputs, y)
    nan = {"age": np.array([[np.nan], [0.0]]), "kind": np.array([[np.nan] * 3, [5.0, 0, 0]])}
    frame = cal.intervals({"age": AGE, "kind": KIND}, nan, pd.Index([7, 8]), 0.8)
    assert frame.index.tolist() == [7, 8]
    assert frame.loc[7].isna().all() and frame.loc[8].notna().all()


def test_beyond_the_kept_scores_a_random_subset_keeps_the_quantile(monkeypatch):
    from sk_multitask.predicting import _calibration as calibration

    monkeypatch.setattr(calibration, "MAX_CALIBRATION_SCORES", 1000)
    rng = np.random.default_rng(0)
    truth = pd.DataFrame({"age": 30 + 10 * rng.normal(size=5000)})
    cal = calibrate({"age": AGE}, {"age": np.zeros((5000, 1))}, truth)
    task = cal.tasks["age"]
    assert (task.n_cells, len(task.scores)) == (5000, 1000)
    assert np.all(np.diff(task.scores) >= 0)
    assert cal.quantile("age", 0.9) == pytest.approx(1.645 * 10, rel=0.1)  # |N(0, 10)|


def test_calibration_labels_never_seen_in_fit_warn_naming_the_task_and_labels():
    y = pd.DataFrame(
        {
            "kind": ["a", "zebra", "b", "yak", "zebra", "c"],
            "tags": [["x"], ["x", "w"], [], ["y"], None, ["w"]],
        }
    )
    outputs = {"kind": np.zeros((6, 3)), "tags": np.zeros((6, 2))}
    with pytest.warns(CalibrationWarning) as record:
        cal = calibrate({"kind": KIND, "tags": TAGS}, outputs, y)
    assert [str(w.message) for w in record] == [
        "task 'kind': labels never seen in fit ('yak', 'zebra'), in 3 calibration cells, are "
        "left out of its calibration (the model has no output for them)",
        "task 'tags': labels never seen in fit ('w'), in 2 calibration cells, are left out of "
        "its calibration (the model has no output for them)",
    ]
    assert (cal.tasks["kind"].n_cells, cal.tasks["tags"].n_cells) == (3, 3)


def test_a_temperature_below_1_needs_ten_misses_and_the_rule_warns_naming_the_task():
    # Confident, right on all but `misses` cells: the NLL alone wants a temperature below 1.
    rng = np.random.default_rng(0)
    labels = np.array(["a", "b", "c"], dtype=object)
    codes = rng.integers(0, 3, 200)
    logits = np.eye(3)[codes] * 2.0
    for misses in (0, 9, 10):
        wrong = codes.copy()
        wrong[:misses] = (codes[:misses] + 1) % 3
        y = pd.DataFrame({"kind": labels[wrong]})
        assert fit_temperature(logits, wrong) < 1
        if misses < MIN_MISSES:
            with pytest.warns(
                CalibrationWarning,
                match=rf"task 'kind': 200 calibration cells with {misses} misses \(fewer than 10\)",
            ):
                cal = calibrate({"kind": KIND}, {"kind": logits}, y)
            assert cal.tasks["kind"].temperature == 1.0
        else:
            cal = calibrate({"kind": KIND}, {"kind": logits}, y)
            assert cal.tasks["kind"].temperature == fit_temperature(logits, wrong) < 1


def test_a_multilabel_label_without_misses_keeps_temperature_1_and_is_named():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 2)) * 4
    truth = logits > 0  # label x: right everywhere; label y: 3x over-confident
    truth[:, 1] = rng.random(300) < 1 / (1 + np.exp(-logits[:, 1] / 3))
    cells = [[label for label, on in zip("xy", row, strict=True) if on] for row in truth]
    with pytest.warns(
        CalibrationWarning,
        match=r"task 'tags' \(labels 'x'\): 300 calibration cells with at most 0 misses",
    ):
        cal = calibrate({"tags": TAGS}, {"tags": logits}, pd.DataFrame({"tags": cells}))
    assert cal.tasks["tags"].temperature[0] == 1.0 and cal.tasks["tags"].temperature[1] > 2


def test_lac_top_sets_are_never_empty_hold_the_lac_sets_and_cover_at_least_as_often():
    rng = np.random.default_rng(3)
    _, codes, logits = _classes(rng, 2000)
    labels = np.array(["a", "b", "c"], dtype=object)
    cal = calibrate({"kind": KIND}, {"kind": logits}, pd.DataFrame({"kind": labels[codes]}))
    _, test_codes, test_logits = _classes(rng, 5000)
    index = pd.RangeIndex(5000)
    lac = cal.intervals({"kind": KIND}, {"kind": test_logits}, index, 0.7, "lac")["kind", "set"]
    # Coverage 0.7, below the accuracy: the LAC sets of unsure rows are empty.
    top = cal.intervals({"kind": KIND}, {"kind": test_logits}, index, 0.7)["kind", "set"]
    assert lac.map(len).eq(0).mean() > 0.05 and top.map(len).min() == 1
    assert all(set(a) <= set(b) for a, b in zip(lac, top, strict=True))
    assert (top.map(len) - lac.map(len)).isin([0, 1]).all()
    covered_lac, _ = set_scores(labels[test_codes], lac)
    covered_top, _ = set_scores(labels[test_codes], top)
    assert covered_top >= covered_lac >= 0.68


def test_a_bad_set_method_is_refused_naming_it():
    cal = calibrate({"kind": KIND}, {"kind": np.zeros((30, 3))},
                    pd.DataFrame({"kind": ["a", "b", "c"] * 10}))  # fmt: skip
    refused = r"set_method must be one of \['lac_top', 'lac'\]; got 'aps'"
    with pytest.raises(ValueError, match=refused):
        cal.intervals({"kind": KIND}, {"kind": np.eye(3)}, pd.RangeIndex(3), 0.9, "aps")

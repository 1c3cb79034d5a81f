"""Calibration, intervals and test-time augmentation through a real fitted model."""

import copy
import json
import re

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import reload, small_estimator
from sklearn.utils._param_validation import InvalidParameterError

from sk_multitask.datasets import make_multitask_images
from sk_multitask.evaluation._calibration_metrics import interval_scores, set_scores
from sk_multitask.exceptions import CalibrationWarning

TASKS = ["color", "shape", "noisy_area"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """600 images; ``noisy_area`` is the area plus Gaussian noise of known width (0.05)."""
    df = make_multitask_images(
        600, image_size=16, missing_rate=0.1, path=tmp_path_factory.mktemp("sure"), random_state=1
    )
    df["noisy_area"] = df["area"] + np.random.default_rng(0).normal(0, 0.05, len(df))
    return df


@pytest.fixture(scope="module")
def model(data):
    """Fitted on the first 200 rows, no validation (calibrated by hand below)."""
    train = data.iloc[:200]
    return small_estimator(data, valid_split=None, max_epochs=3).fit(train, train[TASKS])


def test_fit_without_validation_rows_is_not_calibrated(model, data):
    assert model.calibration_ is None
    with pytest.raises(ValueError, match="not calibrated.*calibrate"):
        model.predict_interval(data.head(2))


@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_intervals_and_sets_of_a_fitted_model_cover_held_out_rows_as_asked(model, data, coverage):
    # Calibrate on one half of the held-out rows, measure on the other.
    calibration, test = data.iloc[200:400], data.iloc[400:]
    model.calibrate(calibration, calibration[TASKS])
    frame = model.predict_interval(test, coverage)
    assert frame.index.equals(test.index)
    assert frame.columns.tolist() == [
        ("color", "set"), ("shape", "set"), ("noisy_area", "lower"), ("noisy_area", "upper"),
    ]  # fmt: skip
    labelled = test["noisy_area"].notna()
    covered, width = interval_scores(
        test["noisy_area"][labelled],
        frame["noisy_area", "lower"][labelled],
        frame["noisy_area", "upper"][labelled],
    )
    # 200 rows: the coverage's standard error is about 0.025.
    assert covered == pytest.approx(coverage, abs=0.08)
    assert width > 2 * 1.28 * 0.05  # never narrower than the known noise allows
    for task in ("color", "shape"):
        labelled = test[task].notna()
        covered, size = set_scores(test[task][labelled], frame[task, "set"][labelled])
        assert covered == pytest.approx(coverage, abs=0.08)
        assert all(set(labels) <= set(model.tasks_[task].classes_) for labels in frame[task, "set"])


def test_predict_proba_is_temperature_scaled_after_calibrate(model, data):
    held_out = data.iloc[200:400]
    model.calibrate(held_out, held_out[TASKS])
    temperature = model.calibration_.tasks["color"].temperature
    logits = model.predict_raw(data.head(5))[0]["color"] / temperature
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(data.head(5))["color"], expected, rtol=1e-5)
    assert model.calibration_.tasks["color"].n_cells == held_out["color"].notna().sum()
    table = model.evaluate(data.iloc[400:], data.iloc[400:][TASKS], coverage=0.9)
    assert 0 <= table.loc["color", "ece"] <= 1
    assert table.loc["noisy_area", "mean_width"] > 0 and np.isnan(table.loc["color", "mean_width"])


def test_a_calibration_task_without_labels_is_an_error_and_few_cells_warn(model, data):
    held_out = data.iloc[200:400]
    with pytest.raises(ValueError, match="task 'shape' has no labelled cell"):
        model.calibrate(held_out, held_out[["color", "noisy_area"]])
    few = data.iloc[200:210]
    with pytest.warns(CalibrationWarning, match="cannot support a temperature below 1") as held:
        model.calibrate(few, few[TASKS])  # too few misses for a temperature below 1
    assert [str(w.message).split(" misses")[0] for w in held] == [
        "task 'color': 9 calibration cells with 3", "task 'shape': 10 calibration cells with 5"
    ]
    with pytest.warns(CalibrationWarning) as record:
        frame = model.predict_interval(data.head(2), 0.95)
    assert [str(w.message).split(", too few")[0] for w in record] == [
        f"task {task!r} has {few[task].notna().sum()} calibration cells" for task in TASKS
    ]
    assert (
        frame["color", "set"].map(len).eq(5).all() and np.isinf(frame["noisy_area", "upper"]).all()
    )


def test_fit_calibrates_on_its_validation_rows(data):
    part = data.iloc[:200]
    est = small_estimator(part, max_epochs=1).fit(part, part[TASKS])
    valid = part[part["is_valid"]]
    for task in TASKS:
        assert est.calibration_.tasks[task].n_cells == valid[task].notna().sum()
    assert est.data_sizes_.loc["color", "valid"] == valid["color"].notna().sum()


@pytest.mark.parametrize("how", ["safe file", "joblib", "onnx"])
def test_the_calibration_round_trips_with_equal_intervals(model, data, tmp_path, how):
    held_out = data.iloc[200:400]
    model.calibrate(held_out, held_out[TASKS])
    expected = model.predict_interval(data.head(20), 0.8)
    if how == "onnx":
        from sk_multitask.onnx import OnnxPredictor

        loaded = OnnxPredictor(model.export_onnx(tmp_path / "model.onnx"))
        got = loaded.predict_interval(data.head(20), 0.8)
        pd.testing.assert_frame_equal(got[["color", "shape"]], expected[["color", "shape"]])
        np.testing.assert_allclose(got["noisy_area"], expected["noisy_area"], atol=1e-4)
        proba = loaded.predict_proba(data.head(20))["color"]
        np.testing.assert_allclose(proba, model.predict_proba(data.head(20))["color"], atol=1e-4)
        return
    loaded = reload(model, tmp_path, how)
    for task in TASKS:
        np.testing.assert_array_equal(
            loaded.calibration_.tasks[task].scores, model.calibration_.tasks[task].scores
        )
    pd.testing.assert_frame_equal(loaded.predict_interval(data.head(20), 0.8), expected)


def test_unreadable_images_get_missing_intervals(model, data, tmp_path):
    held_out = data.iloc[200:400]
    model.calibrate(held_out, held_out[TASKS])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    X = pd.DataFrame({"filename": [data["filename"][0], str(bad)]})
    est = joblib.load(joblib.dump(model, tmp_path / "m.joblib")[0])
    est.set_params(on_bad_image="skip")
    with pytest.warns(UserWarning, match="bad.jpg"):
        frame = est.predict_interval(X, 0.9)
    assert frame.iloc[0].notna().all() and frame.iloc[1].isna().all()


def test_tta_averages_the_outputs_of_the_plain_and_flipped_images(model, data):
    import os

    from PIL import Image

    root = data.attrs["image_root"]
    pixels = np.stack(
        [np.asarray(Image.open(os.path.join(root, f)).convert("RGB")) for f in data["filename"][:8]]
    )
    plain = model.predict_raw(pixels)[0]
    flipped = model.predict_raw(pixels[:, :, ::-1].copy())[0]
    tta = joblib.load(joblib.dump(model, os.path.join(root, "m.joblib"))[0]).set_params(tta=1)
    averaged = tta.predict_raw(pixels)[0]
    for task in TASKS:
        np.testing.assert_allclose(averaged[task], (plain[task] + flipped[task]) / 2, atol=1e-5)
    assert not np.allclose(tta.set_params(tta=5).predict_raw(pixels)[0]["color"], averaged["color"])


@pytest.mark.parametrize("tta", [-1, 12, 1.5])
def test_a_bad_tta_is_refused(data, tta):
    with pytest.raises(InvalidParameterError, match="'tta' parameter"):
        small_estimator(data, tta=tta).fit(data.head(8), data.head(8)[TASKS])


def test_the_reliability_diagram_and_interval_plot_show_the_calibration(model, data):
    from sk_multitask.plotting import plot_intervals, plot_reliability

    held_out, test = data.iloc[200:400], data.iloc[400:]
    model.calibrate(held_out, held_out[TASKS])
    (ax,) = plot_reliability(model, test, test[TASKS], "color").axes
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[0].startswith("raw, ECE ") and legend[1].startswith("calibrated (T = ")
    (ax,) = plot_intervals(model, test, test[TASKS], "noisy_area", coverage=0.8).axes
    labelled = test["noisy_area"].notna().sum()
    assert f"of {labelled} labelled images inside the 80% intervals" in ax.get_title()
    with pytest.raises(ValueError, match="task 'color' is a classification"):
        plot_intervals(model, test, test[TASKS], "color")


def test_the_cli_writes_intervals_and_evaluates_coverage_and_the_report_shows_both(
    model, data, tmp_path
):
    from sk_multitask.cli import main

    held_out, test = data.iloc[200:400], data.iloc[400:440]
    model.calibrate(held_out, held_out[TASKS])
    path = model.save(tmp_path / "model.skmt")
    test.to_csv(tmp_path / "test.csv", index=False)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(tmp_path / "test.csv"), "--model", str(path),
                 "--interval", "0.8", "--out", str(out)]) == 0  # fmt: skip
    written = pd.read_csv(out)
    expected = model.predict_interval(test, 0.8)
    np.testing.assert_allclose(
        written["noisy_area_upper"], expected["noisy_area", "upper"], rtol=1e-6
    )
    assert written["color_set"].map(json.loads).tolist() == expected["color", "set"].tolist()
    folder = tmp_path / "evaluation"
    assert main(["evaluate", str(tmp_path / "test.csv"), "--model", str(path),
                 "--interval", "0.8", "--out", str(folder)]) == 0  # fmt: skip
    metrics = pd.read_csv(folder / "metrics.csv", index_col="task")
    assert {"ece", "coverage", "mean_width", "mean_set_size"} <= set(metrics.columns)
    assert 0 <= metrics.loc["noisy_area", "coverage"] <= 1
    report = (folder / "report.html").read_text()
    assert "<h2>Reliability diagram: color</h2>" in report
    assert "<h2>Prediction intervals: noisy_area</h2>" in report


@pytest.mark.parametrize(
    "change",
    [
        lambda task: task.update(temperature=1e3),  # out of TEMPERATURE_RANGE
        lambda task: task.update(temperature=float("nan")),
        lambda task: task["scores"].__setitem__(0, -1.0),
        lambda task: task.update(scores=[0.5] * 20_001),  # over MAX_CALIBRATION_SCORES
        lambda task: task.update(kind="regression"),  # a temperature but no regression's
        lambda task: task.update(extra=1),
    ],
)
def test_a_calibration_outside_the_schema_is_refused(model, data, change):
    from sk_multitask.persistence._document import model_document, parse_document

    held_out = data.iloc[200:400]
    document = model_document(model.calibrate(held_out, held_out[TASKS]))
    parse_document(document, "m.skmt")  # as written: accepted
    change(document["calibration"]["tasks"][0][1])  # the color task's
    with pytest.raises(ValueError, match="'m.skmt'.*calibration is not a list"):
        parse_document(document, "m.skmt")


def test_calibrate_warns_naming_the_labels_fit_never_saw(model, data):
    held_out = data.iloc[200:260].copy()
    held_out.loc[held_out.index[:3], "color"] = "mauve"
    with pytest.warns(CalibrationWarning, match=r"task 'color': labels never seen in fit "
                      r"\('mauve'\), in 3 calibration cells, are left out") as record:  # fmt: skip
        model.calibrate(held_out, held_out[TASKS])
    assert record[0].filename == __file__  # the warning points at the call
    assert model.calibration_.tasks["color"].n_cells == held_out["color"].notna().sum() - 3


def _twice(tasks):
    tasks.append(tasks[0])


def _count_off(tasks):
    tasks[0][1]["n_cells"] += 1


def _score_above_one(tasks):
    tasks[0][1]["scores"][-1] = 1.5


@pytest.mark.parametrize(
    "change, message",
    [
        (_twice, r"calibration lists task 'color' twice"),
        (_count_off, r"the calibration of task 'color' counts n_cells=\d+ but holds \d+ scores"),
        (_score_above_one, r"the calibration of task 'color' has scores above 1 \(1.5\)"),
    ],
    ids=["a task twice", "a count off", "a score above 1"],
)
def test_a_calibration_at_odds_with_itself_is_refused_naming_the_file(
    model, data, tmp_path, change, message
):
    import zipfile

    from sk_multitask import load
    from sk_multitask.persistence import _safe_file as safe_file

    held_out = data.iloc[200:400]
    saved = model.calibrate(held_out, held_out[TASKS]).save(tmp_path / "model.skmt")
    load(saved)  # as written: loads
    tampered = tmp_path / "tampered.skmt"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            content = src.read(name)
            if name == safe_file.DOCUMENT:
                document = json.loads(content)
                change(document["calibration"]["tasks"])
                content = json.dumps(document)
            dst.writestr(name, content)
    with pytest.raises(ValueError, match=rf"'{re.escape(str(tampered))}'.*{message}"):
        load(tampered)


def test_calibrating_on_rows_all_classified_right_makes_no_row_surer(model, data):
    est = copy.deepcopy(model)
    est.calibration_ = None  # the network's own probabilities
    held_out = data.iloc[200:]
    before, predicted = est.predict_proba(held_out), est.predict(held_out)
    right = held_out.index[
        (predicted["color"] == held_out["color"]) & (predicted["shape"] == held_out["shape"])
    ]
    assert len(right) > 50
    # The NLL of such rows falls with the temperature down to its bound (0.01).
    with pytest.warns(CalibrationWarning, match="with 0 misses") as record:
        est.calibrate(held_out.loc[right], held_out.loc[right, TASKS])
    assert {str(w.message)[:13] for w in record} == {"task 'color':", "task 'shape':"}
    after = est.predict_proba(held_out)
    for task in ("color", "shape"):
        assert est.calibration_.tasks[task].temperature == 1.0
        assert (after[task].max(axis=1) <= before[task].max(axis=1)).all()


def test_a_bad_set_method_is_refused_before_any_image_is_read(model):
    with pytest.raises(ValueError, match="set_method must be one of"):
        model.predict_interval(["no/such/image.png"], 0.9, set_method="raps")
    with pytest.raises(ValueError, match="set_method must be one of"):
        model.evaluate(["no/such/image.png"], pd.DataFrame({"color": ["red"]}), coverage=0.9,
                       set_method=None)  # fmt: skip

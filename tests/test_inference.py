"""The one inference path: every method that runs the network follows one rule for
an image that cannot be read (and the torch-free ONNX predictor follows it too)."""

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TARGETS
from PIL import Image

from sk_multitask.evaluation._metrics import scorable_rows
from sk_multitask.exceptions import BadImageError, BadImageWarning
from sk_multitask.inputs._bad_images import BadImageRecords, decode_or_record, mark_unreadable
from sk_multitask.report import write_report

BAD = 1  # the middle row of [good, truncated JPEG, good]


@pytest.fixture(scope="module")
def three_rows(image_set, tmp_path_factory):
    """[good, truncated JPEG, good] as absolute paths; every target cell labelled."""
    folder = tmp_path_factory.mktemp("three")
    labelled = image_set[image_set[TARGETS].notna().all(axis=1)].iloc[:3].copy()
    paths = []
    for position, name in enumerate(labelled["filename"]):
        path = folder / f"{position}.jpg"
        shutil.copy(Path(image_set.attrs["image_root"]) / name, path)
        paths.append(str(path))
    truncated = Path(paths[BAD])
    Image.new("RGB", (64, 64), (200, 30, 30)).save(truncated, format="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:300])
    return labelled.assign(filename=paths)


def _good(frame):
    return frame.drop(index=frame.index[BAD])


def test_transform_gives_a_nan_row_for_an_unreadable_image(fitted_skip, three_rows):
    with pytest.warns(BadImageWarning, match="1 image file could not be read"):
        features = fitted_skip.transform(three_rows)
    assert features.shape == (3, fitted_skip._n_features_out)
    assert np.isnan(features[BAD]).all()
    np.testing.assert_allclose(
        features[[0, 2]], fitted_skip.transform(_good(three_rows)), rtol=1e-5, atol=1e-6
    )


def test_predict_and_predict_proba_give_a_missing_row(fitted_skip, three_rows):
    with pytest.warns(BadImageWarning, match="given missing predictions"):
        predicted = fitted_skip.predict(three_rows)
    assert predicted.iloc[BAD].isna().all()
    pd.testing.assert_frame_equal(_good(predicted), fitted_skip.predict(_good(three_rows)))
    with pytest.warns(BadImageWarning):
        proba = fitted_skip.predict_proba(three_rows)
    for frame in proba.values():
        assert frame.iloc[BAD].isna().all()
        np.testing.assert_allclose(_good(frame).sum(axis=1), 1.0, atol=1e-5)


def test_evaluate_leaves_the_missing_row_out(fitted_skip, three_rows):
    y = three_rows[TARGETS]
    with pytest.warns(BadImageWarning):
        table = fitted_skip.evaluate(three_rows, y)
    assert table["n_labelled"].tolist() == [2, 2, 2]
    pd.testing.assert_frame_equal(table, fitted_skip.evaluate(_good(three_rows), _good(y)))


def test_evaluate_per_class_leaves_the_missing_row_out(fitted_skip, three_rows):
    # Was: TypeError '<' not supported between instances of 'float' and 'str'.
    y = three_rows[TARGETS]
    with pytest.warns(BadImageWarning):
        table = fitted_skip.evaluate(three_rows, y, per_class=True)
    assert table["support"].groupby(level="task").sum().to_dict() == {"color": 2, "shape": 2}
    expected = fitted_skip.evaluate(_good(three_rows), _good(y), per_class=True)
    pd.testing.assert_frame_equal(table, expected)


def test_top_losses_and_score_leave_the_missing_row_out(fitted_skip, three_rows):
    y = three_rows[TARGETS]
    with pytest.warns(BadImageWarning):
        top = fitted_skip.top_losses(three_rows, y, k=3)
    assert sorted(top.index) == sorted(_good(three_rows).index)
    assert three_rows["filename"].iloc[BAD] not in set(top["image"])
    with pytest.warns(BadImageWarning):
        score = fitted_skip.score(three_rows, y)
    assert score == pytest.approx(fitted_skip.score(_good(three_rows), _good(y)))


def test_the_report_is_written_with_an_unreadable_image(fitted_skip, three_rows, tmp_path):
    with pytest.warns(BadImageWarning):
        path = write_report(fitted_skip, three_rows, three_rows[TARGETS], tmp_path / "r.html")
    assert "Confusion matrix: color" in path.read_text()


def test_raise_names_the_file_in_transform(fitted_skip_copy, three_rows):
    fitted_skip_copy.set_params(on_bad_image="raise")
    with pytest.raises(BadImageError, match=re.escape(three_rows["filename"].iloc[BAD])):
        fitted_skip_copy.transform(three_rows)


def test_onnx_predictor_gives_a_missing_row(fitted_skip, three_rows, tmp_path):
    pytest.importorskip("onnxruntime")
    from sk_multitask.onnx import OnnxPredictor

    path = fitted_skip.export_onnx(tmp_path / "model.onnx")
    predictor = OnnxPredictor(path)
    assert predictor.on_bad_image == "skip"  # the estimator's
    with pytest.warns(BadImageWarning, match="1 image file could not be read"):
        predicted = predictor.predict(three_rows)
    assert predicted.iloc[BAD].isna().all()
    with pytest.warns(BadImageWarning):
        expected = fitted_skip.predict(three_rows)
    pd.testing.assert_frame_equal(predicted[["color", "shape"]], expected[["color", "shape"]])
    with pytest.warns(BadImageWarning):
        table = predictor.evaluate(three_rows, three_rows[TARGETS])
    assert table["n_labelled"].tolist() == [2, 2, 2]
    with pytest.raises(BadImageError, match=re.escape(three_rows["filename"].iloc[BAD])):
        OnnxPredictor(path, on_bad_image="raise").predict(three_rows)
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        OnnxPredictor(path, on_bad_image="ignore")


def test_decode_or_record_and_mark_unreadable(tmp_path):
    bad_file = tmp_path / "bad.jpg"
    bad_file.write_bytes(b"not an image")
    records = BadImageRecords()
    assert decode_or_record(str(bad_file), 8, 3, records) is None
    assert list(records.collect()) == [3]
    with pytest.raises(BadImageError, match="bad.jpg"):
        decode_or_record(str(bad_file), 8, 3)
    outputs = np.zeros((5, 2))
    with pytest.warns(BadImageWarning, match="1 image file could not be read"):
        mark_unreadable(outputs, records.collect())
    assert np.isnan(outputs[3]).all() and not np.isnan(np.delete(outputs, 3, axis=0)).any()


def test_scorable_rows_need_a_truth_and_a_prediction():
    truth = pd.Series(["a", None, "b", "c"])
    outputs = np.array([[0.0, 1.0], [1.0, 0.0], [np.nan, np.nan], [2.0, 1.0]])
    np.testing.assert_array_equal(scorable_rows(truth, outputs), [0, 3])


def test_the_disk_cache_follows_the_rule(fitted_skip_copy, three_rows, tmp_path):
    # Was: the disk cache raised BadImageError whatever on_bad_image said.
    missing = three_rows.assign(filename=three_rows["filename"].tolist()[:2] + ["gone.jpg"])
    est = fitted_skip_copy.set_params(cache_dir=tmp_path / "cache")
    for _ in range(2):  # building the cache, then reading it
        with pytest.warns(BadImageWarning, match="1 image file could not be read"):
            features = est.transform(three_rows)
        assert np.isnan(features[BAD]).all() and not np.isnan(features[[0, 2]]).any()
    with pytest.warns(BadImageWarning, match="2 image files could not be read"):
        predicted = est.predict(missing)
    assert predicted.iloc[1:].isna().all().all() and predicted.iloc[0].notna().all()
    est.set_params(on_bad_image="raise")
    with pytest.raises(BadImageError, match=re.escape(three_rows["filename"].iloc[BAD])):
        est.predict(three_rows)

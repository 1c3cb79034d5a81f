"""ONNX export, and the torch-free OnnxPredictor against the estimator."""

import json
import os

import numpy as np
import onnx
import pandas as pd
import pytest
from conftest import TARGETS, TORCH, run_python_without, small_estimator

from sk_multitask.datasets import make_multitask_images
from sk_multitask.inputs._decoding import read_image
from sk_multitask.onnx import OnnxPredictor
from sk_multitask.onnx._predictor import METADATA_KEY
from sk_multitask.persistence._document import MAX_DOCUMENT_BYTES

TOLERANCE = {"atol": 1e-4, "rtol": 0}


def pixel_array(df, size):
    root = df.attrs["image_root"]
    return np.stack([read_image(os.path.join(root, f), size) for f in df["filename"]])


def assert_parity(est, predictor, X):
    """Identical labels; probabilities and regression values within 1e-4."""
    expected, predicted = est.predict(X), predictor.predict(X)
    for name, task in est.tasks_.items():
        if task.kind == "classification":
            pd.testing.assert_series_equal(predicted[name], expected[name])
        else:
            pd.testing.assert_series_equal(predicted[name], expected[name], **TOLERANCE)
    probas = predictor.predict_proba(X)
    for name, proba in est.predict_proba(X).items():
        pd.testing.assert_frame_equal(probas[name], proba, **TOLERANCE)


def test_the_file_holds_the_graph_and_the_model_document(fitted, fitted_onnx):
    model = onnx.load(fitted_onnx)
    onnx.checker.check_model(model)
    (images,) = model.graph.input
    shape = [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim]
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert shape[1:] == [3, 16, 16] and isinstance(shape[0], str)  # a dynamic batch
    document = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert [task["name"] for task in document["tasks"]] == TARGETS
    assert document["image_size"] == [16, 16]
    assert document["params"]["backbone"] == "simple_cnn"
    assert document["format_version"] == 2
    assert document["data_sizes"]["index"] == ["rows", *TARGETS]
    assert len(document["history"]) == len(fitted.history_) == 2


def test_the_predictor_knows_what_the_fitted_model_knows(fitted, fitted_onnx):
    predictor = OnnxPredictor(fitted_onnx)
    pd.testing.assert_frame_equal(predictor.data_sizes_, fitted.data_sizes_)
    assert predictor.skipped_images_ == fitted.skipped_images_ == []
    assert [row["epoch"] for row in predictor.history_] == [1, 2]
    assert predictor.history_[-1]["valid_loss"] == pytest.approx(fitted.history_[-1, "valid_loss"])
    assert predictor.image_size_ == predictor.image_size == (16, 16)
    assert not hasattr(predictor, "best_epoch_")  # no early stopping in this fit


def rewrite_metadata(exported, out, change):
    """Copy the ONNX file ``exported`` to ``out``, its document changed by ``change``."""
    model = onnx.load(exported)
    props = {p.key: p.value for p in model.metadata_props}
    document = change(json.loads(props[METADATA_KEY]))
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(document)})
    onnx.save(model, out)
    return out


def _first_task(document, **change):
    return document | {"tasks": [document["tasks"][0] | change, *document["tasks"][1:]]}


def _without_image_col(document):
    params = {k: v for k, v in document["params"].items() if k != "image_col"}
    return document | {"params": params}


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d | {"skipped_images": "all"}, "incomplete.*skipped_images is not a list"),
        (lambda d: d | {"image_size": [7000, 7000]}, "image_size is not two integers from 1"),
        (lambda d: d | {"extra": 1}, r"unknown keys \['extra'\]"),
        (
            lambda d: _first_task(d, classes={"dtype": "<U50000000", "values": ["a", "b"]}),
            "dtype '<U50000000'",
        ),
        (
            lambda d: _first_task(d, classes={"dtype": "<U1", "values": ["a", "b", "c", "d"]}),
            "tasks have 8 outputs in all, the ONNX graph 9",
        ),
        (_without_image_col, r"has no parameters \['image_col'\]"),
        (lambda d: d | {"history": " " * MAX_DOCUMENT_BYTES}, "model document is over"),
    ],
)
def test_a_metadata_document_outside_the_schema_is_refused(fitted_onnx, tmp_path, change, match):
    wrong = rewrite_metadata(fitted_onnx, tmp_path / "wrong.onnx", change)
    with pytest.raises(ValueError, match=f"wrong.onnx.*{match}"):
        OnnxPredictor(wrong)


def test_run_time_parameters_in_the_metadata_are_ignored(fitted_onnx, tmp_path):
    hostile = {"cache_dir": str(tmp_path / "cache"), "num_workers": 64, "callbacks": [1]}
    path = rewrite_metadata(
        fitted_onnx, tmp_path / "hostile.onnx", lambda d: d | {"params": d["params"] | hostile}
    )
    predictor = OnnxPredictor(path)
    assert not set(hostile) & set(predictor.params)
    assert predictor.batch_size == OnnxPredictor(fitted_onnx).batch_size


def test_simple_cnn_parity_for_paths_and_arrays(fitted, fitted_onnx, image_set):
    predictor = OnnxPredictor(fitted_onnx, batch_size=48)  # batches of 48 and of 16
    assert list(predictor.tasks_) == TARGETS
    assert_parity(fitted, predictor, image_set)
    root = image_set.attrs["image_root"]
    paths = [os.path.join(root, f) for f in image_set["filename"][:20]]
    assert_parity(fitted, predictor, paths)
    assert_parity(fitted, predictor, pd.Series(paths, index=np.arange(20) * 3))
    assert_parity(fitted, predictor, pixel_array(image_set, 16))
    bigger = pixel_array(image_set.iloc[:40], 28)  # resized by the shared code
    assert_parity(fitted, predictor, bigger)
    assert_parity(fitted, predictor, bigger[..., 0])  # grayscale


def test_evaluate_matches_the_estimator(fitted, fitted_onnx, image_set):
    y = image_set[TARGETS]
    table = OnnxPredictor(fitted_onnx).evaluate(image_set, y)
    expected = fitted.evaluate(image_set, y)
    pd.testing.assert_frame_equal(table, expected, **TOLERANCE)


@pytest.mark.slow
def test_resnet18_parity_with_resized_files(tmp_path):
    df = make_multitask_images(48, image_size=32, path=tmp_path / "images", random_state=1)
    est = small_estimator(
        df, backbone="resnet18", image_size=(20, 24), max_epochs=1, batch_size=16
    )
    est.fit(df, df[TARGETS])
    predictor = OnnxPredictor(est.export_onnx(tmp_path / "resnet18.onnx"))
    assert_parity(est, predictor, df)  # 32 px files resized to 20 x 24
    assert_parity(est, predictor, pixel_array(df, 32))


def test_the_predictor_runs_where_torch_cannot_be_imported(
    fitted, fitted_onnx, image_set, tmp_path
):
    image_set.to_csv(tmp_path / "data.csv", index=False)
    result = run_python_without(
        f"""
        import pandas as pd
        from sk_multitask.onnx import OnnxPredictor

        predictor = OnnxPredictor({str(fitted_onnx)!r})
        data = pd.read_csv({str(tmp_path / "data.csv")!r})
        predictor.predict(data).to_pickle({str(tmp_path / "pred.pkl")!r})
        predictor.predict_proba(data)["shape"].to_pickle({str(tmp_path / "shape.pkl")!r})
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch unavailable")
        """,
        blocked=(*TORCH, "sklearn"),  # scipy stays: its softmax and sigmoid give the probabilities
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch unavailable"
    data = pd.read_csv(tmp_path / "data.csv")
    expected = fitted.predict(data)
    predicted = pd.read_pickle(tmp_path / "pred.pkl")
    pd.testing.assert_frame_equal(predicted[["color", "shape"]], expected[["color", "shape"]])
    pd.testing.assert_series_equal(predicted["area"], expected["area"], **TOLERANCE)
    shape = pd.read_pickle(tmp_path / "shape.pkl")
    pd.testing.assert_frame_equal(shape, fitted.predict_proba(data)["shape"], **TOLERANCE)


def test_files_that_are_not_sk_multitask_onnx_are_refused(fitted_onnx, tmp_path):
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        OnnxPredictor(tmp_path / "absent.onnx")
    (tmp_path / "notes.onnx").write_text("hello")
    with pytest.raises(ValueError, match="notes.onnx.*not an ONNX model"):
        OnnxPredictor(tmp_path / "notes.onnx")

    model = onnx.load(fitted_onnx)
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "bare.onnx")
    with pytest.raises(ValueError, match="not one exported by sk-multitask"):
        OnnxPredictor(tmp_path / "bare.onnx")

    props = {p.key: p.value for p in onnx.load(fitted_onnx).metadata_props}
    document = json.loads(props[METADATA_KEY]) | {"format_version": 99}
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(document)})
    onnx.save(model, tmp_path / "newer.onnx")
    with pytest.raises(ValueError, match="format version 99.*upgrade sk-multitask"):
        OnnxPredictor(tmp_path / "newer.onnx")


@pytest.mark.parametrize("batch_size", [-1, 0, 2.5, True, "8"])
def test_a_bad_batch_size_is_refused(fitted_onnx, batch_size):
    with pytest.raises(ValueError, match=r"batch_size must be a positive int; got"):
        OnnxPredictor(fitted_onnx, batch_size=batch_size)


def test_a_bad_batch_size_in_the_metadata_is_refused(fitted_onnx, tmp_path, image_set):
    model = onnx.load(fitted_onnx)
    document = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    document["params"]["batch_size"] = -1  # once returned uninitialised memory
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(document)})
    onnx.save(model, tmp_path / "negative.onnx")
    with pytest.raises(ValueError, match=r"negative.onnx.*batch_size must be a positive int"):
        OnnxPredictor(tmp_path / "negative.onnx")
    # A batch size given by the caller replaces the file's.
    predictor = OnnxPredictor(tmp_path / "negative.onnx", batch_size=7)
    assert predictor.batch_size == 7
    assert len(predictor.predict(image_set.iloc[:10])) == 10


@pytest.mark.parametrize(
    "params, message",
    [
        ({"image_root": 3}, "image_root must be a folder path or None; got 3"),
        ({"providers": "CPUExecutionProvider"}, "providers must be a list"),
        ({"on_bad_image": "ignore"}, "on_bad_image must be one of"),
    ],
)
def test_bad_arguments_are_refused(fitted_onnx, params, message):
    with pytest.raises((TypeError, ValueError), match=message):
        OnnxPredictor(fitted_onnx, **params)

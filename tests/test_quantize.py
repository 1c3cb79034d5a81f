"""int8 ONNX export (onnx/_quantize.py): what is quantized, the calibration, the per-task
check against the float model, and the options refused before anything is exported."""

import json
import os

import numpy as np
import onnx
import pytest
from conftest import TARGETS

from sk_multitask.exceptions import QuantizationWarning
from sk_multitask.onnx import OnnxPredictor
from sk_multitask.onnx._predictor import METADATA_KEY
from sk_multitask.onnx._quantize import MIN_CALIBRATION_IMAGES


@pytest.fixture(scope="module")
def int8_export(fitted, image_set, tmp_path_factory):
    """``fitted`` exported in int8, calibrated and checked on the whole image set."""
    path = tmp_path_factory.mktemp("int8") / "model.onnx"
    return fitted.export_onnx(
        path, quantize="int8", calibration_X=image_set, calibration_y=image_set[TARGETS]
    )


def test_the_backbone_is_int8_the_normalisation_and_heads_float(int8_export, fitted_onnx):
    model = onnx.load(int8_export.path)
    (images,) = model.graph.input
    assert images.name == "images" and images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    made_by = {out: node.op_type for node in model.graph.node for out in node.output}
    normalisation = [node for node in model.graph.node if node.op_type in ("Cast", "Sub", "Div")]
    assert [node.op_type for node in normalisation] == ["Cast", "Sub", "Div"]
    assert normalisation[0].input[0] == "images"
    assert all(made_by.get(i) != "DequantizeLinear" for n in normalisation for i in n.input)
    initializers = {t.name: t for t in model.graph.initializer}
    nodes = model.graph.node
    dequantized = {n.output[0]: n.input[0] for n in nodes if n.op_type == "DequantizeLinear"}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert len(convs) == 4  # the small CNN's
    for conv in convs:  # int8 weights and uint8 activations in
        assert initializers[dequantized[conv.input[1]]].data_type == onnx.TensorProto.INT8
        assert made_by[dequantized[conv.input[0]]] == "QuantizeLinear"
    heads = [node for node in model.graph.node if node.op_type == "Gemm"]
    assert len(heads) == len(TARGETS)
    assert all(initializers[h.input[1]].data_type == onnx.TensorProto.FLOAT for h in heads)
    assert os.path.getsize(int8_export.path) <= os.path.getsize(fitted_onnx) / 2


def test_the_document_records_int8_and_the_check_and_the_repr_says_int8(int8_export, image_set):
    predictor = OnnxPredictor(int8_export.path)
    record = predictor.quantization_
    assert record["dtype"] == "int8" and record["format"] == "QDQ" and record["per_channel"]
    assert record["calibration"] == {"method": "MinMax", "n_images": len(image_set)}
    check = int8_export.check
    assert list(check.index) == TARGETS
    assert list(check["metric"]) == ["accuracy", "accuracy", "r2"]
    np.testing.assert_allclose(check["drop"], check["float"] - check["int8"])
    assert record["check"]["n_rows"] == len(image_set)
    assert record["check"]["tasks"] == [
        [name, row["metric"], row["float"], row["int8"]] for name, row in check.iterrows()
    ]
    assert repr(predictor) == (
        f"OnnxPredictor({int8_export.path!r}, int8 calibrated on {len(image_set)} images)"
    )


def test_the_check_scores_what_the_predictors_score(int8_export, fitted_onnx, image_set):
    y = image_set[TARGETS]
    float_model, int8_model = OnnxPredictor(fitted_onnx), OnnxPredictor(int8_export.path)
    for name, row in int8_export.check.iterrows():
        metric = row["metric"]
        assert row["float"] == pytest.approx(float_model.evaluate(image_set, y).loc[name, metric])
        assert row["int8"] == pytest.approx(int8_model.evaluate(image_set, y).loc[name, metric])


def test_int8_predicts_as_the_float_model_within_rounding(
    fitted, fitted_onnx, int8_export, image_set
):
    expected = fitted.predict(image_set)
    predicted = OnnxPredictor(int8_export.path).predict(image_set)
    for name in ("color", "shape"):
        assert (predicted[name] == expected[name]).mean() >= 0.95
    area = image_set["area"]
    assert (predicted["area"] - expected["area"]).abs().max() < 0.02 * (area.max() - area.min())
    assert OnnxPredictor(fitted_onnx).quantization_ is None


def test_a_task_dropping_more_than_allowed_refuses_and_writes_nothing(
    fitted, int8_export, image_set, tmp_path
):
    # In int8 the regression's R² drops a little on these rows, the classes' accuracy not.
    assert int8_export.check.loc["area", "drop"] > 0 >= int8_export.check["drop"].iloc[:2].max()
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the previous model")
    with pytest.raises(ValueError, match=r"int8 loses .* of task 'area'.s r2 .*max_metric_drop=0"):
        fitted.export_onnx(path, "int8", image_set, image_set[TARGETS], max_metric_drop=0)
    assert path.read_bytes() == b"the previous model"
    assert os.listdir(tmp_path) == ["model.onnx"]  # no temporary file left


def test_few_calibration_images_warn(fitted, image_set, tmp_path):
    few = image_set.iloc[: MIN_CALIBRATION_IMAGES - 12]
    with pytest.warns(QuantizationWarning, match=r"calibrated on 20 images, fewer than 32"):
        result = fitted.export_onnx(tmp_path / "model.onnx", "int8", calibration_X=few)
    assert result.check is None
    record = OnnxPredictor(result.path).quantization_
    assert record["calibration"]["n_images"] == 20 and record["check"] is None


def test_calibration_images_that_cannot_be_read_are_an_error(fitted_skip, image_set, tmp_path):
    missing = image_set.assign(filename=[f"gone_{i}.png" for i in range(len(image_set))])
    with pytest.raises(ValueError, match="no image of calibration_X could be read"):
        fitted_skip.export_onnx(tmp_path / "model.onnx", "int8", calibration_X=missing)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quantize": "int4"}, r"quantize must be None or 'int8'; got 'int4'"),
        ({"quantize": 8}, r"quantize must be None or 'int8'; got 8"),
        ({"quantize": "int8"}, r"quantize='int8' needs calibration_X"),
        ({"calibration_X": "x"}, r"calibration_X is for quantize='int8'; .* quantize=None"),
        ({"max_metric_drop": 0.01}, r"max_metric_drop is for quantize='int8'"),
        (
            {"quantize": "int8", "calibration_X": "x", "max_metric_drop": 0.01},
            r"max_metric_drop needs calibration_y",
        ),
        *(
            (
                {"quantize": "int8", "calibration_X": "x", "calibration_y": "y"}
                | {"max_metric_drop": bound},
                r"max_metric_drop must be a number from 0",
            )
            for bound in (-0.1, float("nan"), "0.01", True)
        ),
    ],
)
def test_bad_options_are_refused_before_exporting(fitted, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        fitted.export_onnx(tmp_path / "model.onnx", **options)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda q: q | {"dtype": "int4"}, "quantization is not an int8 record"),
        (lambda q: q | {"calibration": {"method": "MinMax", "n_images": -1}}, "not an int8 record"),
        (lambda q: q | {"check": {"n_rows": 1, "max_metric_drop": None, "tasks": [["a"]]}}, "int8"),
        (lambda q: {k: v for k, v in q.items() if k != "format"}, "not an int8 record"),
    ],
)
def test_a_quantization_record_outside_the_schema_is_refused(int8_export, tmp_path, change, match):
    model = onnx.load(int8_export.path)
    document = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    document["quantization"] = change(document["quantization"])
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(document)})
    onnx.save(model, tmp_path / "crafted.onnx")
    with pytest.raises(ValueError, match=match):
        OnnxPredictor(tmp_path / "crafted.onnx")


def test_calibration_feeds_the_batches_the_predictor_runs(int8_export, image_set):
    predictor = OnnxPredictor(int8_export.path, batch_size=64)
    n_rows, index, batches = predictor.input_batches(image_set)
    batches = list(batches)
    assert n_rows == len(image_set) and index.equals(image_set.index)
    assert [len(rows) for rows, _ in batches] == [64, 64, 32]
    declared = {i.name for i in predictor.session.get_inputs()}
    assert all(feeds.keys() == declared for _, feeds in batches)
    outputs = np.concatenate([predictor.session.run(None, feeds)[0] for _, feeds in batches])
    raw = predictor.predict_raw(image_set)[0]
    np.testing.assert_allclose(outputs, np.concatenate(list(raw.values()), axis=1), rtol=1e-6)

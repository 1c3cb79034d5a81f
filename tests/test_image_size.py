"""``image_size="auto"``: the backbone's own input size, resolved in fit and saved."""

import numpy as np
import pandas as pd
import pytest
import timm
import torchvision
from conftest import TARGETS, small_estimator

from sk_multitask import load
from sk_multitask.cli import build_parser
from sk_multitask.network._backbones import SimpleCNN, default_image_size
from sk_multitask.onnx import OnnxPredictor
from sk_multitask.training._config import TrainingConfig
from sk_multitask.training._fit_data import prepare_fit

#: A tiny timm model whose pretrained_cfg input size is (3, 160, 160).
TINY = "timm/test_resnet.r160_in1k"
#: A non-square input size, small enough for 16 px images to train fast without the
#: median-size warning (it needs them under half the size on both sides).
WIDE = (24, 32)


def wide_timm_model():
    """The tiny timm model, its pretrained_cfg saying it was trained at ``WIDE``."""
    return timm.create_model(
        TINY.removeprefix("timm/"), pretrained_cfg_overlay={"input_size": (3, *WIDE)}
    )


@pytest.mark.parametrize(
    ("backbone", "weights", "size"),
    [
        (TINY, None, (160, 160)),
        ("timm/resnet18", "DEFAULT", (224, 224)),
        ("inception_v3", "DEFAULT", (299, 299)),  # the crop of its weights' transforms
        ("resnet18", "IMAGENET1K_V1", (224, 224)),
        ("inception_v3", None, (224, 224)),  # no named weights: nothing says otherwise
        ("simple_cnn", "DEFAULT", (224, 224)),
    ],
)
def test_default_image_size_by_name(backbone, weights, size):
    assert default_image_size(backbone, weights) == size


def test_default_image_size_of_modules():
    assert default_image_size(wide_timm_model()) == WIDE
    assert default_image_size(SimpleCNN(width=4), "pretrained") == (224, 224)
    assert default_image_size(torchvision.models.resnet18()) == (224, 224)


def test_auto_resolves_in_fit_and_in_the_checkpoint_fingerprint(image_set, tmp_path):
    rows = image_set.iloc[:16]

    def prepared(image_size):
        est = small_estimator(
            rows, backbone=TINY, image_size=image_size, valid_split=None, checkpoint_dir=tmp_path
        )
        with pytest.warns(UserWarning, match="upsamples them"):
            return prepare_fit(TrainingConfig.from_estimator(est), rows, rows[TARGETS])

    auto = prepared("auto")
    assert auto.plan.image_size == (160, 160)
    # A checkpoint of an "auto" fit is the one of the size it stands for
    assert auto.fingerprint == prepared(160).fingerprint != prepared(161).fingerprint


@pytest.fixture(scope="module")
def fitted_wide(image_set):
    train = image_set.iloc[:32]
    est = small_estimator(
        train, backbone=wide_timm_model(), image_size="auto", max_epochs=1, valid_split=None
    )
    return est.fit(train, train[TARGETS])


@pytest.mark.slow
def test_auto_round_trips_with_the_resolved_size(fitted_wide, image_set, tmp_path):
    assert fitted_wide.image_size == "auto" and fitted_wide.image_size_ == WIDE
    X = image_set.iloc[32:48]
    expected = fitted_wide.predict(X)

    reloaded = load(fitted_wide.save(tmp_path / "model.skmt"), backbone=wide_timm_model())
    assert reloaded.image_size_ == WIDE
    pd.testing.assert_frame_equal(reloaded.predict(X), expected)

    predictor = OnnxPredictor(fitted_wide.export_onnx(tmp_path / "model.onnx"))
    assert tuple(predictor.image_size) == WIDE
    predicted = predictor.predict(X)
    for task in ("color", "shape"):
        pd.testing.assert_series_equal(predicted[task], expected[task])
    pd.testing.assert_series_equal(predicted["area"], expected["area"], atol=1e-4, rtol=0)


def test_continued_fit_keeps_the_fitted_size(fitted_wide, image_set):
    rows = image_set.iloc[:32]
    history, lr = fitted_wide.lr_find(rows, rows[TARGETS], num_it=3)
    assert len(history) == 3 and np.isfinite(lr)

    est = small_estimator(rows, image_size=(16, 16), max_epochs=1, valid_split=None)
    est.fit(rows, rows[TARGETS])
    # "auto" in a continued fit is the fitted size, not the backbone's 224
    est.set_params(image_size="auto", warm_start=True).fit(rows, rows[TARGETS])
    est.partial_fit(rows, rows[TARGETS])
    assert est.image_size_ == (16, 16) and len(est.history_) == 3


def test_auto_warns_when_the_images_are_much_smaller(image_set):
    rows = image_set.iloc[:8]
    est = small_estimator(rows, image_size="auto", max_epochs=1, valid_split=None)
    with pytest.warns(UserWarning, match=r"16x16 pixels .* image_size=224 upsamples them"):
        est.lr_find(rows, rows[TARGETS], num_it=2)


def test_cli_accepts_image_size_auto():
    parser = build_parser()
    fit = ["fit", "data.csv", "--targets", "color", "--model", "m.joblib"]
    assert parser.parse_args([*fit, "--image-size", "auto"]).image_size == "auto"
    assert parser.parse_args([*fit, "--image-size", "48"]).image_size == 48

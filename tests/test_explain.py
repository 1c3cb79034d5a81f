"""Heatmaps of where the network looked (``explain``): the layer found for each kind of
backbone, the Grad-CAM maps, the model left as it was, and the must-show measurement on
real images whose left half decides one task and right half another."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from conftest import TARGETS, reload
from PIL import Image
from sklearn.datasets import load_digits

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.exceptions import BadImageWarning
from sk_multitask.network import SimpleCNN, spatial_layer
from sk_multitask.network._backbones import _without_classifier
from sk_multitask.onnx import OnnxPredictor

pytest.importorskip("captum")


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("resnet18", "layer4"),
        ("efficientnet_b0", "features"),
        ("convnext_tiny", "features"),
        ("mobilenet_v3_small", "features"),
        ("mobilenet_v2", "features"),
    ],
)
def test_the_last_spatial_map_of_torchvision_backbones_is_found(name, layer):
    backbone = _without_classifier(torchvision.models.get_model(name, weights=None), name)
    found, module = spatial_layer(backbone, (64, 64), label=name)
    assert found == layer and module is backbone.get_submodule(layer)


@pytest.mark.parametrize(
    ("name", "layer"),
    [("resnet18", "layer4"), ("convnext_atto", "norm_pre"), ("efficientnet_b0", "bn2")],
)
def test_the_last_spatial_map_of_timm_backbones_is_found(name, layer):
    timm = pytest.importorskip("timm")
    backbone = timm.create_model(name, num_classes=0)
    assert spatial_layer(backbone, (64, 64), label=f"timm/{name}")[0] == layer


def test_the_small_cnn_map_is_its_last_map_larger_than_one_pixel():
    # 16 px: the last stage's map is 2 x 2 (its ReLU, "14"); at 8 px it is 1 x 1, so the
    # stage before it ("10", 2 x 2) is the last spatial map.
    assert spatial_layer(SimpleCNN(), (16, 16))[0] == "14"
    assert spatial_layer(SimpleCNN(), (8, 8))[0] == "10"


def test_a_vision_transformer_is_refused_naming_the_layer_to_pass():
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    with pytest.raises(ValueError, match=r"backbone 'vit' ends in layers that work on a "
                       r"sequence of tokens .*pass target_layer='conv_proj'"):
        spatial_layer(vit, (32, 32), label="vit")
    assert spatial_layer(vit, (32, 32), target_layer="conv_proj")[0] == "conv_proj"
    timm = pytest.importorskip("timm")
    small = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32)
    with pytest.raises(ValueError, match="target_layer='patch_embed.proj'"):
        spatial_layer(small, (32, 32), label="timm/vit_tiny_patch16_224")


def test_a_target_layer_is_checked_by_name_and_output():
    cnn = SimpleCNN()
    assert spatial_layer(cnn, (16, 16), target_layer="6")[0] == "6"
    assert spatial_layer(cnn, (16, 16), target_layer=cnn[10]) == ("10", cnn[10])
    with pytest.raises(ValueError, match=r"target_layer='nope' is no layer of backbone"):
        spatial_layer(cnn, (16, 16), target_layer="nope")
    with pytest.raises(ValueError, match=r"target_layer='16' .* outputs \(1, 256\); a heatmap"):
        spatial_layer(cnn, (16, 16), target_layer="16")


def test_finding_the_layer_leaves_the_backbone_as_it_was():
    cnn = SimpleCNN().train()
    state = {k: v.clone() for k, v in cnn.state_dict().items()}
    spatial_layer(cnn, (16, 16))
    assert cnn.training and all(m.training for m in cnn.modules())
    assert all(not m._forward_hooks for m in cnn.modules())
    for key, value in cnn.state_dict().items():
        assert torch.equal(value, state[key])  # BatchNorm statistics did not move


def test_heatmaps_are_at_the_input_size_in_zero_to_one(fitted, image_set):
    for task in fitted.tasks_:
        heatmaps = fitted.explain(image_set.iloc[:20], task)
        assert heatmaps.shape == (20, 16, 16) and heatmaps.dtype == np.float32
        assert np.isfinite(heatmaps).all() and heatmaps.min() >= 0
        peaks = heatmaps.reshape(20, -1).max(axis=1)
        assert np.all((np.abs(peaks - 1) < 1e-6) | (peaks == 0))  # scaled per row
    assert (fitted.explain(image_set.iloc[:20], "color").reshape(20, -1).max(1) == 1).all()


def _model_state(est):
    module = est.net_.module_
    return (
        {name: sub.training for name, sub in module.named_modules()},
        {name: p.requires_grad for name, p in module.named_parameters()},
        {name: None if p.grad is None else p.grad.clone() for name, p in module.named_parameters()},
        {name: p.detach().clone() for name, p in module.state_dict().items()},
    )


def _assert_same_state(before, after):
    assert after[0] == before[0] and after[1] == before[1]
    for states in (2, 3):
        for name, value in before[states].items():
            new = after[states][name]
            assert (value is None and new is None) or torch.equal(value, new), name


def test_explain_leaves_weights_modes_gradients_and_predictions_as_they_were(
    fitted_copy, image_set
):
    est = fitted_copy
    module = est.net_.module_
    # A state that explain must not reset: the module training, its backbone frozen (so
    # in eval mode, its parameters without gradients), the heads' gradients of training.
    module.train()
    module.freeze_backbone()
    before = _model_state(est)
    assert any(not flag for flag in before[1].values()) and any(before[0].values())
    module.eval()
    predicted, proba = est.predict(image_set), est.predict_proba(image_set)
    module.train()

    for task in est.tasks_:
        est.explain(image_set, task)

    _assert_same_state(before, _model_state(est))
    module.eval()
    pd.testing.assert_frame_equal(est.predict(image_set), predicted)
    for task, frame in est.predict_proba(image_set).items():
        pd.testing.assert_frame_equal(frame, proba[task])


def test_a_loaded_model_keeps_no_gradient_after_explaining(fitted, image_set, tmp_path):
    loaded = reload(fitted, tmp_path, "safe file")
    predicted = loaded.predict(image_set)
    heatmaps = loaded.explain(image_set, "shape")
    assert all(p.grad is None for p in loaded.net_.module_.parameters())
    pd.testing.assert_frame_equal(loaded.predict(image_set), predicted)
    np.testing.assert_array_equal(heatmaps, fitted.explain(image_set, "shape"))


def test_heatmaps_do_not_depend_on_the_batches(fitted_copy, image_set):
    whole = fitted_copy.explain(image_set.iloc[:40], "color")
    fitted_copy.net_.batch_size = 7  # batches of 7 images, the last of 5
    np.testing.assert_allclose(fitted_copy.explain(image_set.iloc[:40], "color"), whole, atol=1e-5)


def test_a_label_explains_that_class_on_every_row(fitted, image_set):
    X = image_set.iloc[:30]
    predicted = fitted.predict(X)["color"].to_numpy()
    own = fitted.explain(X, "color")
    label = predicted[0]
    of_label = fitted.explain(X, "color", label=label)
    same = predicted == label
    np.testing.assert_allclose(of_label[same], own[same], atol=1e-6)
    assert not np.allclose(of_label[~same], own[~same])


@pytest.mark.parametrize(
    ("task", "label", "error"),
    [
        ("color", "mauve", r"'mauve' is not a class of task 'color': its classes are \['blue'"),
        ("color", ["red"], r"label \['red'\] is not a class of task 'color'"),
        ("color", ("red",), r"label \('red',\) is not a class of task 'color'"),
        ("area", 0.5, "task 'area' is a regression: its heatmap explains the predicted value"),
    ],
)
def test_a_bad_label_is_refused_before_any_image_is_read(fitted, task, label, error):
    with pytest.raises(ValueError, match=error):
        fitted.explain(["missing.png"], task, label=label)


def test_an_unknown_task_method_or_layer_is_refused(fitted, image_set):
    with pytest.raises(ValueError, match="unknown task 'age'"):
        fitted.explain(image_set, "age")
    with pytest.raises(ValueError, match=r"method must be one of \['gradcam'\]; got 'lime'"):
        fitted.explain(image_set, "color", method="lime")
    with pytest.raises(ValueError, match="target_layer='layer4' is no layer of backbone "
                       "'simple_cnn'"):
        fitted.explain(image_set, "color", target_layer="layer4")


def test_a_target_layer_gives_its_own_map(fitted, image_set):
    X = image_set.iloc[:10]
    earlier = fitted.explain(X, "shape", target_layer="10")  # 4 x 4 instead of 2 x 2
    assert earlier.shape == (10, 16, 16) and not np.allclose(earlier, fitted.explain(X, "shape"))
    np.testing.assert_array_equal(
        fitted.explain(X, "shape", target_layer=fitted.net_.module_.backbone[10]), earlier
    )


def test_an_unreadable_image_has_no_heatmap(fitted_skip, image_set, tmp_path):
    rows = image_set.iloc[:3].copy()
    paths = [str(Path(image_set.attrs["image_root"]) / name) for name in rows["filename"]]
    broken = tmp_path / "broken.jpg"
    shutil.copy(paths[1], broken)
    broken.write_bytes(broken.read_bytes()[:100])
    rows["filename"] = [paths[0], str(broken), paths[2]]

    with pytest.warns(BadImageWarning, match="1 image file could not be read"):
        heatmaps = fitted_skip.explain(rows, "color")

    assert np.isnan(heatmaps[1]).all() and np.isfinite(heatmaps[[0, 2]]).all()
    np.testing.assert_allclose(
        heatmaps[[0, 2]], fitted_skip.explain([paths[0], paths[2]], "color"), atol=1e-6
    )


def test_any_kind_of_x_gives_the_same_heatmaps(fitted, image_set):
    rows = image_set.iloc[:5]
    paths = [str(Path(image_set.attrs["image_root"]) / name) for name in rows["filename"]]
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])
    expected = fitted.explain(rows, "shape")
    np.testing.assert_allclose(fitted.explain(paths, "shape"), expected, atol=1e-6)
    np.testing.assert_allclose(fitted.explain(pixels, "shape"), expected, atol=1e-6)


def test_without_captum_explain_names_the_extra_to_install(fitted, image_set, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # importing it now fails
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    extra = r'^explain needs captum: pip install "sk-multitask\[explain\]"$'
    with pytest.raises(ImportError, match=extra):
        fitted.explain(image_set, "color")


def test_the_onnx_predictor_says_explain_needs_torch(fitted_onnx, image_set):
    predictor = OnnxPredictor(fitted_onnx, image_root=image_set.attrs["image_root"])
    assert not predictor.explainable
    with pytest.raises(TypeError, match=r"explain needs torch .* load the model's safe file"):
        predictor.explain(image_set, "color")


def test_a_torchvision_backbone_explains_through_the_estimator(image_set):
    X, y = image_set.iloc[:24], image_set[TARGETS].iloc[:24]
    est = MultiTaskImageEstimator(
        image_root=image_set.attrs["image_root"], backbone="mobilenet_v3_small", weights=None,
        image_size=64, max_epochs=1, batch_size=8, valid_split=None, random_state=0,
    )
    with pytest.warns(UserWarning, match="upsamples them"):  # 16 px images at 64 px
        est.fit(X, y)
    predicted = est.predict(X)
    heatmaps = est.explain(X, "shape")
    assert heatmaps.shape == (24, 64, 64) and np.isfinite(heatmaps).all()
    pd.testing.assert_frame_equal(est.predict(X), predicted)


# -- the must-show measurement -------------------------------------------------------

#: Images of two handwritten digits side by side, at this (height, width).
PAIR_SIZE = (24, 48)


def digit_pairs(folder, n, size=PAIR_SIZE, seed=0):
    """``n`` PNG files of two of scikit-learn's digits side by side (real 8x8 scans,
    resized to ``size``): ``left`` is the left digit, ``right`` the right one
    (benchmarks/bench_explain.py uses it too)."""
    digits = load_digits()
    rng = np.random.RandomState(seed)
    rows = []
    for i, (a, b) in enumerate(rng.randint(len(digits.images), size=(n, 2))):
        ink = np.hstack([digits.images[a], digits.images[b]])
        image = Image.fromarray((255 - ink * 255 / 16).astype(np.uint8))
        name = f"pair_{i:04d}.png"
        image.resize(size[::-1], Image.BILINEAR).save(Path(folder) / name)
        rows.append((name, str(digits.target[a]), str(digits.target[b])))
    frame = pd.DataFrame(rows, columns=["filename", "left", "right"])
    frame["is_valid"] = np.arange(n) >= int(0.8 * n)
    return frame


def own_half_mass(heatmaps, half):
    """Each heatmap's share of its mass on ``half`` ("left" or "right"); 0.5 for a map
    that is all zero (it points nowhere)."""
    width = heatmaps.shape[2]
    columns = slice(0, width // 2) if half == "left" else slice(width // 2, width)
    total = heatmaps.sum(axis=(1, 2))
    own = heatmaps[:, :, columns].sum(axis=(1, 2))
    return np.where(total > 0, own / np.where(total > 0, total, 1), 0.5)


@pytest.mark.slow
def test_each_task_looks_at_the_half_of_the_image_that_decides_it(tmp_path):
    """600 pairs of digits, 8 epochs of the small CNN; on the 120 held-out rows, each
    task's heatmap puts at least 70% of its mass on its own half (0.77 and 0.79 measured;
    benchmarks/bench_explain.py measures more rows and seeds)."""
    data = digit_pairs(tmp_path, 600)
    est = MultiTaskImageEstimator(
        image_root=str(tmp_path), backbone="simple_cnn", image_size=PAIR_SIZE, max_epochs=8,
        batch_size=32, valid_split="is_valid", random_state=0,
    ).fit(data, data[["left", "right"]])
    valid = data[data["is_valid"]]
    assert est.score(valid, valid[["left", "right"]]) > 0.85
    for task in ("left", "right"):
        mass = own_half_mass(est.explain(valid, task), task)
        assert mass.mean() >= 0.7, (task, mass.mean())


def test_own_half_mass_measures_the_share_of_a_map_on_its_half():
    maps = np.zeros((3, 2, 4), dtype=np.float32)
    maps[0, :, :2] = 1  # all on the left
    maps[1, :, 1:3] = 1  # half and half
    np.testing.assert_allclose(own_half_mass(maps, "left"), [1, 0.5, 0.5])
    np.testing.assert_allclose(own_half_mass(maps, "right"), [0, 0.5, 0.5])


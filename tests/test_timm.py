"""timm backbones: by name ("timm/<name>"), as modules, their weights and normalisation."""

import json
import re
import socket
import sys
import time
import zipfile

import huggingface_hub.constants
import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import TARGETS, small_estimator
from safetensors.torch import save_file

from sk_multitask import load
from sk_multitask.exceptions import IgnoredWeightsWarning
from sk_multitask.network._backbones import SimpleCNN, build_backbone, has_pretrained_weights
from sk_multitask.onnx import OnnxPredictor
from sk_multitask.persistence._safe_file import DOCUMENT
from sk_multitask.training._config import Plan, TrainingConfig

SIZE = (32, 32)
#: A timm model whose normalisation is not ImageNet's (0.5 everywhere), and a tiny one.
HALF = "timm/test_resnet.r160_in1k"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network and an empty Hugging Face cache: real downloads fail at once."""

    def unreachable(self, address):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    return tmp_path / "hub"


def test_timm_name_gives_its_features_not_its_classifier():
    module, n_features, normalisation = build_backbone("timm/resnet18", None, SIZE)
    assert n_features == 512
    assert isinstance(module.fc, torch.nn.Identity)
    assert normalisation == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    _, _, normalisation = build_backbone(HALF, None, SIZE)
    assert normalisation == ((0.5,) * 3, (0.5,) * 3)


def test_timm_instance_loses_its_classifier_and_keeps_its_normalisation():
    model = timm.create_model("mobilenetv3_small_050")
    module, n_features, _ = build_backbone(model, None, SIZE)
    assert n_features == 1024  # its head's features, not its 1000 classes
    assert model.num_classes == 1000 and module.num_classes == 0  # the given one is kept
    half = timm.create_model(HALF.removeprefix("timm/"))
    assert build_backbone(half, None, SIZE)[2] == ((0.5,) * 3, (0.5,) * 3)


@pytest.fixture(scope="module", params=["timm/resnet18", HALF])
def fitted_timm(request, image_set):
    train = image_set.iloc[:32]
    est = small_estimator(
        train, backbone=request.param, image_size=32, max_epochs=1, valid_split=None
    )
    return est.fit(train, train[TARGETS])


@pytest.mark.slow
def test_fitted_timm_round_trips_safe_file_and_onnx(fitted_timm, image_set, tmp_path, offline):
    cfg = timm.models.get_pretrained_cfg(fitted_timm.backbone.removeprefix("timm/"))
    module = fitted_timm.net_.module_
    np.testing.assert_allclose(module.mean.flatten() / 255, cfg.mean, rtol=1e-6)
    np.testing.assert_allclose(module.std.flatten() / 255, cfg.std, rtol=1e-6)
    X = image_set.iloc[32:48]
    expected = fitted_timm.predict(X)

    path = fitted_timm.save(tmp_path / "model.skmt")
    with zipfile.ZipFile(path) as archive:
        document = json.loads(archive.read(DOCUMENT))
    assert document["backbone"]["name"] == fitted_timm.backbone
    np.testing.assert_allclose(document["normalisation"]["mean"], cfg.mean, rtol=1e-6)
    reloaded = load(path)  # rebuilt from timm's registry, offline
    pd.testing.assert_frame_equal(reloaded.predict(X), expected)

    predictor = OnnxPredictor(fitted_timm.export_onnx(tmp_path / "model.onnx"))
    predicted = predictor.predict(X)
    for task in ("color", "shape"):
        pd.testing.assert_series_equal(predicted[task], expected[task])
    pd.testing.assert_series_equal(predicted["area"], expected["area"], atol=1e-4, rtol=0)


def test_offline_default_weights_fail_at_once_naming_the_options(offline):
    start = time.perf_counter()
    with pytest.raises(
        RuntimeError,
        match=r"could not download the pretrained weights 'DEFAULT' \(timm/resnet18.a1_in1k\) "
        r"for backbone 'timm/resnet18' .*Pass weights=None .*, or weights=PATH, the path of a "
        r"local state-dict file",
    ):
        build_backbone("timm/resnet18", "DEFAULT", SIZE)
    assert time.perf_counter() - start < 10  # no retries for minutes


def test_a_file_named_default_or_a_tag_in_the_working_folder_is_not_read(
    offline, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    state = {k: torch.full_like(v, 7) if v.is_floating_point() else v
             for k, v in timm.create_model("resnet18").state_dict().items()}
    for name in ("DEFAULT", "a1_in1k"):
        torch.save(state, name)  # valid weights files, named like the hub's
    with pytest.raises(RuntimeError, match=r"could not download the pretrained weights "
                       r"'DEFAULT' \(timm/resnet18.a1_in1k\)"):
        build_backbone("timm/resnet18", "DEFAULT", SIZE)
    with pytest.raises(ValueError, match=r"unknown weights 'a1_in1k' .*timm's pretrained tag "
                       r"goes in the name.*pass './a1_in1k' or pathlib.Path\('a1_in1k'\)"):
        build_backbone("timm/resnet18", "a1_in1k", SIZE)
    with pytest.warns(IgnoredWeightsWarning):  # its classifier; the file is read as a path
        module, _, _ = build_backbone("timm/resnet18", "./DEFAULT", SIZE)
    assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())


def test_hf_offline_mode_default_weights_fail_naming_the_options(offline, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match=r"'DEFAULT' .*Pass weights=None"):
        build_backbone("timm/resnet18", "DEFAULT", SIZE)


def test_default_weights_come_from_the_hugging_face_cache(offline):
    # The cache as huggingface_hub lays it out, holding a checkpoint with its classifier.
    torch.manual_seed(1)
    trained = timm.create_model("resnet18").state_dict()
    snapshot = offline / "models--timm--resnet18.a1_in1k" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file(trained, snapshot / "model.safetensors")
    (offline / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (offline / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("0123abcd")

    module, n_features, _ = build_backbone("timm/resnet18", "DEFAULT", SIZE)
    assert n_features == 512
    for name, value in module.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert has_pretrained_weights("timm/resnet18", "DEFAULT")


def test_weights_pretrained_makes_the_recipe_fine_tune_a_module(image_set):
    def plan(weights):
        est = small_estimator(image_set, backbone=SimpleCNN(width=4), weights=weights)
        est.set_params(freeze_epochs="auto", backbone_lr_scale="auto")
        return Plan.resolve(TrainingConfig.from_estimator(est), SIZE, seed=0, decoded=False)

    tuned, scratch = plan("pretrained"), plan("DEFAULT")
    assert (tuned.freeze_epochs, tuned.backbone_lr_scale, tuned.pretrained) == (1, 0.1, True)
    assert (scratch.freeze_epochs, scratch.backbone_lr_scale, scratch.pretrained) == (0, 1, False)
    module, _, _ = build_backbone(SimpleCNN(width=4), "pretrained", SIZE)
    assert isinstance(module, SimpleCNN)


@pytest.mark.parametrize(
    ("backbone", "weights", "message"),
    [
        ("timm/not_a_model", None, "unknown backbone 'timm/not_a_model': 'not_a_model' is not"),
        ("timm/resnet18.nope", None, r"unknown backbone 'timm/resnet18.nope': Invalid .*tag"),
        ("timm/resnet18", "IMAGENET1K_V1", "unknown weights 'IMAGENET1K_V1' for backbone 'timm/"),
        ("resnet18", "pretrained", "unknown weights 'pretrained' for backbone 'resnet18'"),
        ("simple_cnn", "pretrained", "weights='pretrained' names torchvision weights"),
    ],
)
def test_bad_timm_names_and_weights_are_named(backbone, weights, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(backbone, weights, SIZE)


def test_timm_backbone_without_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm fails, as uninstalled
    with pytest.raises(
        ImportError, match=re.escape('needs timm: pip install "sk-multitask[timm]"')
    ):
        build_backbone("timm/resnet18", None, SIZE)


def test_timm_instance_fine_tuned_saves_and_loads(image_set, tmp_path):
    model = timm.create_model(HALF.removeprefix("timm/"))  # stands for a pretrained one
    train = image_set.iloc[:32]
    est = small_estimator(
        train, backbone=model, weights="pretrained", image_size=32, max_epochs=2, valid_split=None
    ).fit(train, train[TARGETS])
    # Fine-tuned: the heads alone in the first epoch, then the backbone at a tenth of their rate.
    assert est.pretrained_ and est.history_[0, "backbone_lr"] == 0
    assert est.history_[1, "backbone_lr"] == pytest.approx(est.history_[1, "lr"] * 0.1)
    reloaded = load(est.save(tmp_path / "model.skmt"), backbone=model)
    assert reloaded.pretrained_
    X = image_set.iloc[32:48]
    pd.testing.assert_frame_equal(reloaded.predict(X), est.predict(X))

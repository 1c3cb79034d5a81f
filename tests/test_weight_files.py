"""Weight files as users have them, loaded into torchvision, timm and built-in backbones."""

import re
import warnings

import pytest
import timm
import torch
import torchvision
from conftest import TARGETS, small_estimator
from safetensors.torch import save_file

from sk_multitask.exceptions import IgnoredWeightsWarning
from sk_multitask.network._backbones import SimpleCNN, build_backbone, has_pretrained_weights
from sk_multitask.network._weight_files import read_state_dict

SIZE = (32, 32)


def _trained(backbone):
    """A seeded model of ``backbone`` with its classifier: what a user has trained."""
    torch.manual_seed(7)
    if backbone == "resnet18":
        return torchvision.models.resnet18()
    if backbone == "timm/resnet18":
        return timm.create_model("resnet18")
    return SimpleCNN()


def _backbone_only(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _with_classes(state, n_classes):
    return {
        **_backbone_only(state),
        "fc.weight": torch.ones(n_classes, 512),
        "fc.bias": torch.ones(n_classes),
    }


#: How users hold a resnet18's weights: the file's contents, from the full state dict.
FORMS = {
    "backbone only": _backbone_only,
    "1000 classes": lambda s: s,
    "10 classes": lambda s: _with_classes(s, 10),
    "state_dict wrapper": lambda s: {"state_dict": s, "epoch": 3},
    "model wrapper": lambda s: {"model": s, "optimizer": {"lr": 0.1}},
    "module. prefix": lambda s: {f"module.{k}": v for k, v in s.items()},
    "wrapped and prefixed": lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
}


@pytest.mark.parametrize(
    ("backbone", "form"),
    [("resnet18", form) for form in FORMS]
    + [("timm/resnet18", "10 classes"), ("timm/resnet18", "wrapped and prefixed")],
)
def test_weight_files_as_users_have_them_load(tmp_path, backbone, form):
    trained = _trained(backbone).state_dict()
    path = tmp_path / "weights.pth"
    torch.save(FORMS[form](trained), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module, n_features, _ = build_backbone(backbone, path, SIZE)
    assert n_features == 512
    for name, value in module.state_dict().items():
        assert torch.equal(value, trained[name]), name
    ignored = [str(w.message) for w in caught if w.category is IgnoredWeightsWarning]
    assert len(caught) == len(ignored)
    if form == "backbone only":
        assert ignored == []
    else:  # the classifier, whatever its size, is reported once
        assert len(ignored) == 1 and re.search(
            r"2 entries .* \['(module\.)?fc.weight', ", ignored[0]
        )


def test_safetensors_file_loads(tmp_path):
    trained = _trained("simple_cnn").state_dict()
    save_file(trained, tmp_path / "cnn.safetensors")
    module, _, _ = build_backbone("simple_cnn", tmp_path / "cnn.safetensors", SIZE)
    for name, value in module.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert has_pretrained_weights("simple_cnn", str(tmp_path / "cnn.safetensors"))


def test_backbone_of_a_fitted_estimator_loads(image_set, tmp_path):
    train = image_set.iloc[:32]
    fitted = small_estimator(train, max_epochs=1, valid_split=None).fit(train, train[TARGETS])
    backbone = fitted.net_.module_.backbone.state_dict()
    torch.save(backbone, tmp_path / "backbone.pt")
    module, _, _ = build_backbone("simple_cnn", tmp_path / "backbone.pt", SIZE)  # no warning
    for name, value in module.state_dict().items():
        assert torch.equal(value, backbone[name]), name

    # The whole network: its backbone is found, its heads and normalisation ignored.
    torch.save(fitted.net_.module_.state_dict(), tmp_path / "network.pt")
    with pytest.warns(IgnoredWeightsWarning, match=r"\['mean', 'std', 'heads.0.weight'"):
        module, _, _ = build_backbone("simple_cnn", tmp_path / "network.pt", SIZE)
    for name, value in module.state_dict().items():
        assert torch.equal(value, backbone[name]), name


def test_a_shape_that_does_not_fit_names_the_key(tmp_path):
    path = tmp_path / "narrow.pth"
    torch.save(SimpleCNN(width=4).state_dict(), path)
    message = re.escape(
        f"the weights file {str(path)!r} does not fit backbone 'simple_cnn': '0.weight' has "
        "shape (4, 3, 3, 3) in the file and (32, 3, 3, 3) in the backbone"
    )
    with pytest.raises(ValueError, match=message):
        build_backbone("simple_cnn", path, SIZE)


def test_missing_weights_are_named(tmp_path):
    state = SimpleCNN().state_dict()
    del state["4.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(
        ValueError, match=r"lacks 1 of backbone 'simple_cnn'.s weights: \['4.weight'\]"
    ):
        build_backbone("simple_cnn", tmp_path / "partial.pth", SIZE)


def test_old_checkpoints_without_batch_counts_load(tmp_path):
    trained = _trained("simple_cnn").state_dict()
    old = {k: v for k, v in trained.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    module, _, _ = build_backbone("simple_cnn", tmp_path / "old.pth", SIZE)
    assert torch.equal(module.state_dict()["0.weight"], trained["0.weight"])


def test_a_corrupt_safetensors_file_is_named(tmp_path):
    (tmp_path / "bad.safetensors").write_text("not safetensors")
    with pytest.raises(
        ValueError, match=r"'.*bad.safetensors' is not a state dict: '?Error while deserializing"
    ):
        read_state_dict(tmp_path / "bad.safetensors")


@pytest.mark.parametrize(
    ("content", "found"),
    [({"epoch": 3, "lr": 0.1}, r"\['epoch', 'lr'\]"), ({}, r"\[\]"), ([1, 2], "list")],
)
def test_a_file_without_a_state_dict_says_what_it_holds(tmp_path, content, found):
    torch.save(content, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=f"is not a state dict: it holds {found}"):
        read_state_dict(tmp_path / "other.pt")


@pytest.mark.parametrize("name", ["weights.pt", "weights.pth"])
def test_a_text_file_is_named_not_a_weights_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("hello world\n")  # torch's own error: KeyError: 101
    message = re.escape(f"the weights file {str(path)!r} is not a state dict of backbone "
                        "'simple_cnn': it is not a weights file")
    with pytest.raises(ValueError, match=message) as error:
        build_backbone("simple_cnn", path, SIZE)
    assert "\n" not in str(error.value)


def test_a_damaged_legacy_torch_file_is_named(tmp_path):
    path = tmp_path / "damaged.pt"
    path.write_bytes(b"\x80\x02hello world\n")  # the legacy format's opcode, then text
    with pytest.raises(ValueError, match=re.escape(f"{str(path)!r} is not a state dict")):
        read_state_dict(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_weights_are_refused_naming_the_file_and_the_tensor(image_set, tmp_path, bad):
    state = SimpleCNN().state_dict()
    state["4.weight"][0, 0, 0, 0] = bad
    path = tmp_path / "diverged.pt"
    torch.save({"model": state}, path)
    message = re.escape(f"the weights file {str(path)!r} holds non-finite values (NaN or "
                        "infinity) in tensor '4.weight'")
    with pytest.raises(ValueError, match=message):
        build_backbone("simple_cnn", path, SIZE)
    # fit refuses it before training: not a NaN loss and its advice to lower lr.
    est = small_estimator(image_set, weights=str(path))
    with pytest.raises(ValueError, match=message):
        est.fit(image_set, image_set[TARGETS])
    assert not hasattr(est, "net_")

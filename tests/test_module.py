"""The backbone (registry, built-in or the user's) and the multitask heads."""

import copy
import pathlib
import re
import socket

import pytest
import torch
import torchvision
from torch import nn

from sk_multitask.exceptions import IgnoredWeightsWarning
from sk_multitask.network._backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SimpleCNN,
    build_backbone,
    has_pretrained_weights,
    is_torchvision_classifier,
)
from sk_multitask.network._model import MultiTaskModule

SIZE = (32, 32)


def _user_backbone():
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _assert_state_equal(actual, expected):
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)


# --- build_backbone ------------------------------------------------------------


def test_simple_cnn():
    module, n_features, normalisation = build_backbone("simple_cnn", image_size=SIZE)
    assert isinstance(module, SimpleCNN)
    assert n_features == 256
    assert normalisation == (IMAGENET_MEAN, IMAGENET_STD)
    assert module.training  # the dry run leaves the mode as it found it
    assert module(torch.zeros(2, 3, *SIZE)).shape == (2, 256)


def test_simple_cnn_width():
    assert SimpleCNN(width=4)(torch.zeros(1, 3, 16, 16)).shape == (1, 32)


def test_resnet18_classifier_replaced():
    module, n_features, normalisation = build_backbone("resnet18", image_size=SIZE)
    assert isinstance(module, torchvision.models.ResNet)
    assert isinstance(module.fc, nn.Identity)
    assert not any(isinstance(m, nn.Linear) for m in module.modules())
    assert n_features == 512
    assert normalisation == (IMAGENET_MEAN, IMAGENET_STD)
    assert module.training


def test_mobilenet_feature_size_matches_forward():
    module, n_features, _ = build_backbone("mobilenet_v3_small", image_size=SIZE)
    module.eval()
    with torch.no_grad():
        features = module(torch.rand(3, 3, *SIZE))
    assert features.shape == (3, n_features)
    # Only the last linear layer goes: the hidden one of the classifier stays.
    assert isinstance(module.classifier[-1], nn.Identity)
    assert isinstance(module.classifier[0], nn.Linear)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_instance_loses_its_classifier_like_a_name(name):
    model = torchvision.models.get_model(name, weights=None)
    module, n_features, _ = build_backbone(model, None, SIZE)
    _, n_registry, _ = build_backbone(name, None, SIZE)
    assert n_features == n_registry != 1000
    assert module(torch.zeros(2, 3, *SIZE)).shape == (2, n_features)
    assert is_torchvision_classifier(model) and not is_torchvision_classifier(SimpleCNN())
    assert [type(m) for m in model.modules()][-1] is nn.Linear  # the user's model unchanged


def test_user_module_copied_not_mutated():
    user = _user_backbone()
    before = copy.deepcopy(user.state_dict())
    module, n_features, normalisation = build_backbone(user, image_size=(16, 16))
    assert n_features == 5
    assert normalisation == (IMAGENET_MEAN, IMAGENET_STD)
    assert module is not user
    with torch.no_grad():
        for param in module.parameters():
            param.add_(1.0)
    _assert_state_equal(user.state_dict(), before)
    assert user.training


def test_user_module_multidimensional_features_flattened_size():
    user = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(3))
    _, n_features, _ = build_backbone(user, image_size=(16, 16))
    assert n_features == 2 * 3 * 3


class _Sum(nn.Module):
    def forward(self, x):
        return x.sum()


def test_user_module_returning_scalar():
    with pytest.raises(
        ValueError, match=r"backbone '_Sum' must map images .* returned Tensor \(\)"
    ):
        build_backbone(_Sum(), image_size=(16, 16))


def test_user_module_failing():
    with pytest.raises(
        ValueError, match=r"backbone 'Linear' failed on a batch of images of size \(16, 16\)"
    ):
        build_backbone(nn.Linear(5, 3), image_size=(16, 16))


def test_unknown_backbone_name():
    with pytest.raises(ValueError, match="unknown backbone 'resnet_huge'"):
        build_backbone("resnet_huge", image_size=SIZE)


def test_backbone_without_linear_classifier():
    with pytest.raises(ValueError, match="backbone 'squeezenet1_0' has no linear classifier"):
        build_backbone("squeezenet1_0", image_size=SIZE)


def test_resnet18_weights_file(tmp_path):
    torch.manual_seed(0)
    saved = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(saved, path)
    with pytest.warns(IgnoredWeightsWarning, match=r"ignored: \['fc.weight', 'fc.bias'\]"):
        module, n_features, _ = build_backbone("resnet18", weights=str(path), image_size=SIZE)
    assert n_features == 512
    expected = {k: v for k, v in saved.items() if not k.startswith("fc.")}
    _assert_state_equal(module.state_dict(), expected)


def test_simple_cnn_weights_file_as_path(tmp_path):
    torch.manual_seed(0)
    saved = SimpleCNN().state_dict()
    path = tmp_path / "cnn.pt"
    torch.save(saved, path)
    module, _, _ = build_backbone("simple_cnn", weights=path, image_size=SIZE)
    _assert_state_equal(module.state_dict(), saved)


def test_user_module_weights_file_leaves_user_module(tmp_path):
    torch.manual_seed(0)
    saved = _user_backbone().state_dict()
    path = tmp_path / "user.pth"
    torch.save(saved, path)
    user = _user_backbone()
    before = copy.deepcopy(user.state_dict())
    module, _, _ = build_backbone(user, weights=path, image_size=(16, 16))
    _assert_state_equal(module.state_dict(), saved)
    _assert_state_equal(user.state_dict(), before)


def test_wrong_state_dict_names_file(tmp_path):
    path = tmp_path / "cnn.pth"
    torch.save(SimpleCNN().state_dict(), path)
    message = re.escape(
        f"the weights file {str(path)!r} is not a state dict of backbone 'resnet18'"
    )
    with pytest.raises(ValueError, match=message):
        build_backbone("resnet18", weights=path, image_size=SIZE)


def test_not_a_dict_weights_file_names_file(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    message = re.escape(f"the weights file {str(path)!r} is not a state dict")
    with pytest.raises(ValueError, match=message):
        build_backbone("simple_cnn", weights=path, image_size=SIZE)


def test_whole_model_weights_file_names_file(tmp_path):
    # torch.save(model) instead of torch.save(model.state_dict()): a common mistake.
    path = tmp_path / "whole_model.pth"
    torch.save(SimpleCNN(), path)
    message = re.escape(f"the weights file {str(path)!r} is not a state dict")
    with pytest.raises(ValueError, match=message):
        build_backbone("simple_cnn", weights=path, image_size=SIZE)


@pytest.mark.parametrize("backbone", ["simple_cnn", "resnet18"])
def test_missing_weights_file(tmp_path, backbone):
    path = tmp_path / "absent.pth"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"weights file not found: {str(path)!r}")
    ):
        build_backbone(backbone, weights=str(path), image_size=SIZE)


@pytest.mark.parametrize("backbone", ["simple_cnn", SimpleCNN(width=4)])
def test_default_weights_of_a_backbone_without_any_are_random(backbone):
    torch.manual_seed(0)
    module, _, _ = build_backbone(backbone, weights="DEFAULT", image_size=SIZE)
    torch.manual_seed(0)
    fresh, _, _ = build_backbone(backbone, weights=None, image_size=SIZE)

    assert not has_pretrained_weights(backbone, "DEFAULT")
    for (name, value), (_, expected) in zip(
        module.state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name


@pytest.mark.parametrize("backbone", ["simple_cnn", SimpleCNN(width=4)])
def test_named_torchvision_weights_for_a_backbone_without_them(backbone):
    with pytest.raises(ValueError, match="weights='IMAGENET1K_V1' names torchvision weights"):
        build_backbone(backbone, weights="IMAGENET1K_V1", image_size=SIZE)


def test_has_pretrained_weights(tmp_path):
    assert has_pretrained_weights("resnet18", "DEFAULT")
    assert has_pretrained_weights("resnet18", "IMAGENET1K_V1")
    assert has_pretrained_weights("simple_cnn", tmp_path / "weights.pt")
    assert not has_pretrained_weights("resnet18", None)


def test_unknown_weights_name_lists_available():
    with pytest.raises(
        ValueError, match=r"unknown weights 'IMAGENET9K' for backbone 'resnet18'.*'IMAGENET1K_V1'"
    ):
        build_backbone("resnet18", weights="IMAGENET9K", image_size=SIZE)


def test_pretrained_weights_offline(tmp_path, monkeypatch):
    def unreachable(self, address):
        raise OSError("network is unreachable")

    # An empty cache, and no network: torchvision's own download code runs and fails.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    with pytest.raises(
        RuntimeError,
        match=r"could not download the pretrained weights .* for backbone 'resnet18'"
        r".*Pass weights=None .*, or weights=PATH, the path of a local state-dict file",
    ):
        build_backbone("resnet18", weights="DEFAULT", image_size=SIZE)


def _sevens(model):
    """``model``'s state dict with every floating value 7: a file no download holds."""
    return {k: torch.full_like(v, 7) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}


@pytest.fixture
def downloads(monkeypatch):
    """torchvision's download replaced: records each URL, serves a seeded resnet18."""
    import torchvision.models._api

    urls = []

    def download(url, *args, **kwargs):
        urls.append(url)
        torch.manual_seed(3)
        return torchvision.models.resnet18().state_dict()

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", download)
    return urls


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"])
def test_a_file_named_like_the_weights_in_the_working_folder_is_not_read(
    tmp_path, monkeypatch, downloads, weights
):
    monkeypatch.chdir(tmp_path)
    torch.save(_sevens(torchvision.models.resnet18()), weights)  # a valid weights file
    module, _, _ = build_backbone("resnet18", weights=weights, image_size=SIZE)
    assert downloads == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    torch.manual_seed(3)
    downloaded = torchvision.models.resnet18().state_dict()
    _assert_state_equal(module.state_dict(), {k: v for k, v in downloaded.items()
                                              if not k.startswith("fc.")})


def test_the_offline_error_names_the_download_not_a_file_in_the_working_folder(
    tmp_path, monkeypatch
):
    def unreachable(self, address):
        raise OSError("network is unreachable")

    monkeypatch.chdir(tmp_path)
    torch.save(_sevens(torchvision.models.resnet18()), "DEFAULT")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    with pytest.raises(RuntimeError, match=r"could not download the pretrained weights "
                       r"ResNet18_Weights.IMAGENET1K_V1 for backbone 'resnet18'"):
        build_backbone("resnet18", weights="DEFAULT", image_size=SIZE)


@pytest.mark.parametrize("as_path", [lambda name: f"./{name}", pathlib.Path])
def test_a_path_to_a_file_named_like_the_weights_reads_it(tmp_path, monkeypatch, downloads,
                                                          as_path):
    monkeypatch.chdir(tmp_path)
    saved = _sevens(torchvision.models.resnet18())
    torch.save(saved, "DEFAULT")
    with pytest.warns(IgnoredWeightsWarning):  # the file's classifier
        module, _, _ = build_backbone("resnet18", weights=as_path("DEFAULT"), image_size=SIZE)
    assert downloads == []
    _assert_state_equal(module.state_dict(), {k: v for k, v in saved.items()
                                              if not k.startswith("fc.")})
    assert has_pretrained_weights("simple_cnn", as_path("DEFAULT"))
    assert not has_pretrained_weights("simple_cnn", "DEFAULT")


@pytest.mark.parametrize("backbone", ["resnet18", "simple_cnn", SimpleCNN(width=4)])
def test_a_bare_word_that_names_no_weights_is_refused_not_read(tmp_path, monkeypatch, backbone):
    monkeypatch.chdir(tmp_path)
    torch.save(SimpleCNN().state_dict(), "my_weights")
    with pytest.raises(ValueError, match=r"a bare name is never read as a file: to read the "
                       r"file 'my_weights', pass './my_weights' or pathlib.Path") as error:
        build_backbone(backbone, weights="my_weights", image_size=SIZE)
    assert "\n" not in str(error.value)


# --- MultiTaskModule -----------------------------------------------------------


@pytest.fixture
def multitask_module():
    torch.manual_seed(0)
    backbone = SimpleCNN(width=4)
    module = MultiTaskModule(backbone, 32, {"color": 5, "area": 1, "shape": 3})
    return module.eval()


def test_forward_shape(multitask_module):
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        out = multitask_module(images)
    assert out.shape == (4, 9)
    assert out.dtype == torch.float32


def test_forward_heads_keyed_in_order(multitask_module):
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        features = multitask_module.forward_features(images)
        heads = multitask_module.forward_heads(features)
        out = multitask_module(images)
    assert features.shape == (4, 32)
    assert list(heads) == ["color", "area", "shape"]
    assert [h.shape for h in heads.values()] == [(4, 5), (4, 1), (4, 3)]
    torch.testing.assert_close(torch.cat(list(heads.values()), dim=1), out)


def test_uint8_equals_float_0_255(multitask_module):
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(multitask_module(images), multitask_module(images.float()))


def test_forward_features_normalises():
    # Global average pooling as the backbone exposes the normalised image itself.
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    module = MultiTaskModule(pool, 3, {"t": 1}, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    features = module.forward_features(images)
    torch.testing.assert_close(features, torch.tensor([[1.0, 3.0, 1.0]] * 2))


def test_task_names_need_not_be_module_names():
    torch.manual_seed(0)
    module = MultiTaskModule(SimpleCNN(width=4), 32, {"a.b": 2, 3: 1, "": 4}).eval()
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with torch.no_grad():
        out = module(images)
        heads = module.forward_heads(module.forward_features(images))
    assert out.shape == (2, 7)
    assert list(heads) == ["a.b", 3, ""]
    assert [h.shape[1] for h in heads.values()] == [2, 1, 4]

"""Building the net: a loaded model is rebuilt by the function that builds a fitted one."""

import pytest
import torch
from conftest import TARGETS, small_estimator

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.network._backbones import SimpleCNN
from sk_multitask.training._build import rebuild_net
from sk_multitask.training._config import TrainingConfig


def test_rebuild_net_builds_the_net_fit_built(fitted):
    config = TrainingConfig.from_estimator(fitted)

    net = rebuild_net(config, fitted.tasks_, fitted.image_size_, device="cpu")

    fitted_state = fitted.net_.module_.state_dict()
    assert {k: v.shape for k, v in net.module_.state_dict().items()} == {
        k: v.shape for k, v in fitted_state.items()
    }
    assert net.criterion_.state_dict().keys() == fitted.net_.criterion_.state_dict().keys()
    assert [name for name, _ in net.callbacks_] == [name for name, _ in fitted.net_.callbacks_]
    assert len(net.history) == 0


def _backbone_rate_scale(est):
    return est.history_[-1, "backbone_lr"] / est.history_[-1, "lr"]


def test_a_warm_start_after_load_keeps_the_pretrained_backbone_rate(image_set, tmp_path):
    weights = tmp_path / "simple_cnn.pt"
    torch.save(SimpleCNN().state_dict(), weights)  # a local weights file: pretrained
    y = image_set[TARGETS]
    est = small_estimator(image_set, weights=str(weights), max_epochs=1).fit(image_set, y)
    assert est.pretrained_ and _backbone_rate_scale(est) == pytest.approx(0.1)

    loaded = MultiTaskImageEstimator.load(est.save(tmp_path / "model.skmt"))
    loaded.set_params(warm_start=True, max_epochs=1).fit(image_set, y)

    assert loaded.pretrained_
    # Was 1.0: the loaded module had lost its "pretrained" marker.
    assert _backbone_rate_scale(loaded) == pytest.approx(0.1)
    assert len(loaded.history_) == 2


@pytest.fixture
def image_opens(monkeypatch):
    """The number of images opened so far (PIL.Image.open counted)."""
    from PIL import Image

    opened = []
    real_open = Image.open

    def counting_open(*args, **kwargs):
        opened.append(args[0] if args else None)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return opened


NOT_A_FOLDER = "NOT_A_FOLDER"

BAD_PARAMETERS = [
    (dict(callbacks=[None]), TypeError, r"callbacks\[0\] is None: expected a skorch Callback"),
    (dict(backbone="resnet"), ValueError, r"unknown backbone 'resnet': expected 'simple_cnn'"),
    (dict(backbone="resnet18", weights="NOPE"), ValueError, r"unknown weights 'NOPE'"),
    (dict(loss_weights={"color": -1}), ValueError, r"loss_weights must be finite non-negative"),
    (dict(loss_weights={"colour": 1}), ValueError, r"loss_weights names unknown tasks"),
    (dict(class_weight={"color": {"red": -1}}), ValueError, r"class_weight of task 'color' must"),
    (dict(class_weight={"area": "balanced"}), ValueError, r"\['area'\] that are not class"),
    (dict(class_weight={"color": {"mauve": 1}}), ValueError, r"names labels \['mauve'\]"),
    (dict(regression_loss={"area": "l3"}), ValueError, r"regression_loss 'l3' for task 'area'"),
    (dict(regression_loss={"color": "l1"}), ValueError, r"\['color'\] that are not regression"),
    (dict(tasks={"nope": "regression"}), ValueError, r"tasks names unknown tasks \['nope'\]"),
    (dict(cache_dir=NOT_A_FOLDER), ValueError, r"cache_dir=.* cannot be written: .* not a folder"),
    (dict(checkpoint_dir=NOT_A_FOLDER), ValueError, r"checkpoint_dir=.* cannot be written"),
    (dict(image_size=100000), ValueError, r"image_size \(100000, 100000\) is too large: .* 4096"),
    (dict(image_size=(16, 5000)), ValueError, r"image_size \(16, 5000\) is too large"),
    (dict(batch_size=1, backbone="resnet18"), ValueError, r"batch_size=1 cannot train .*resnet18"),
]


@pytest.mark.parametrize("params, error, match", BAD_PARAMETERS)
def test_parameters_are_checked_before_any_image_is_opened(
    image_set, tmp_path, image_opens, params, error, match
):
    (tmp_path / "file").write_text("not a folder")
    for name in ("cache_dir", "checkpoint_dir"):
        if params.get(name) == NOT_A_FOLDER:
            params = {**params, name: tmp_path / "file" / "sub"}
    est = small_estimator(image_set, **params)
    with pytest.raises(error, match=match):
        est.fit(image_set, image_set[TARGETS])
    with pytest.raises(error, match=match):
        est.lr_find(image_set, image_set[TARGETS], num_it=2)
    assert image_opens == []
    assert not (tmp_path / "file" / "sub").exists()


def test_batch_size_one_trains_a_backbone_whose_batchnorm_can(image_set, image_opens):
    # simple_cnn ends in a 2 x 2 map at 16 px: BatchNorm has 4 values per channel.
    rows = image_set.iloc[:8]
    est = small_estimator(rows, batch_size=1, max_epochs=1, valid_split=None)
    est.fit(rows, rows[TARGETS])
    assert len(est.history_) == 1 and image_opens


def test_y_columns_equal_as_text_are_refused_naming_both(image_set, image_opens):
    y = image_set[["color", "area"]].set_axis([1, "1"], axis=1)
    with pytest.raises(ValueError, match=r"y has columns 1 and '1', which are the same task name"):
        small_estimator(image_set).fit(image_set, y)
    assert image_opens == []


def test_the_number_of_workers_changes_nothing_that_trains(image_set):
    # Two epochs: the order of the second and every augmentation come from the seed.
    rows = image_set.iloc[:40]
    states = []
    for num_workers in (0, 1, 2):
        est = small_estimator(rows, augment=True, num_workers=num_workers, cache=False)
        est.fit(rows, rows[TARGETS])
        states.append(est.net_.module_.state_dict())
    for state in states[1:]:
        assert all(torch.equal(state[key], states[0][key]) for key in states[0])

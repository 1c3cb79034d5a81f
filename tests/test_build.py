"""Building the net: a loaded model is rebuilt by the function that builds a fitted one."""

import pytest
import torch
from conftest import TARGETS, small_estimator

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.backbones import SimpleCNN
from sk_multitask.build import rebuild_net
from sk_multitask.config import TrainingConfig


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

"""The frozen config of a fit and its plan: the resolved "auto" values."""

import dataclasses
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from skorch.callbacks import Callback

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.training._config import Plan, TrainingConfig, WarmStart
from sk_multitask.training.callbacks import run_fingerprint


def test_the_config_is_the_estimators_parameters_frozen():
    est = MultiTaskImageEstimator(lr=0.01, backbone="simple_cnn", max_epochs=3)

    config = TrainingConfig.from_estimator(est)

    assert (config.lr, config.backbone, config.max_epochs) == (0.01, "simple_cnn", 3)
    assert {f.name for f in dataclasses.fields(config)} == set(est.get_params(deep=False))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    assert "verbose" not in config.learning_params()
    assert config.learning_params()["lr"] == 0.01


@pytest.mark.parametrize(
    ("backbone", "weights", "max_epochs", "expected"),
    [
        ("resnet18", "DEFAULT", 10, (1, 0.1, True)),
        ("resnet18", "DEFAULT", 1, (0, 0.1, True)),
        ("resnet18", None, 10, (0, 1.0, False)),
        ("simple_cnn", "DEFAULT", 10, (0, 1.0, False)),
    ],
)
def test_the_plan_resolves_the_auto_recipe(backbone, weights, max_epochs, expected):
    config = TrainingConfig(backbone=backbone, weights=weights, max_epochs=max_epochs, device="cpu")

    plan = Plan.resolve(config, (16, 16), seed=3, decoded=True)

    assert (plan.freeze_epochs, plan.backbone_lr_scale, plan.pretrained) == expected
    assert (plan.device, plan.seed, plan.num_workers, plan.start_epoch) == ("cpu", 3, 0, 0)
    assert not plan.continuing


def test_a_warm_start_keeps_the_first_fits_pretrained_recipe():
    config = TrainingConfig(backbone="simple_cnn", weights=None, device="cpu")
    first = SimpleNamespace(history=[{}, {}, {}])  # three epochs fitted
    warm = WarmStart(first, tasks={}, image_size=(16, 16), pretrained=True)

    plan = Plan.resolve(config, (16, 16), seed=None, decoded=False, warm=warm)

    assert (plan.freeze_epochs, plan.backbone_lr_scale, plan.pretrained) == (0, 0.1, True)
    assert (plan.start_epoch, plan.continuing) == (3, True)


class _LockedCallback(Callback):
    """Holds a live resource: cannot be pickled (as skorch's TensorBoard and its writer)."""

    def __init__(self):
        self.lock = threading.Lock()


def test_the_fingerprint_tells_parameters_and_data_apart():
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    targets, train = np.arange(4.0)[:, None], np.arange(3)
    params = TrainingConfig(callbacks=[_LockedCallback()]).learning_params()

    same = run_fingerprint(params, images, targets, train, None)

    again = TrainingConfig(callbacks=[_LockedCallback()]).learning_params()
    assert same == run_fingerprint(again, images, targets, train, None)
    assert same != run_fingerprint({**params, "lr": 0.5}, images, targets, train, None)
    assert same != run_fingerprint(params, images, targets + 1, train, None)
    assert same != run_fingerprint(params, images, targets, train[:2], np.array([2]))

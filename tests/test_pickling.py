"""Pickles: the versions record, InconsistentVersionWarning (scikit-learn's), lean pickles
(the safe file's bytes, the optimizer with warm_start), skops."""

import functools
import io
import json
import os
import pickle

import joblib
import pandas as pd
import pytest
import torch
from conftest import TARGETS, small_estimator

import sk_multitask
from sk_multitask import InconsistentVersionWarning, MultiTaskImageEstimator
from sk_multitask.persistence import _pickling as pickling


def test_a_pickle_records_the_version_and_loads_silently_under_it(fitted, image_set):
    data = pickle.dumps(fitted)
    versions = fitted.__getstate__()[pickling.VERSIONS_KEY]
    assert versions["sk_multitask"] == sk_multitask.__version__
    assert torch.__version__.startswith(versions["torch"])  # the distribution's version
    loaded = pickle.loads(data)  # warnings are errors: none here
    assert pickling.VERSIONS_KEY not in vars(loaded)
    pd.testing.assert_frame_equal(fitted.predict(image_set), loaded.predict(image_set))


def test_a_pickle_of_another_version_warns(fitted, image_set, monkeypatch):
    buffer = io.BytesIO()
    with monkeypatch.context() as patch:
        patch.setattr(pickling, "package_versions", lambda: {"sk_multitask": "0.0.1"})
        joblib.dump(fitted, buffer)
    buffer.seek(0)
    with pytest.warns(InconsistentVersionWarning, match="version 0.0.1 when using version") as w:
        loaded = joblib.load(buffer)
    assert w[0].message.original_version == "0.0.1"
    assert w[0].message.current_version == sk_multitask.__version__
    pd.testing.assert_frame_equal(fitted.predict(image_set), loaded.predict(image_set))

    state = fitted.__getstate__()
    del state[pickling.VERSIONS_KEY]  # a pickle from before versions were recorded
    with pytest.warns(InconsistentVersionWarning, match="unknown"):
        MultiTaskImageEstimator.__new__(MultiTaskImageEstimator).__setstate__(state)

    # A pickle of sk-multitask 0.1.0 recorded the version alone, under another key.
    state["_sk_multitask_version"] = "0.0.9"
    with pytest.warns(InconsistentVersionWarning, match="version 0.0.9 when"):
        MultiTaskImageEstimator.__new__(MultiTaskImageEstimator).__setstate__(state)


def test_the_version_warning_is_scikit_learns_and_a_filter_for_it_catches_ours():
    from sklearn.exceptions import InconsistentVersionWarning as SklearnWarning

    warning = InconsistentVersionWarning(
        estimator_name="MultiTaskImageEstimator", current_version="0.2", original_version="0.1"
    )
    assert isinstance(warning, SklearnWarning)
    assert warning.original_sklearn_version == "0.1"  # scikit-learn's attributes too
    assert "sk-multitask version 0.1 when using version 0.2" in str(warning)
    with pytest.warns(SklearnWarning):
        MultiTaskImageEstimator.__new__(MultiTaskImageEstimator).__setstate__(
            {"_sk_multitask_version": "0.0.9"}
        )


# -- lean pickles: the safe file's bytes, the optimizer with warm_start ------------------


def test_a_fitted_pickle_holds_the_safe_file_not_the_net(fitted, image_set, tmp_path):
    state = fitted.__getstate__()
    assert not set(pickling.SAVED_ATTRIBUTES) & state.keys()
    assert pickling.OPTIMIZER_KEY not in state  # warm_start=False: nothing to continue
    assert isinstance(state[pickling.MODEL_KEY], bytes)
    joblib.dump(fitted, tmp_path / "model.joblib")
    safe = fitted.save(tmp_path / "model.skmt")
    ratio = (tmp_path / "model.joblib").stat().st_size / os.path.getsize(safe)
    assert ratio < 1.05  # the weights once, and the parameters
    loaded = joblib.load(tmp_path / "model.joblib")
    pd.testing.assert_frame_equal(loaded.predict(image_set), fitted.predict(image_set))
    assert list(loaded.history_) == json.loads(json.dumps(list(fitted.history_)))
    pd.testing.assert_frame_equal(loaded.data_sizes_, fitted.data_sizes_)
    assert loaded.tasks_.keys() == fitted.tasks_.keys()
    assert (loaded.image_size_, loaded.pretrained_) == (fitted.image_size_, fitted.pretrained_)


def test_an_unfitted_pickle_holds_the_parameters_alone():
    est = MultiTaskImageEstimator(backbone="simple_cnn", max_epochs=3)
    state = est.__getstate__()
    assert state.keys() == est.get_params().keys() | {pickling.VERSIONS_KEY}
    loaded = pickle.loads(pickle.dumps(est))
    assert loaded.get_params() == est.get_params() and not hasattr(loaded, "net_")


def test_a_pickle_that_holds_the_net_itself_still_loads(fitted, image_set):
    old = {**vars(fitted), pickling.VERSIONS_KEY: {"sk_multitask": sk_multitask.__version__}}
    loaded = MultiTaskImageEstimator.__new__(MultiTaskImageEstimator)
    loaded.__setstate__(old)
    assert loaded.net_ is fitted.net_
    pd.testing.assert_frame_equal(loaded.predict(image_set), fitted.predict(image_set))


def test_a_pickle_naming_cuda_loads_on_a_cpu_only_machine(fitted, image_set, monkeypatch):
    data = pickle.dumps(clone_fitted(fitted, device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(data)
    assert loaded.device == "cuda" and str(loaded.net_.device) == "cpu"
    pd.testing.assert_frame_equal(loaded.predict(image_set), fitted.predict(image_set))


def clone_fitted(est, **params):
    """A shallow copy of a fitted ``est`` with ``params`` set (no refit)."""
    copy = MultiTaskImageEstimator.__new__(MultiTaskImageEstimator)
    copy.__dict__.update(vars(est))
    return copy.set_params(**params)


def test_a_warm_start_pickle_keeps_the_optimizer_and_continues(image_set):
    image_set = image_set.iloc[:64]
    y = image_set[TARGETS]
    # A callable optimizer: the pickle holds the parameters as they are, not as JSON.
    optimizer = functools.partial(torch.optim.AdamW, weight_decay=0.05)
    est = small_estimator(image_set, max_epochs=1, warm_start=True, optimizer=optimizer)
    est.fit(image_set, y)
    state = est.__getstate__()
    assert isinstance(state[pickling.OPTIMIZER_KEY], bytes)
    loaded = pickle.loads(pickle.dumps(est))
    before, after = est.net_.optimizer_.state_dict(), loaded.net_.optimizer_.state_dict()
    assert before["param_groups"] == after["param_groups"]
    assert before["state"].keys() == after["state"].keys() and before["state"]
    for key, values in before["state"].items():
        for name, tensor in values.items():
            assert torch.equal(tensor, after["state"][key][name]), name
    est.fit(image_set, y)
    loaded.fit(image_set, y)
    assert len(loaded.history_) == len(est.history_) == 2
    assert loaded.history_[-1, "train_loss"] == pytest.approx(est.history_[-1, "train_loss"])
    pd.testing.assert_frame_equal(loaded.predict(image_set), est.predict(image_set))


def test_skops_round_trips_a_fitted_estimator_trusting_only_ours(fitted, image_set):
    skops_io = pytest.importorskip("skops.io")
    data = skops_io.dumps(fitted)
    untrusted = skops_io.get_untrusted_types(data=data)
    assert untrusted == ["sk_multitask.estimator.MultiTaskImageEstimator"]
    loaded = skops_io.loads(data, trusted=untrusted)
    pd.testing.assert_frame_equal(loaded.predict(image_set), fitted.predict(image_set))
    pd.testing.assert_frame_equal(loaded.data_sizes_, fitted.data_sizes_)
    assert loaded.get_params().keys() == fitted.get_params().keys()

"""Versioned pickles: the versions record, InconsistentVersionWarning (scikit-learn's)."""

import io
import pickle

import joblib
import pandas as pd
import pytest
import torch

import sk_multitask
from sk_multitask import InconsistentVersionWarning, MultiTaskImageEstimator, pickling


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

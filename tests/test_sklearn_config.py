"""scikit-learn's global settings honoured: transform_output="pandas" or "polars" changes
what the estimator's own ``transform`` returns, and nothing inside it."""

import numpy as np
import pandas as pd
import polars as pl
import pytest
import sklearn
from conftest import TARGETS, small_estimator

from sk_multitask.datasets import make_multitask_images
from sk_multitask.report import write_report


def results(df):
    """What every method gives on ``df``, for a model fitted there (one epoch)."""
    y = df[TARGETS]
    est = small_estimator(df, max_epochs=1).fit(df, y)
    return est, {
        "lr_find": small_estimator(df).lr_find(df, y, num_it=3),
        "predict": est.predict(df),
        "predict_proba": est.predict_proba(df)["shape"],
        "top_losses": est.top_losses(df, y, k=5),
        "evaluate": est.evaluate(df, y),
        "per_class": est.evaluate(df, y, per_class=True),
        "score": est.score(df, y),
        "transform": est.transform(df),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    path = tmp_path_factory.mktemp("images")
    return make_multitask_images(48, image_size=16, missing_rate=0.2, path=path, random_state=0)


@pytest.fixture(scope="module")
def reference(images):
    """The results under scikit-learn's default settings."""
    return results(images)


@pytest.mark.parametrize("output", ["pandas", "polars"])
def test_every_method_works_under_a_global_transform_output(reference, images, tmp_path, output):
    with sklearn.config_context(transform_output=output):
        fitted, got = results(images)
        report = write_report(fitted, images, images[TARGETS], tmp_path / "report.html", k=2)

    est, expected = reference
    for name in ("predict", "predict_proba", "top_losses", "evaluate", "per_class"):
        pd.testing.assert_frame_equal(got[name], expected[name])
    pd.testing.assert_frame_equal(got["lr_find"][0], expected["lr_find"][0])
    assert got["lr_find"][1] == expected["lr_find"][1] and got["score"] == expected["score"]
    assert report.read_text().count("data:image/png;base64,") == 6  # the labels to check too
    # The estimator's own output follows the setting, as a scikit-learn transformer's does.
    features, names = got["transform"], list(est.get_feature_names_out())
    if output == "pandas":
        assert isinstance(features, pd.DataFrame) and list(features.columns) == names
        assert features.index.equals(images.index)
    else:
        assert isinstance(features, pl.DataFrame) and features.columns == names
    np.testing.assert_array_equal(features.to_numpy(), expected["transform"])


def test_the_regression_scaler_returns_arrays_whatever_the_setting(reference):
    scaler = reference[0].tasks_["area"].encoder
    with sklearn.config_context(transform_output="pandas"):
        encoded = scaler.transform(np.array([[0.5], [1.0]]))
    assert isinstance(encoded, np.ndarray) and encoded.shape == (2, 1)

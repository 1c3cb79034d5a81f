"""scikit-learn integration: clone, params, model selection, pipelines, persistence, API checks."""

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import TARGETS, small_estimator
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from sk_multitask import MultiTaskImageEstimator, multitask_scorer


def test_clone_and_params(fitted):
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "net_")
    copy.set_params(lr=0.01, max_epochs=3)
    assert (copy.lr, copy.max_epochs) == (0.01, 3)
    assert fitted.lr == 1e-3
    assert not is_classifier(copy) and not is_regressor(copy)


def test_repr_shows_changed_parameters_only():
    est = MultiTaskImageEstimator(backbone="simple_cnn", max_epochs=3)
    assert repr(est) == "MultiTaskImageEstimator(backbone='simple_cnn', max_epochs=3)"


def test_grid_search_with_mixed_dataframe_y_and_per_task_scorer(image_set):
    est = small_estimator(image_set, max_epochs=1, valid_split=None)
    search = GridSearchCV(
        est, {"lr": [1e-3, 3e-3]}, cv=KFold(2), scoring=multitask_scorer(), refit="shape"
    )
    search.fit(image_set, image_set[TARGETS])

    for key in ("color", "shape", "area", "mean"):
        scores = search.cv_results_[f"mean_test_{key}"]
        assert len(scores) == 2 and np.isfinite(scores).all()
    expected_mean = np.mean(
        [search.cv_results_[f"mean_test_{k}"] for k in ("color", "shape", "area")], axis=0
    )
    assert np.allclose(search.cv_results_["mean_test_mean"], expected_mean)
    best = int(np.argmax(search.cv_results_["mean_test_shape"]))
    assert search.best_params_ == search.cv_results_["params"][best]
    assert list(search.predict(image_set.head(4)).columns) == TARGETS


def test_cross_validate_with_default_score_and_per_task_metrics(image_set):
    est = small_estimator(image_set, max_epochs=1, valid_split=None)
    y = image_set[TARGETS]

    default = cross_validate(est, image_set, y, cv=KFold(2))
    per_task = cross_validate(
        est,
        image_set,
        y,
        cv=KFold(2),
        scoring=multitask_scorer({"area": "neg_mean_absolute_error"}),
    )

    assert default["test_score"].shape == (2,)
    assert (per_task["test_area"] <= 0).all()  # a negated MAE
    assert ((per_task["test_color"] >= 0) & (per_task["test_color"] <= 1)).all()


def select_images(df):
    return df[["filename"]]


def test_in_a_pipeline_and_persisted_with_joblib(image_set, tmp_path):
    pipe = Pipeline(
        [
            ("select", FunctionTransformer(select_images)),
            ("model", small_estimator(image_set, max_epochs=1, valid_split=0.2)),
        ]
    )
    pipe.fit(image_set, image_set[TARGETS])
    path = tmp_path / "pipe.joblib"
    joblib.dump(pipe, path)
    loaded = joblib.load(path)

    pd.testing.assert_frame_equal(loaded.predict(image_set), pipe.predict(image_set))
    assert loaded.score(image_set, image_set[TARGETS]) == pipe.score(image_set, image_set[TARGETS])


def test_joblib_round_trip_gives_identical_predictions(fitted, image_set, tmp_path):
    joblib.dump(fitted, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")

    pd.testing.assert_frame_equal(loaded.predict(image_set), fitted.predict(image_set))
    for name, frame in fitted.predict_proba(image_set).items():
        pd.testing.assert_frame_equal(loaded.predict_proba(image_set)[name], frame)
    assert list(loaded.history_[:, "valid_loss"]) == list(fitted.history_[:, "valid_loss"])


class _AsIfTabular(MultiTaskImageEstimator):
    """Declares 2-D array input so that scikit-learn generates all its checks.

    The estimator itself (rightly) declares image input, for which scikit-learn skips
    every check; this subclass changes only that tag, so each check either passes on
    the real estimator code or is listed below with the reason it cannot apply.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


_NUMERIC_X = "fits on a 2-D numeric array; X must be images (paths or uint8 (N, H, W[, C]))"
#: API checks that fit on numeric arrays: test_api_checks_on_images runs them on images.
ON_IMAGES = [
    "check_fit_score_takes_y",
    "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self",
    "check_estimators_pickle",
    "check_methods_subset_invariance",
    "check_methods_sample_order_invariance",
    "check_dict_unchanged",
    "check_fit_idempotent",
    "check_fit_check_is_fitted",
    "check_pipeline_consistency",
    "check_transformer_preserve_dtypes",
    "check_sample_weights_pandas_series",
    "check_sample_weights_not_an_array",
    "check_sample_weights_list",
    "check_all_zero_sample_weights_error",
    "check_sample_weights_shape",
    "check_sample_weights_not_overwritten",
]
EXPECTED_FAILED_CHECKS = {
    **dict.fromkeys(ON_IMAGES, f"{_NUMERIC_X}: run on images by test_api_checks_on_images"),
    # Checks that fit on random 2-D numeric arrays, which are not images.
    **dict.fromkeys(
        [
            "check_readonly_memmap_input",
            "check_n_features_in_after_fitting",
            "check_positive_only_tag_during_fit",
            "check_estimators_dtypes",
            "check_dtype_object",
            "check_estimators_pickle(readonly_memmap=True)",
            "check_f_contiguous_array_estimator",
            "check_fit2d_1feature",
            "check_n_features_in",
            "check_fit2d_predict1d",
            "check_transformer_general",
            "check_transformer_general(readonly_memmap=True)",
            "check_transformer_data_not_an_array",
        ],
        _NUMERIC_X,
    ),
    # Mini-batch SGD: a row repeated twice lands in other batches (and other augmentations)
    # than the same row with weight 2, so the two fits differ. tests/test_sample_weight.py
    # checks the equivalences that do hold: weights of ones, and zero weights as left out.
    "check_sample_weight_equivalence_on_dense_data": (
        "a repeated row is not a weighted row in mini-batch SGD"
    ),
    # Checks that expect scikit-learn's own error wording for bad 2-D numeric input;
    # ours refuses the same input, saying that X is not images.
    "check_complex_data": "expects a message about complex numbers",
    "check_estimators_empty_data_messages": "expects scikit-learn's wording for empty 2-D data",
    "check_estimators_nan_inf": "expects a message about NaN/inf in a numeric X",
    "check_estimator_sparse_array": "expects a message about sparse input",
    "check_estimator_sparse_matrix": "expects a message about sparse input",
    "check_estimator_sparse_tag": "sparse input is not images",
    "check_fit2d_1sample": "expects scikit-learn's wording for a 1-sample 2-D X",
}


@parametrize_with_checks(
    [_AsIfTabular(backbone="simple_cnn", weights=None, image_size=16, max_epochs=1)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
    xfail_strict=True,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def _images(X):
    """Each row of a 2-D numeric ``X`` as an 8x8 grey uint8 image: its values, tiled."""
    pixels = np.clip(np.round(np.asarray(X, dtype=np.float64) * 16 + 128), 0, 255)
    return np.stack([np.resize(row, 64).reshape(8, 8, 1) for row in pixels.astype(np.uint8)])


class _RowsAsImages(MultiTaskImageEstimator):
    """Test adapter: scikit-learn's API checks on the estimator, fed images.

    Each numeric row becomes a tiny image (:func:`_images`) and each output the array
    the checks compare: ``predict``'s frame as its values, ``predict_proba``'s frames side
    by side. Everything else is the estimator's own code.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags

    def fit(self, X, y, sample_weight=None):
        return super().fit(_images(X), y, sample_weight)

    def partial_fit(self, X, y, sample_weight=None):
        return super().partial_fit(_images(X), y, sample_weight)

    def predict(self, X):
        return super().predict(_images(X)).to_numpy()

    def predict_proba(self, X):
        frames = super().predict_proba(_images(X)).values()
        return np.hstack([np.empty((len(X), 0)), *(frame.to_numpy() for frame in frames)])

    def transform(self, X):
        return super().transform(_images(X))

    def score(self, X, y, sample_weight=None):
        return super().score(_images(X), y, sample_weight)


@pytest.mark.parametrize("check", ON_IMAGES)
def test_api_checks_on_images(check):
    from sklearn.utils import estimator_checks

    est = _RowsAsImages(backbone="simple_cnn", weights=None, image_size=8, max_epochs=1,
                        valid_split=None, random_state=0)  # fmt: skip
    getattr(estimator_checks, check)(type(est).__name__, est)


def test_fit_without_y_gives_scikit_learns_message(image_set):
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        small_estimator(image_set).fit(image_set, None)


def test_tags_say_what_transform_returns(fitted, image_set):
    tags = fitted.__sklearn_tags__()
    assert tags.transformer_tags.preserves_dtype == ["float32"]
    assert fitted.transform(image_set.head(2)).dtype == np.float32


def test_the_html_repr_links_the_class_page_of_the_documentation_site():
    import pathlib
    import re

    from sk_multitask.estimator import DOCS_URL

    mkdocs = (pathlib.Path(__file__).parents[1] / "mkdocs.yml").read_text()
    assert re.search(r"^site_url: (.*)$", mkdocs, re.M).group(1) == DOCS_URL
    page = f"{DOCS_URL}api/sk_multitask.MultiTaskImageEstimator/"
    est = MultiTaskImageEstimator()
    assert est._get_doc_link() == page
    assert f'href="{page}"' in est._repr_html_()


@pytest.mark.parametrize("layout", ["read-only memmap", "F-ordered"])
def test_image_arrays_of_any_memory_layout_give_the_same_model(layout, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    y = pd.DataFrame({"kind": rng.choice(["a", "b"], 24), "size": rng.normal(size=24)})
    if layout == "F-ordered":
        other = np.asfortranarray(X)
    else:
        np.save(tmp_path / "X.npy", X)
        other = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert not other.flags.c_contiguous or not other.flags.writeable

    def fitted(images):
        params = dict(backbone="simple_cnn", weights=None, image_size=8, max_epochs=1)
        return MultiTaskImageEstimator(**params, valid_split=None, random_state=0).fit(images, y)

    expected, est = fitted(X), fitted(other)
    pd.testing.assert_frame_equal(est.predict(other), expected.predict(X))
    np.testing.assert_array_equal(est.transform(other), expected.transform(X))
    assert est.score(other, y) == expected.score(X, y)

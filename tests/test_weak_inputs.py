"""Weak cases of the estimator's parameters and data (issue 26): each refused in one line
naming its cause before any work is done, or handled so that the result is usable."""

import copy
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TARGETS, small_estimator
from PIL import Image

from sk_multitask.exceptions import BadImageError, BadImageWarning


@pytest.fixture(scope="module")
def rows(image_set):
    return image_set.iloc[:48]


@pytest.fixture(scope="module")
def pixels(rows):
    """The 48 images of ``rows`` as a uint8 array (N, 16, 16, 3)."""
    root = rows.attrs["image_root"]
    return np.stack(
        [np.asarray(Image.open(f"{root}/{name}").convert("RGB")) for name in rows["filename"]]
    )


@pytest.fixture(scope="module")
def fitted_once(rows):
    return small_estimator(rows, max_epochs=1, valid_split=None).fit(rows, rows[TARGETS])


@pytest.fixture(scope="module")
def onnx_predictor(fitted_once, tmp_path_factory):
    pytest.importorskip("onnxscript")
    from sk_multitask.onnx import OnnxPredictor

    return OnnxPredictor(fitted_once.export_onnx(tmp_path_factory.mktemp("onnx") / "m.onnx"))


@pytest.mark.parametrize("name", ["max_epochs", "batch_size", "patience", "lr", "tta"])
def test_a_boolean_is_not_a_number(image_set, name):
    est = small_estimator(image_set, **{name: True})
    with pytest.raises(ValueError, match=rf"'{name}' parameter .* must be .*Got True instead"):
        est.fit(image_set, image_set[TARGETS])


# -- images without pixels -------------------------------------------------------------


def _png_of_width_zero():
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


#: Images without pixels, as each kind of in-memory image.
EMPTY = {
    "array": np.zeros((0, 32, 3), np.uint8),
    "PIL": Image.new("RGB", (0, 0)),
    "bytes": _png_of_width_zero(),
}


def _with_empty_second(pixels, empty):
    return [pixels[0], empty, *pixels[2:]]


@pytest.mark.parametrize("kind", list(EMPTY))
def test_an_image_without_pixels_is_a_bad_image_named_by_its_row(
    fitted_once, onnx_predictor, pixels, kind
):
    X = _with_empty_second(pixels, EMPTY[kind])
    for model in (fitted_once, onnx_predictor):
        with pytest.raises(BadImageError, match=r"'X\[1\]'") as raised:
            model.predict(X)
        assert raised.value.path == "X[1]"


@pytest.mark.parametrize("kind", list(EMPTY))
def test_skip_gives_an_image_without_pixels_missing_predictions(
    fitted_once, onnx_predictor, pixels, kind
):
    X = _with_empty_second(pixels, EMPTY[kind])
    for model in (fitted_once, onnx_predictor):
        model.on_bad_image = "skip"
        try:
            with pytest.warns(BadImageWarning, match=r"'X\[1\]'"):
                predicted = model.predict(X)
        finally:
            model.on_bad_image = "raise"
        assert predicted.iloc[1].isna().all() and predicted.drop(index=1).notna().all().all()


@pytest.mark.parametrize("kind", ["array", "PIL"])
def test_fit_refuses_or_skips_an_image_without_pixels(rows, pixels, kind):
    X, y = _with_empty_second(pixels, EMPTY[kind]), rows[TARGETS]
    with pytest.raises(BadImageError, match=r"'X\[1\]'.*no pixels"):
        small_estimator(rows, max_epochs=1, valid_split=None).fit(X, y)
    est = small_estimator(rows, max_epochs=1, valid_split=None, on_bad_image="skip")
    with pytest.warns(BadImageWarning, match=r"'X\[1\]' \(no pixels"):
        est.fit(X, y)
    assert est.skipped_images_ == ["X[1]"]
    assert est.data_sizes_.loc["rows", "train"] == len(rows) - 1


def test_an_array_of_images_without_pixels_is_refused(fitted_once, onnx_predictor, rows):
    X = np.zeros((2, 0, 32, 3), np.uint8)
    message = r"X has shape \(2, 0, 32, 3\): its images have no pixels"
    for model in (fitted_once, onnx_predictor):
        with pytest.raises(BadImageError, match=message):
            model.predict(X)
    with pytest.raises(BadImageError, match=message):
        small_estimator(rows, on_bad_image="skip").fit(X, rows[TARGETS].iloc[:2])


# -- arrays with negative strides --------------------------------------------------------


@pytest.mark.parametrize(
    "view",
    [lambda X: X[:, ::-1], lambda X: X[..., ::-1], lambda X: list(X[:, :, ::-1])],
    ids=["rows reversed", "channels reversed", "list of flipped images"],
)
def test_an_array_with_negative_strides_is_read_as_its_copy(fitted_once, rows, pixels, view):
    X = view(pixels)
    copied = [image.copy() for image in X] if isinstance(X, list) else X.copy()
    pd.testing.assert_frame_equal(fitted_once.predict(X), fitted_once.predict(copied))
    est = small_estimator(rows, max_epochs=1, valid_split=None, cache=True)
    est.fit(X, rows[TARGETS])


# -- parameters refused before any image is read ---------------------------------------


def _not_optimizer(params, lr):
    return None


def _without_lr(params):
    return torch.optim.SGD(params, lr=0.1)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"checkpoint_dir": ""}, r"^checkpoint_dir='' names no folder"),
        ({"cache_dir": ""}, r"^cache_dir='' names no folder"),
        ({"device": "meta"}, r"^device='meta' holds no data"),
        (
            {"optimizer": _without_lr},
            r"^optimizer _without_lr cannot be called as optimizer\(param_groups, lr=lr\).*"
            r"unexpected keyword argument 'lr'",
        ),
        (
            {"optimizer": _not_optimizer},
            r"^optimizer _not_optimizer must return a torch.optim.Optimizer.*returned NoneType",
        ),
    ],
    ids=["checkpoint_dir ''", "cache_dir ''", "meta", "optimizer without lr", "no optimizer"],
)
def test_a_parameter_that_cannot_work_is_refused_before_reading_images(
    rows, params, message, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # '' would have been the working folder
    missing = rows.assign(filename="missing.png")  # read, they would fail otherwise
    with pytest.raises(ValueError, match=message):
        small_estimator(rows, **params).fit(missing, missing[TARGETS])
    assert not list(tmp_path.iterdir())


def test_predicting_refuses_an_empty_cache_dir(fitted_once, rows):
    with pytest.raises(ValueError, match=r"^cache_dir='' names no folder"):
        copy.deepcopy(fitted_once).set_params(cache_dir="").predict(rows)


def test_a_plain_function_returning_a_torch_optimizer_trains(rows):
    def sgd(params, lr):
        return torch.optim.SGD(params, lr=lr)

    est = small_estimator(rows, max_epochs=1, valid_split=None, optimizer=sgd)
    assert isinstance(est.fit(rows, rows[TARGETS]).net_.optimizer_, torch.optim.SGD)


# -- sample weights: their scale does not matter -----------------------------------------


@pytest.mark.parametrize("scale", [1e-320, 1e308])
def test_weights_count_relative_to_each_other_whatever_their_scale(rows, scale):
    y = rows[TARGETS]
    relative = np.where(np.arange(len(rows)) % 3 == 0, 0.5, 1.0)
    reference = small_estimator(rows, max_epochs=1).fit(rows, y, sample_weight=relative)
    scaled = small_estimator(rows, max_epochs=1).fit(rows, y, sample_weight=relative * scale)
    for key in ("train_loss", "valid_loss"):
        assert scaled.history_[:, key] == reference.history_[:, key]
        assert np.isfinite(scaled.history_[:, key]).all() and scaled.history_[-1, key] > 0
    pd.testing.assert_frame_equal(
        scaled.evaluate(rows, y, sample_weight=relative * scale),
        reference.evaluate(rows, y, sample_weight=relative),
    )


def test_scoring_with_weights_all_zero_says_so(fitted_once, rows):
    with pytest.raises(ValueError, match="^sample_weight is zero on every row: there is nothing"):
        fitted_once.score(rows, rows[TARGETS], sample_weight=np.zeros(len(rows)))


# -- cross-validation: a fold where a task has no labelled cell -------------------------


def test_a_fold_without_a_tasks_labels_scores_it_nan(rows):
    from sklearn.model_selection import KFold, cross_validate

    from sk_multitask import multitask_scorer

    y = rows[TARGETS].copy()
    y.loc[y.index[32:], "shape"] = None  # the last fold has no shape label
    est = small_estimator(rows, max_epochs=1, valid_split=None)
    results = cross_validate(est, rows, y, cv=KFold(3), scoring=multitask_scorer())
    assert np.isnan(results["test_shape"][2]) and np.isfinite(results["test_shape"][:2]).all()
    assert np.isfinite(results["test_mean"]).all()


# -- a Hugging Face Dataset as y ------------------------------------------------------------


def test_a_hugging_face_dataset_as_y_is_read_as_its_table(fitted_once, rows):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_pandas(rows, preserve_index=False)
    est = small_estimator(rows, max_epochs=1, valid_split=None)
    est.fit(ds, ds.select_columns(TARGETS))
    pd.testing.assert_frame_equal(est.predict(rows), fitted_once.predict(rows))
    assert est.score(ds, ds.select_columns(TARGETS)) == fitted_once.score(rows, rows[TARGETS])

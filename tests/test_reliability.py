"""Bad and unusual inputs, bad image files, determinism, concurrent prediction.

Every row of the table in ``docs/reliability.md`` names a test; the last test here checks
that each named test exists, so the table cannot drift from the suite.
"""

import ast
import re
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TARGETS, small_estimator
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils.validation import check_is_fitted

from sk_multitask import MultiTaskImageEstimator, multitask_scorer
from sk_multitask.exceptions import BadImageWarning
from sk_multitask.inputs._bad_images import find_bad_images
from sk_multitask.inputs._dataset import load_image

ROOT = Path(__file__).resolve().parents[1]


# -- helpers ------------------------------------------------------------------------------


def _copy_set(image_set, folder):
    """A writable copy of the session's image set in ``folder``."""
    shutil.copytree(image_set.attrs["image_root"], folder)
    df = image_set.copy()
    df.attrs = {"image_root": str(folder)}
    return df


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _break_png_checksum(path):
    """A PNG whose pixel data checksum is wrong: PIL's verify() finds it."""
    Image.new("RGB", (16, 16), (200, 10, 10)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 6] ^= 0xFF
    path.write_bytes(bytes(data))


BREAKERS = {
    "missing": lambda path: path.unlink(),
    "empty": lambda path: path.write_bytes(b""),
    "not an image": lambda path: path.write_text("name,age\nbob,3\n"),
    "truncated": _truncate,
    "bad png checksum": _break_png_checksum,
}


def _break(df, rows):
    """Break the image files of ``rows`` ({position: breaker name}); their paths."""
    root = Path(df.attrs["image_root"])
    for position, how in rows.items():
        BREAKERS[how](root / df["filename"].iloc[position])
    return [str(root / df["filename"].iloc[position]) for position in rows]


def _skip_warnings(record):
    return [w for w in record if issubclass(w.category, BadImageWarning)]


def _fit_quietly(est, X, y):
    with pytest.warns(BadImageWarning) as record:
        est.fit(X, y)
    return est, record


# -- bad image files: on_bad_image and check_images -------------------------------------------


@pytest.fixture(scope="module")
def broken_set(image_set, tmp_path_factory):
    """The image set with a missing, an empty, a text and a truncated file (training rows)."""
    df = _copy_set(image_set, tmp_path_factory.mktemp("broken") / "images")
    train_rows = np.flatnonzero(~df["is_valid"].to_numpy())
    kinds = ["missing", "empty", "not an image", "truncated"]
    positions = dict(zip(train_rows[:4], kinds, strict=True))
    df.attrs["broken"] = _break(df, positions)
    return df


def test_skip_leaves_bad_images_out_with_one_warning(broken_set):
    est = small_estimator(broken_set, max_epochs=1, on_bad_image="skip")
    est, record = _fit_quietly(est, broken_set, broken_set[TARGETS])

    assert len(_skip_warnings(record)) == 1
    message = str(_skip_warnings(record)[0].message)
    assert message.startswith("4 image files could not be read and were left out of training")
    assert "not found" in message and "empty file" in message and "and 1 more" in message
    assert sorted(est.skipped_images_) == sorted(broken_set.attrs["broken"])
    assert np.isfinite(est.history_[-1, "train_loss"])


def test_skip_missing_and_empty_files_train_as_if_their_rows_were_absent(image_set, tmp_path):
    df = _copy_set(image_set, tmp_path / "images").iloc[:64]
    _break(df, {3: "missing", 5: "empty"})
    y = df[TARGETS]
    skipped, _ = _fit_quietly(small_estimator(df, on_bad_image="skip", max_epochs=1), df, y)
    kept = df.drop(index=[3, 5])
    without = small_estimator(df, max_epochs=1).fit(kept, y.drop(index=[3, 5]))

    pd.testing.assert_frame_equal(skipped.predict(kept), without.predict(kept))
    assert skipped.history_[:, "train_loss"] == without.history_[:, "train_loss"]


def test_skip_a_file_found_bad_while_decoding_adds_nothing_to_the_loss(broken_set):
    """A truncated or non-image file is found only when decoded: its row's targets are
    masked, so whatever they hold, training is the same. (Its labels were seen when the
    encoders were fitted: swapping them between the two rows keeps the encoders.)"""
    bad_rows = broken_set.index[np.flatnonzero(~broken_set["is_valid"].to_numpy())[2:4]]
    other = broken_set[TARGETS].copy()
    other.loc[bad_rows] = other.loc[bad_rows[::-1]].to_numpy()
    assert not other.loc[bad_rows].equals(broken_set.loc[bad_rows, TARGETS])
    est = small_estimator(broken_set, on_bad_image="skip", max_epochs=1)
    first, _ = _fit_quietly(est, broken_set, broken_set[TARGETS])
    second, _ = _fit_quietly(clone(est), broken_set, other)

    assert first.history_[:, "train_loss"] == second.history_[:, "train_loss"]


@pytest.mark.parametrize("options", [{"num_workers": 2}, {"cache": True}], ids=["workers", "cache"])
def test_skip_finds_bad_images_in_worker_processes_and_in_the_cache(broken_set, options):
    est = small_estimator(broken_set, max_epochs=1, on_bad_image="skip", **options)
    est, record = _fit_quietly(est, broken_set, broken_set[TARGETS])
    assert len(_skip_warnings(record)) == 1
    assert sorted(est.skipped_images_) == sorted(broken_set.attrs["broken"])


def test_no_bad_image_means_an_empty_list_and_no_warning(fitted, image_set):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skip = small_estimator(image_set, max_epochs=1, on_bad_image="skip", check_images=True)
        skip.fit(image_set, image_set[TARGETS])
    assert skip.skipped_images_ == []
    assert fitted.skipped_images_ == []


@pytest.mark.parametrize("how", list(BREAKERS))
def test_every_kind_of_bad_file_is_an_error_naming_it(tmp_path, how):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(path)
    BREAKERS[how](path)
    error = FileNotFoundError if how == "missing" else ValueError
    with pytest.raises(error, match=re.escape(repr(str(path)))):
        load_image(path, 16)


def test_raise_is_the_default_and_names_the_file(broken_set):
    est = small_estimator(broken_set, max_epochs=1)
    with pytest.raises(FileNotFoundError, match=re.escape(broken_set.attrs["broken"][0])):
        est.fit(broken_set, broken_set[TARGETS])
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


def test_check_images_fails_before_training_naming_the_files(image_set, tmp_path):
    df = _copy_set(image_set, tmp_path / "images")
    broken = _break(df, {2: "not an image", 9: "bad png checksum"})
    est = small_estimator(df, check_images=True)
    with pytest.raises(ValueError, match=r"2 image files cannot be read \(check_images=True\)"):
        est.fit(df, df[TARGETS])
    with pytest.raises(ValueError, match=re.escape(repr(broken[1]))):
        est.fit(df, df[TARGETS])
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


def test_check_images_with_skip_leaves_them_out_before_training(image_set, tmp_path):
    df = _copy_set(image_set, tmp_path / "images").iloc[:64]
    broken = _break(df, {2: "not an image", 9: "bad png checksum"})
    est = small_estimator(df, on_bad_image="skip", check_images=True, max_epochs=1)
    est, record = _fit_quietly(est, df, df[TARGETS])
    kept = df.drop(index=[2, 9])
    without = small_estimator(df, max_epochs=1).fit(kept, df[TARGETS].drop(index=[2, 9]))

    assert est.skipped_images_ == broken
    assert len(_skip_warnings(record)) == 1
    pd.testing.assert_frame_equal(est.predict(kept), without.predict(kept))


def test_a_truncated_jpeg_passes_the_header_check_and_is_caught_when_decoded(tmp_path):
    path = tmp_path / "truncated.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    _truncate(path)
    assert find_bad_images([str(path)], verify=True) == {}
    with pytest.raises(ValueError, match=f"cannot decode image file {re.escape(repr(str(path)))}"):
        load_image(path, 16)


def test_every_image_bad_is_an_error(image_set, tmp_path):
    df = _copy_set(image_set, tmp_path / "images").head(4)
    _break(df, dict.fromkeys(range(4), "empty"))
    with pytest.raises(ValueError, match="no image file can be read: .*empty file"):
        small_estimator(df, on_bad_image="skip", valid_split=None).fit(df, df[TARGETS])


# -- bad images in predict, predict_proba, evaluate, score, top_losses --------------------------


@pytest.fixture(scope="module")
def predict_set(image_set, tmp_path_factory):
    """12 rows of the image set as absolute paths, rows 1 (truncated) and 4 (missing) broken."""
    df = _copy_set(image_set, tmp_path_factory.mktemp("predict") / "images").iloc[:12]
    broken = _break(df, {1: "truncated", 4: "missing"})
    root = Path(df.attrs["image_root"])
    df = df.assign(filename=[str(root / name) for name in df["filename"]])
    df.attrs["broken"] = broken
    return df


def test_predict_skip_gives_missing_rows_and_one_warning(fitted_skip, predict_set):
    with pytest.warns(BadImageWarning, match="2 image files .* given missing predictions"):
        predicted = fitted_skip.predict(predict_set)

    bad = predicted.index.isin(predict_set.index[[1, 4]])
    assert predicted.loc[bad].isna().all().all()
    assert predicted.loc[~bad].notna().all().all()
    assert predicted["color"].dtype == predict_set["color"].dtype
    assert predicted["area"].dtype == np.float64
    good = predict_set.loc[~bad]
    pd.testing.assert_frame_equal(predicted.loc[~bad], fitted_skip.predict(good))


def test_predict_proba_evaluate_score_top_losses_skip_bad_rows(fitted_skip, predict_set):
    y = predict_set[TARGETS]
    good = ~predict_set.index.isin(predict_set.index[[1, 4]])
    with pytest.warns(BadImageWarning):
        proba = fitted_skip.predict_proba(predict_set)["shape"]
    assert proba[~good].isna().all().all()
    np.testing.assert_allclose(proba[good].sum(axis=1), 1.0, atol=1e-5)

    with pytest.warns(BadImageWarning):
        table = fitted_skip.evaluate(predict_set, y)
    pd.testing.assert_frame_equal(table, fitted_skip.evaluate(predict_set[good], y[good]))

    with pytest.warns(BadImageWarning):
        score = fitted_skip.score(predict_set, y)
    assert score == pytest.approx(fitted_skip.score(predict_set[good], y[good]))

    with pytest.warns(BadImageWarning):
        top = fitted_skip.top_losses(predict_set, y, k=20)
    assert len(top) == good.sum()
    assert not set(top["image"]) & set(predict_set.attrs["broken"])


def test_predict_raise_names_the_bad_file(fitted, predict_set):
    with pytest.raises(ValueError, match=re.escape(predict_set.attrs["broken"][0])):
        fitted.predict(predict_set)


# -- determinism ------------------------------------------------------------------------------


def _images_as_array(df):
    root = Path(df.attrs["image_root"])
    return np.stack([np.asarray(Image.open(root / name).convert("RGB")) for name in df.filename])


@pytest.mark.parametrize(
    "source, options",
    [
        ("files", {}),
        ("array", {"valid_split": 0.25}),
        ("files", {"cache": True}),
        ("files", {"num_workers": 2, "augment": True}),
    ],
    ids=["files", "array", "cache", "workers-augment"],
)
def test_same_random_state_same_history_and_predictions(image_set, source, options):
    df = image_set.iloc[:64]
    X = _images_as_array(df) if source == "array" else df
    y = df[TARGETS] if source == "files" else df[TARGETS].reset_index(drop=True)
    runs = [small_estimator(df, **options).fit(X, y) for _ in range(2)]

    for key in ("train_loss", "valid_loss", "train_color_loss", "valid_area_loss"):
        assert runs[0].history_[:, key] == runs[1].history_[:, key]
    pd.testing.assert_frame_equal(runs[0].predict(X), runs[1].predict(X))


def test_different_random_states_differ(fitted, image_set):
    other = small_estimator(image_set, random_state=1, max_epochs=1)
    other.fit(image_set, image_set[TARGETS])
    assert other.history_[0, "train_loss"] != fitted.history_[0, "train_loss"]


# -- concurrent prediction --------------------------------------------------------------------


def test_concurrent_predictions_equal_sequential_ones(fitted, image_set):
    chunks = [image_set.iloc[i : i + 20] for i in range(0, 160, 20)]
    sequential = [fitted.predict(chunk) for chunk in chunks]
    sequential_proba = [fitted.predict_proba(chunk)["color"] for chunk in chunks]

    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(fitted.predict, chunks * 2))
        concurrent_proba = list(pool.map(lambda c: fitted.predict_proba(c)["color"], chunks))

    for got, expected in zip(concurrent, sequential * 2, strict=True):
        pd.testing.assert_frame_equal(got, expected)
    for got, expected in zip(concurrent_proba, sequential_proba, strict=True):
        pd.testing.assert_frame_equal(got, expected)


def test_concurrent_predictions_with_bad_images_keep_their_own_rows(fitted_skip, predict_set):
    good = predict_set.drop(index=predict_set.index[[1, 4]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)  # one per call, from threads
        expected = fitted_skip.predict(predict_set)
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(fitted_skip.predict, [predict_set, good] * 4))
    for got, X in zip(results, [predict_set, good] * 4, strict=True):
        pd.testing.assert_frame_equal(got, expected.loc[X.index])


# -- image files of every kind --------------------------------------------------------------


def _save(img, path, **options):
    img.save(path, **options)
    return path


def _animated_gif(path):
    frames = [Image.new("P", (8, 8), colour) for colour in (1, 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 10, 200, 30, 200, 10, 30] + [0] * 759)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


def _rotated_jpeg(path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, :8] = (10, 200, 30)
    pixels[:, 8:] = (10, 200, 30)
    return _save(Image.fromarray(pixels), path, exif=exif, quality=95)


IMAGE_KINDS = {
    "grey L": lambda p: _save(Image.new("L", (9, 7), 120), p / "a.png"),
    "palette P": lambda p: _save(Image.new("RGB", (8, 8), (10, 200, 30)).quantize(4), p / "a.png"),
    "RGBA": lambda p: _save(Image.new("RGBA", (8, 8), (10, 200, 30, 128)), p / "a.png"),
    "LA": lambda p: _save(Image.new("LA", (8, 8), (120, 255)), p / "a.png"),
    "16-bit I;16": lambda p: _save(
        Image.fromarray(np.full((8, 8), 120 * 256, np.uint16)), p / "a.png"
    ),
    "CMYK JPEG": lambda p: _save(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), p / "a.jpg"),
    "EXIF-rotated JPEG": lambda p: _rotated_jpeg(p / "a.jpg"),
    "animated GIF": lambda p: _animated_gif(p / "a.gif"),
    "WebP": lambda p: _save(Image.new("RGB", (8, 8), (10, 200, 30)), p / "a.webp", lossless=True),
    "BMP": lambda p: _save(Image.new("RGB", (8, 8), (10, 200, 30)), p / "a.bmp"),
    "TIFF": lambda p: _save(Image.new("RGB", (8, 8), (10, 200, 30)), p / "a.tiff"),
    "1x1": lambda p: _save(Image.new("RGB", (1, 1), (10, 200, 30)), p / "a.png"),
    "very large JPEG": lambda p: _save(Image.new("RGB", (4000, 3000), (10, 200, 30)), p / "a.jpg"),
    "float F in [0, 1]": lambda p: _save(
        Image.fromarray(np.full((8, 8), 120 / 255, np.float32)), p / "a.tiff"
    ),
    "32-bit I": lambda p: _save(Image.fromarray(np.full((8, 8), 120, np.int32)), p / "a.tiff"),
}


@pytest.mark.parametrize("kind", list(IMAGE_KINDS))
def test_image_files_of_every_kind_decode_to_rgb(tmp_path, kind):
    path = IMAGE_KINDS[kind](tmp_path)
    image = load_image(path, (6, 4))
    assert image.dtype == torch.uint8
    assert image.shape == (3, 6, 4)
    grey = kind in {"grey L", "LA", "16-bit I;16", "float F in [0, 1]", "32-bit I"}
    if grey:
        np.testing.assert_allclose(image[:, 3, 2].numpy(), [120, 120, 120], atol=1)
    elif kind == "CMYK JPEG":
        np.testing.assert_allclose(image[:, 3, 2].numpy(), [255, 255, 255], atol=2)
    elif kind != "RGBA":  # RGBA drops alpha: the colour stays (10, 200, 30)
        np.testing.assert_allclose(image[:, 3, 2].numpy(), [10, 200, 30], atol=12)


@pytest.mark.parametrize(
    "pixels, expected",
    [
        (np.full((4, 4), 0.5, np.float32), 128),  # floats in [0, 1]: times 255
        (np.full((4, 4), 200.0, np.float32), 200),  # floats in [0, 255]: kept
        (np.array([[-1.0, 1.0]] * 2, np.float32), [0, 255]),  # other ranges: min-max
        (np.array([[0, 1000]] * 2, np.int32), [0, 4]),  # 32-bit in [0, 65535]: / 256
        (np.array([[0, 10**6]] * 2, np.int32), [0, 255]),  # wider: min-max
        (np.array([[np.nan, 1.0]] * 2, np.float32), [0, 255]),  # NaN counts as 0
    ],
    ids=["F-unit", "F-byte", "F-signed", "I-16bit-range", "I-wide", "F-nan"],
)
def test_float_and_32_bit_images_are_scaled_not_black(tmp_path, pixels, expected):
    path = tmp_path / "wide.tiff"
    Image.fromarray(pixels).save(path)
    image = load_image(path, pixels.shape)
    row = np.broadcast_to(expected, (pixels.shape[1],))
    np.testing.assert_array_equal(image[0, 0].numpy(), row)


def test_a_training_set_of_every_image_kind_fits_and_predicts(tmp_path):
    paths = []
    for i, make in enumerate(IMAGE_KINDS.values()):
        folder = tmp_path / f"kind{i}"
        folder.mkdir()
        paths.append(make(folder))
    y = pd.DataFrame({"label": ["a", "b"] * (len(paths) // 2) + ["a"] * (len(paths) % 2)})
    est = MultiTaskImageEstimator(
        backbone="simple_cnn", weights=None, image_size=16, max_epochs=1, valid_split=None
    )
    assert len(est.fit(paths, y).predict(paths)) == len(paths)


def test_decompression_bomb_is_a_bad_image(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice this
    with pytest.raises(ValueError, match="cannot decode image file .*bomb.png.*exceeds limit"):
        load_image(path, 8)


# -- paths -------------------------------------------------------------------------------


def test_paths_as_pathlib_unicode_and_spaces(image_set, tmp_path):
    folder = tmp_path / "fotos été" / "猫"
    folder.mkdir(parents=True)
    names = []
    for i, name in enumerate(image_set["filename"].iloc[:40]):
        target = folder / f"Ωmega {i} ñ.jpg"
        shutil.copy(Path(image_set.attrs["image_root"]) / name, target)
        names.append(target)
    y = image_set[TARGETS].iloc[:40].reset_index(drop=True)
    est = small_estimator(image_set, image_root=None, valid_split=None, max_epochs=1)
    predicted = est.fit(names, y).predict(pd.Series(names))
    rooted = small_estimator(image_set, image_root=folder, valid_split=None, max_epochs=1)
    relative = pd.Series([Path(p.name) for p in names])
    pd.testing.assert_frame_equal(rooted.fit(relative, y).predict(relative), predicted)


def test_relative_paths_resolve_against_the_working_folder(image_set, monkeypatch):
    monkeypatch.chdir(image_set.attrs["image_root"])
    est = small_estimator(image_set, image_root=None, max_epochs=1)
    assert len(est.fit(image_set, image_set[TARGETS]).predict(image_set.head(3))) == 3


# -- y aligned with X's index ----------------------------------------------------------------


def test_y_with_another_index_than_x_is_refused(fitted, image_set):
    shuffled = image_set[TARGETS].sample(frac=1, random_state=0)
    match = r"y's index does not match X's: .* Align y first \(y = y.loc\[X.index\]\)"
    with pytest.raises(ValueError, match=match):
        small_estimator(image_set).fit(image_set, shuffled)
    for method in (fitted.score, fitted.evaluate, fitted.top_losses):
        with pytest.raises(ValueError, match=match):
            method(image_set, shuffled)
    with pytest.raises(ValueError, match=match):
        multitask_scorer()(fitted, image_set, shuffled)


def test_y_aligned_by_the_user_or_without_index_is_paired_by_position(fitted, image_set):
    shuffled = image_set[TARGETS].sample(frac=1, random_state=0)
    expected = fitted.score(image_set, image_set[TARGETS])
    assert fitted.score(image_set, shuffled.loc[image_set.index]) == expected
    # X without an index of its own (a list) pairs with y by position, like scikit-learn.
    paths = [str(Path(image_set.attrs["image_root"]) / name) for name in image_set["filename"]]
    assert fitted.score(paths, shuffled) != expected  # absolute paths ignore image_root


# -- targets -------------------------------------------------------------------------------


def test_nullable_dtypes_round_trip_with_missing_cells(image_set):
    y = pd.DataFrame(
        {
            "count": pd.array(([1, 2, 3, None] * 40), dtype="Int64"),
            "name": pd.array((["x", "y", None, "x"] * 40), dtype="string"),
            "flag": pd.array(([True, False, None, True] * 40), dtype="boolean"),
            "size": pd.array(list(range(150)) + [None] * 10, dtype="Int64"),
        },
        index=image_set.index,
    )
    est = small_estimator(image_set, max_epochs=1).fit(image_set, y)
    kinds = {name: task.kind for name, task in est.tasks_.items()}
    assert kinds == {
        "count": "classification",
        "name": "classification",
        "flag": "classification",
        "size": "regression",
    }
    predicted = est.predict(image_set)
    assert list(predicted.dtypes) == [y["count"].dtype, y["name"].dtype, "boolean", "float64"]
    assert predicted.notna().all().all()
    assert set(predicted["count"]) <= {1, 2, 3}
    assert np.isfinite(est.score(image_set, y))


# -- bad X, y and parameters: each error names its cause -----------------------------------------


def _weights_text_file(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_text("not a state dict")
    return {"weights": str(path)}


BAD_FITS = {
    # name: (X change, y change, params, error, match)
    "X paths are ints": (
        lambda df: list(range(len(df))),
        lambda y: y.reset_index(drop=True),
        {"valid_split": None},
        TypeError,
        r"an image must be a path, encoded bytes, .*; X holds 0 \(int\) at position 0",
    ),
    "image column of floats": (
        lambda df: df,
        lambda y: y,
        {"image_col": "area"},
        TypeError,
        r"X holds .* \(float\) at position 0 of the image column 'area'",
    ),
    "X a float tensor": (
        lambda df: torch.zeros(len(df), 3, 16, 16),
        lambda y: y.reset_index(drop=True),
        {"valid_split": None},
        ValueError,
        r"a tensor X must hold uint8 images; got torch.float32 of shape \(\d+, 3, 16, 16\)",
    ),
    "X a float array": (
        lambda df: np.zeros((len(df), 16, 16, 3)),
        lambda y: y.reset_index(drop=True),
        {"valid_split": None},
        ValueError,
        "an array X must hold uint8 images .* got dtype float64",
    ),
    "X a missing path": (
        lambda df: df.assign(filename=df["filename"].where(df.index != 5, None)),
        lambda y: y,
        {},
        ValueError,
        "X has a missing image path at position 5",
    ),
    "y a dict": (
        lambda df: df,
        lambda y: {"area": y["area"]},
        {},
        ValueError,
        "y must be a DataFrame, a Series or a 1-D/2-D array; got dict",
    ),
    "y with infinity": (
        lambda df: df,
        lambda y: y.assign(area=y["area"].where(y.index != 3, np.inf)),
        {},
        ValueError,
        "target 'area' has infinite values",
    ),
    "y mixing label types": (
        lambda df: df,
        lambda y: y.assign(color=y["color"].astype(object).where(y.index != 3, 5)),
        {},
        ValueError,
        r"target 'color' mixes labels of types \['int', 'str'\]",
    ),
    "y a single class": (
        lambda df: df,
        lambda y: y.assign(shape="circle"),
        {},
        ValueError,
        "target 'shape' has a single class 'circle'",
    ),
    "y of dates": (
        lambda df: df,
        lambda y: y.assign(when=pd.Timestamp("2024-01-01")),
        {},
        ValueError,
        "cannot infer the task kind of target 'when'",
    ),
    "image_size (0, 16)": (
        lambda df: df,
        lambda y: y,
        {"image_size": (0, 16)},
        ValueError,
        r"image_size must be a positive int or a \(height, width\) pair",
    ),
    "image_size a string pair": (
        lambda df: df,
        lambda y: y,
        {"image_size": ("a", "b")},
        ValueError,
        r"image_size must be .* got \('a', 'b'\)",
    ),
    "device unknown": (
        lambda df: df,
        lambda y: y,
        {"device": "tpu"},
        ValueError,
        "device='tpu' is not a torch device",
    ),
    "callbacks not callbacks": (
        lambda df: df,
        lambda y: y,
        {"callbacks": [("lr", 0.1)]},
        TypeError,
        r"callbacks\[0\] is \('lr', 0.1\): expected a skorch Callback",
    ),
    "on_bad_image unknown": (
        lambda df: df,
        lambda y: y,
        {"on_bad_image": "ignore"},
        ValueError,
        "'on_bad_image' parameter",
    ),
    "weights not a state dict": (
        lambda df: df,
        lambda y: y,
        _weights_text_file,
        ValueError,
        "the weights file .*weights.pt' is not a state dict of backbone 'simple_cnn'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FITS))
def test_bad_input_errors_name_their_cause(image_set, tmp_path, case):
    make_X, make_y, params, error, match = BAD_FITS[case]
    params = params(tmp_path) if callable(params) else params
    est = small_estimator(image_set, **params)
    with pytest.raises(error, match=match):
        est.fit(make_X(image_set), make_y(image_set[TARGETS]))
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


def test_numpy_numbers_as_parameters(image_set):
    df = image_set.iloc[:64]
    est = small_estimator(
        df,
        image_size=np.int64(16),
        batch_size=np.int64(32),
        max_epochs=np.int64(1),
        num_workers=np.int64(0),
        lr=np.float32(1e-3),
    ).fit(df, df[TARGETS])
    assert est.image_size_ == (16, 16)
    est.set_params(image_size=np.array([12, 16])).fit(df, df[TARGETS])
    assert est.image_size_ == (12, 16)


def test_grid_search_over_numpy_arrays(image_set):
    df = image_set.iloc[:64]
    est = small_estimator(df, max_epochs=1, valid_split=None)
    grid = {"image_size": np.array([12, 16]), "batch_size": np.array([32])}
    search = GridSearchCV(est, grid, cv=KFold(2), error_score="raise")
    search.fit(df, df[TARGETS])
    assert search.best_estimator_.image_size_ in {(12, 12), (16, 16)}


# -- the bad-input table -----------------------------------------------------------------------


def _defined_tests(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_row_of_the_bad_input_table_names_a_test_that_exists():
    page = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    table = page
    rows = [line for line in table.splitlines() if line.startswith("| ") and "tests/" in line]
    assert len(rows) >= 40
    for row in rows:
        named = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)(?:\[[^\]]*\])?`", row)
        assert named, f"a row names no test: {row}"
        for file, test in named:
            assert test in _defined_tests(ROOT / file), f"{file}::{test} does not exist"

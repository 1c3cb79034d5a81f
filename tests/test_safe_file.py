"""The safe file (save/load: a zip of the model document and safetensors)."""

import copy
import functools
import hashlib
import json
import os
import pathlib
import pickle
import zipfile

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TARGETS, reload, small_estimator
from sklearn.exceptions import NotFittedError
from torch import nn

from sk_multitask import (
    MultiTaskImageEstimator,
    load,
    safe_file,
)
from sk_multitask.decoding import read_image


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model.skmt"
    fitted.save(path)
    return path


def pixel_array(df, size=16):
    root = df.attrs["image_root"]
    return np.stack([read_image(os.path.join(root, f), size) for f in df["filename"]])


def assert_same_outputs(a, b, X, y):
    pd.testing.assert_frame_equal(a.predict(X), b.predict(X))
    for task, proba in a.predict_proba(X).items():
        pd.testing.assert_frame_equal(proba, b.predict_proba(X)[task])
    pd.testing.assert_frame_equal(a.evaluate(X, y), b.evaluate(X, y))
    assert a.score(X, y) == b.score(X, y)


def rewrite(path, out, members):
    """Copy the zip at ``path`` to ``out`` with some members replaced or added."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, members.pop(name, src.read(name)))
        for name, data in members.items():
            dst.writestr(name, data)
    return out


class _Touch:
    """Unpickling this creates a file: the payload a pickle can carry."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


# --- round trips ---------------------------------------------------------------------


def test_load_predicts_scores_and_evaluates_like_the_original(fitted, saved, image_set):
    est = load(saved)
    y = image_set[TARGETS]
    assert_same_outputs(fitted, est, image_set, y)
    X = pixel_array(image_set)  # arrays as well as paths
    pd.testing.assert_frame_equal(fitted.predict(X), est.predict(X))
    pd.testing.assert_frame_equal(
        fitted.top_losses(image_set, y, k=5), est.top_losses(image_set, y, k=5)
    )
    assert est.get_params() == fitted.get_params()
    assert est.image_size_ == fitted.image_size_
    assert list(est.history_) == json.loads(json.dumps(list(fitted.history_)))
    for name, task in fitted.tasks_.items():
        assert est.tasks_[name].kind == task.kind
        assert est.tasks_[name].dtype == task.dtype
        assert repr(est.tasks_[name]) == repr(task)


def test_loading_is_the_same_through_the_class_and_leaves_torch_rng_alone(saved, image_set):
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    est = MultiTaskImageEstimator.load(saved)
    assert torch.equal(torch.rand(3), expected)
    pd.testing.assert_frame_equal(est.predict(image_set), load(saved).predict(image_set))


def test_dtypes_classes_and_missing_cells_round_trip(image_set, tmp_path):
    df = image_set.iloc[:64]
    rng = np.random.default_rng(0)
    colors = sorted(df["color"].dropna().unique())
    y = pd.DataFrame(
        {
            "color": pd.Categorical(df["color"], categories=[*colors, "unused"]),
            "shape": df["shape"].to_numpy(dtype=object),
            "grade": pd.array(rng.integers(1, 4, len(df)), dtype="Int64"),
            "flag": rng.random(len(df)) < 0.5,
            "code": rng.integers(0, 3, len(df)).astype(np.int32),
            "name": pd.array(rng.choice(["a", "b"], len(df)), dtype="string"),
            "area": df["area"].to_numpy(),
        },
        index=pd.Index(np.arange(100, 164), name="id"),
    )
    y.iloc[::5, [2, 5]] = None  # missing cells in nullable columns too
    est = small_estimator(df, max_epochs=1, valid_split=None).fit(df.set_index(y.index), y)
    X = df.set_index(y.index)
    loaded = load(est.save(tmp_path / "m.skmt"))
    predicted = loaded.predict(X)
    pd.testing.assert_frame_equal(est.predict(X), predicted)
    assert predicted.dtypes.equals(y.dtypes.replace({y["area"].dtype: np.float64}))
    assert_same_outputs(est, loaded, X, y)


def test_parameters_of_any_json_shape_round_trip(fitted, tmp_path):
    est = copy.deepcopy(fitted).set_params(
        image_root=pathlib.Path(fitted.image_root),
        image_size=(16, 16),
        loss_weights={"color": 2.0, "shape": 1, "area": np.float64(0.5)},
        tasks={"area": "regression"},
        class_weight={"color": {"red": 2.0}},
    )
    est.net_.criterion_.weights.copy_(torch.tensor([2.0, 1.0, 0.5]))
    loaded = load(est.save(tmp_path / "m.skmt"))
    assert loaded.get_params() == est.get_params()
    assert isinstance(loaded.image_root, pathlib.Path)
    assert torch.equal(loaded.net_.criterion_.weights, torch.tensor([2.0, 1.0, 0.5]))


def test_a_parameter_that_json_cannot_hold_is_named(fitted, tmp_path):
    est = copy.deepcopy(fitted).set_params(
        optimizer=functools.partial(torch.optim.AdamW, weight_decay=0.05)
    )
    with pytest.raises(ValueError, match=r"parameter 'optimizer' holds a partial.*set_params"):
        est.save(tmp_path / "m.skmt")
    assert not (tmp_path / "m.skmt").exists()


class TinyBackbone(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_a_backbone_of_your_own_is_passed_back_to_load(image_set, tmp_path):
    df = image_set.iloc[:48]
    est = small_estimator(df, backbone=TinyBackbone(), max_epochs=1, valid_split=None)
    est.fit(df, df[TARGETS])
    path = est.save(tmp_path / "m.skmt")
    with pytest.raises(ValueError, match=r"test_safe_file.TinyBackbone.*backbone="):
        load(path)
    loaded = load(path, backbone=TinyBackbone())
    pd.testing.assert_frame_equal(est.predict(df), loaded.predict(df))
    with pytest.raises(ValueError, match=r"do not fit the network"):
        load(path, backbone=nn.Sequential(nn.Conv2d(3, 4, 5), nn.Flatten(), nn.LazyLinear(4)))


def test_save_before_fit_raises_not_fitted(image_set, tmp_path):
    with pytest.raises(NotFittedError):
        small_estimator(image_set).save(tmp_path / "m.skmt")


# --- refused files -------------------------------------------------------------------


def test_a_pickle_payload_is_refused_without_running(saved, tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Touch(control)))  # the payload works when unpickled...
    assert control.exists()
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps(_Touch(sentinel))
    with open(tmp_path / "model.pkl", "wb") as f:
        f.write(payload)
    # ...as a whole file, as an extra member, and in place of the weights (hash fixed)
    extra = rewrite(saved, tmp_path / "extra.skmt", {"data.pkl": payload})
    document = json.loads(zipfile.ZipFile(saved).read(safe_file.DOCUMENT))
    document["weights_sha256"] = hashlib.sha256(payload).hexdigest()
    swapped = rewrite(
        saved,
        tmp_path / "swapped.skmt",
        {safe_file.WEIGHTS: payload, safe_file.DOCUMENT: json.dumps(document)},
    )
    cases = [
        (tmp_path / "model.pkl", "not an sk-multitask model file.*never unpickles"),
        (extra, r"holds \['data.pkl', 'sk_multitask.json', 'weights.safetensors'\]"),
        (swapped, "the weights are not a safetensors file"),
    ]
    for path, match in cases:
        with pytest.raises(ValueError, match=match):
            load(path)
    assert not sentinel.exists()


def test_a_joblib_file_is_refused(fitted, tmp_path):
    joblib.dump(fitted, tmp_path / "model.joblib")
    with pytest.raises(ValueError, match="not an sk-multitask model file"):
        load(tmp_path / "model.joblib")


def test_truncated_and_tampered_files_are_refused(saved, tmp_path):
    data = saved.read_bytes()
    truncated = tmp_path / "truncated.skmt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        load(truncated)

    # A weight byte flipped inside the archive: the zip's CRC catches it.
    weights = zipfile.ZipFile(saved).read(safe_file.WEIGHTS)
    offset = data.index(weights[-64:])
    damaged = tmp_path / "damaged.skmt"
    damaged.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :])
    with pytest.raises(ValueError, match="truncated or damaged.*CRC"):
        load(damaged)

    # Rewritten with a valid archive but other weights: the document's hash catches it.
    changed = bytearray(weights)
    changed[-1] ^= 0xFF
    tampered = rewrite(saved, tmp_path / "tampered.skmt", {safe_file.WEIGHTS: bytes(changed)})
    with pytest.raises(ValueError, match="SHA-256 differs.*modified"):
        load(tampered)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"format_version": 3}, r"format version 3.*reads format versions up to 2.*upgrade"),
        ({"format": "keras"}, "does not hold an sk-multitask model document"),
        ({"tasks": None}, "the model document is incomplete"),
    ],
)
def test_documents_of_another_format_are_refused(saved, tmp_path, change, match):
    document = json.loads(zipfile.ZipFile(saved).read(safe_file.DOCUMENT))
    changed = {safe_file.DOCUMENT: json.dumps(document | change)}
    path = rewrite(saved, tmp_path / "m.skmt", changed)
    with pytest.raises(ValueError, match=match):
        load(path)


def test_files_that_are_not_ours_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load(tmp_path / "absent.skmt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not an sk-multitask model file"):
        load(tmp_path / "notes.txt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.md", "hello")
    with pytest.raises(ValueError, match=r"holds \['readme.md'\], not exactly"):
        load(tmp_path / "other.zip")


# --- everything a fitted model knows travels with it ---------------------------------


@pytest.fixture(scope="module")
def knowing(image_set, tmp_path_factory):
    """A fit with a skipped (truncated) image, early stopping and class weights."""
    df = image_set.iloc[:64].copy()
    root = tmp_path_factory.mktemp("knowing")
    for name in df["filename"]:
        (root / name).write_bytes((pathlib.Path(df.attrs["image_root"]) / name).read_bytes())
    bad_row = np.flatnonzero(~df["is_valid"].to_numpy())[0]  # a training row
    (root / df["filename"].iloc[bad_row]).write_bytes(b"")  # unreadable
    df.attrs["bad_row"] = bad_row
    df.attrs["image_root"] = str(root)
    est = small_estimator(
        df,
        max_epochs=3,
        early_stopping=True,
        patience=1,
        on_bad_image="skip",
        class_weight={"shape": "balanced"},
    )
    with pytest.warns(Warning, match="left out of training"):
        est.fit(df, df[TARGETS])
    return est, df


def fitted_state(est):
    return {
        "data_sizes_": est.data_sizes_,
        "skipped_images_": est.skipped_images_,
        "history_": [{k: v for k, v in row.items()} for row in est.history_],
        "best_epoch_": est.best_epoch_,
        "image_size_": est.image_size_,
    }


def assert_knows_the_same(loaded, est):
    expected, got = fitted_state(est), fitted_state(loaded)
    pd.testing.assert_frame_equal(got.pop("data_sizes_"), expected.pop("data_sizes_"))
    assert got.pop("image_size_") == expected.pop("image_size_") == (16, 16)
    assert got == json.loads(json.dumps(expected, default=float))


def test_a_loaded_safe_file_knows_sizes_skipped_images_history_and_best_epoch(knowing, tmp_path):
    est, df = knowing
    bad = df["filename"].iloc[df.attrs["bad_row"]]
    assert est.skipped_images_ == [os.path.join(df.attrs["image_root"], bad)]
    loaded = load(est.save(tmp_path / "m.skmt"))
    assert_knows_the_same(loaded, est)
    assert loaded.data_sizes_.loc["rows", "train"] == est.data_sizes_.loc["rows", "train"]
    weights = est.net_.criterion_.class_weight_1
    assert not torch.equal(weights, torch.ones_like(weights))  # balanced: not all equal
    assert torch.equal(loaded.net_.criterion_.class_weight_1, weights)


def test_a_joblib_pickle_knows_the_same(knowing, tmp_path):
    est, _ = knowing
    assert_knows_the_same(reload(est, tmp_path, "joblib"), est)


def test_a_format_1_file_loads_without_the_new_fields(fitted, saved, tmp_path, image_set):
    document = json.loads(zipfile.ZipFile(saved).read(safe_file.DOCUMENT))
    for key in ("history", "data_sizes", "skipped_images", "best_epoch", "class_weights"):
        document.pop(key, None)
    document["format_version"] = 1
    path = rewrite(saved, tmp_path / "old.skmt", {safe_file.DOCUMENT: json.dumps(document)})
    loaded = load(path)
    assert loaded.data_sizes_ is None and loaded.skipped_images_ == []
    pd.testing.assert_frame_equal(loaded.predict(image_set), fitted.predict(image_set))


def test_save_writes_atomically_and_leaves_the_old_file_on_error(fitted, tmp_path, monkeypatch):
    path = tmp_path / "m.skmt"
    fitted.save(path)
    before = path.read_bytes()

    def fail(archive, name, data, *args):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(zipfile.ZipFile, "writestr", fail)  # fails while writing
        with pytest.raises(OSError, match="disk full"):
            fitted.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.skmt"]  # no temporary left

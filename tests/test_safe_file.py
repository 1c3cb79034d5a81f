"""The safe file (save/load: a zip of the model document and safetensors)."""

import copy
import functools
import hashlib
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TARGETS, reload, small_estimator
from sklearn.exceptions import NotFittedError
from torch import nn

from sk_multitask import MultiTaskImageEstimator, load
from sk_multitask.inputs._decoding import read_image
from sk_multitask.persistence import _safe_file as safe_file


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


def test_parameters_of_any_json_shape_round_trip(image_set, tmp_path):
    rows = image_set.iloc[:32]
    est = small_estimator(
        rows,
        image_root=pathlib.Path(rows.attrs["image_root"]),
        image_size=(16, 16),
        loss_weights={"color": 2.0, "shape": 1, "area": np.float64(0.5)},
        tasks={"area": "regression"},
        class_weight={"color": {"red": 2.0}},
        max_epochs=1,
        valid_split=None,
    ).fit(rows, rows[TARGETS])
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


# The 16 px images upsampled to 300 px: the size is what this test is about.
@pytest.mark.filterwarnings("ignore:the images are about 16x16:UserWarning")
def test_a_backbone_whose_features_depend_on_the_image_size_loads(image_set, tmp_path):
    # Features of 3 x 6 x 6 at 300 px, 3 x 5 x 5 at the bounded dry run (256 px): the
    # network is rebuilt at the saved size.
    df = image_set.iloc[:16]
    sized = nn.Sequential(nn.AvgPool2d(50), nn.Flatten())
    est = small_estimator(df, backbone=sized, image_size=300, max_epochs=1, valid_split=None)
    est.fit(df, df[TARGETS])
    loaded = load(est.save(tmp_path / "m.skmt"), backbone=copy.deepcopy(sized))
    assert loaded.net_.module_.heads[0].in_features == 108
    pd.testing.assert_frame_equal(est.predict(df), loaded.predict(df))


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


# --- crafted files: the schema and the size caps -------------------------------------


def write_zip(path, members):
    """A zip of ``members`` (name, byte chunks, deflated?) written by hand: each distinct
    chunk is deflated once and ended by a full flush, so that a gigabyte of repeated
    padding costs one compressed chunk to write."""
    entries, offset = [], 0
    with open(path, "wb") as file:
        for name, chunks, deflated in members:
            deflate, pieces, crc, size, body = zlib.compressobj(9, zlib.DEFLATED, -15), {}, 0, 0, []
            for chunk in chunks:
                crc, size = zlib.crc32(chunk, crc), size + len(chunk)
                if deflated and id(chunk) not in pieces:
                    pieces[id(chunk)] = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
                body.append(pieces[id(chunk)] if deflated else chunk)
            body.append(deflate.flush() if deflated else b"")
            fields = (8 if deflated else 0, 0, 33, crc, sum(map(len, body)), size, len(name))
            header = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, *fields, 0)
            file.write(header + name.encode())
            for piece in body:
                file.write(piece)
            entries.append((fields, name, offset))
            offset = file.tell()
        for fields, name, at in entries:
            file.write(struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, *fields,
                                   0, 0, 0, 0, 0, at) + name.encode())  # fmt: skip
        directory = file.tell() - offset
        file.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 2, 2, directory, offset, 0))
    return path


def craft(saved, out, change=None, padding_mib=0, weights=None):
    """``saved`` with its document changed, padded with spaces, or other weights."""
    with zipfile.ZipFile(saved) as archive:
        document = json.loads(archive.read(safe_file.DOCUMENT))
        weights = archive.read(safe_file.WEIGHTS) if weights is None else weights
    document = change(document) if change else document
    pad = b" " * 2**20
    text = [json.dumps(document).encode(), *[pad] * padding_mib]
    return write_zip(out, [(safe_file.DOCUMENT, text, True), (safe_file.WEIGHTS, [weights], False)])


def with_first_task(document, **change):
    return document | {"tasks": [document["tasks"][0] | change, *document["tasks"][1:]]}


def naming_backbone(name):
    """A change of a document: it names backbone ``name`` (its weights stay the small CNN's)."""
    return lambda d: d | {
        "params": d["params"] | {"backbone": name},
        "backbone": {"name": name, "class": None},
    }


#: How much a file may add to the peak memory of a process loading it (crafted files
#: cost gigabytes without the caps; loading a good model adds a few megabytes).
MEMORY_BOUND_MB = 200

MEASURE = """import json, resource, sys
from sk_multitask import load
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
load(sys.argv[1])  # imports what loading imports
for path in sys.argv[2:]:
    before = peak_mb()
    try:
        load(path)
        error = None
    except ValueError as exc:
        error = str(exc)
    print(json.dumps([path, peak_mb() - before, error]), flush=True)
"""


@pytest.fixture(scope="module")
def crafted(saved, tmp_path_factory):
    folder = tmp_path_factory.mktemp("crafted")
    weights = zipfile.ZipFile(saved).read(safe_file.WEIGHTS)
    huge_dtype = {"dtype": "<U50000000", "values": ["blue", "green", "purple", "red", "yellow"]}
    files = {
        "padded": craft(saved, folder / "padded.skmt", padding_mib=1024),
        "huge dtype": craft(
            saved, folder / "dtype.skmt", lambda d: with_first_task(d, classes=huge_dtype)
        ),
        "huge image": craft(saved, folder / "huge.skmt", lambda d: d | {"image_size": [7000] * 2}),
        "largest image": craft(
            saved, folder / "big.skmt", lambda d: d | {"image_size": [4096] * 2}
        ),
        "padded weights": craft(saved, folder / "weights.skmt", weights=weights + b"\0" * 2**20),
        # 640 million parameters: building it took 3.4 GB before its weights were refused
        "huge backbone": craft(saved, folder / "regnet.skmt", naming_backbone("regnet_y_128gf")),
    }
    return saved, files


@pytest.mark.slow
def test_crafted_files_are_refused_within_a_memory_bound(crafted):
    saved, files = crafted
    assert files["padded"].stat().st_size < 3 * 2**20  # a gigabyte of spaces, deflated
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(saved), *map(str, files.values())],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    results = {
        path: (grown, error) for path, grown, error in map(json.loads, run.stdout.splitlines())
    }
    expected = {
        "padded": "the model document is over 8388608 bytes",
        "huge dtype": "dtype '<U50000000', not one of",
        "huge image": "image_size is not two integers from 1 to 4096",
        "largest image": None,  # loads: the dry run that finds the feature size is bounded
        "padded weights": "the weights are not the",
        "huge backbone": "the weights do not fit backbone 'regnet_y_128gf'",
    }
    for case, path in files.items():
        grown, error = results[str(path)]
        assert (error is None) if expected[case] is None else (expected[case] in error), case
        assert grown < MEMORY_BOUND_MB, f"{case}: peak memory grew by {grown:.0f} MB"


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda d: with_first_task(d, classes={"dtype": "<U1", "values": ["a", "b"]}),
            r"target 'color' has 2 outputs in the model document but its head in the weights "
            r"has shape \[5, ",
        ),
        (lambda d: d | {"tasks": d["tasks"][:2]}, "more heads than the document has tasks"),
        (lambda d: d | {"params": d["params"] | {"colour": 1}}, r"unknown parameters \['colour'\]"),
        (lambda d: d | {"format_version": 3}, r"format version 3.*reads format versions up to 2"),
        (
            naming_backbone("resnet18"),
            r"do not fit backbone 'resnet18', which the model document names: its tensor "
            r"'conv1.weight' has shape \[64, 3, 7, 7\], the file's none; nothing was built",
        ),
    ],
)
def test_a_document_that_does_not_fit_its_weights_is_refused(saved, tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        load(craft(saved, tmp_path / "m.skmt", change))


def _header(raw):
    return len(raw).to_bytes(8, "little") + raw


@pytest.mark.parametrize(
    "weights, match",
    [
        (b"", r"not a safetensors file \(no header\)"),
        ((2**40).to_bytes(8, "little"), r"not a safetensors file \(no header\)"),
        (_header(b"[1, 2]"), r"not a safetensors file \(damaged header\)"),
        (_header(b"[" * 100_000), r"not a safetensors file \(damaged header\)"),
        (_header(b'{"x": {"data_offsets": [0, 4]}}') + b"abcd", "unexpected tensor 'x'"),
    ],
)
def test_weights_with_a_damaged_header_are_refused(saved, tmp_path, weights, match):
    with pytest.raises(ValueError, match=match):
        load(craft(saved, tmp_path / "m.skmt", weights=weights))


def test_compressed_weights_are_refused(saved, tmp_path):
    weights = zipfile.ZipFile(saved).read(safe_file.WEIGHTS)
    document = zipfile.ZipFile(saved).read(safe_file.DOCUMENT)
    members = [(safe_file.DOCUMENT, [document], True), (safe_file.WEIGHTS, [weights], True)]
    with pytest.raises(ValueError, match="the weights are compressed"):
        load(write_zip(tmp_path / "m.skmt", members))


def test_a_file_naming_a_cache_dir_writes_nothing_there(saved, image_set, tmp_path):
    chosen = tmp_path / "chosen"
    hostile = {"cache_dir": str(chosen), "num_workers": 3, "device": "cuda:7", "verbose": 2}
    path = craft(saved, tmp_path / "m.skmt", lambda d: d | {"params": d["params"] | hostile})
    est = load(path)
    assert (est.cache_dir, est.num_workers, est.device, est.verbose) == (None, "auto", "auto", 0)
    est.predict(image_set)
    assert not chosen.exists()
    # The same setting given here (the loader's) is used: predict caches there.
    mine = tmp_path / "mine"
    assert load(path, cache_dir=mine, device="cpu").cache_dir == mine
    load(path, cache_dir=mine).predict(image_set)
    assert any(mine.iterdir())


def test_load_takes_only_run_time_parameters(saved):
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['image_size'\]"):
        load(saved, image_size=32)

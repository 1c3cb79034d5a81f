"""Every kind of X through the one input path gives the predictions of the same image files.

Paths, encoded bytes, PIL images, ``{"bytes", "path"}`` dicts, Hugging Face datasets,
torch tensors, array-likes and single images; multi-label cells as numpy arrays and
Arrow lists; the caches, bad images, the torch-free ONNX predictor and the CLI.
"""

import io
import os
import warnings
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from conftest import TARGETS, run_python_without, small_estimator
from PIL import Image

from sk_multitask.cli import main
from sk_multitask.exceptions import BadImageError, BadImageWarning
from sk_multitask.inputs._disk_cache import image_fingerprints
from sk_multitask.inputs._sources import image_references, resolve_images
from sk_multitask.targets import fit_tasks, target_frame

N = 24  # images predicted in each comparison


class ArrayLike:
    """An array-like that is no ndarray (as dask or xarray arrays): it has ``__array__``."""

    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array


@pytest.fixture(scope="module")
def files(image_set):
    """The first N images of ``image_set``: their paths, bytes and pixels."""
    root = image_set.attrs["image_root"]
    paths = [os.path.join(root, name) for name in image_set["filename"][:N]]
    encoded = [Path(path).read_bytes() for path in paths]
    pixels = np.stack([np.array(pil(data).convert("RGB")) for data in encoded])
    return paths, encoded, pixels


def pil(data):
    """An opened PIL image of encoded bytes (lazy, as ``Image.open`` gives them)."""
    return Image.open(io.BytesIO(data))


@pytest.fixture(scope="module")
def expected(fitted, files):
    return fitted.predict(files[0])


KINDS = [
    "list of bytes", "Series of bytes", "list of PIL images", "Series of PIL images",
    "column of {bytes, path} dicts", "column of {path} dicts", "mixed list",
    "list of uint8 arrays", "tensor NCHW", "tensor NHWC", "array-like", "numpy array",
]


def kinds_of_x(paths, encoded, pixels):
    """The same N images as each kind of X (name -> X)."""
    images = [pil(data) for data in encoded]
    return {
        "list of bytes": encoded,
        "Series of bytes": pd.Series(encoded),
        "list of PIL images": images,
        "Series of PIL images": pd.Series(images, dtype=object),
        "column of {bytes, path} dicts": pd.DataFrame(
            {"filename": [{"bytes": data, "path": None} for data in encoded]}
        ),
        "column of {path} dicts": pd.DataFrame(
            {"filename": [{"bytes": None, "path": path} for path in paths]}
        ),
        "mixed list": [paths[0], encoded[1], images[2], pixels[3], *encoded[4:]],
        "list of uint8 arrays": list(pixels),
        "tensor NCHW": torch.from_numpy(pixels).permute(0, 3, 1, 2),
        "tensor NHWC": torch.from_numpy(pixels),
        "array-like": ArrayLike(pixels),
        "numpy array": pixels,
    }


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_x_predicts_as_the_files(fitted, files, expected, kind):
    kinds = kinds_of_x(*files)
    assert list(kinds) == KINDS
    pd.testing.assert_frame_equal(fitted.predict(kinds[kind]), expected)


def test_a_hugging_face_dataset_predicts_as_the_files(fitted_copy, files, expected):
    paths, encoded, _ = files
    by_path = datasets.Dataset.from_dict({"image": paths}).cast_column("image", datasets.Image())
    # Decoded PIL images: datasets stores them as PNG (lossless; a JPEG would be re-encoded).
    in_memory = datasets.Dataset.from_dict({"image": [pil(d).convert("RGB") for d in encoded]})
    assert isinstance(in_memory.features["image"], datasets.Image)
    est = fitted_copy.set_params(image_col="image")
    for X in (by_path, in_memory, in_memory.to_pandas()):
        pd.testing.assert_frame_equal(est.predict(X), expected)


def test_one_path_or_one_pil_image_is_one_row(fitted, files):
    paths, encoded, _ = files
    one = fitted.predict(paths[:1])
    for X in (paths[0], pil(encoded[0]), encoded[0]):
        pd.testing.assert_frame_equal(fitted.predict(X), one)


def test_fit_on_a_hugging_face_dataset_of_pil_images_equals_fit_on_files(
    image_set, fitted, files, expected
):
    """A Dataset whose Image column holds PNG bytes (encoded by ``datasets`` from PIL
    images), with the validation column: the same model as from the files."""
    root = image_set.attrs["image_root"]
    images = [pil(Path(root, name).read_bytes()).convert("RGB") for name in image_set["filename"]]
    ds = datasets.Dataset.from_dict(
        {"image": images, "is_valid": image_set["is_valid"].tolist()}
    )
    y = image_set[TARGETS].reset_index(drop=True)
    est = small_estimator(image_set, image_col="image").fit(ds, y)
    assert est.history_[:, "train_loss"] == fitted.history_[:, "train_loss"]
    assert est.history_[:, "valid_loss"] == fitted.history_[:, "valid_loss"]
    pd.testing.assert_frame_equal(est.set_params(image_col="filename").predict(files[0]), expected)
    references = image_references(ds, "image")
    assert references[0] == "X[0]" and len(references) == len(image_set)


@pytest.mark.parametrize(
    "X, error, match",
    [
        (torch.zeros(2, 3, 8, 3, dtype=torch.uint8), ValueError,
         r"shape \(2, 3, 8, 3\): channels first \(N, C, H, W\) or last \(N, H, W, C\)\?"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), ValueError,
         r"one \(C, H, W\) image or 3 grayscale images\? .*x\[None\]"),
        (torch.zeros(2, 3, 8, 8), ValueError,
         r"a tensor X must hold uint8 images; got torch.float32 of shape \(2, 3, 8, 8\)"),
        ([b"x", 1.5], TypeError, r"an image must be a path, encoded bytes.*X holds 1\.5 "
         r"\(float\) at position 1"),
        ([{"bytes": None, "path": None}], ValueError, "missing image path at position 0"),
    ],
    ids=["ambiguous layout", "3-D tensor", "float tensor", "float cell", "empty dict"],
)
def test_inputs_that_cannot_be_told_apart_or_read_are_refused(X, error, match):
    with pytest.raises(error, match=match):
        resolve_images(X)


def test_undecodable_bytes_raise_naming_the_image_or_give_a_missing_row(fitted_copy, files):
    _, encoded, _ = files
    X = pd.Series([encoded[0], b"not an image", encoded[2]])
    with pytest.raises(BadImageError, match=r"cannot decode image 'X\[1\]': cannot identify"):
        fitted_copy.predict(X)
    named = pd.DataFrame({"filename": [{"bytes": b"", "path": "cat.png"}, {"bytes": encoded[0]}]})
    with pytest.raises(BadImageError, match=r"cannot decode image 'cat\.png'"):
        fitted_copy.predict(named)
    fitted_copy.set_params(on_bad_image="skip")
    with pytest.warns(BadImageWarning, match=r"1 image file could not be read .*'X\[1\]'"):
        predicted = fitted_copy.predict(X)
    assert predicted.loc[1].isna().all() and predicted.loc[[0, 2]].notna().all().all()


def test_fit_skips_undecodable_bytes_by_name(image_set, files):
    _, encoded, _ = files
    X = [*encoded[:3], b"\x89PNG truncated", *encoded[4:]]
    y = image_set[TARGETS].iloc[:N].reset_index(drop=True)
    est = small_estimator(image_set, valid_split=None, max_epochs=1, on_bad_image="skip")
    with pytest.warns(BadImageWarning, match=r"left out of training.*'X\[3\]'"):
        est.fit(X, y)
    assert est.skipped_images_ == ["X[3]"]


def test_images_in_memory_are_cached_on_disk_by_content(fitted_copy, files, expected, tmp_path):
    paths, encoded, pixels = files
    keys = image_fingerprints(resolve_images(encoded)[0], 16)
    assert len(set(keys.tolist())) == N  # one key per image, by content
    again = image_fingerprints(resolve_images([bytes(d) for d in encoded])[0], 16)
    assert (keys == again).all()
    assert (keys != image_fingerprints(resolve_images(encoded)[0], 8)).all()  # the size counts
    fitted_copy.set_params(cache_dir=tmp_path)
    for X in (encoded, [pil(data) for data in encoded], encoded):
        pd.testing.assert_frame_equal(fitted_copy.predict(X), expected)
    # The bytes, then the PIL images, once each; the second read of the bytes built nothing.
    assert len(list(tmp_path.glob("*.keys.npy"))) == 2


def test_the_onnx_predictor_takes_every_kind_of_x_without_torch(fitted_onnx, files, tmp_path):
    paths, encoded, _ = files
    model = fitted_onnx
    pd.DataFrame({"filename": [{"bytes": d, "path": None} for d in encoded]}).to_parquet(
        tmp_path / "dicts.parquet"
    )
    result = run_python_without(
        f"""
        import io
        import pandas as pd
        from PIL import Image
        from sk_multitask.onnx import OnnxPredictor

        predictor = OnnxPredictor({str(model)!r})
        dicts = pd.read_parquet({str(tmp_path / "dicts.parquet")!r})
        encoded = [cell["bytes"] for cell in dicts["filename"]]
        pil = [Image.open(io.BytesIO(data)) for data in encoded]
        for name, X in (("dicts", dicts), ("bytes", encoded), ("pil", pil)):
            predictor.predict(X).to_pickle({str(tmp_path)!r} + f"/{{name}}.pkl")
        """
    )
    assert result.returncode == 0, result.stderr
    from sk_multitask.onnx import OnnxPredictor

    expected = OnnxPredictor(model).predict(paths)
    for name in ("dicts", "bytes", "pil"):
        pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / f"{name}.pkl"), expected)


def test_the_cli_predicts_on_a_parquet_of_image_bytes(fitted, files, expected, tmp_path, capsys):
    paths, encoded, _ = files
    names = [f"img{i}.png" for i in range(N)]
    cells = [{"bytes": data, "path": name} for data, name in zip(encoded, names, strict=True)]
    table = pd.DataFrame({"filename": cells})
    table.to_parquet(tmp_path / "data.parquet")
    model = str(fitted.save(tmp_path / "model.skmt"))
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(tmp_path / "data.parquet"), "--model", model,
                 "--out", str(out)]) == 0
    capsys.readouterr()
    predicted = pd.read_csv(out)
    assert predicted["filename"].tolist() == names  # the images' names, not their bytes
    pd.testing.assert_frame_equal(predicted[["color", "shape"]], expected[["color", "shape"]])
    np.testing.assert_allclose(predicted["area"], expected["area"], rtol=1e-6)


LABELS = [["cat", "dog"], [], None, ["dog"], ["bird", "cat"], ["bird"]]


@pytest.mark.parametrize("form", ["numpy arrays", "Arrow lists"])
def test_multilabel_cells_as_arrays_or_arrow_lists_equal_the_lists(form):
    lists = pd.DataFrame({"pets": pd.Series(LABELS, dtype=object), "size": [1.0] * 6})
    if form == "numpy arrays":  # datasets' Sequence column after to_pandas()
        cells = [None if c is None else np.array(c, dtype=object) for c in LABELS]
        column = pd.Series(cells, dtype=object)
    else:
        column = pd.Series(LABELS, dtype=pd.ArrowDtype(pa.list_(pa.string())))
    y = lists.assign(pets=column)
    frame = target_frame(y)
    assert frame["pets"].tolist()[:2] == [["cat", "dog"], []] and pd.isna(frame["pets"][2])
    tasks, expected = fit_tasks(frame), fit_tasks(lists)
    assert tasks["pets"].kind == "multilabel"
    assert list(tasks["pets"].classes_) == list(expected["pets"].classes_) == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(
        tasks["pets"].encode(frame["pets"]), expected["pets"].encode(lists["pets"])
    )


def test_fit_and_evaluate_take_multilabel_arrow_lists(image_set):
    rows = image_set.iloc[:N]
    colors, shapes = rows["color"].fillna("gray"), rows["shape"].fillna("blob")
    labels = [[c, s] if i % 3 else [c] for i, (c, s) in enumerate(zip(colors, shapes, strict=True))]
    labels[5] = None  # a missing cell
    lists = pd.DataFrame({"tags": pd.Series(labels, dtype=object)}, index=rows.index)
    arrow = lists.astype({"tags": pd.ArrowDtype(pa.list_(pa.string()))})
    fits = [small_estimator(image_set, valid_split=None, max_epochs=1).fit(rows, y)
            for y in (lists, arrow)]
    pd.testing.assert_frame_equal(fits[0].predict(rows), fits[1].predict(rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pd.testing.assert_frame_equal(fits[1].evaluate(rows, arrow), fits[1].evaluate(rows, lists))


def test_a_dataset_without_the_image_column_names_its_columns():
    ds = datasets.Dataset.from_dict({"img": ["a.png"], "label": [1]})
    with pytest.raises(ValueError, match=r"image column 'filename' is not in X; its columns "
                       r"are \['img', 'label'\] \(set image_col\)"):
        resolve_images(ds)

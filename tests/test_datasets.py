"""The generated multitask image set and the UTKFace loader."""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sk_multitask.datasets import load_utkface, make_multitask_images
from sk_multitask.datasets._synthetic import COLORS, SHAPES
from sk_multitask.inputs._dataset import load_image

# --- make_multitask_images -------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    return make_multitask_images(60, image_size=16, random_state=0, path=path), path


def test_make_multitask_images_files(synthetic):
    df, path = synthetic
    assert df.attrs["image_root"] == os.fspath(path)
    assert df["filename"].is_unique
    assert df["filename"].iloc[0] == "img_00000.jpg"
    assert sorted(os.listdir(path)) == sorted(df["filename"])
    for filename in df["filename"].iloc[:5]:
        with Image.open(Path(path) / filename) as img:
            assert img.format == "JPEG"
            assert img.size == (16, 16)
        assert load_image(Path(path) / filename, 16).shape == (3, 16, 16)


def test_make_multitask_images_columns(synthetic):
    df, _ = synthetic
    assert list(df.columns) == ["filename", "color", "shape", "area", "is_valid"]
    assert len(df) == 60
    assert df.index.equals(pd.RangeIndex(60))
    assert set(df["color"].dropna()) == set(COLORS)
    assert len(COLORS) == 5
    assert set(df["shape"].dropna()) == set(SHAPES)
    assert len(SHAPES) == 3
    assert df["area"].dtype == np.float64
    area = df["area"].dropna()
    assert ((area > 0) & (area < 1)).all()
    assert df["is_valid"].dtype == bool
    assert 0 < df["is_valid"].sum() < len(df)


def test_make_multitask_images_missing_rate(tmp_path):
    df = make_multitask_images(
        400, image_size=8, missing_rate=0.3, random_state=0, path=tmp_path / "a"
    )
    rates = df[["color", "shape", "area"]].isna().mean()
    np.testing.assert_allclose(rates, 0.3, atol=0.07)
    assert not df[["filename", "is_valid"]].isna().any().any()


def test_make_multitask_images_no_missing(tmp_path):
    df = make_multitask_images(30, image_size=8, missing_rate=0, random_state=0, path=tmp_path)
    assert not df.isna().any().any()


def test_make_multitask_images_keeps_a_labelled_cell(tmp_path):
    df = make_multitask_images(5, image_size=8, missing_rate=0.99, random_state=0, path=tmp_path)
    assert df[["color", "shape", "area"]].notna().any().all()


def test_make_multitask_images_reproducible(tmp_path):
    first = make_multitask_images(12, image_size=8, random_state=3, path=tmp_path / "1")
    second = make_multitask_images(12, image_size=8, random_state=3, path=tmp_path / "2")
    other = make_multitask_images(12, image_size=8, random_state=4, path=tmp_path / "3")
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(other)
    for filename in first["filename"]:
        assert (tmp_path / "1" / filename).read_bytes() == (tmp_path / "2" / filename).read_bytes()


def test_make_multitask_images_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    df = make_multitask_images(3, image_size=8, random_state=0)
    root = Path(df.attrs["image_root"])
    assert root.parent == tmp_path
    assert root.name.startswith("sk_multitask_")
    assert sorted(p.name for p in root.iterdir()) == list(df["filename"])


def test_make_multitask_images_temporary_folder_is_removed_at_exit():
    code = (
        "import os; from sk_multitask.datasets import make_multitask_images; "
        "root = make_multitask_images(3, image_size=8).attrs['image_root']; "
        "assert len(os.listdir(root)) == 3; print(root)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(result.stdout.strip())


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": 2.5}, "n_samples"),
        ({"image_size": 4}, "image_size"),
        ({"missing_rate": 1.0}, "missing_rate"),
        ({"missing_rate": -0.1}, "missing_rate"),
    ],
)
def test_make_multitask_images_invalid_parameters(tmp_path, kwargs, parameter):
    with pytest.raises(ValueError, match=f"The '{parameter}' parameter"):
        make_multitask_images(**{"n_samples": 2, "path": tmp_path, **kwargs})
    assert list(tmp_path.iterdir()) == []


# --- load_utkface ------------------------------------------------------------


UTK_NAMES = [
    "25_0_2_20170116174525125.jpg.chip.jpg",
    "61_1_0_20170109150557335.jpg.chip.jpg",
    "8_1_1_20170109204347456.jpg",  # the unaligned images have no .chip.jpg
    "40_0_3_20170117135238503.JPG.chip.jpg",
    "sub/70_1_4_20170117135241271.jpg.chip.jpg",
]
MALFORMED = ["39_1_20170116174525125.jpg.chip.jpg", "notes.txt"]


@pytest.fixture
def utkface_folder(tmp_path):
    root = tmp_path / "UTKFace"
    (root / "sub").mkdir(parents=True)
    for name in UTK_NAMES + MALFORMED[:1]:
        Image.new("RGB", (8, 8), (120, 90, 60)).save(root / name, format="JPEG")
    (root / MALFORMED[1]).write_text("not an image")
    return root


def test_load_utkface(utkface_folder):
    with pytest.warns(UserWarning, match="skipped 2 file") as record:
        df = load_utkface(utkface_folder)
    assert len(record) == 1
    assert record[0].filename == __file__  # the warning points at the caller
    assert list(df.columns) == ["filename", "age", "gender", "ethnicity"]
    assert df.attrs["image_root"] == os.fspath(utkface_folder)
    expected = pd.DataFrame(
        {
            "filename": [
                "25_0_2_20170116174525125.jpg.chip.jpg",
                "40_0_3_20170117135238503.JPG.chip.jpg",
                "61_1_0_20170109150557335.jpg.chip.jpg",
                "8_1_1_20170109204347456.jpg",
                "sub/70_1_4_20170117135241271.jpg.chip.jpg",
            ],
            "age": [25.0, 40.0, 61.0, 8.0, 70.0],
            "gender": ["male", "male", "female", "female", "female"],
            "ethnicity": ["Asian", "Indian", "White", "Black", "Others"],
        }
    )
    pd.testing.assert_frame_equal(df, expected, check_dtype=False)
    assert df["age"].dtype == np.float64
    for filename in df["filename"]:
        assert (utkface_folder / filename).is_file()


def test_load_utkface_no_warning_when_all_names_parse(tmp_path):
    for name in UTK_NAMES[:2]:
        Image.new("RGB", (8, 8)).save(tmp_path / name, format="JPEG")
    df = load_utkface(str(tmp_path))  # filterwarnings=error: a warning would fail
    assert list(df["age"]) == [25.0, 61.0]
    assert df.attrs["image_root"] == str(tmp_path)


@pytest.mark.parametrize("name", ["absent", "a_file.jpg"])
def test_load_utkface_missing_folder(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".jpg"):
        Image.new("RGB", (8, 8)).save(path)
    message = re.escape(f"UTKFace folder not found: {str(path)!r}")
    with pytest.raises(FileNotFoundError, match=message):
        load_utkface(path)

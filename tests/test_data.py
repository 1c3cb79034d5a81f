"""Image decoding, the image Dataset, resolving X, and the training transform."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sk_multitask.inputs._dataset import ImageDataset, load_image, train_transform
from sk_multitask.inputs._decoding import as_size, median_image_size
from sk_multitask.inputs._sources import resolve_images

RED, BLUE = (255, 0, 0), (0, 0, 255)
EXIF_ORIENTATION = 0x0112


def _red_blue(height=10, width=20):
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return Image.fromarray(pixels)


def _assert_colour(pixel, colour, tol=8):
    np.testing.assert_allclose(pixel.numpy().astype(int), colour, atol=tol)


def _write_files(folder, names, size=8):
    for name in names:
        Image.new("RGB", (size, size), (0, 128, 255)).save(folder / name)


# --- as_size -------------------------------------------------------------------


@pytest.mark.parametrize(
    "image_size, expected",
    [(16, (16, 16)), ((8, 12), (8, 12)), ([8, 12], (8, 12)), (np.array([8, 12]), (8, 12))],
)
def test_as_size(image_size, expected):
    size = as_size(image_size)
    assert size == expected
    assert all(type(side) is int for side in size)


# --- load_image ------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, colour, expected",
    [
        ("RGB", (10, 200, 30), (10, 200, 30)),
        ("L", 200, (200, 200, 200)),
        ("RGBA", (10, 20, 30, 0), (10, 20, 30)),
        ("LA", (90, 255), (90, 90, 90)),
    ],
)
def test_load_image_modes(tmp_path, mode, colour, expected):
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (12, 6), colour).save(path)
    image = load_image(path, (4, 8))
    assert image.dtype == torch.uint8
    assert image.shape == (3, 4, 8)
    _assert_colour(image[:, 2, 4], expected, tol=0)


def test_load_image_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (12, 6), (0, 255, 255, 0)).save(path, quality=95)
    with Image.open(path) as img:
        assert img.mode == "CMYK"
    image = load_image(path, (6, 12))
    assert image.shape == (3, 6, 12)
    _assert_colour(image[:, 3, 6], RED)


def test_load_image_palette_with_transparency_does_not_warn(tmp_path):
    path = tmp_path / "palette.png"
    img = Image.new("P", (8, 8), 1)
    img.putpalette([*RED, *BLUE] + [0] * 762)
    img.save(path, transparency=b"\x00\x80")  # partial alpha: kept as bytes
    with Image.open(path) as opened, pytest.warns(UserWarning, match="Transparency"):
        opened.convert("RGB")  # the direct conversion PIL warns about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(path, 8)
    assert image.shape == (3, 8, 8)
    _assert_colour(image[:, 4, 4], BLUE, tol=0)


def test_load_image_sixteen_bit_is_scaled_not_clipped(tmp_path):
    pixels = np.zeros((10, 20), dtype=np.uint16)
    pixels[:, :10] = 65535
    pixels[:, 10:] = 32768
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    image = load_image(path, (10, 20))
    assert image.dtype == torch.uint8
    _assert_colour(image[:, 5, 2], (255, 255, 255), tol=0)
    _assert_colour(image[:, 5, 17], (128, 128, 128), tol=0)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize(
    "orientation, top, bottom",
    [(6, RED, BLUE), (8, BLUE, RED)],  # 6: rotate 90° clockwise to display; 8: counter
)
def test_load_image_applies_exif_orientation(tmp_path, suffix, orientation, top, bottom):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / f"rotated{suffix}"
    _red_blue(height=10, width=20).save(path, exif=exif, quality=95)
    # Displayed upright the image is 20 high and 10 wide: one colour above the other.
    image = load_image(path, (20, 10))
    assert image.shape == (3, 20, 10)
    _assert_colour(image[:, 2, 5], top)
    _assert_colour(image[:, 17, 5], bottom)


def test_load_image_large_jpeg_through_draft(tmp_path):
    path = tmp_path / "big.jpg"
    _red_blue(height=128, width=256).save(path, quality=95)
    image = load_image(path, (8, 16))
    assert image.shape == (3, 8, 16)
    _assert_colour(image[:, 4, 2], RED)
    _assert_colour(image[:, 4, 13], BLUE)


def test_load_image_large_rotated_jpeg_through_draft(tmp_path):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = tmp_path / "big_rotated.jpg"
    _red_blue(height=128, width=256).save(path, exif=exif, quality=95)
    image = load_image(path, (16, 8))
    assert image.shape == (3, 16, 8)
    _assert_colour(image[:, 2, 4], RED)
    _assert_colour(image[:, 13, 4], BLUE)


def test_load_image_corrupt_file_names_it(tmp_path):
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ValueError, match=re.escape(f"cannot decode image file {str(path)!r}")):
        load_image(path, 8)


def test_load_image_truncated_jpeg_names_it(tmp_path):
    whole = tmp_path / "whole.jpg"
    _red_blue(height=64, width=64).save(whole, quality=95)
    path = tmp_path / "truncated.jpg"
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(f"cannot decode image file {str(path)!r}")):
        load_image(str(path), 8)


# --- arrays ------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(2, 8, 8), (2, 8, 8, 1), (2, 8, 8, 3), (2, 8, 8, 4)], ids=["HW", "HW1", "HW3", "HW4"]
)
def test_array_image_channels(shape):
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    image = load_image(images[1], 8)
    assert image.dtype == torch.uint8
    assert image.shape == (3, 8, 8)
    grey = len(shape) == 3 or shape[3] == 1
    source = images[1].reshape(8, 8, -1)
    for channel in range(3):
        expected = source[..., 0] if grey else source[..., channel]
        np.testing.assert_array_equal(image[channel].numpy(), expected)


def test_array_image_resized():
    images = np.full((1, 10, 14, 3), 77, dtype=np.uint8)
    image = load_image(images[0], (6, 4))
    assert image.dtype == torch.uint8
    assert image.shape == (3, 6, 4)
    assert (image == 77).all()


def test_array_image_grey_resized():
    images = np.full((1, 10, 14), 200, dtype=np.uint8)
    image = load_image(images[0], 8)
    assert image.shape == (3, 8, 8)
    assert (image == 200).all()


def test_array_image_read_only_array_does_not_warn(tmp_path):
    # A memory-mapped array streams a large set from disk; np.load maps it read-only.
    path = tmp_path / "images.npy"
    np.save(path, np.full((2, 8, 8, 3), 9, dtype=np.uint8))
    images = np.load(path, mmap_mode="r")
    dataset = ImageDataset(images, image_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image, _ = dataset[0]
    assert (image == 9).all()


@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 8, 8, 1), (3, 8, 8, 3), (3, 8, 8, 4)])
def test_image_dataset_from_array(shape):
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    targets = np.array([[0, 1.5], [np.nan, 2.0], [1, np.nan]], dtype=np.float32)
    dataset = ImageDataset(images, targets, image_size=(6, 5))
    assert len(dataset) == 3
    image, target = dataset[1]
    assert image.dtype == torch.uint8
    assert image.shape == (3, 6, 5)
    assert target.dtype == torch.float32
    assert torch.isnan(target[0]) and target[1] == 2.0


def test_image_dataset_without_targets_gives_empty_target():
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    image, target = ImageDataset(images, image_size=8)[0]
    assert image.shape == (3, 8, 8)
    assert isinstance(target, torch.Tensor)
    assert target.numel() == 0


def test_image_dataset_from_files(tmp_path):
    Image.new("RGB", (12, 10), (10, 20, 30)).save(tmp_path / "a.png")
    _red_blue(height=10, width=20).save(tmp_path / "b.png")
    paths = np.array([str(tmp_path / "a.png"), str(tmp_path / "b.png")], dtype=object)
    targets = np.array([[1.0, np.nan], [0.0, 3.0]], dtype=np.float32)
    dataset = ImageDataset(paths, targets, image_size=(10, 20))
    assert len(dataset) == 2
    image, target = dataset[1]
    assert image.shape == (3, 10, 20)
    _assert_colour(image[:, 5, 2], RED, tol=0)
    np.testing.assert_array_equal(target.numpy(), [0.0, 3.0])
    _, target = dataset[0]
    assert target[0] == 1.0 and torch.isnan(target[1])


def test_image_dataset_applies_transform():
    images = np.zeros((1, 4, 6, 3), dtype=np.uint8)
    images[0, :, :3] = 255
    dataset = ImageDataset(images, image_size=(4, 6), transform=lambda t: t.flip(-1))
    image, _ = dataset[0]
    assert (image[:, :, 3:] == 255).all() and (image[:, :, :3] == 0).all()


# --- resolve_images ----------------------------------------------------------


def test_resolve_images_dataframe_with_root(tmp_path):
    _write_files(tmp_path, ["a.png", "b.png"])
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    _write_files(elsewhere, ["c.png"])
    X = pd.DataFrame(
        {"path": ["a.png", "b.png", str(elsewhere / "c.png")], "x": [1, 2, 3]},
        index=[10, 20, 30],
    )
    images, index = resolve_images(X, image_col="path", image_root=tmp_path)
    assert list(images) == [
        str(tmp_path / "a.png"),
        str(tmp_path / "b.png"),
        str(elsewhere / "c.png"),
    ]
    assert list(index) == [10, 20, 30]


def test_resolve_images_dataframe_without_root_keeps_paths(tmp_path):
    _write_files(tmp_path, ["a.png"])
    X = pd.DataFrame({"filename": [str(tmp_path / "a.png")]})
    images, index = resolve_images(X)
    assert list(images) == [str(tmp_path / "a.png")]
    assert index.equals(X.index)


def test_resolve_images_series_and_list(tmp_path):
    _write_files(tmp_path, ["a.png", "b.png"])
    series = pd.Series(["b.png", "a.png"], index=["x", "y"])
    images, index = resolve_images(series, image_root=str(tmp_path))
    assert list(images) == [str(tmp_path / "b.png"), str(tmp_path / "a.png")]
    assert list(index) == ["x", "y"]

    images, index = resolve_images([tmp_path / "a.png", str(tmp_path / "b.png")])
    assert list(images) == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert index.equals(pd.RangeIndex(2))


def test_resolve_images_array():
    X = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    images, index = resolve_images(X)
    assert images is X
    assert index.equals(pd.RangeIndex(3))


def test_resolve_images_unknown_column():
    X = pd.DataFrame({"path": ["a.png"]})
    with pytest.raises(ValueError, match=r"image column 'filename' is not in X.*\['path'\]"):
        resolve_images(X)


def test_resolve_images_missing_files_counted(tmp_path):
    _write_files(tmp_path, ["a.png"])
    X = pd.DataFrame({"filename": ["a.png", "gone.png", "lost.png", "away.png"]})
    missing = re.escape(f"image file not found: {str(tmp_path / 'gone.png')!r} (and 2 more)")
    with pytest.raises(FileNotFoundError, match=missing):
        resolve_images(X, image_root=tmp_path)


def test_resolve_images_one_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'gone\.png'; set image_root to the folder"):
        resolve_images(["gone.png"])


def test_missing_file_read_later_hints_at_image_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gone\.png'; set image_root to the folder"):
        load_image(tmp_path / "gone.png", 8)


@pytest.mark.parametrize("channels", [3, 4])
def test_one_colour_image_array_is_refused_naming_both_readings(channels):
    image = np.zeros((32, 32, channels), dtype=np.uint8)
    with pytest.raises(
        ValueError,
        match=r"32 grayscale images of 32 x \d pixels, or one colour "
        r"image\? Pass one colour image as img\[None\].*X\[\.\.\., None\]",
    ):
        resolve_images(image)
    images, _ = resolve_images(image[None])
    assert images.shape == (1, 32, 32, channels)


def test_median_image_size_reads_a_sample_of_headers(tmp_path):
    for i, (width, height) in enumerate([(20, 10), (22, 12), (40, 30), (24, 14), (26, 16)]):
        Image.new("RGB", (width, height)).save(tmp_path / f"{i}.png")
    paths = np.array([str(tmp_path / f"{i}.png") for i in range(5)], dtype=object)
    assert median_image_size(paths) == (14, 24)
    assert median_image_size(np.zeros((2, 9, 7, 3), dtype=np.uint8)) == (9, 7)


@pytest.mark.parametrize(
    "X",
    [
        pd.DataFrame({"filename": pd.Series([], dtype=object)}),
        pd.Series([], dtype=object),
        [],
        np.zeros((0, 8, 8), dtype=np.uint8),
    ],
    ids=["DataFrame", "Series", "list", "array"],
)
def test_resolve_images_empty(X):
    with pytest.raises(ValueError, match="X is empty: there are no images"):
        resolve_images(X)


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA])
def test_resolve_images_missing_path(tmp_path, missing):
    _write_files(tmp_path, ["a.png"])
    X = pd.DataFrame({"filename": pd.Series(["a.png", missing], dtype=object)})
    with pytest.raises(ValueError, match="X has a missing image path at position 1"):
        resolve_images(X, image_root=tmp_path)


@pytest.mark.parametrize(
    "X, detail",
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), r"dtype float32 and shape \(2, 8, 8, 3\)"),
        (np.zeros((2, 8), dtype=np.uint8), r"dtype uint8 and shape \(2, 8\)"),
        (np.zeros((2, 8, 8, 3, 1), dtype=np.uint8), r"shape \(2, 8, 8, 3, 1\)"),
        (np.zeros((2, 8, 8, 2), dtype=np.uint8), r"shape \(2, 8, 8, 2\)"),
    ],
    ids=["float", "ndim2", "ndim5", "two-channels"],
)
def test_resolve_images_bad_array(X, detail):
    with pytest.raises(ValueError, match=f"must hold uint8 images.*{detail}"):
        resolve_images(X)


@pytest.mark.parametrize("X, name", [(42, "int"), ({"a.png"}, "set"), ({"a": 1}, "dict")])
def test_resolve_images_unsupported_type(X, name):
    with pytest.raises(TypeError, match=f"X must be a DataFrame.*got {name}$"):
        resolve_images(X)


# --- train_transform -------------------------------------------------------------


def test_train_transform_off():
    assert train_transform(False) is None


def test_train_transform_keeps_uint8_and_shape():
    torch.manual_seed(0)
    transform = train_transform(True)
    image = torch.randint(0, 256, (3, 16, 12), dtype=torch.uint8)
    out = transform(image)
    assert out.dtype == torch.uint8
    assert out.shape == (3, 16, 12)

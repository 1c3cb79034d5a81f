"""Decoding within bounds: memory that follows the output size, decompression bombs named."""

import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from conftest import TARGETS, small_estimator
from PIL import Image

from sk_multitask.datasets import make_multitask_images
from sk_multitask.exceptions import BadImageError, BadImageWarning
from sk_multitask.inputs import _decoding as decoding
from sk_multitask.inputs._decoding import median_image_size, read_image

EXIF_ORIENTATION = 0x0112


def bomb_png(path, side=100_000):
    """A PNG that declares ``side`` x ``side`` pixels (far above PIL's limit) in 100 bytes."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


# -- decompression bombs -------------------------------------------------------------------


def test_a_bomb_is_an_error_naming_the_file(tmp_path):
    path = bomb_png(tmp_path / "huge.png")
    with pytest.raises(BadImageError, match=r"cannot decode image file .*huge\.png.*exceeds"):
        read_image(path, 16)


def test_an_image_between_the_limits_is_decoded_with_a_warning_naming_it(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    Image.new("RGB", (100, 100), (10, 200, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # PIL warns above, raises above twice
    with pytest.warns(Image.DecompressionBombWarning, match=r"large\.png"):
        pixels = read_image(path, 8)
    np.testing.assert_array_equal(pixels[4, 4], [10, 200, 30])


def test_the_size_check_skips_a_bomb(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path in paths:
        Image.new("RGB", (20, 10)).save(path)
    bomb_png(paths[0])  # the first row is always sampled
    assert median_image_size(np.array([str(p) for p in paths], dtype=object)) == (10, 20)


@pytest.fixture
def bomb_set(tmp_path):
    """40 images of 16 px whose first and fourteenth are bombs (both sampled by the size check)."""
    df = make_multitask_images(40, image_size=16, path=tmp_path / "images", random_state=0)
    for row in (0, 13):
        bomb_png(tmp_path / "images" / df["filename"].iloc[row])
    return df


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_bombs_are_named_and_skipped_in_fit_and_predict(bomb_set, tmp_path, cache):
    options = {"cache": True} if cache == "memory" else {"cache_dir": tmp_path / "cache"}
    est = small_estimator(bomb_set, on_bad_image="skip", max_epochs=1, **options)
    with pytest.warns(BadImageWarning, match=r"2 image files .*img_00000\.jpg.*exceeds limit"):
        est.fit(bomb_set, bomb_set[TARGETS])
    with pytest.warns(BadImageWarning, match=r"img_00013\.jpg.*exceeds limit"):
        predicted = est.predict(bomb_set)
    assert predicted.iloc[[0, 13]].isna().all().all()
    assert predicted.drop(index=predicted.index[[0, 13]])[["color", "shape"]].notna().all().all()


def test_a_bomb_at_row_0_of_fit_is_an_error_naming_it(bomb_set):
    est = small_estimator(bomb_set, max_epochs=1)
    with pytest.raises(BadImageError, match=r"img_00000\.jpg.*exceeds limit"):
        est.fit(bomb_set, bomb_set[TARGETS])


# -- memory that follows the output size ------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's VmHWM")
def test_a_large_float_tiff_decodes_within_a_memory_bound(tmp_path):
    side = 4000  # 64 MB of float32 pixels, the least any decoder holds
    path = tmp_path / "float.tif"
    img = Image.new("F", (side, side), 0.25)
    img.paste(0.75, (0, 0, side // 2, side))
    img.save(path, compression="tiff_deflate")  # about 0.1 MB
    del img
    # The peak resident memory of the child's own address space (ru_maxrss would count
    # the parent's, which it inherits across fork and exec).
    script = textwrap.dedent(
        f"""
        import re
        from sk_multitask.inputs._decoding import read_image

        def peak():
            with open("/proc/self/status") as status:
                return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)) * 1024

        before = peak()
        pixels = read_image({str(path)!r}, 32)
        print(peak() - before, *pixels[16, [0, 31], 0])
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr
    peak, left, right = map(int, run.stdout.split())
    assert (left, right) == (191, 64)  # 0.75 and 0.25 of 255
    decoded = side * side * 4
    # The previous decoder made float64 copies of the whole image: about 7 times this.
    assert peak < 1.5 * decoded, f"{peak / 2**20:.0f} MiB for {decoded / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.fromarray(np.tile(np.arange(0, 65536, 64, np.uint16), (300, 1))),
        lambda: Image.fromarray(np.tile(np.linspace(-3, 3, 1024, dtype=np.float32), (300, 1))),
        lambda: Image.fromarray(np.tile(np.arange(1024, dtype=np.uint8) % 251, (300, 1))),
        lambda: Image.new("RGBA", (1024, 300), (10, 200, 30, 40)),
        lambda: Image.new("RGB", (1024, 300), (10, 200, 30)).quantize(8),
    ],
    ids=["I;16", "F", "L", "RGBA", "P"],
)
def test_band_by_band_equals_one_band(tmp_path, monkeypatch, make):
    path = tmp_path / "wide.tiff"
    make().save(path)
    whole = read_image(path, (20, 40))
    monkeypatch.setattr(decoding, "_BAND_PIXELS", 4000)  # bands of a few rows
    np.testing.assert_array_equal(read_image(path, (20, 40)), whole)


def test_a_large_rotated_png_is_reduced_then_turned(tmp_path):
    pixels = np.zeros((300, 600, 3), np.uint8)
    pixels[:, :300] = (255, 0, 0)
    pixels[:, 300:] = (0, 0, 255)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # rotate 90° clockwise to display: red on top
    path = tmp_path / "rotated.png"
    Image.fromarray(pixels).save(path, exif=exif)
    image = read_image(path, (20, 10))
    np.testing.assert_allclose(image[2, 5], (255, 0, 0), atol=2)
    np.testing.assert_allclose(image[17, 5], (0, 0, 255), atol=2)

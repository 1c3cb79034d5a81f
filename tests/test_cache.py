"""Decoded-image caches: the in-memory budget of cache="auto" and the disk cache."""

import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TARGETS, small_estimator
from PIL import Image
from sklearn.model_selection import GridSearchCV, KFold

from sk_multitask.datasets import make_multitask_images
from sk_multitask.exceptions import CacheDamageWarning
from sk_multitask.inputs._cache import available_memory, cached_images, fits_in_memory
from sk_multitask.inputs._dataset import ImageDataset, load_image
from sk_multitask.inputs._disk_cache import DiskCachedImages, _partial_prefix, disk_cached_images
from sk_multitask.inputs._sources import resolve_images


@pytest.fixture
def images(tmp_path):
    """24 JPEG files of 16 px (a fresh copy: tests change them)."""
    df = make_multitask_images(24, image_size=16, path=tmp_path / "images", random_state=0)
    paths, _ = resolve_images(df, image_root=df.attrs["image_root"])
    return paths


def cache_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".npy"))


def stored_rows(folder):
    """The number of images stored in the cache folder, over all its files."""
    return sum(len(np.load(folder / f, mmap_mode="r")) for f in cache_files(folder)
               if not f.endswith(".keys.npy"))


def test_fits_in_memory_budget():
    assert available_memory() > 0
    assert fits_in_memory(10, 16, max_bytes=10 * 3 * 16 * 16)
    assert not fits_in_memory(11, 16, max_bytes=10 * 3 * 16 * 16)
    assert fits_in_memory(10, (8, 32), max_bytes=10 * 3 * 8 * 32)


def test_cached_images_follows_the_cache_parameters(images):
    decoded, is_decoded = cached_images(images, 16, cache="auto", max_bytes=10**9)
    assert is_decoded and isinstance(decoded, torch.Tensor) and decoded.shape == (24, 3, 16, 16)
    assert torch.equal(decoded[3], load_image(images[3], 16))
    # Over the budget, the files stream.
    streamed, is_decoded = cached_images(images, 16, cache="auto", max_bytes=100)
    assert not is_decoded and streamed is images
    assert cached_images(images, 16, cache=False)[0] is images
    assert cached_images(images, 16, cache=True, max_bytes=100)[1]
    # An array is in memory already: "auto" leaves it as it is.
    array = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    assert cached_images(array, 16, cache="auto", max_bytes=10**9)[0] is array


def test_disk_cache_decodes_each_image_once(images, tmp_path):
    folder = tmp_path / "cache"
    first = disk_cached_images(images[:16], 16, folder)
    assert isinstance(first, DiskCachedImages) and len(first) == 16
    for i in (0, 15):
        assert torch.equal(first[i], load_image(images[i], 16))
    built = cache_files(folder)
    assert len(built) == 2  # the images and their keys

    # A subset (a fold) and the same set again are read, not decoded.
    again = disk_cached_images(images[4:12], 16, folder)
    assert cache_files(folder) == built
    assert torch.equal(again[0], load_image(images[4], 16))

    # A superset decodes only the images it adds, into a file of their own.
    everything = disk_cached_images(images, 16, folder)
    assert len(cache_files(folder)) == 4 and stored_rows(folder) == 24
    assert torch.equal(everything[20], load_image(images[20], 16))
    # Another image size is another entry.
    assert tuple(disk_cached_images(images[:2], 8, folder)[1].shape) == (3, 8, 8)
    assert stored_rows(folder) == 26


def test_disk_cache_items_index_and_pickle(images, tmp_path):
    import pickle

    cached = disk_cached_images(images, 16, tmp_path / "cache")
    subset = cached[np.array([5, 2])]
    assert isinstance(subset, DiskCachedImages) and len(subset) == 2
    assert torch.equal(subset[1], load_image(images[2], 16))
    cached[0]  # opens the files, which are not pickled
    restored = pickle.loads(pickle.dumps(cached))
    assert restored._opened == {} and torch.equal(restored[7], cached[7])
    dataset = ImageDataset(subset, np.zeros((2, 1), dtype=np.float32), image_size=16)
    assert torch.equal(dataset[0][0], load_image(images[5], 16))


def test_disk_cache_is_invalidated_when_a_file_changes(images, tmp_path):
    folder = tmp_path / "cache"
    before = disk_cached_images(images, 16, folder)[0]
    shutil.copyfile(images[1], images[0])  # another picture under the same name
    stat = os.stat(images[0])
    os.utime(images[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = disk_cached_images(images, 16, folder)[0]
    assert not torch.equal(after, before)
    assert torch.equal(after, load_image(images[1], 16))
    assert stored_rows(folder) == 25  # only the changed file was decoded again


def test_disk_cache_file_errors_name_the_file(images, tmp_path):
    os.remove(images[2])
    with pytest.raises(FileNotFoundError, match=os.path.basename(images[2])):
        disk_cached_images(images, 16, tmp_path / "cache")


@pytest.mark.slow
def test_two_processes_building_the_same_cache(images, tmp_path):
    folder = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        from sk_multitask.inputs._disk_cache import disk_cached_images
        paths = {list(map(str, images))!r}
        cached = disk_cached_images(paths, 16, {str(folder)!r})
        print(int(sum(int(cached[i].sum()) for i in range(len(cached)))))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    runs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    sums = [int(run.communicate(timeout=120)[0]) for run in runs]
    assert all(run.returncode == 0 for run in runs)
    expected = sum(int(load_image(p, 16).sum()) for p in images)
    assert sums == [expected, expected]
    assert not [f for f in os.listdir(folder) if "partial" in f]
    cached = disk_cached_images(images, 16, folder)
    assert sum(int(cached[i].sum()) for i in range(len(cached))) == expected


def test_estimator_with_cache_dir_trains_and_predicts_as_streaming(image_set, tmp_path):
    y = image_set[TARGETS]
    streamed = small_estimator(image_set, cache=False, max_epochs=1).fit(image_set, y)
    cached = small_estimator(image_set, cache_dir=tmp_path / "cache", max_epochs=1)
    cached.fit(image_set, y)
    np.testing.assert_allclose(cached.history_[:, "train_loss"],
                               streamed.history_[:, "train_loss"], rtol=1e-5)
    assert stored_rows(tmp_path / "cache") == len(image_set)
    proba = cached.predict_proba(image_set.head(10))["color"]
    np.testing.assert_allclose(proba, streamed.predict_proba(image_set.head(10))["color"],
                               rtol=1e-4, atol=1e-6)
    assert stored_rows(tmp_path / "cache") == len(image_set)  # predict read the cache


def test_search_decodes_every_image_once(image_set, tmp_path):
    folder = tmp_path / "cache"
    data = image_set.iloc[:60]
    est = small_estimator(data, cache_dir=folder, max_epochs=1, valid_split=None)
    search = GridSearchCV(est, {"lr": [1e-3, 3e-3]}, cv=KFold(3))
    search.fit(data, data[TARGETS])
    # Three folds, two candidates and the refit: each image decoded once.
    assert stored_rows(folder) == len(data)
    assert len(cache_files(folder)) == 4  # fold 1's training set, then fold 2's new images


def test_cache_parameters_are_validated(image_set):
    with pytest.raises(ValueError, match="'cache' parameter"):
        small_estimator(image_set, cache="always").fit(image_set, image_set[TARGETS])
    with pytest.raises(ValueError, match="'cache_max_bytes' parameter"):
        small_estimator(image_set, cache_max_bytes=-1).fit(image_set, image_set[TARGETS])


# -- a cache that checks itself ---------------------------------------------------------------


def _pair(folder):
    """The images file and the keys file of the one pair in ``folder``."""
    (npy,) = [folder / f for f in cache_files(folder) if not f.endswith(".keys.npy")]
    return npy, npy.with_name(npy.name[: -len(".npy")] + ".keys.npy")


def _corrupt(npy, row, image_bytes=3 * 16 * 16):
    """Flip bytes in the middle of image ``row`` of a cache file."""
    with open(npy, "rb") as file:
        np.lib.format.read_magic(file)
        np.lib.format.read_array_header_1_0(file)
        start = file.tell()
    with open(npy, "r+b") as file:
        file.seek(start + row * image_bytes + image_bytes // 2)
        data = file.read(8)
        file.seek(-8, os.SEEK_CUR)
        file.write(bytes(b ^ 0xFF for b in data))


def test_corrupted_cache_bytes_are_detected_and_rebuilt(images, tmp_path):
    folder = tmp_path / "cache"
    disk_cached_images(images, 16, folder)
    npy, _ = _pair(folder)
    _corrupt(npy, row=3)
    cached = disk_cached_images(images, 16, folder)
    dataset = ImageDataset(cached, image_size=16)
    assert torch.equal(dataset[2][0], load_image(images[2], 16))  # an intact image
    with pytest.warns(CacheDamageWarning, match=rf"{npy.name}.*image 3 fails its checksum"):
        item = dataset[3][0]
    assert torch.equal(item, load_image(images[3], 16))  # decoded from its file
    assert torch.equal(dataset[4][0], load_image(images[4], 16))  # the rest too, silently
    assert not npy.exists()  # removed, so that the next build stores the images again
    rebuilt = disk_cached_images(images, 16, folder)
    assert stored_rows(folder) == 24 and torch.equal(rebuilt[3], load_image(images[3], 16))


def test_corrupted_cache_bytes_do_not_change_predictions(image_set, tmp_path):
    folder = tmp_path / "cache"
    est = small_estimator(image_set, cache_dir=folder, max_epochs=1)
    est.fit(image_set, image_set[TARGETS])
    expected = est.predict(image_set)
    npy, _ = _pair(folder)
    for row in range(0, len(image_set), 7):
        _corrupt(npy, row)
    with pytest.warns(CacheDamageWarning, match=npy.name):
        pd.testing.assert_frame_equal(est.predict(image_set), expected)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda npy, keys: keys.write_bytes(b""), "EOF: reading magic string"),
        (lambda npy, keys: keys.write_bytes(b"not a numpy file"), "magic string is not correct"),
        (lambda npy, keys: np.save(keys, np.zeros(3, "i8")), "unexpected keys"),
        (lambda npy, keys: os.truncate(npy, os.path.getsize(npy) - 100), "truncated"),
    ],
    ids=["empty keys", "garbage keys", "other keys", "truncated images"],
)
def test_a_damaged_cache_pair_is_named_and_rebuilt(images, tmp_path, damage, reason):
    folder = tmp_path / "cache"
    disk_cached_images(images, 16, folder)
    npy, keys = _pair(folder)
    damage(npy, keys)
    with pytest.warns(CacheDamageWarning, match=rf"{keys.name}.*damaged \(.*({reason})"):
        cached = disk_cached_images(images, 16, folder)
    assert not npy.exists() and not keys.exists()
    assert stored_rows(folder) == 24
    assert torch.equal(cached[5], load_image(images[5], 16))


def test_a_pair_removed_by_another_process_is_read_from_the_image_files(images, tmp_path):
    folder = tmp_path / "cache"
    cached = disk_cached_images(images, 16, folder)
    for path in folder.iterdir():  # as a process that found it damaged does
        path.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # that process warned already
        assert torch.equal(ImageDataset(cached, image_size=16)[1][0], load_image(images[1], 16))


def test_an_older_versions_pair_is_removed_without_a_warning(images, tmp_path):
    folder = tmp_path / "cache"
    disk_cached_images(images, 16, folder)
    npy, keys = _pair(folder)
    np.save(keys, np.load(keys)["key"])  # the keys file of version 1: fingerprints only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached = disk_cached_images(images, 16, folder)
    assert not npy.exists() and stored_rows(folder) == 24
    assert torch.equal(cached[5], load_image(images[5], 16))


_KILLED_BUILD = """
import sys, time
import sk_multitask.inputs._disk_cache as cache
real = cache.decoded_batches

def first_batch_then_hang(*args, **kwargs):
    yield next(iter(real(*args, **kwargs)))
    print("writing", flush=True)
    time.sleep(60)

cache.decoded_batches = first_batch_then_hang
cache.disk_cached_images(sys.argv[1:-1], 16, sys.argv[-1])
"""


@pytest.mark.slow
def test_a_build_killed_midway_leaves_nothing_that_is_matched_and_is_cleaned(images, tmp_path):
    folder = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_BUILD, *map(str, images), str(folder)],
        stdout=subprocess.PIPE, text=True, env=env,
    ) as build:
        try:
            assert build.stdout.readline() == "writing\n"
        finally:
            build.kill()  # SIGKILL, while the images file is being written
            build.wait(timeout=60)
    (partial,) = os.listdir(folder)  # the killed build's temporary file, named for its pid
    assert partial.startswith(".sk_multitask-") and f"-{build.pid}-" in partial
    # An older version's partial keys file of a dead process (an empty one: it was
    # killed while writing it), which that version's lookup tried to read.
    legacy = folder / f"16x16-{'0' * 32}.partial-{build.pid}.keys.npy"
    legacy.write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing damaged: nothing to warn about
        cached = disk_cached_images(images, 16, folder)
    assert torch.equal(cached[0], load_image(images[0], 16))
    assert sorted(os.listdir(folder)) == cache_files(folder)  # the temporary files are gone
    assert len(cache_files(folder)) == 2


def test_a_live_builds_temporary_file_is_kept(images, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    ours = folder / f"{_partial_prefix()}abc.tmp"
    ours.write_bytes(b"being written")
    disk_cached_images(images[:2], 16, folder)
    assert ours.exists()


@pytest.mark.parametrize("how", ["in place", "renamed over"])
def test_an_image_replaced_with_its_size_and_mtime_kept_is_decoded_again(tmp_path, how):
    paths = [tmp_path / f"{name}.bmp" for name in ("a", "b")]
    Image.new("RGB", (16, 16), (255, 0, 0)).save(paths[0])
    Image.new("RGB", (16, 16), (0, 0, 255)).save(paths[1])  # the same size
    folder = tmp_path / "cache"
    before = disk_cached_images([str(paths[0])], 16, folder)[0]
    stat = os.stat(paths[0])
    if how == "in place":  # the same inode: its change time tells
        paths[0].write_bytes(paths[1].read_bytes())
        for _ in range(1000):  # until the clock has moved on (a tick, at most)
            os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
            if os.stat(paths[0]).st_ctime_ns != stat.st_ctime_ns:
                break
    else:  # another inode
        os.replace(paths[1], paths[0])
        os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (os.stat(paths[0]).st_size, os.stat(paths[0]).st_mtime_ns) == (
        stat.st_size, stat.st_mtime_ns
    )
    after = disk_cached_images([str(paths[0])], 16, folder)[0]
    assert before[:, 0, 0].tolist() == [255, 0, 0]
    assert after[:, 0, 0].tolist() == [0, 0, 255]


# -- a read-only cache ------------------------------------------------------------------------


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only as for a user who does not own it, and restore it after.

    The tests may run as root, whom permissions stop neither from writing nor removing:
    ``os.access`` answers as for another user, and ``os.remove`` in it raises as it would.
    """
    folders, real_access, real_remove = [], os.access, os.remove

    def inside(path):
        return any(os.path.realpath(path).startswith(f"{f}{os.sep}") for f in folders)

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and os.path.realpath(path) in folders:
            return False
        return real_access(path, mode, *args, **kwargs)

    def remove(path, *args, **kwargs):
        if inside(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_remove(path, *args, **kwargs)

    def make(folder):
        os.chmod(folder, 0o555)
        folders.append(os.path.realpath(folder))

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "remove", remove)
    yield make
    for folder in folders:
        os.chmod(folder, 0o755)


@pytest.fixture
def image_opens(monkeypatch):
    """The images opened so far (PIL.Image.open counted)."""
    opened, real_open = [], Image.open

    def counting_open(*args, **kwargs):
        opened.append(args[0] if args else None)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return opened


def test_a_read_only_cache_that_holds_every_image_serves_fit_and_predict(
    image_set, tmp_path, read_only
):
    folder = tmp_path / "cache"
    data = image_set.iloc[:64]
    est = small_estimator(data, cache_dir=folder, max_epochs=1)
    expected = est.fit(data, data[TARGETS]).predict(data)
    # A temporary file of a build killed long ago, which a read-only folder keeps.
    stale = folder / f"{_partial_prefix()}0-abc.tmp"
    stale.write_bytes(b"")
    os.utime(stale, (0, 0))
    files = sorted(os.listdir(folder))
    read_only(folder)
    refit = small_estimator(data, cache_dir=folder, max_epochs=1).fit(data, data[TARGETS])
    pd.testing.assert_frame_equal(refit.predict(data), expected)
    pd.testing.assert_frame_equal(est.predict(data), expected)
    assert sorted(os.listdir(folder)) == files  # nothing written, nothing removed


def test_a_read_only_cache_refuses_only_what_it_would_have_to_store(
    images, tmp_path, read_only, image_opens
):
    folder = tmp_path / "cache"
    disk_cached_images(images[:16], 16, folder)
    read_only(folder)
    image_opens.clear()
    cached = disk_cached_images(images[:16], 16, folder)
    assert torch.equal(cached[3], load_image(images[3], 16))
    image_opens.clear()
    with pytest.raises(
        ValueError,
        match=r"cache_dir='.*cache' cannot be written: '.*cache' is not writable, and 8 of "
        r"the images asked for are not in it yet: make it writable, or leave cache_dir out",
    ):
        disk_cached_images(images, 16, folder)
    assert image_opens == []  # refused before any image is decoded
    read_only(tmp_path)
    with pytest.raises(ValueError, match=r"'.*new' cannot be written: .* is not writable"):
        disk_cached_images(images, 16, tmp_path / "new")
    assert not (tmp_path / "new").exists()

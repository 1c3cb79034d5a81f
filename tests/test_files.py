"""Atomic writes: a killed process or a full disk leaves the old file whole.

The kill tests fork real processes that write over a good model (``est.save`` and the
command line's ``fit --model``) and SIGKILL them at random moments; a full disk is a small
tmpfs where the tests run as root, and an injected ENOSPC everywhere.
"""

import builtins
import contextlib
import errno
import io
import json
import os
import re
import stat
import subprocess
import sys
import textwrap

import joblib
import pytest
from conftest import TARGETS, small_estimator

from sk_multitask import load
from sk_multitask.cli import main
from sk_multitask.datasets import make_multitask_images
from sk_multitask.inputs._files import atomic_path, atomic_write, model_format, same_file

KILLS = 20


def temporaries(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith(".sk_multitask-"))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="midway"), atomic_write(path) as file:
        file.write(b"new, half")
        raise RuntimeError("midway")
    assert path.read_bytes() == b"old"
    assert temporaries(tmp_path) == []


def test_a_written_file_has_the_mode_open_gives_or_keeps_its_own(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.bin") as file:
            file.write(b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == 0o644  # not mkstemp's 0600
        os.chmod(tmp_path / "new.bin", 0o640)
        with atomic_path(tmp_path / "new.bin") as temporary:
            with open(temporary, "wb") as file:
                file.write(b"y")
        assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == 0o640
    finally:
        os.umask(umask)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("m.joblib", "pickle"),
        ("m.PKL", "pickle"),
        ("m.pickle", "pickle"),
        ("m.skmt", "safe file"),
        ("m.onnx", "onnx"),
    ],
)
def test_model_format_is_the_names(name, kind):
    assert model_format(name) == kind


@pytest.mark.parametrize(
    "name", ["model.bin", "model.safetensors", "model.skmt.bak", "model", "model.joblib.tmp"]
)
def test_any_other_model_name_is_refused_naming_the_formats(name):
    with pytest.raises(
        ValueError,
        match=r"named \.skmt \(safe file\), \.onnx \(ONNX\) or "
        r"\.joblib, \.pkl, \.pickle \(pickle",
    ):
        model_format(name)


def test_same_file_sees_through_links(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    os.link(data, tmp_path / "hard.csv")
    os.symlink(data, tmp_path / "soft.csv")
    assert same_file(data, tmp_path / "hard.csv") and same_file(tmp_path / "soft.csv", data)
    assert same_file(tmp_path / "new.csv", tmp_path / "x" / ".." / "new.csv")  # not there yet
    assert not same_file(data, tmp_path / "new.csv")


# --- kills -------------------------------------------------------------------------------

#: Run in a subprocess: fork a writer that writes ``target`` over and over, wait until its
#: temporary file appears, SIGKILL it after a random delay, copy ``target``; KILLS times.
KILLER = textwrap.dedent(
    """
    import json, os, random, shutil, signal, sys, time
    import joblib

    target, out, kills, mode, extra = sys.argv[1:6]
    folder = os.path.dirname(target)
    if mode == "save":
        est = joblib.load(extra)

        def write():
            est.save(target)
    else:
        import sk_multitask.training._build  # noqa: F401 -- imported once, not in every child
        from sk_multitask.cli import main

        def write():
            main([*json.loads(extra), "--model", target])

    def temporary():
        return any(n.startswith(".sk_multitask-") for n in os.listdir(folder))

    random.seed(0)
    midway = 0
    for i in range(int(kills)):
        pid = os.fork()
        if pid == 0:
            sys.stdout = sys.stderr = open(os.devnull, "w")
            try:
                while True:
                    write()
            finally:
                os._exit(1)
        deadline = time.monotonic() + 60
        while not temporary() and time.monotonic() < deadline:
            time.sleep(0.0002)
        time.sleep(random.uniform(0, 0.02))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        left = [n for n in os.listdir(folder) if n.startswith(".sk_multitask-")]
        midway += bool(left)  # killed between writing a temporary and renaming it
        for name in left:
            os.remove(os.path.join(folder, name))
        shutil.copyfile(target, os.path.join(out, f"{i}-{os.path.basename(target)}"))
    print(json.dumps({"midway": midway}))
    """
)


def kill_while_writing(target, out, mode, extra):
    """Copies of ``target`` after each of KILLS kills, and how many kills hit a write."""
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", KILLER, str(target), str(out), str(KILLS), mode, extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    copies = sorted(out.iterdir())
    assert len(copies) == KILLS
    return copies, json.loads(result.stdout.splitlines()[-1])["midway"]


@pytest.fixture(scope="module")
def fitted_small(image_set):
    return small_estimator(image_set, max_epochs=1).fit(image_set, image_set[TARGETS])


@pytest.mark.slow
def test_save_killed_at_random_moments_leaves_a_model_that_loads(fitted_small, image_set, tmp_path):
    target = tmp_path / "models" / "model.skmt"
    target.parent.mkdir()
    fitted_small.save(target)
    joblib.dump(fitted_small, tmp_path / "est.joblib")
    copies, midway = kill_while_writing(
        target, tmp_path / "copies", "save", str(tmp_path / "est.joblib")
    )
    assert midway >= 1  # some kills did land inside a write
    expected = fitted_small.predict(image_set.iloc[:8])
    for copy in copies:
        assert load(copy).predict(image_set.iloc[:8]).equals(expected), copy


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    df = make_multitask_images(8, image_size=16, path=root / "images", random_state=0)
    df.to_csv(root / "data.csv", index=False)
    args = [
        "fit",
        str(root / "data.csv"),
        "--images",
        str(root / "images"),
        "--targets",
        "color,area",
        "--backbone",
        "simple_cnn",
        "--weights",
        "none",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--valid-split",
        "none",
        "--seed",
        "0",
    ]
    return root, args


@pytest.mark.slow
def test_cli_fit_killed_at_random_moments_leaves_a_model_that_loads(small_data, tmp_path):
    _, args = small_data
    target = tmp_path / "models" / "m.joblib"
    target.parent.mkdir()
    assert main([*args, "--model", str(target)]) == 0
    copies, midway = kill_while_writing(target, tmp_path / "copies", "cli", json.dumps(args))
    assert midway >= 1
    for copy in copies:
        assert set(joblib.load(copy).tasks_) == {"color", "area"}, copy


# --- a full disk -------------------------------------------------------------------------


class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes free."""

    room = 0

    def write(self, data):
        if self.tell() + len(memoryview(data).cast("B")) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
        return super().write(data)


@contextlib.contextmanager
def injected_full_disk(room, monkeypatch):
    """Writing a temporary file of :mod:`sk_multitask.inputs._files` fails with ENOSPC past
    ``room``."""
    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        name = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
        if not (name.startswith(".sk_multitask-") and "w" in mode):
            return real_open(file, mode, *args, **kwargs)
        _FullDisk.room = room
        buffered = io.BufferedWriter(_FullDisk(file, "w"))
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding="utf-8")

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "open", full_open)
        yield


@contextlib.contextmanager
def small_tmpfs(folder):
    """A 32 MiB tmpfs mounted on ``folder``."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(folder)], capture_output=True
    )
    if os.geteuid() != 0 or mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root (the injected ENOSPC tests run instead)")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(folder, room):
    """Fill the filesystem of ``folder`` but ``room`` bytes."""
    with open(folder / "filler", "wb", buffering=0) as file, contextlib.suppress(OSError):
        while file.write(b"\0" * 4096):
            pass
    os.truncate(folder / "filler", max(0, os.path.getsize(folder / "filler") - room))


def assert_old_model_whole(path, old_bytes):
    assert path.read_bytes() == old_bytes
    assert temporaries(path.parent) == []


def test_save_on_a_full_disk_keeps_the_old_model(fitted_small, tmp_path, monkeypatch):
    path = fitted_small.save(tmp_path / "model.skmt")
    old = (tmp_path / "model.skmt").read_bytes()
    with (
        injected_full_disk(len(old) // 2, monkeypatch),
        pytest.raises(OSError, match="No space left on device"),
    ):
        fitted_small.save(path)
    assert_old_model_whole(tmp_path / "model.skmt", old)
    assert load(path).tasks_.keys() == fitted_small.tasks_.keys()


def test_save_on_a_full_tmpfs_keeps_the_old_model(fitted_small, tmp_path):
    disk = tmp_path / "disk"
    with small_tmpfs(disk):
        path = fitted_small.save(disk / "model.skmt")
        old = (disk / "model.skmt").read_bytes()
        fill(disk, len(old) // 2)
        with pytest.raises(OSError, match="No space left on device"):
            fitted_small.save(path)
        assert_old_model_whole(disk / "model.skmt", old)
        assert load(path).tasks_.keys() == fitted_small.tasks_.keys()


def _assert_cli_full_disk(args, model, old, capsys):
    code = main([*args, "--model", str(model)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert re.search(
        r"^sk-multitask fit: error: OSError: \[Errno 28\] No space left on device",
        err.strip().splitlines()[-1],
    ), err  # after the progress bars
    assert_old_model_whole(model, old)
    assert set(joblib.load(model).tasks_) == {"color", "area"}


def test_cli_fit_on_a_full_disk_keeps_the_old_model(small_data, tmp_path, monkeypatch, capsys):
    _, args = small_data
    model = tmp_path / "m.joblib"
    assert main([*args, "--model", str(model)]) == 0
    old = model.read_bytes()
    capsys.readouterr()
    with injected_full_disk(len(old) // 2, monkeypatch):
        _assert_cli_full_disk(args, model, old, capsys)


def test_cli_fit_on_a_full_tmpfs_keeps_the_old_model(small_data, tmp_path, capsys):
    _, args = small_data
    disk = tmp_path / "disk"
    with small_tmpfs(disk):
        model = disk / "m.joblib"
        assert main([*args, "--model", str(model)]) == 0, capsys.readouterr().err[-300:]
        old = model.read_bytes()
        capsys.readouterr()
        fill(disk, len(old) // 2)
        _assert_cli_full_disk(args, model, old, capsys)

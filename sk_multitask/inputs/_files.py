"""Writing files atomically: every file the package writes is complete or not there.

Each write goes to a temporary file in the target's folder, which is flushed and synced
to disk, then renamed over the target (``os.replace``, atomic on POSIX and Windows). A
process killed or a disk filled while writing leaves the old file whole and the
temporary one removed (or, after a kill, a ``.sk_multitask-*.tmp`` file nothing reads).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil

#: The file names a pickle may have: nothing else is ever unpickled.
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
#: A model file's format by its name's ending.
MODEL_FORMATS = {".skmt": "safe file", ".onnx": "onnx", **dict.fromkeys(PICKLE_SUFFIXES, "pickle")}


def model_format(path):
    """``"safe file"``, ``"onnx"`` or ``"pickle"``: the format ``path``'s name says.

    Decided by the name alone, before the file is opened, so that a file named as
    anything else (``model.bin``, ``model.skmt.bak``) is never unpickled.

    Raises
    ------
    ValueError
        For any other name, naming the accepted ones.

    Examples
    --------
    >>> model_format("model.joblib"), model_format("Model.SKMT")
    ('pickle', 'safe file')
    >>> model_format("model.bin")
    Traceback (most recent call last):
    ...
    ValueError: model.bin: a model file is named .skmt (safe file), .onnx (ONNX) or ...
    """
    for suffix, kind in MODEL_FORMATS.items():
        if os.fspath(path).lower().endswith(suffix):
            return kind
    raise ValueError(
        f"{os.fspath(path)}: a model file is named .skmt (safe file), .onnx (ONNX) or "
        f"{', '.join(PICKLE_SUFFIXES)} (pickle, from a source you trust); "
        "no other name is read"
    )


def check_folder_named(path, parameter):
    """Refuse a folder parameter (``cache_dir``, ``checkpoint_dir``) that names no folder.

    An empty name would be the working folder to some calls and no folder at all to
    others (``os.makedirs('')``).

    Raises
    ------
    ValueError
        Naming the parameter.

    Examples
    --------
    >>> check_folder_named("cache", "cache_dir")
    >>> check_folder_named("", "cache_dir")
    Traceback (most recent call last):
    ...
    ValueError: cache_dir='' names no folder: give a folder's path, or None
    """
    if not os.fspath(path).strip():
        raise ValueError(f"{parameter}={path!r} names no folder: give a folder's path, or None")


def same_file(a, b):
    """Whether paths ``a`` and ``b`` name one file (through links too), existing or not.

    Examples
    --------
    >>> same_file("data.csv", "./data.csv"), same_file("data.csv", "other.csv")
    (True, False)
    """
    a, b = os.fspath(a), os.fspath(b)
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def unwritable(folder):
    """Why no new file can be written in ``folder`` (made first if missing), or None.

    The nearest existing path on its way (``folder`` itself, or the parent it would be
    made in) must be a folder this process may write in.

    Examples
    --------
    >>> import tempfile
    >>> unwritable(tempfile.gettempdir()) is None
    True
    """
    existing = os.path.abspath(os.fspath(folder))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing!r} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing!r} is not writable"
    return None


def _new_file(folder, prefix):
    """A new empty file in ``folder`` with the mode ``open`` gives (mkstemp's is private)."""
    while True:
        temporary = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temporary
        except FileExistsError:
            continue


def _sync_folder(folder):
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path, prefix=".sk_multitask-"):
    """A temporary file name beside ``path`` to write to; renamed to ``path`` when done.

    For writers that take a file name (``torch.save``, ``joblib.dump``, skorch's
    ``save_params``). On an error the temporary file is removed and ``path`` untouched.
    The temporary name starts with ``prefix`` and ends with ``.tmp``.

    Examples
    --------
    >>> import os, pathlib, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "numbers.txt")
    >>> with atomic_path(path) as temporary:
    ...     with open(temporary, "w") as file:
    ...         _ = file.write("1 2 3")
    >>> pathlib.Path(path).read_text()
    '1 2 3'
    """
    folder = os.path.dirname(os.path.abspath(path))
    temporary = _new_file(folder, prefix)
    try:
        with contextlib.suppress(OSError):  # a file written over keeps its mode
            shutil.copymode(path, temporary)
        yield temporary
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _sync_folder(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def atomic_write(path, prefix=".sk_multitask-"):
    """A binary file to write ``path``'s new content to, put in place only when complete.

    ``prefix`` starts the temporary file's name (:func:`atomic_path`).

    Examples
    --------
    >>> import os, pathlib, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "data.bin")
    >>> with atomic_write(path) as file:
    ...     _ = file.write(b"complete")
    >>> pathlib.Path(path).read_bytes()
    b'complete'
    """
    with atomic_path(path, prefix) as temporary, open(temporary, "wb") as file:
        yield file
        file.flush()


@contextlib.contextmanager
def atomic_folder(path, prefix=".sk_multitask-"):
    """A new empty folder beside ``path`` to write a whole folder in; renamed to ``path``
    when done, every file synced first.

    For writers of a folder (``mlflow.pyfunc.save_model``). ``path`` must not exist, or
    be an empty folder. On an error the temporary folder is removed and ``path`` left as
    it was, so that a retry finds nothing in its way; a killed process leaves a
    ``.sk_multitask-*.tmp`` folder nothing reads.

    Raises
    ------
    FileExistsError
        If ``path`` exists and is not an empty folder, before anything is written.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> with atomic_folder(path) as temporary:
    ...     with open(os.path.join(temporary, "MLmodel"), "w") as file:
    ...         _ = file.write("flavors: {}")
    >>> os.listdir(path)
    ['MLmodel']
    """
    path = os.path.abspath(os.fspath(path))
    _check_new_folder(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    temporary = _new_folder(folder, prefix)
    try:
        yield temporary
        for root, _, names in os.walk(temporary):
            for name in names:
                with open(os.path.join(root, name), "rb+") as file:
                    os.fsync(file.fileno())
            _sync_folder(root)
        _check_new_folder(path)  # written meanwhile by another process: not replaced
        if os.path.isdir(path):
            os.rmdir(path)  # empty, and os.rename replaces no folder on Windows
        os.rename(temporary, path)
        _sync_folder(folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _check_new_folder(path):
    if os.path.lexists(path) and not (os.path.isdir(path) and not os.listdir(path)):
        raise FileExistsError(f"{path} exists and is not an empty folder: write to a new one")


def _new_folder(folder, prefix):
    """A new empty folder in ``folder``."""
    while True:
        temporary = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}.tmp")
        try:
            os.mkdir(temporary)
            return temporary
        except FileExistsError:
            continue

"""Writing files atomically: every file the package writes is complete or not there.

Each write goes to a temporary file in the target's folder, which is flushed and synced
to disk, then renamed over the target (``os.replace``, atomic on POSIX and Windows). A
process killed or a disk filled while writing leaves the old file whole and the
temporary one removed (or, after a kill, a ``.sk_multitask-*.tmp`` file nothing reads).
"""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_path", "atomic_write"]


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
    descriptor, temporary = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    os.close(descriptor)
    try:
        yield temporary
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
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

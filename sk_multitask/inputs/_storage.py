"""Images in object storage: URLs (``s3://``, ``gs://``, ``az://``, ``https://``...) read
through fsspec, with the estimator's ``storage_options``.

An image path, or ``image_root``, that starts with a protocol (``s3://bucket/a.png``,
``simplecache::s3://...``) names an object read with :mod:`fsspec`, as pandas reads
``pd.read_csv("s3://...", storage_options=...)``.
:func:`sk_multitask.inputs._sources.resolve_images` turns such a path into a
:class:`StorageUrl`: the URL's text, carrying the storage options that read it. It
pickles with them, so that DataLoader worker processes read it too;
each process opens its own filesystem (fsspec caches one per process and options), since
an asynchronous filesystem (s3fs, gcsfs, adlfs, HTTP) does not survive a fork.

:func:`read_url` reads one object whole, retrying transient errors a few times, and
fails in one line naming the URL. Nothing here stats or lists a bucket: image checks up
front and the disk cache's keys (:mod:`sk_multitask.inputs._cache`) use the URL's text only, so a
fit or a predict whose images are all in a disk cache reads nothing remote.

This module imports fsspec (and the protocol's package: s3fs, gcsfs, adlfs, aiohttp) only
when an object is read; it imports no torch.
"""

from __future__ import annotations

import re
import time

from ..exceptions import StorageError

#: Reads of one object before its error is raised: transient errors (a dropped
#: connection, a timeout, a throttled request) are retried after 0.1, then 0.2 s.
READ_ATTEMPTS = 3
_FIRST_DELAY = 0.1
#: ``protocol://``, or a chain of them (``simplecache::s3://``), at the start of a path.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
#: The extra that installs each protocol's filesystem.
_EXTRAS = {
    "s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs",
    "az": "azure", "abfs": "azure", "abfss": "azure", "adl": "azure",
    "http": "http", "https": "http",
}
#: Errors no retry mends: the object is missing, forbidden or not a file.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)



class StorageUrl(str):
    """The URL of an image (its text) and the fsspec ``storage_options`` that read it.

    A ``str`` everywhere a path is (messages, logs, cache keys); :func:`read_url`
    passes its options to fsspec. It pickles with them, for DataLoader workers: an
    estimator never stores one (its ``storage_options`` are never saved).

    Examples
    --------
    >>> import pickle
    >>> url = StorageUrl("s3://bucket/a.png", {"anon": True})
    >>> url, url.storage_options
    ('s3://bucket/a.png', {'anon': True})
    >>> pickle.loads(pickle.dumps(url)).storage_options
    {'anon': True}
    """

    def __new__(cls, url, storage_options=None):
        self = super().__new__(cls, url)
        self.storage_options = dict(storage_options or {})
        return self

    def __reduce__(self):
        return type(self), (str(self), self.storage_options)


def is_url(path):
    """Whether ``path`` is a URL fsspec reads (it starts with ``protocol://``).

    Examples
    --------
    >>> is_url("s3://bucket/a.png"), is_url("simplecache::gs://b/a.png"), is_url("C:/a.png")
    (True, True, False)
    """
    return isinstance(path, str) and _URL.match(path) is not None


def join_url(root, path):
    """``path`` under the URL ``root``: ``"s3://b/images" + "a/1.png"`` → ``"s3://b/images/a/1.png"``.

    A ``path`` that is a URL itself is kept as given.
    """
    if is_url(path):
        return path
    return root.rstrip("/") + "/" + path.lstrip("/")


def check_protocols(urls):
    """Fail now, naming the extra to install, if a protocol of ``urls`` has no filesystem.

    Imports the filesystem of each protocol (s3fs for ``s3://``...); reads nothing.

    Raises
    ------
    ImportError
        Naming the URL and ``pip install "sk-multitask[<extra>]"``.
    """
    for protocol, url in {_protocols(u)[-1]: u for u in urls}.items():
        try:
            import fsspec

            fsspec.get_filesystem_class(protocol)
        except ImportError as exc:
            extra = _EXTRAS.get(protocol)
            install = f'pip install "sk-multitask[{extra}]"' if extra else "install its package"
            raise ImportError(f"reading {url!r}: {_one_line(exc)}; {install}") from exc
        except ValueError as exc:  # fsspec knows no such protocol
            raise ValueError(f"cannot read {url!r}: {exc}") from None


def _protocols(url):
    return url.split("://", 1)[0].split("::")


def read_url(url, attempts=READ_ATTEMPTS):
    """The bytes of the object ``url`` (a :class:`StorageUrl` brings its storage options).

    Transient errors are retried ``attempts`` times in all, waiting 0.1 s, then twice as
    long; a missing object is not retried.

    Raises
    ------
    FileNotFoundError
        Naming the URL, when the object does not exist.
    StorageError
        Naming the URL and the last error, for anything else.
    """
    import fsspec.core

    options = getattr(url, "storage_options", {})
    attempt = 0
    while True:
        attempt += 1
        try:
            filesystem, path = fsspec.core.url_to_fs(str(url), **options)  # cached per process
            return filesystem.cat_file(path)  # one GET, no HEAD
        except FileNotFoundError:
            raise FileNotFoundError(f"no object at {str(url)!r}") from None
        except ImportError:
            raise
        except (*_PERMANENT, TypeError) as exc:  # TypeError: an option the filesystem refuses
            raise StorageError(url, _one_line(exc)) from exc
        except Exception as exc:  # network and service errors have no common class
            if attempt >= attempts:
                raise StorageError(url, f"{_one_line(exc)} ({attempts} attempts)") from exc
            time.sleep(_FIRST_DELAY * 2 ** (attempt - 1))


def _one_line(exc):
    return " ".join(f"{type(exc).__name__}: {exc}".split())

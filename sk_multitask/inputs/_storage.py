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
fails in one line naming the URL. Every read is bounded: in time (``"timeout"`` in
``storage_options``, :data:`TIMEOUT` seconds by default) and in size (``"max_bytes"``,
:data:`MAX_BYTES` by default), so that a server that never answers, trickles, or sends
gigabytes cannot hold or fill a prediction. Nothing here stats or lists a bucket: image
checks up front and the disk cache's keys (:mod:`sk_multitask.inputs._cache`) use the
URL's text only, so a fit or a predict whose images are all in a disk cache reads nothing
remote.

This module imports fsspec (and the protocol's package: s3fs, gcsfs, adlfs, aiohttp) only
when an object is read; it imports no torch.
"""

from __future__ import annotations

import asyncio
import re
import time
from numbers import Integral, Real

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
#: Seconds one read of one object may take, all of it (connecting, the server's answer,
#: the whole transfer: a server trickling a byte a second is stopped too), unless
#: ``storage_options["timeout"]`` says otherwise (None: no limit). Applied to the
#: asynchronous filesystems: http(s), s3, gcs, az.
TIMEOUT = 30
#: The largest object read as an image, in bytes, unless ``storage_options["max_bytes"]``
#: says otherwise (None: no limit). A file on disk is read as it is decoded, bounded by
#: PIL's pixel limit; an object is read whole before it is decoded, so its bytes are
#: bounded too: refused from its ``Content-Length`` when the server sends one, and by
#: stopping the read one byte past the cap.
MAX_BYTES = 64 * 2**20
#: Bytes read from an HTTP response at a time.
_CHUNK = 2**16



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
    """Fail now, naming the extra to install, if a protocol of ``urls`` has no filesystem,
    or naming the option, if the read's bounds in their storage options are not valid.

    Imports the filesystem of each protocol (s3fs for ``s3://``...); reads nothing.

    Raises
    ------
    ImportError
        Naming the URL and ``pip install "sk-multitask[<extra>]"``.
    ValueError
        Naming ``storage_options["timeout"]`` or ``["max_bytes"]`` and what they take.
    """
    for url in urls[:1]:  # the URLs of one X share their options
        read_limits(getattr(url, "storage_options", {}))
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


def read_limits(storage_options):
    """The bounds of a read, and the options left for fsspec.

    Parameters
    ----------
    storage_options : dict
        fsspec's options, with ``"timeout"`` (seconds, default :data:`TIMEOUT`) and
        ``"max_bytes"`` (default :data:`MAX_BYTES`), each None for no limit.

    Returns
    -------
    timeout : float or None
    max_bytes : int or None
    options : dict
        ``storage_options`` without those two keys.

    Raises
    ------
    ValueError
        Naming the key and what it takes.

    Examples
    --------
    >>> read_limits({"anon": True, "timeout": 10})
    (10, 67108864, {'anon': True})
    """
    options = dict(storage_options or {})  # the two keys are this package's, not fsspec's
    timeout = _limit(options, "timeout", TIMEOUT, Real, "a positive number of seconds")
    max_bytes = _limit(options, "max_bytes", MAX_BYTES, Integral, "a positive int (bytes)")
    return timeout, max_bytes, options


def _limit(options, key, default, kind, expected):
    value = options.pop(key, default)
    valid = isinstance(value, kind) and not isinstance(value, bool) and value > 0
    if value is not None and not valid:
        raise ValueError(f"storage_options[{key!r}] must be {expected} or None; got {value!r}")
    return value


def read_url(url, attempts=READ_ATTEMPTS):
    """The bytes of the object ``url`` (a :class:`StorageUrl` brings its storage options).

    Transient errors are retried ``attempts`` times in all, waiting 0.1 s, then twice as
    long; a missing object is not retried, nor a read stopped by its bounds
    (:func:`read_limits`): past its timeout, or larger than its size cap.

    Raises
    ------
    FileNotFoundError
        Naming the URL, when the object does not exist.
    StorageError
        Naming the URL and the last error (or the bound, and the option that sets it),
        for anything else.
    """
    import fsspec.core

    timeout, max_bytes, options = read_limits(getattr(url, "storage_options", {}))
    attempt = 0
    while True:
        attempt += 1
        try:
            filesystem, path = fsspec.core.url_to_fs(str(url), **options)  # cached per process
            return _read(filesystem, path, timeout, max_bytes)
        except FileNotFoundError:
            raise FileNotFoundError(f"no object at {str(url)!r}") from None
        except ImportError:
            raise
        except StorageError as exc:  # a read stopped by a bound: never retried
            raise StorageError(url, exc.reason) from None
        except (*_PERMANENT, TypeError) as exc:  # TypeError: an option the filesystem refuses
            raise StorageError(url, _one_line(exc)) from exc
        except Exception as exc:  # network and service errors have no common class
            if attempt >= attempts:
                raise StorageError(url, f"{_one_line(exc)} ({attempts} attempts)") from exc
            time.sleep(_FIRST_DELAY * 2 ** (attempt - 1))


def _read(filesystem, path, timeout, max_bytes):
    """One read of ``path``, within ``timeout`` seconds and ``max_bytes`` bytes.

    HTTP is streamed (a server may ignore a range, and a response may be endless); any
    other filesystem reads a range one byte past the cap, in one request. The timeout
    bounds the asynchronous filesystems (all the remote ones fsspec has for images).
    """
    if not getattr(filesystem, "async_impl", False):
        return _capped(filesystem.cat_file(path, **_range(max_bytes)), max_bytes)
    from fsspec.asyn import sync

    if _is_http(filesystem):
        read = _read_http(filesystem, path, max_bytes)
    else:
        read = _read_object(filesystem, path, max_bytes)
    return sync(filesystem.loop, _within, read, timeout)


def _range(max_bytes):
    return {} if max_bytes is None else {"start": 0, "end": max_bytes + 1}


def _capped(data, max_bytes):
    if max_bytes is not None and len(data) > max_bytes:
        raise _over_cap(max_bytes, "reading stopped there")
    return data


async def _read_object(filesystem, path, max_bytes):
    """An object of an asynchronous store (s3, gcs, az), by a range one byte past the cap."""
    try:
        return _capped(await filesystem._cat_file(path, **_range(max_bytes)), max_bytes)
    except (StorageError, *_PERMANENT):  # over the cap, missing, forbidden
        raise
    except OSError:
        # Any range of an empty object is "not satisfiable" (HTTP 416) to the stores.
        if max_bytes is not None and (await filesystem._info(path)).get("size") == 0:
            return b""
        raise


def _over_cap(max_bytes, how):
    # Raised inside the read, its URL given by read_url, which names the object.
    return StorageError(None, f"larger than the cap of {max_bytes} bytes for one image "
                        f"({how}); storage_options['max_bytes'] sets the cap")


async def _within(read, timeout):
    """Await ``read``, stopping it after ``timeout`` seconds (the filesystem's own
    timeouts, inside it, stay errors of their own: retried)."""
    task = asyncio.ensure_future(read)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        await asyncio.wait({task})  # its connection closed before the error is raised
        raise StorageError(
            None, f"not read within {timeout} s (storage_options['timeout'] sets the limit)"
        )
    return task.result()


def _is_http(filesystem):
    protocols = filesystem.protocol
    return "http" in ((protocols,) if isinstance(protocols, str) else protocols)


async def _read_http(filesystem, url, max_bytes):
    """The body of one GET, as fsspec's HTTP filesystem sends it (its session, headers
    and options), refused from its ``Content-Length`` or streamed up to ``max_bytes``."""
    session = await filesystem.set_session()
    async with session.get(filesystem.encode_url(url), **filesystem.kwargs) as response:
        if response.status == 404:
            raise FileNotFoundError(url)
        response.raise_for_status()
        length = response.content_length
        if max_bytes is not None and length is not None and length > max_bytes:
            response.close()  # the body is never read
            raise _over_cap(max_bytes, f"its Content-Length is {length}")
        chunks, size = [], 0
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                response.close()  # the connection dropped: the server stops sending
                raise _over_cap(max_bytes, "reading stopped there")
            chunks.append(chunk)
    return b"".join(chunks)


def _one_line(exc):
    return " ".join(f"{type(exc).__name__}: {exc}".split())

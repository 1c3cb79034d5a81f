"""Images in object storage: a real S3 endpoint (moto's server on 127.0.0.1, read with
s3fs), ``memory://`` and a flaky HTTP server; nothing inside the package is mocked."""

import copy
import http.server
import importlib.util
import io
import itertools
import json
import os
import pickle
import re
import socket
import threading
import time
import zipfile

import fsspec
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sk_multitask import load
from sk_multitask.cli import main
from sk_multitask.datasets import make_multitask_images
from sk_multitask.exceptions import (
    BadImageError,
    BadImageWarning,
    ImageNotFoundError,
    StorageError,
)
from sk_multitask.inputs import _storage as storage
from sk_multitask.inputs._decoding import read_image
from sk_multitask.inputs._sources import resolve_images
from sk_multitask.inputs._storage import StorageUrl, join_url, read_limits, read_url
from sk_multitask.persistence._document import model_document
from tests.conftest import TARGETS, run_python_without, small_estimator

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


def _estimator(df, **params):
    """The small CNN, one epoch, no validation rows: quick, and the same model from
    files, S3 or memory."""
    return small_estimator(df, max_epochs=1, valid_split=None, **params)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A local S3 endpoint with an empty bucket: ``(storage_options, s3fs filesystem)``."""
    import s3fs

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "key": "testing",
        "secret": "testing",
    }
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("bucket")
    yield options, fs
    server.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """32 images of 16 px on disk, a model fitted on the files, and its predictions."""
    path = tmp_path_factory.mktemp("storage-images")
    df = make_multitask_images(32, image_size=16, path=path, random_state=0)
    est = _estimator(df, cache=False).fit(df, df[TARGETS])
    return df, est.predict(df), est


def _upload(df, put, prefix):
    root = df.attrs["image_root"]
    for name in df["filename"]:
        with open(os.path.join(root, name), "rb") as file:
            put(f"{prefix}/{name}", file.read())


def test_fit_from_s3_in_worker_processes_predicts_as_from_files(s3, images):
    options, fs = s3
    df, expected, _ = images
    _upload(df, fs.pipe, "bucket/fit")
    # Read in a DataLoader worker process, with its own s3fs client.
    est = _estimator(
        df, image_root="s3://bucket/fit", storage_options=options, cache=False, num_workers=1
    )
    predictions = est.fit(df, df[TARGETS]).set_params(num_workers=0).predict(df)
    pd.testing.assert_frame_equal(predictions, expected)


def test_a_cache_dir_serves_fits_and_predictions_once_the_objects_are_gone(s3, images, tmp_path):
    options, fs = s3
    df, expected, _ = images
    _upload(df, fs.pipe, "bucket/cached")
    params = dict(
        image_root="s3://bucket/cached", storage_options=options, cache_dir=tmp_path / "cache"
    )
    first = _estimator(df, **params).fit(df, df[TARGETS])
    fs.rm("bucket/cached", recursive=True)
    assert not fs.exists("bucket/cached/" + df["filename"].iloc[0])
    second = _estimator(df, **params).fit(df, df[TARGETS])  # reads nothing remote
    pd.testing.assert_frame_equal(second.predict(df), expected)
    pd.testing.assert_frame_equal(first.predict(df), expected)


def test_a_missing_object_is_a_one_line_error_naming_its_url(s3, images):
    options, fs = s3
    df, _, _ = images
    _upload(df.head(8), fs.pipe, "bucket/missing")
    url = "s3://bucket/missing/" + df["filename"].iloc[8]
    est = _estimator(df.head(10), image_root="s3://bucket/missing", storage_options=options)
    with pytest.raises(ImageNotFoundError, match=f"image file not found: '{url}'") as error:
        est.fit(df.head(10), df.head(10)[TARGETS])
    assert "\n" not in str(error.value)
    assert not hasattr(est, "net_")  # nothing half-fitted
    # check_images reads every object before training, and names the missing ones.
    est.set_params(check_images=True)
    with pytest.raises(ValueError, match=f"2 image files cannot be read .*'{url}'"):
        est.fit(df.head(10), df.head(10)[TARGETS])
    est.set_params(check_images=False)
    # Skipped instead: the two missing rows train nothing and are named.
    est.set_params(on_bad_image="skip")
    with pytest.warns(UserWarning, match="2 image files could not be read"):
        est.fit(df.head(10), df.head(10)[TARGETS])
    assert sorted(est.skipped_images_) == [url, url[:-len(df["filename"].iloc[8])]
                                          + df["filename"].iloc[9]]
    assert all(type(path) is str for path in est.skipped_images_)  # no storage options kept


def test_memory_urls_and_the_model_files_keep_no_storage_options(images, tmp_path):
    df, expected, _ = images
    memory = fsspec.filesystem("memory")
    _upload(df, memory.pipe, "memory://storage-test")
    options = {"skip_instance_cache": False}  # an option, to follow through the files
    est = _estimator(
        df, image_root="memory://storage-test", storage_options=options, cache=False
    ).fit(df, df[TARGETS])
    pd.testing.assert_frame_equal(est.predict(df), expected)
    # URLs in X itself, no image_root.
    urls = df.assign(filename="memory://storage-test/" + df["filename"])
    pd.testing.assert_frame_equal(est.set_params(image_root=None).predict(urls), expected)
    # Credentials never leave in a file: not in the safe file, None in a pickle.
    assert "storage_options" not in model_document(est)["params"]
    path = est.save(tmp_path / "model.skmt")
    with zipfile.ZipFile(path) as archive:
        assert not any(b"skip_instance_cache" in archive.read(n) for n in archive.namelist())
    assert pickle.loads(pickle.dumps(est)).storage_options is None
    assert est.storage_options == options  # the estimator itself keeps them
    loaded = load(path, storage_options=options)
    assert loaded.storage_options == options
    pd.testing.assert_frame_equal(loaded.predict(urls), expected)


def test_the_onnx_predictor_reads_urls(images, tmp_path):
    pytest.importorskip("onnxruntime")
    from sk_multitask.onnx import OnnxPredictor

    df, expected, local = images
    _upload(df, fsspec.filesystem("memory").pipe, "memory://storage-onnx")
    path = local.export_onnx(tmp_path / "model.onnx")
    predictor = OnnxPredictor(path, image_root="memory://storage-onnx", storage_options={})
    predictions = predictor.predict(df)
    assert predictions["color"].tolist() == expected["color"].tolist()
    np.testing.assert_allclose(predictions["area"], expected["area"], rtol=1e-4)


def test_the_command_line_predicts_from_urls(images, tmp_path, capsys):
    df, expected, local = images
    memory = fsspec.filesystem("memory")
    _upload(df, memory.pipe, "memory://storage-cli")
    model = local.save(tmp_path / "model.skmt")
    df[["filename"]].to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / "predictions.csv"
    code = main([
        "predict", str(tmp_path / "data.csv"), "--model", str(model), "--out", str(out),
        "--images", "memory://storage-cli", "--storage-options", '{"skip_instance_cache": false}',
    ])
    assert code == 0, capsys.readouterr().err
    written = pd.read_csv(out)
    assert written["color"].tolist() == expected["color"].tolist()
    np.testing.assert_allclose(written["area"], expected["area"], rtol=1e-5)


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``/ok`` after failing its first request (503); ``/down`` always fails."""

    failures = {"/ok": 1, "/down": 10**6}

    def do_GET(self):
        if self.failures.get(self.path, 0) > 0:
            self.failures[self.path] -= 1
            self.send_response(503)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"image")

    def log_message(self, *args):
        pass


def test_transient_errors_are_retried_then_reported_in_one_line():
    pytest.importorskip("aiohttp")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        root = f"http://127.0.0.1:{server.server_address[1]}"
        assert read_url(StorageUrl(join_url(root, "ok"))) == b"image"  # the second attempt
        down = f"{root}/down"
        with pytest.raises(StorageError, match=f"cannot read '{down}': .*503.*3 attempts") as err:
            read_url(down)
        assert "\n" not in str(err.value)
    finally:
        server.shutdown()
        server.server_close()


def test_an_object_that_is_no_image_is_named_when_decoded(s3):
    options, fs = s3
    fs.pipe("bucket/bad/not-an-image.png", b"text")
    url = StorageUrl("s3://bucket/bad/not-an-image.png", options)
    with pytest.raises(BadImageError, match="cannot decode image file 's3://bucket/bad/"):
        read_image(url, 16)


def test_a_protocol_without_its_package_names_the_extra():
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    with pytest.raises(ImportError, match=r"'gs://bucket/a.png'.*sk-multitask\[gcs\]"):
        resolve_images(["gs://bucket/a.png"])


# -- bounded reads: time and size ------------------------------------------------------------

#: A response of 1.5 GB: a small JPEG followed by zeros.
HUGE = 1_500_000_000
#: How long a test server lives, and how many requests it answers, at most.
SERVER_SECONDS = 60
SERVER_REQUESTS = 40


def _jpeg():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _zeros(n, chunk=2**20):
    """``n`` zero bytes, a chunk at a time."""
    zeros = bytes(chunk)
    for start in range(0, n, chunk):
        yield zeros[: min(chunk, n - start)]


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    """``/small.jpg`` a JPEG; ``/silent/...`` accepts and never answers; ``/trickle/...``
    sends a byte every 0.3 s; ``/length/...`` and ``/stream/...`` send 1.5 GB (a JPEG, then
    zeros) with and without a Content-Length. Each stops when the client goes away, or
    when the server is stopped."""

    stopped = threading.Event()  # replaced per server

    def do_GET(self):
        route = self.path.split("/")[1]
        if route == "small.jpg":
            self._headers(len(_jpeg()))
            self.wfile.write(_jpeg())
        elif route == "silent":
            self.connection.settimeout(0.2)
            while not self.stopped.is_set():  # until the client hangs up
                try:
                    if not self.connection.recv(1):
                        return
                except TimeoutError:
                    continue
        elif route == "trickle":
            self._headers(1000)
            self._send_until_gone([b"\xff"] * 1000, pause=0.3)
        else:
            self._headers(HUGE if route == "length" else None)
            self._send_until_gone(itertools.chain([_jpeg()], _zeros(HUGE - len(_jpeg()))))

    def _headers(self, length):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()  # HTTP/1.0: without a length, the body ends with the connection

    def _send_until_gone(self, chunks, pause=0.0):
        for chunk in chunks:
            if self.stopped.wait(pause):
                return
            try:
                self.wfile.write(chunk)
                self.wfile.flush()
            except OSError:  # the client hung up: stop sending
                return

    def log_message(self, *args):
        pass


class _BoundedServer(http.server.ThreadingHTTPServer):
    """Answers at most SERVER_REQUESTS requests, each in a daemon thread."""

    daemon_threads = True
    timeout = 0.2  # handle_request's wait, so that the serving loop sees its deadline
    served = 0

    def process_request(self, request, client_address):
        self.served += 1
        if self.served > SERVER_REQUESTS:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)


@pytest.fixture(scope="module")
def hostile():
    """The root URL of a local server of hostile answers (:class:`_HostileHandler`).

    It binds 127.0.0.1, answers at most SERVER_REQUESTS requests, lives at most
    SERVER_SECONDS, and stops (every answer with it) when the module's tests are done.
    """
    pytest.importorskip("aiohttp")
    stopped = threading.Event()
    server = _BoundedServer(
        ("127.0.0.1", 0), type("Handler", (_HostileHandler,), {"stopped": stopped})
    )

    def serve():
        deadline = time.monotonic() + SERVER_SECONDS
        while not stopped.is_set() and time.monotonic() < deadline:
            server.handle_request()
        stopped.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    stopped.set()
    thread.join(5)
    server.server_close()


@pytest.mark.parametrize("route", ["silent", "trickle"])
def test_a_server_that_never_answers_or_trickles_is_stopped_at_the_timeout(hostile, route):
    url = f"{hostile}/{route}/a.jpg"
    start = time.perf_counter()
    with pytest.raises(StorageError, match=re.escape(
        f"cannot read '{url}': not read within 1 s (storage_options['timeout'] sets the limit)"
    )) as error:
        read_url(StorageUrl(url, {"timeout": 1}))
    elapsed = time.perf_counter() - start
    assert 1 <= elapsed < 2.5, elapsed  # one attempt: a timeout is not retried
    assert "\n" not in str(error.value)


def test_the_default_timeout_applies_without_storage_options(hostile, monkeypatch):
    assert read_limits({}) == (30, 64 * 2**20, {})  # the documented defaults
    monkeypatch.setattr(storage, "TIMEOUT", 1)  # the default, shortened for the test
    start = time.perf_counter()
    with pytest.raises(StorageError, match="not read within 1 s"):
        read_url(f"{hostile}/silent/b.jpg")  # a plain str: no storage options at all
    assert time.perf_counter() - start < 2.5


@pytest.mark.parametrize(
    ("route", "how"),
    [("length", "its Content-Length is 1500000000"), ("stream", "reading stopped there")],
)
def test_an_image_url_over_the_size_cap_is_refused_naming_it(hostile, route, how):
    url = f"{hostile}/{route}/c.jpg"
    start = time.perf_counter()
    with pytest.raises(StorageError, match=re.escape(
        f"cannot read '{url}': larger than the cap of 100000 bytes for one image ({how}); "
        "storage_options['max_bytes'] sets the cap"
    )):
        read_url(StorageUrl(url, {"max_bytes": 100_000}))
    assert time.perf_counter() - start < 2
    small = StorageUrl(f"{hostile}/small.jpg", {"max_bytes": len(_jpeg())})
    assert read_url(small) == _jpeg()  # the cap itself is allowed


def test_predict_from_a_hostile_server_fails_or_skips_within_its_bounds(images, hostile):
    df, _, fitted = images
    est = copy.deepcopy(fitted).set_params(
        image_root=None, storage_options={"timeout": 1, "max_bytes": 100_000}
    )
    good = f"{hostile}/small.jpg"
    bad = [f"{hostile}/silent/d.jpg", f"{hostile}/trickle/d.jpg", f"{hostile}/stream/d.jpg"]
    X = pd.DataFrame({"filename": [good, *bad]})
    start = time.perf_counter()
    with pytest.raises(BadImageError, match=re.escape(f"cannot read '{bad[0]}': not read "
                                                      "within 1 s")):
        est.predict(X)
    assert time.perf_counter() - start < 2.5
    # Skipped instead: each bad row is missing, one warning names them, within the bounds.
    start = time.perf_counter()
    with pytest.warns(BadImageWarning, match="3 image files could not be read") as caught:
        predictions = est.set_params(on_bad_image="skip").predict(X)
    assert time.perf_counter() - start < 2 * 1 + 2.5
    assert all(url in str(caught[0].message) for url in bad)
    assert predictions.iloc[0].notna().all() and predictions.iloc[1:].isna().all().all()


MEMORY_SCRIPT = """
import json, sys, time
from sk_multitask.exceptions import BadImageError
from sk_multitask.inputs._decoding import read_image
from sk_multitask.inputs._storage import MAX_BYTES, StorageUrl

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(l.split()[1]) * 1024 for l in lines if l.startswith(field + ":"))

root = sys.argv[1] if len(sys.argv) > 1 else {root!r}
read_image(StorageUrl(root + "/small.jpg"), 16)  # the event loop, the session, the decoder
baseline = status("VmRSS")
out = {{"baseline": baseline, "max_bytes": MAX_BYTES}}
for route in ("length", "stream"):
    start = time.perf_counter()
    try:
        read_image(StorageUrl(f"{{root}}/{{route}}/e.jpg"), 16)
        out[route] = "read whole"
    except BadImageError as error:
        out[route] = str(error)
    out[route + "_seconds"] = time.perf_counter() - start
    out[route + "_peak_above_baseline"] = status("VmHWM") - baseline
print(json.dumps(out))
"""


def test_a_1_5_gb_response_is_refused_within_100_mb_of_memory(hostile):
    # The decoding path, in a process of its own (torch blocked: it needs none), with the
    # default cap; its peak resident memory (VmHWM) against its resident memory before.
    result = run_python_without(MEMORY_SCRIPT.format(root=hostile), timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    print(out)  # the figures of docs/reliability.md
    for route, how in (("length", "its Content-Length is 1500000000"),
                       ("stream", "reading stopped there")):
        url = f"{hostile}/{route}/e.jpg"
        assert out[route].startswith(f"cannot read '{url}': larger than the cap of "
                                     f"{64 * 2**20} bytes for one image ({how})"), out[route]
        assert out[route + "_peak_above_baseline"] < 100 * 2**20, out
        assert out[route + "_seconds"] < 10, out


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("timeout", 0, "a positive number of seconds or None"),
        ("timeout", "30", "a positive number of seconds or None"),
        ("timeout", float("nan"), "a positive number of seconds or None"),
        ("max_bytes", 1.5e6, "a positive int (bytes) or None"),
        ("max_bytes", True, "a positive int (bytes) or None"),
    ],
)
def test_bad_bounds_are_refused_before_any_read(key, value, expected):
    message = f"storage_options[{key!r}] must be {expected}; got {value!r}"
    with pytest.raises(ValueError, match=re.escape(message)):  # port 9: nothing listens
        resolve_images(["http://127.0.0.1:9/a.jpg"], storage_options={key: value})


def test_an_object_store_reads_a_range_up_to_the_cap(s3):
    options, fs = s3
    fs.pipe("bucket/capped/a.jpg", _jpeg())
    fs.pipe("bucket/capped/empty.jpg", b"")
    url = "s3://bucket/capped/a.jpg"
    cap = {**options, "max_bytes": len(_jpeg()) - 1}
    with pytest.raises(StorageError, match=re.escape(
        f"cannot read '{url}': larger than the cap of {len(_jpeg()) - 1} bytes"
    )):
        read_url(StorageUrl(url, cap))
    assert read_url(StorageUrl(url, {**options, "max_bytes": len(_jpeg())})) == _jpeg()
    # Any range of an empty object is "not satisfiable": read as empty all the same.
    assert read_url(StorageUrl("s3://bucket/capped/empty.jpg", options)) == b""

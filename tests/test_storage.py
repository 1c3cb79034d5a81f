"""Images in object storage: a real S3 endpoint (moto's server on 127.0.0.1, read with
s3fs), ``memory://`` and a flaky HTTP server; nothing inside the package is mocked."""

import http.server
import importlib.util
import os
import pickle
import socket
import threading
import zipfile

import fsspec
import numpy as np
import pandas as pd
import pytest

from sk_multitask import load
from sk_multitask.cli import main
from sk_multitask.datasets import make_multitask_images
from sk_multitask.exceptions import BadImageError, ImageNotFoundError, StorageError
from sk_multitask.inputs._decoding import read_image
from sk_multitask.inputs._sources import resolve_images
from sk_multitask.inputs._storage import StorageUrl, join_url, read_url
from sk_multitask.persistence._document import model_document
from tests.conftest import TARGETS, small_estimator

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

"""The MLflow flavor (the safe file, no pickle; pyfunc; serving) and MLflow's own
scikit-learn flavor through skops.

One ``mlflow models serve`` for the module (it takes about 30 s to start): the served
model reads the images a request holds, and the paths and URLs it names only under the
folder and URL prefix it was logged with (a local HTTP server that counts its requests).
"""

import base64
import builtins
import errno
import http.server
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request

import pandas as pd
import pytest
from conftest import TARGETS

from sk_multitask.targets._outputs import probability_table

mlflow = pytest.importorskip("mlflow")
sk_mlflow = pytest.importorskip("sk_multitask.mlflow")

#: Files that would hold a pickle (MLflow's python_model, scikit-learn flavors).
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle")


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A local file tracking store, for this module's tests."""
    folder = tmp_path_factory.mktemp("mlflow") / "mlruns"  # created with its default experiment
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    patch.setenv("MLFLOW_TRACKING_URI", folder.as_uri())
    mlflow.set_tracking_uri(folder.as_uri())
    yield folder.as_uri()
    mlflow.set_tracking_uri(None)
    patch.undo()


@pytest.fixture(scope="module")
def image_server(image_set):
    """A local HTTP server of ``image_set``'s files under ``/images/``, which records the
    path of every request it gets."""
    root = pathlib.Path(image_set.attrs["image_root"])
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            name = self.path.removeprefix("/images/")
            file = root / name
            if self.path == name or "/" in name or not file.is_file():
                self.send_response(404)
                self.end_headers()
                return
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield types.SimpleNamespace(
        url=f"http://127.0.0.1:{server.server_address[1]}", requests=requests
    )
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def logged(fitted, tracking, image_server):
    """The fitted model, logged to read paths under its image folder and URLs under the
    image server's ``/images/``."""
    with mlflow.start_run():
        return sk_mlflow.log_model(
            fitted,
            name="model",
            allowed_image_folders=[fitted.image_root],
            allowed_image_urls=[f"{image_server.url}/images/"],
        )


def encoded(image_set, rows):
    """The image files of ``rows`` of ``image_set``, base64-encoded."""
    root = pathlib.Path(image_set.attrs["image_root"])
    return [
        base64.b64encode((root / name).read_bytes()).decode("ascii")
        for name in image_set["filename"].iloc[rows]
    ]


def test_the_logged_model_is_the_safe_file_with_no_pickle(logged, fitted, image_server):
    local = mlflow.artifacts.download_artifacts(logged.model_uri)
    files = [os.path.join(root, f) for root, _, names in os.walk(local) for f in names]
    assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    assert os.path.join(local, "data", "model.skmt") in files
    model = mlflow.models.Model.load(os.path.join(local, "MLmodel"))
    assert model.flavors["python_function"]["loader_module"] == "sk_multitask.mlflow"
    assert model.flavors["sk_multitask"]["data"] == "data/model.skmt"
    assert model.signature.inputs.input_names() == ["filename", "image_base64"]
    assert model.signature.outputs.input_names() == TARGETS
    assert model.signature.params.to_dict()[0]["name"] == "method"
    example = model.load_input_example(local)  # one grey image, base64: runs anywhere
    assert list(example.columns) == ["image_base64"] and len(example) == 1
    # What a request may name, in the MLmodel file: the pyfunc's config.
    config = model.flavors["python_function"]["config"]
    assert config["allowed_image_folders"] == [os.path.normpath(fitted.image_root)]
    assert config["allowed_image_urls"] == [f"{image_server.url}/images/"]


def test_the_pyfunc_predicts_as_the_estimator_from_paths_and_base64(logged, fitted, image_set):
    model = mlflow.pyfunc.load_model(logged.model_uri)
    X = image_set[["filename"]].iloc[:6]
    expected = fitted.predict(X)
    pd.testing.assert_frame_equal(model.predict(X), expected)
    images = pd.DataFrame({"image_base64": encoded(image_set, slice(0, 6))}, index=X.index)
    pd.testing.assert_frame_equal(model.predict(images), expected)
    # Both columns: a row's encoded image is used where it has one.
    mixed = X.assign(image_base64=[None, None, None] + encoded(image_set, slice(3, 6)))
    pd.testing.assert_frame_equal(model.predict(mixed), expected)
    proba = model.predict(X, params={"method": "predict_proba"})
    pd.testing.assert_frame_equal(proba, probability_table(fitted.predict_proba(X), X.index))
    assert "color_proba_red" in proba.columns
    assert model.get_raw_model().tasks_.keys() == fitted.tasks_.keys()


def test_load_model_gives_the_estimator(logged, fitted, image_set):
    est = sk_mlflow.load_model(logged.model_uri, device="cpu")
    pd.testing.assert_frame_equal(est.predict(image_set), fitted.predict(image_set))
    assert list(est.history_) == json.loads(json.dumps(list(fitted.history_)))


def test_the_pyfunc_refuses_bad_input_with_one_line(logged, image_set):
    model = mlflow.pyfunc.load_model(logged.model_uri)
    X = image_set[["filename"]].iloc[:2]
    with pytest.raises(ValueError, match=r"method must be one of \['predict', 'predict_proba'\]"):
        model.predict(X, params={"method": "transform"})
    with pytest.raises(ValueError, match="row 1 of 'image_base64' is not base64-encoded"):
        model.predict(pd.DataFrame({"image_base64": [encoded(image_set, [0])[0], "#not"]}))
    with pytest.raises(
        ValueError, match="neither 'image_base64' .* nor the image column 'filename'"
    ):
        sk_mlflow.MultiTaskPyfuncModel(model.get_raw_model()).predict(pd.DataFrame({"x": [1]}))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url, payload):
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served(logged, tmp_path_factory):
    """``mlflow models serve`` of the logged model on 127.0.0.1: its base URL."""
    port = free_port()
    # The server runs uvicorn from this environment's scripts, and imports this checkout.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", logged.model_uri]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert server.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "the server did not answer /ping"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def invoke(served, body, content_type="application/json"):
    """POST ``body`` (JSON-encoded unless bytes) to the server: status and body text."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{served}/invocations", data, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def images_request(column, values):
    return {"dataframe_split": {"columns": [column], "data": [[value] for value in values]}}


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_posted_image(served, fitted, image_set):
    status, text = invoke(served, images_request("image_base64", encoded(image_set, [0, 1])))
    assert status == 200, text
    expected = fitted.predict(image_set.iloc[:2])
    got = pd.DataFrame(json.loads(text)["predictions"])
    assert got[["color", "shape"]].to_dict("list") == {
        "color": expected["color"].tolist(),
        "shape": expected["shape"].tolist(),
    }
    assert got["area"].tolist() == pytest.approx(expected["area"].tolist())


@pytest.mark.slow
def test_the_served_model_reads_the_paths_and_urls_it_was_logged_with(
    served, fitted, image_set, image_server
):
    expected = fitted.predict(image_set.iloc[:2])[["color", "shape"]].to_dict("list")
    names = list(image_set["filename"].iloc[:2])
    before = len(image_server.requests)
    urls = [f"{image_server.url}/images/{name}" for name in names]
    for values in (names, urls):  # relative to the model's image folder; under the prefix
        status, text = invoke(served, images_request("filename", values))
        assert status == 200, text
        got = pd.DataFrame(json.loads(text)["predictions"])
        assert got[["color", "shape"]].to_dict("list") == expected
    assert image_server.requests[before:] == [f"/images/{name}" for name in names]


@pytest.mark.slow
def test_the_served_model_reads_nothing_else_and_says_one_thing(
    served, image_set, image_server, tmp_path
):
    """Paths outside the folder, existing, missing or folders, and URLs outside the prefix
    are refused with one and the same answer; no request reaches the URLs."""
    root = pathlib.Path(image_set.attrs["image_root"])
    outside = tmp_path / "outside.png"  # a real image, outside the allowed folder
    shutil.copy(root / image_set["filename"].iloc[0], outside)
    server = image_server.url
    names = [
        "/etc/shadow", "/etc/passwd", "/no/such/file.png", "/etc", str(tmp_path), str(outside),
        f"../{outside.parent.name}/outside.png", f"{root}/../{root.name}-x/a.png",
        f"{server}/latest/meta-data/iam/security-credentials/", f"{server}/images/../secret",
        f"{server}/images/%2e%2e/secret", f"{server}/images-private/a.png",
        f"file://{root}/{image_set['filename'].iloc[0]}", 42, f"{root}/a\x00.png",
    ]  # fmt: skip
    before = len(image_server.requests)
    answers = {invoke(served, images_request("filename", [name])) for name in names}
    assert image_server.requests[before:] == []
    assert len(answers) == 1, answers
    ((status, text),) = answers
    assert status == 400 and "\n" not in text.strip()
    answer = json.loads(text)
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE" and "stack_trace" not in answer
    assert answer["message"] == (
        "row 0: the model may not read that path or URL; send the image in 'image_base64', "
        "or name one under the folders or URL prefixes the model was saved with"
    )


@pytest.mark.slow
def test_a_bad_request_gets_one_json_line_without_a_traceback(served, image_set):
    image = encoded(image_set, [0])[0]
    not_an_image = base64.b64encode(b"hello, not an image").decode()
    fit = {**images_request("image_base64", [image]), "params": {"method": "fit"}}
    requests = [
        (b"not json", "valid JSON"),
        (b"\xff\xfe", "valid JSON"),
        ({"rows": [1, 2]}, "dataframe_split"),
        (images_request("image_base64", [image, "#not"]), "row 1 of 'image_base64' is not base64"),
        (images_request("image_base64", [not_an_image]), "cannot decode"),
        (images_request("pixels", [image]), "neither 'image_base64'"),
        (fit, "method must be one of"),
    ]
    for body, says in requests:
        status, text = invoke(served, body)
        assert status == 400, (body, text)
        assert "\n" not in text.strip(), text  # one line
        answer = json.loads(text)
        assert set(answer) >= {"error_code", "message"} and "stack_trace" not in answer
        assert "Traceback" not in text and 'File \\"' not in text and 'File "' not in text
        assert says in answer["message"], answer["message"]


def test_by_default_the_pyfunc_reads_only_the_images_a_request_holds(fitted, image_set, tmp_path):
    sk_mlflow.save_model(fitted, tmp_path / "model")
    config = mlflow.models.Model.load(tmp_path / "model").flavors["python_function"]["config"]
    assert config == {"allowed_image_folders": [], "allowed_image_urls": []}
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    X = image_set[["filename"]].iloc[:2]
    images = pd.DataFrame({"image_base64": encoded(image_set, [0, 1])}, index=X.index)
    pd.testing.assert_frame_equal(model.predict(images), fitted.predict(X))
    refused = "row 0: this model reads only the images a request holds, in 'image_base64'"
    for name in (X["filename"].iloc[0], "/etc/shadow", "https://bucket.example/a.png"):
        with pytest.raises(mlflow.exceptions.MlflowException, match=refused):
            model.predict(pd.DataFrame({"filename": [name]}))


def test_the_allow_list_is_a_folder_and_a_url_prefix_checked_before_any_read(fitted, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not read")
    (allowed / "link.png").symlink_to(secret)  # a link out of the folder is outside it
    model = sk_mlflow.MultiTaskPyfuncModel(
        fitted,
        allowed_image_folders=[str(allowed)],
        allowed_image_urls=["https://bucket.example/images"],  # a folder: "/" added
    )
    assert model.allowed_image_urls == ["https://bucket.example/images/"]
    outside = [
        str(allowed / "link.png"), f"{allowed}/../secret.png", f"{allowed}-x/a.png",
        "https://bucket.example/images/../secret.png", "https://bucket.example/images/%2E%2E/x",
        "https://bucket.example/images-private/a.png", "https://bucket.example.evil/images/a",
        "https://user@bucket.example/images/a.png", "HTTPS://BUCKET.EXAMPLE/images/a.png",
        "simplecache::https://bucket.example/images/a.png", "", f"{allowed}/a\x00.png",
    ]  # fmt: skip
    for name in outside:
        with pytest.raises(ValueError, match="row 0: the model may not read that path or URL"):
            model.predict(pd.DataFrame({"filename": [name]}))


def test_an_unexpected_failure_is_logged_and_answered_in_one_line(
    fitted, image_set, monkeypatch, caplog
):
    model = sk_mlflow.MultiTaskPyfuncModel(fitted)

    def broken(X):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(fitted, "predict", broken)
    images = pd.DataFrame({"image_base64": encoded(image_set, [0])})
    with pytest.raises(mlflow.exceptions.MlflowException) as error:
        model.predict(images)
    assert error.value.error_code == "INTERNAL_ERROR"
    answer = json.loads(error.value.serialize_as_json())  # what the server answers
    assert answer["message"] == (
        "the model failed on this request (RuntimeError): the server's log has the details"
    )
    assert "stack_trace" not in answer
    assert "device-side assert" in caplog.text  # the server's log: the traceback
    assert "Traceback" in caplog.text


def test_save_model_checks_what_a_request_may_name(fitted, tmp_path):
    cases = [
        ({"allowed_image_folders": ["images"]}, ValueError, "'images' is not an absolute path"),
        ({"allowed_image_folders": "/data"}, TypeError, "must be a list of strings"),
        ({"allowed_image_urls": ["https://bucket.example"]}, ValueError, "not a URL prefix"),
        ({"allowed_image_urls": ["https://h/a?sig=1"]}, ValueError, "without a query"),
        ({"allowed_image_urls": ["bucket/images/"]}, ValueError, "not a URL prefix"),
    ]
    for kwargs, error, says in cases:
        with pytest.raises(error, match=says):
            sk_mlflow.save_model(fitted, tmp_path / "model", **kwargs)
        assert not (tmp_path / "model").exists()


def test_save_model_on_a_full_disk_leaves_nothing_in_the_way_of_a_retry(
    fitted, tmp_path, monkeypatch
):
    """MLflow writes the model's files one by one; the last ones fail (ENOSPC)."""
    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        name = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
        if name in ("MLmodel", "requirements.txt") and "w" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), file)
        return real_open(file, mode, *args, **kwargs)

    path = tmp_path / "models" / "model"
    with monkeypatch.context() as patch:
        patch.setattr(builtins, "open", full_open)
        with pytest.raises(OSError, match="No space left on device"):
            sk_mlflow.save_model(fitted, path)
    assert os.listdir(tmp_path / "models") == []  # no half-written model, no temporary
    sk_mlflow.save_model(fitted, path)  # the retry
    assert sorted(os.listdir(tmp_path / "models")) == ["model"]
    assert sk_mlflow.load_model(str(path)).tasks_.keys() == fitted.tasks_.keys()
    with pytest.raises(FileExistsError, match="exists and is not an empty folder"):
        sk_mlflow.save_model(fitted, path)


# mlflow.sklearn imports mlflow.pyfunc, which warns about MLflow's own type hints on its
# first import (sk_multitask.mlflow imports it quietly; this test may run first).
@pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")
def test_mlflows_sklearn_flavor_saves_with_skops(fitted, image_set, tracking, monkeypatch):
    """MLflow 3 saves scikit-learn models with skops by default; only our class needs trust."""
    # MLflow's gate on loading skops files too (3.18). The variable it replaces warns when set
    # and, left unset, allows (its default) in the releases before 3.18 that read it.
    monkeypatch.setenv("MLFLOW_ALLOW_MODEL_CODE_EXECUTION", "true")
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    trusted = ["sk_multitask.estimator.MultiTaskImageEstimator"]
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            fitted, name="sklearn", skops_trusted_types=trusted, pip_requirements=[]
        )
    local = mlflow.artifacts.download_artifacts(info.model_uri)
    assert os.path.isfile(os.path.join(local, "model.skops"))
    loaded = mlflow.sklearn.load_model(info.model_uri)
    pd.testing.assert_frame_equal(loaded.predict(image_set), fitted.predict(image_set))

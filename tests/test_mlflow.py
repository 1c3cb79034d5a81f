"""The MLflow flavor (the safe file, no pickle; pyfunc; serving) and MLflow's own
scikit-learn flavor through skops."""

import base64
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
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
def logged(fitted, tracking):
    with mlflow.start_run():
        return sk_mlflow.log_model(fitted, name="model")


def encoded(image_set, rows):
    """The image files of ``rows`` of ``image_set``, base64-encoded."""
    root = pathlib.Path(image_set.attrs["image_root"])
    return [
        base64.b64encode((root / name).read_bytes()).decode("ascii")
        for name in image_set["filename"].iloc[rows]
    ]


def test_the_logged_model_is_the_safe_file_with_no_pickle(logged):
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
    with pytest.raises(ValueError, match="neither the image column 'filename'"):
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


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_posted_image(logged, fitted, image_set, tmp_path):
    port = free_port()
    # The server runs uvicorn from this environment's scripts, and imports this checkout.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", logged.model_uri]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    log = tmp_path / "server.log"
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
        images = encoded(image_set, [0, 1])
        payload = {"dataframe_split": {"columns": ["image_base64"], "data": [[i] for i in images]}}
        answer = post_json(f"http://127.0.0.1:{port}/invocations", payload)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    expected = fitted.predict(image_set.iloc[:2])
    got = pd.DataFrame(answer["predictions"])
    assert got[["color", "shape"]].to_dict("list") == {
        "color": expected["color"].tolist(),
        "shape": expected["shape"].tolist(),
    }
    assert got["area"].tolist() == pytest.approx(expected["area"].tolist())


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

"""Secrets never written: a run with credentials in ``storage_options`` leaves them in no
file the package writes (the model files, the report, the command line's files, the
MLflow run), and no message shows a parameter's credential."""

import json
import logging
import os
import pickle
import re
import zipfile

import fsspec
import joblib
import pytest
from conftest import TARGETS, small_estimator

from sk_multitask.cli import main
from sk_multitask.report import write_report
from sk_multitask.training._parameters import REDACTED, check_secret_params, redacted_params

#: The credentials of the run; neither may be found in anything the package writes.
SECRETS = {"key": "AKIA-SECRET-123", "secret": "s3cr3t-XYZ"}
#: Where the run's images are: read with SECRETS (the memory filesystem takes any option).
ROOT = "memory://secrets-test"


@pytest.fixture(scope="module")
def memory_images(image_set):
    """``image_set``'s files under :data:`ROOT`, removed afterwards."""
    memory = fsspec.filesystem("memory")
    folder = image_set.attrs["image_root"]
    for name in image_set["filename"]:
        with open(os.path.join(folder, name), "rb") as file:
            memory.pipe(f"{ROOT}/{name}", file.read())
    yield image_set
    memory.rm(ROOT, recursive=True)


def files_holding_a_secret(folder):
    """The files under ``folder`` (recursively) that hold a secret, and how many files.

    A zip archive (the safe file, whose document is compressed) is searched member by
    member, uncompressed, as well as whole."""
    found, count = [], 0
    for root, _, names in os.walk(folder):
        for name in names:
            count += 1
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                contents = [file.read()]
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    contents += [archive.read(member) for member in archive.namelist()]
            if any(secret.encode() in data for data in contents for secret in SECRETS.values()):
                found.append(os.path.relpath(path, folder))
    return found, count


def assert_no_secret(text):
    assert not [secret for secret in SECRETS.values() if secret in text], text[-3000:]


def test_no_file_the_package_writes_holds_a_secret(
    memory_images, tmp_path, monkeypatch, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    df, y = memory_images, memory_images[TARGETS]
    est = small_estimator(
        df, image_root=ROOT, storage_options=SECRETS, max_epochs=1, num_workers=0, verbose=1,
        checkpoint_dir=str(tmp_path / "checkpoints"), cache_dir=str(tmp_path / "cache"),
    ).fit(df, y)  # fmt: skip
    assert est.storage_options == SECRETS  # the estimator keeps them, to read its images
    est.save(tmp_path / "model.skmt")
    joblib.dump(est, tmp_path / "model.joblib")
    (tmp_path / "model.pickle").write_bytes(pickle.dumps(est))
    est.export_onnx(tmp_path / "model.onnx")
    write_report(est, df, y, tmp_path / "report.html", k=2)
    from sk_multitask.onnx import OnnxPredictor

    onnx = OnnxPredictor(tmp_path / "model.onnx", image_root=ROOT, storage_options=SECRETS)
    write_report(onnx, df, y, tmp_path / "onnx-report.html", k=2)
    # The command line, credentials in --storage-options.
    df.to_csv(tmp_path / "data.csv", index=False)
    code = main([
        "evaluate", str(tmp_path / "data.csv"), "--model", str(tmp_path / "model.skmt"),
        "--images", ROOT, "--storage-options", json.dumps(SECRETS),
        "--out", str(tmp_path / "evaluation"),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    # MLflow: the model and the estimator's parameters.
    mlflow = pytest.importorskip("mlflow")
    sk_mlflow = pytest.importorskip("sk_multitask.mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    try:
        with mlflow.start_run():
            info = sk_mlflow.log_model(est, name="model", params=est.get_params())
        logged = mlflow.get_logged_model(info.model_id).params
    finally:
        mlflow.set_tracking_uri(None)

    found, count = files_holding_a_secret(tmp_path)
    assert found == []
    # The search would see one: the safe file of a model whose document held them.
    with zipfile.ZipFile(tmp_path / "planted.skmt", "w") as archive:
        archive.writestr("document.json", json.dumps(SECRETS), zipfile.ZIP_DEFLATED)
    assert files_holding_a_secret(tmp_path)[0] == ["planted.skmt"]
    assert count > 30  # the model files, checkpoints, cache, reports, the MLflow run
    for written in ("report.html", "evaluation/report.html"):
        # Redacted, not left out: the keys say which options were set (the ONNX model's
        # parameters are those saved, without the run-time settings).
        text = (tmp_path / written).read_text()
        assert "storage_options" in text and "'key': '&lt;redacted&gt;'" in text
    assert json.loads(logged["storage_options"].replace("'", '"')) == dict.fromkeys(
        SECRETS, REDACTED
    )
    captured = capsys.readouterr()
    assert_no_secret(captured.out + captured.err + caplog.text)


def test_messages_name_the_type_of_a_secret_parameter_not_its_value(memory_images, tmp_path):
    df = memory_images
    for secret in ("AKIA-SECRET-123", ["s3cr3t-XYZ"]):
        est = small_estimator(df, storage_options=secret)
        with pytest.raises(TypeError, match=r"storage_options must be a dict or None; got a") as e:
            est.fit(df, df[TARGETS])
        assert_no_secret(str(e.value))
    pytest.importorskip("onnxruntime")
    from sk_multitask.onnx import OnnxPredictor

    path = small_estimator(df, max_epochs=1).fit(df, df[TARGETS]).export_onnx(tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="got a str .not shown: it may hold credentials") as e:
        OnnxPredictor(path, storage_options="AKIA-SECRET-123")
    assert_no_secret(str(e.value))


def test_the_command_line_does_not_echo_storage_options(tmp_path, capsys):
    for text in ('"AKIA-SECRET-123"', '["s3cr3t-XYZ"]'):
        with pytest.raises(SystemExit):
            main([
                "evaluate", str(tmp_path / "data.csv"), "--model", str(tmp_path / "m.skmt"),
                "--storage-options", text, "--out", str(tmp_path / "out"),
            ])  # fmt: skip
        err = capsys.readouterr().err
        assert "--storage-options: expected a JSON object {...}, got a JSON" in err
        assert_no_secret(err)


def test_one_redaction_for_secret_parameters_and_credential_looking_values():
    params = {
        "storage_options": {"anon": False, "client_kwargs": {"endpoint_url": "http://h"}},
        "tasks": {"age": "regression", "monkey": "classification"},
        "callbacks": [{"api_token": "t0k", "name": "x"}],
        "class_weight": {"grade": {"AccountKey": "k", "sas_token": "s", "Password": "p"}},
        "image_root": "s3://user:pa55@bucket/images?X-Amz-Signature=abc&region=eu",
        "verbose": 1,
    }
    assert redacted_params(params) == {
        "storage_options": {"anon": REDACTED, "client_kwargs": REDACTED},
        "tasks": {"age": "regression", "monkey": "classification"},
        "callbacks": [{"api_token": REDACTED, "name": "x"}],
        "class_weight": {"grade": {"AccountKey": REDACTED, "sas_token": REDACTED,
                                   "Password": REDACTED}},
        "image_root": f"s3://user:{REDACTED}@bucket/images?X-Amz-Signature={REDACTED}&region=eu",
        "verbose": 1,
    }  # fmt: skip
    assert redacted_params({"storage_options": None}) == {"storage_options": None}
    assert redacted_params({"storage_options": "AKIA"}) == {"storage_options": REDACTED}
    check_secret_params({"storage_options": {}})  # a dict, or None, passes
    check_secret_params({"storage_options": None})
    check_secret_params({})


def test_the_report_of_a_model_without_secrets_shows_its_parameters(fitted, image_set, tmp_path):
    path = write_report(fitted, image_set, image_set[TARGETS], tmp_path / "r.html", k=1)
    text = path.read_text()
    assert re.search(r"<th>storage_options</th>\s*<td>None</td>", text)
    assert re.search(r"<th>backbone</th>\s*<td>'simple_cnn'</td>", text)

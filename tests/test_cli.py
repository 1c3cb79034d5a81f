"""The command line, end to end through subprocesses, as a user runs it."""

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import joblib
import pandas as pd
import pytest
from conftest import BLOCK_TORCH

from sk_multitask.cli import main
from sk_multitask.datasets import make_multitask_images

TARGETS = "color,shape,area"


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "sk_multitask.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A CSV of 96 generated 16 px images and a model fitted on it by ``sk-multitask fit``."""
    root = tmp_path_factory.mktemp("cli")
    df = make_multitask_images(
        96, image_size=16, missing_rate=0.2, path=root / "images", random_state=0
    )
    df.to_csv(root / "data.csv", index=False)
    result = run(
        "fit",
        root / "data.csv",
        "--images",
        root / "images",
        "--targets",
        TARGETS,
        "--valid-col",
        "is_valid",
        "--backbone",
        "simple_cnn",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--batch-size",
        "32",
        "--seed",
        "0",
        "--model",
        root / "model.joblib",
    )
    return root, df, result


def test_fit_saves_a_model_and_shows_progress(workspace):
    root, _, result = workspace
    assert result.returncode == 0, result.stderr
    assert "model saved to" in result.stdout
    assert "valid_color_acc" in result.stdout  # the epoch table
    assert "it/s" in result.stderr  # the progress bar
    model = joblib.load(root / "model.joblib")
    assert {n: t.kind for n, t in model.tasks_.items()} == {
        "color": "classification",
        "shape": "classification",
        "area": "regression",
    }


def test_predict_writes_predictions_and_probabilities(workspace):
    root, df, _ = workspace
    result = run(
        "predict",
        root / "data.csv",
        "--model",
        root / "model.joblib",
        "--proba",
        "--out",
        root / "preds.csv",
    )

    assert result.returncode == 0, result.stderr
    preds = pd.read_csv(root / "preds.csv")
    assert len(preds) == len(df)
    assert list(preds.columns[:4]) == ["filename", "color", "shape", "area"]
    assert {"shape_proba_circle", "shape_proba_square", "shape_proba_triangle"} <= set(
        preds.columns
    )
    model = joblib.load(root / "model.joblib")
    expected = model.predict(df)
    assert (preds["shape"] == expected["shape"]).all()
    assert preds["area"].to_numpy() == pytest.approx(expected["area"].to_numpy(), rel=1e-6)


def test_evaluate_writes_metrics_and_a_report(workspace):
    root, df, _ = workspace
    out = root / "evaluation"
    result = run("evaluate", root / "data.csv", "--model", root / "model.joblib", "--out", out)

    assert result.returncode == 0, result.stderr
    assert "n_labelled" in result.stdout and "balanced_accuracy" in result.stdout
    metrics = pd.read_csv(out / "metrics.csv", index_col="task")
    assert list(metrics.index) == ["color", "shape", "area"]
    assert metrics.loc["color", "n_labelled"] == df["color"].notna().sum()
    records = json.loads((out / "metrics.json").read_text())
    assert records["area"]["mae"] == pytest.approx(metrics.loc["area", "mae"])
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 3


def run_without_torch(*args):
    """The command line in a process where importing torch (or skorch) fails."""
    code = f"BLOCKED = {{'torch', 'torchvision', 'skorch'}}\n{BLOCK_TORCH}\n"
    code += f"from sk_multitask.cli import main\nsys.exit(main({list(map(str, args))!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )


def test_export_then_predict_and_evaluate_with_each_model_file(workspace, capsys):
    root, df, _ = workspace
    model = joblib.load(root / "model.joblib")
    skmt, onnx = root / "out" / "model.skmt", root / "out" / "model.onnx"
    for path in (skmt, onnx):
        assert main(["export", "--model", str(root / "model.joblib"), "--out", str(path)]) == 0
        assert f"model written to {path}" in capsys.readouterr().out
    assert main(["predict", str(root / "data.csv"), "--model", str(skmt), "--proba",
                 "--out", str(root / "preds-skmt.csv")]) == 0  # fmt: skip
    result = run_without_torch(
        "predict", root / "data.csv", "--model", onnx, "--proba", "--out", root / "preds-onnx.csv"
    )
    assert result.returncode == 0, result.stderr
    expected = pd.concat([df[["filename"]], model.predict(df)], axis=1)
    for task, proba in model.predict_proba(df).items():
        expected = expected.join(proba.add_prefix(f"{task}_proba_"))
    expected = pd.read_csv(io.StringIO(expected.to_csv(index=False)))  # as written
    pd.testing.assert_frame_equal(pd.read_csv(root / "preds-skmt.csv"), expected)
    predicted = pd.read_csv(root / "preds-onnx.csv")
    labels = ["filename", "color", "shape"]
    pd.testing.assert_frame_equal(predicted[labels], expected[labels])
    pd.testing.assert_frame_equal(predicted, expected, atol=1e-4, rtol=0)

    out = root / "onnx-evaluation"
    result = run_without_torch("evaluate", root / "data.csv", "--model", onnx, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "no report.html" in result.stdout and not (out / "report.html").exists()
    metrics = pd.read_csv(out / "metrics.csv", index_col="task")
    table = model.evaluate(df, df[TARGETS.split(",")]).rename_axis("task")
    pd.testing.assert_frame_equal(metrics, table, check_dtype=False, atol=1e-4, rtol=0)

    capsys.readouterr()  # the progress bars of the model fitted with verbose=1
    code = main(["export", "--model", str(onnx), "--out", str(root / "again.skmt")])
    _assert_one_line_error(code, capsys.readouterr().err, "already an ONNX model")


BAD_CALLS = {
    "data path": (
        ["fit", "nowhere.csv", "--targets", "a", "--model", "m.joblib"],
        "data file not found: nowhere.csv",
    ),
    "model path": (
        ["predict", "DATA", "--model", "missing.joblib", "--out", "p.csv"],
        "model file not found: missing.joblib",
    ),
    "image folder": (
        ["predict", "DATA", "--model", "MODEL", "--images", "/no/such/dir", "--out", "p.csv"],
        "image file not found: '/no/such/dir/img_00000.jpg'",
    ),
    "target column": (
        ["fit", "DATA", "--targets", "color,age", "--model", "m.joblib"],
        r"targets \['age'\] not in the data",
    ),
    "image column": (
        ["fit", "DATA", "--targets", "color", "--image-col", "path", "--model", "m.joblib"],
        r"image column \['path'\] not in the data",
    ),
}


def _bad_call(workspace, case):
    root, _, _ = workspace
    args, message = BAD_CALLS[case]
    paths = {"DATA": root / "data.csv", "MODEL": root / "model.joblib"}
    return [str(paths.get(a, a)) for a in args], message


def _assert_one_line_error(code, stderr, message):
    assert code == 1
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines


@pytest.mark.parametrize("case", ["data path", "target column"])
def test_bad_path_and_column_in_a_subprocess(workspace, case):
    args, message = _bad_call(workspace, case)
    result = run(*args)
    _assert_one_line_error(result.returncode, result.stderr, message)


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_paths_and_columns_end_with_one_line(workspace, case, capsys):
    args, message = _bad_call(workspace, case)
    code = main(args)
    _assert_one_line_error(code, capsys.readouterr().err, message)


@pytest.mark.parametrize("command", ["fit", "predict", "evaluate", "export", "demo"])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"sk-multitask {command}" in capsys.readouterr().out


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("sk-multitask")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("sk-multitask ")


def test_demo_fits_evaluates_and_reports(tmp_path, capsys):
    code = main(
        ["demo", "--out", str(tmp_path), "--n-samples", "80", "--image-size", "16", "--epochs", "1"]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "validation metrics" in out
    for name in ("model.joblib", "metrics.csv", "metrics.json", "report.html"):
        assert (tmp_path / name).is_file(), name
    assert set(joblib.load(tmp_path / "model.joblib").tasks_) == {"color", "shape", "area"}

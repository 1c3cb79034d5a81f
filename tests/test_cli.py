"""The command line, end to end through subprocesses, as a user runs it."""

import argparse
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import TORCH, run_python_without
from PIL import Image
from sklearn.utils._param_validation import StrOptions, validate_parameter_constraints

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.cli import main
from sk_multitask.cli._options import COMMAND_OPTIONS, add_options, as_options, estimator_params
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


@pytest.mark.slow
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


@pytest.mark.slow
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


#: The package's dependencies that the torch-free install of docs/deployment.md leaves
#: out: predicting with an ONNX model needs none of them.
NOT_SERVED = (*TORCH, "sklearn", "joblib", "matplotlib", "tqdm", "safetensors")


def run_without_torch(*args, blocked=TORCH):
    """The command line in a process where importing torch (or skorch), or any package of
    ``blocked``, fails."""
    argv = list(map(str, args))
    return run_python_without(
        f"import sys\nfrom sk_multitask.cli import main\nsys.exit(main({argv!r}))", blocked
    )


@pytest.mark.slow
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
        "predict", root / "data.csv", "--model", onnx, "--proba", "--out", root / "preds-onnx.csv",
        blocked=NOT_SERVED,
    )  # fmt: skip
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
    # Without torch, but with scikit-learn and matplotlib: the metrics and the report.
    result = run_without_torch("evaluate", root / "data.csv", "--model", onnx, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "metrics and report written to" in result.stdout
    # History, two confusion matrices, the regression, the top losses; then how sure the
    # calibrated model is: two reliability diagrams and the interval plot; the labels to check.
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 9
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


@pytest.mark.parametrize(
    "command", ["fit", "lr-find", "predict", "evaluate", "explain", "export", "demo"]
)
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"sk-multitask {command}" in capsys.readouterr().out


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for default in ("(default: resnet18)", "(default: 224)", "(default: 0.2)"):
        assert default in out
    assert re.search(r"--num-workers NUM_WORKERS .*\(default: auto\)", out)


def test_model_saved_by_fit_has_absolute_images_and_is_quiet(workspace, tmp_path, monkeypatch):
    root, df, _ = workspace
    data = root / "data.csv"
    monkeypatch.chdir(root)
    args = ["fit", "data.csv", "--images", "images", "--targets", "color", "--model", "m.joblib"]
    small = ["--backbone", "simple_cnn", "--weights", "none", "--image-size", "16"]
    assert main([*args, *small, "--epochs", "1", "--valid-split", "none"]) == 0
    model = joblib.load(root / "m.joblib")
    assert model.image_root == str(root / "images") and model.verbose == 0

    monkeypatch.chdir(tmp_path)  # predict from another folder
    assert main(["predict", str(data), "--model", str(root / "m.joblib"), "--out", "p.csv"]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(df)


def test_predict_streams_csv_to_stdout(workspace, capsys):
    root, df, _ = workspace
    code = main(
        ["predict", str(root / "data.csv"), "--model", str(root / "model.joblib"), "--out", "-"]
    )
    captured = capsys.readouterr()
    assert code == 0
    preds = pd.read_csv(io.StringIO(captured.out))  # stdout holds the table only
    assert list(preds.columns) == ["filename", "color", "shape", "area"] and len(preds) == len(df)
    assert "predictions written to -" in captured.err
    assert not Path("-").exists()


def test_predict_on_an_image_file_and_a_folder(workspace, tmp_path, capsys):
    root, df, _ = workspace
    model = joblib.load(root / "model.joblib")
    image = root / "images" / "img_00003.jpg"
    assert main(["predict", str(image), "--model", str(root / "model.joblib"), "--out", "-"]) == 0
    one = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert one["filename"].tolist() == [str(image)]
    assert one["shape"].iloc[0] == model.predict(df.iloc[[3]])["shape"].iloc[0]

    out = tmp_path / "folder.json"
    assert (
        main(
            [
                "predict",
                str(root / "images"),
                "--model",
                str(root / "model.joblib"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = json.loads(out.read_text())
    assert [r["filename"] for r in records] == sorted(df["filename"])
    assert records[3]["area"] == pytest.approx(model.predict(df.iloc[[3]])["area"].iloc[0])


@pytest.mark.parametrize("suffix", [".parquet", ".json", ".csv"])
def test_output_format_follows_the_extension(workspace, tmp_path, suffix):
    root, df, _ = workspace
    out = tmp_path / f"p{suffix}"
    assert (
        main(
            [
                "predict",
                str(root / "data.csv"),
                "--model",
                str(root / "model.joblib"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    read = {".parquet": pd.read_parquet, ".json": pd.read_json, ".csv": pd.read_csv}[suffix]
    assert read(out)["filename"].tolist() == df["filename"].tolist()


@pytest.mark.parametrize(
    "content",
    [b"just some text\n", b"filename,color\na.jpg,red\n", b""],
    ids=["text", "csv", "empty"],
)
def test_a_model_option_that_is_no_model_file_ends_in_one_line(
    workspace, tmp_path, content, capsys
):
    root, _, _ = workspace
    bad = tmp_path / "model.joblib"
    bad.write_bytes(content)
    code = main(["predict", str(root / "data.csv"), "--model", str(bad), "--out", "p.csv"])
    _assert_one_line_error(code, capsys.readouterr().err, "is not a model file saved by")


def test_fit_to_an_unwritable_model_path_fails_before_training(workspace, capsys):
    root, _, _ = workspace
    model = root / "data.csv" / "model.joblib"  # under a file: cannot be created
    code = main(["fit", str(root / "data.csv"), "--targets", "color", "--model", str(model)])
    captured = capsys.readouterr()
    _assert_one_line_error(code, captured.err, "cannot write the model to .*model.joblib")
    assert "epoch" not in captured.out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--backbone", "simple_cnn", "--weights", "IMAGENET1K_V1", "--image-size", "16"],
            "pass --weights none",
        ),
        (["--valid-split", "flag"], "--valid-split flag names a column"),
        (
            ["--backbone", "resnet18", "--weights", "DEFAULT", "--image-size", "16"],
            "could not download .*Pass --weights none to train from scratch, or --weights "
            "PATH, the path of a local state-dict file",
        ),
    ],
)
def test_errors_name_command_line_options(
    workspace, tmp_path, args, message, capsys, monkeypatch
):
    def unreachable(self, address):
        raise OSError("network is unreachable")

    # Offline, with an empty cache: pretrained weights cannot be downloaded.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    root, _, _ = workspace
    code = main(
        [
            "fit",
            str(root / "data.csv"),
            "--images",
            str(root / "images"),
            "--targets",
            "color",
            "--model",
            str(tmp_path / "m.joblib"),
            *args,
        ]
    )
    _assert_one_line_error(code, capsys.readouterr().err, message)


def test_unknown_output_format_and_images_to_evaluate_are_refused(workspace, capsys):
    root, _, _ = workspace
    model = str(root / "model.joblib")
    code = main(["predict", str(root / "data.csv"), "--model", model, "--out", "p.xlsx"])
    _assert_one_line_error(code, capsys.readouterr().err, "--out p.xlsx: unknown output format")
    code = main(["evaluate", str(root / "images"), "--model", model, "--out", "ev"])
    _assert_one_line_error(code, capsys.readouterr().err, "evaluate needs a CSV or parquet table")


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
    for name in ("model.joblib", "metrics.csv", "metrics.json", "report.html", "data.csv"):
        assert (tmp_path / name).is_file(), name
    model = joblib.load(tmp_path / "model.joblib")
    assert set(model.tasks_) == {"color", "shape", "area"}
    assert model.verbose == 0 and os.path.isabs(model.image_root)
    # The CLI can be tried on the demo's data at once.
    assert (
        main(
            [
                "predict",
                str(tmp_path / "data.csv"),
                "--model",
                str(tmp_path / "model.joblib"),
                "--out",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    assert len(pd.read_csv(tmp_path / "p.csv")) == 80


def test_lr_find_prints_a_suggestion_and_plots(workspace, tmp_path, capsys):
    root, _, _ = workspace
    plot = tmp_path / "lr.png"
    code = main([
        "lr-find", str(root / "data.csv"), "--images", str(root / "images"),
        "--targets", "color,area", "--backbone", "simple_cnn", "--image-size", "16",
        "--batch-size", "16", "--num-it", "12", "--seed", "0", "--plot", str(plot),
    ])
    out = capsys.readouterr().out
    assert code == 0
    assert "smoothed_loss" in out
    suggested = float(out.split("suggested learning rate: ")[1].split()[0])
    assert 1e-7 <= suggested <= 10
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_takes_the_training_recipe_options(workspace, tmp_path, capsys):
    root, _, _ = workspace
    code = main([
        "fit", str(root / "data.csv"), "--images", str(root / "images"), "--targets", "color,area",
        "--valid-col", "is_valid", "--backbone", "simple_cnn", "--image-size", "16",
        "--epochs", "3", "--lr-schedule", "cosine", "--freeze-epochs", "1",
        "--backbone-lr-scale", "0.5", "--early-stopping", "--patience", "2",
        "--monitor", "valid_color_acc", "--checkpoint-dir", str(tmp_path / "ckpt"),
        "--model", str(tmp_path / "m.joblib"),
    ])
    assert code == 0, capsys.readouterr().err
    model = joblib.load(tmp_path / "m.joblib")
    params = model.get_params()
    assert (params["lr_schedule"], params["freeze_epochs"], params["backbone_lr_scale"]) == (
        "cosine", 1, 0.5
    )
    assert params["early_stopping"] and params["monitor"] == "valid_color_acc"
    assert model.history_[0, "backbone_lr"] == 0.0  # the frozen epoch
    assert (tmp_path / "ckpt" / "run.pt").exists()


def test_a_bad_monitor_is_named_as_an_option(workspace, tmp_path, capsys):
    root, _, _ = workspace
    code = main([
        "fit", str(root / "data.csv"), "--images", str(root / "images"), "--targets", "color",
        "--backbone", "simple_cnn", "--image-size", "16", "--early-stopping",
        "--monitor", "valid_nope_acc", "--model", str(tmp_path / "m.joblib"),
    ])
    err = capsys.readouterr().err
    assert code == 1
    assert "--monitor valid_nope_acc is not recorded" in err


#: The estimator parameters that ``fit`` has no option for, and why.
NOT_OPTIONS = {
    "tabular_transformer",  # a scikit-learn transformer: Python only
    "on_bad_image",  # Python only: the command line fails on an unreadable image
    "check_images",  # Python only: fit checks every image file exists anyway
    "loss_weights",  # a dict per task or a strategy: Python only
    "class_weight",  # a dict per task, or "balanced": Python only
    "regression_loss",  # a loss, or a dict per task: Python only
    "warm_start",  # each `fit` command trains a new model (resume: --checkpoint-dir)
    "optimizer",  # a name or a callable: Python only
    "cache",  # the in-memory cache is chosen by the estimator; --cache-dir is the disk one
    "cache_max_bytes",  # the in-memory cache's budget: Python only
    "precision",  # Python only (fp16/bf16)
    "accelerator",  # chosen by launching under `accelerate launch` or torchrun
    "callbacks",  # Python objects
    "verbose",  # the command line fits with verbose=1 and saves the model with verbose=0
}
#: The ``fit`` options that set no estimator parameter.
COMMAND_LINE_ONLY = {"data", "--targets", "--model"}
FIT = ["fit", "data.csv", "--targets", "color", "--model", "m.joblib"]


def _str_options(parameter):
    constraints = MultiTaskImageEstimator._parameter_constraints[parameter]
    return {o for c in constraints if isinstance(c, StrOptions) for o in c.options}


def _parse_fit(*args):
    parser = argparse.ArgumentParser()
    add_options(parser, "fit")
    return parser.parse_args([*FIT[1:], *args])


def test_every_fit_option_sets_an_estimator_parameter_or_is_listed():
    parameters = set(MultiTaskImageEstimator().get_params())
    offered = set()
    for option in COMMAND_OPTIONS["fit"]:
        if option.parameter is None:
            assert option.flag in COMMAND_LINE_ONLY
        else:
            assert option.parameter in parameters, option.flag
            offered.add(option.parameter)
    assert offered.isdisjoint(NOT_OPTIONS)
    assert offered | NOT_OPTIONS == parameters  # a new parameter is an option or listed
    # lr-find takes every option of fit but --model.
    lr_find = {o.flag for o in COMMAND_OPTIONS["lr-find"]}
    assert {o.flag for o in COMMAND_OPTIONS["fit"]} - lr_find == {"--model"}


def test_fit_defaults_are_the_estimators_and_pass_its_constraints():
    params = estimator_params(_parse_fit())
    defaults = MultiTaskImageEstimator().get_params()
    assert params == {name: defaults[name] for name in params}
    validate_parameter_constraints(
        MultiTaskImageEstimator._parameter_constraints, params, "MultiTaskImageEstimator"
    )


def test_fit_option_choices_are_the_codes(capsys):
    parameters = {o.parameter: o for o in COMMAND_OPTIONS["fit"] if o.parameter}
    assert _str_options("lr_schedule") == {"onecycle", "cosine", "constant"}
    for parameter, option in parameters.items():
        for value in sorted(_str_options(parameter)):  # every string the estimator takes
            assert getattr(_parse_fit(option.flag, value), option.dest) == value
        constraints = MultiTaskImageEstimator._parameter_constraints[parameter]
        if constraints and all(isinstance(c, StrOptions) for c in constraints):
            assert option.choices, option.flag  # a fixed set: argparse checks it
            with pytest.raises(SystemExit) as exit_:
                _parse_fit(option.flag, "no-such-choice")
            assert exit_.value.code == 2
            err = capsys.readouterr().err
            listed = re.search(r"choose from (.*)\)", err).group(1)
            assert sorted(listed.replace("'", "").split(", ")) == sorted(_str_options(parameter))


def test_fit_options_become_the_estimators_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = _parse_fit(
        "--images", "photos", "--tasks", "age=regression,grade=classification",
        "--weights", "none", "--valid-split", "none", "--valid-col", "is_valid",
        "--lr-schedule", "cosine", "--freeze-epochs", "2", "--backbone-lr-scale", "auto",
        "--num-workers", "0", "--seed", "3", "--epochs", "4", "--early-stopping", "--augment",
    )
    params = estimator_params(args)
    assert params["image_root"] == str(tmp_path / "photos")
    assert params["tasks"] == {"age": "regression", "grade": "classification"}
    assert params["weights"] is None and params["valid_split"] == "is_valid"
    assert (params["lr_schedule"], params["freeze_epochs"], params["backbone_lr_scale"]) == (
        "cosine", 2, "auto"
    )
    assert (params["num_workers"], params["random_state"], params["max_epochs"]) == (0, 3, 4)
    assert params["early_stopping"] and params["augment"]
    assert estimator_params(_parse_fit("--valid-split", "none"))["valid_split"] is None


def test_messages_name_the_option_of_every_parameter():
    for option in COMMAND_OPTIONS["fit"]:
        if option.parameter is not None and not option.alternative:
            message = f"set {option.parameter}='x' or {option.parameter}=None"
            assert as_options(message) == f"set {option.flag} x or {option.flag} none"
    assert as_options("tasks={'age': 'bad'} is refused") == "--tasks NAME=KIND is refused"
    assert as_options("cache_dir and max_epochs") == "--cache-dir and --epochs"


@pytest.fixture(scope="module")
def shipped(workspace):
    """The workspace's model exported as a safe file and as ONNX."""
    root, _, _ = workspace
    paths = root / "shipped" / "model.skmt", root / "shipped" / "model.onnx"
    for path in paths:
        assert main(["export", "--model", str(root / "model.joblib"), "--out", str(path)]) == 0
    return paths


def test_export_int8_checks_each_task_and_predict_runs_it_without_torch(workspace, capsys):
    root, df, _ = workspace
    out = root / "int8" / "model.onnx"
    code = main(["export", "--model", str(root / "model.joblib"), "--out", str(out),
                 "--quantize", "int8", "--calibration", str(root / "data.csv")])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert re.search(r"color +accuracy", printed) and re.search(r"area +r2", printed)
    assert f"int8 model written to {out} (calibrated on {len(df)} images)" in printed
    result = run_without_torch(
        "predict", root / "data.csv", "--model", out, "--out", root / "int8.csv", blocked=NOT_SERVED
    )
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(root / "int8.csv")) == len(df)
    evaluation = root / "int8-evaluation"
    assert main(["evaluate", str(root / "data.csv"), "--model", str(out),
                 "--out", str(evaluation)]) == 0  # fmt: skip
    metrics = pd.read_csv(evaluation / "metrics.csv", index_col=0)
    assert list(metrics.index) == TARGETS.split(",") and (evaluation / "report.html").is_file()


def test_predict_on_an_image_file_and_a_folder_with_an_onnx_model(workspace, shipped):
    root, df, _ = workspace
    _, onnx = shipped
    model = joblib.load(root / "model.joblib")
    image, out = root / "images" / "img_00003.jpg", root / "onnx-one.csv"
    result = run_without_torch(
        "predict", image, "--model", onnx, "--proba", "--out", out, blocked=NOT_SERVED
    )
    assert result.returncode == 0, result.stderr
    one = pd.read_csv(out)
    expected = model.predict(df.iloc[[3]]).reset_index(drop=True)
    assert one["filename"].tolist() == [str(image)]
    pd.testing.assert_frame_equal(one[["color", "shape"]], expected[["color", "shape"]])
    assert one["area"].to_numpy() == pytest.approx(expected["area"].to_numpy(), abs=1e-4)
    proba = model.predict_proba(df.iloc[[3]])["shape"].to_numpy()[0]
    assert one.filter(like="shape_proba_").to_numpy()[0] == pytest.approx(proba, abs=1e-4)

    out = root / "onnx-folder.json"
    result = run_without_torch(
        "predict", root / "images", "--model", onnx, "--out", out, blocked=NOT_SERVED
    )
    assert result.returncode == 0, result.stderr
    folder = pd.read_json(out)
    order = df.sort_values("filename").reset_index(drop=True)
    expected = model.predict(order)
    assert folder["filename"].tolist() == order["filename"].tolist()
    assert folder["shape"].tolist() == expected["shape"].tolist()
    assert folder["color"].tolist() == expected["color"].tolist()
    assert folder["area"].to_numpy() == pytest.approx(expected["area"].to_numpy(), abs=1e-4)


def test_evaluate_without_scikit_learn_says_what_to_install(workspace, shipped, tmp_path):
    root, _, _ = workspace
    _, onnx = shipped
    out = tmp_path / "evaluation"
    result = run_without_torch(
        "evaluate", root / "data.csv", "--model", onnx, "--out", out, blocked=NOT_SERVED
    )
    message = "evaluate needs scikit-learn and matplotlib: pip install scikit-learn matplotlib"
    _assert_one_line_error(result.returncode, result.stderr, re.escape(message))
    assert not out.exists()  # refused before any work


def test_a_closed_pipe_ends_quietly(workspace, shipped):
    """`predict --out - | head -1`: the reader leaves, the command ends without a word."""
    root, _, _ = workspace
    _, onnx = shipped
    command = [sys.executable, "-m", "sk_multitask.cli", "predict", str(root / "data.csv"),
               "--model", str(onnx), "--out", "-"]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.close()  # before the first row: its write fails, every time
        stderr = process.stderr.read().decode()
    assert (process.returncode, stderr) == (141, "")


@pytest.mark.slow
def test_evaluate_with_a_safe_file_prints_the_metrics_and_exits_0(workspace, shipped):
    root, df, _ = workspace
    skmt, _ = shipped
    out = root / "skmt-evaluation"
    result = run("evaluate", root / "data.csv", "--model", skmt, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "n_labelled" in result.stdout and "balanced_accuracy" in result.stdout
    metrics = pd.read_csv(out / "metrics.csv", index_col="task")
    model = joblib.load(root / "model.joblib")
    table = model.evaluate(df, df[TARGETS.split(",")]).rename_axis("task")
    pd.testing.assert_frame_equal(metrics, table, check_dtype=False, atol=1e-6, rtol=0)
    assert (out / "report.html").is_file()


def test_explain_draws_a_tasks_heatmaps_over_the_first_images(workspace, tmp_path, capsys):
    root, df, _ = workspace
    out = tmp_path / "heat.png"
    args = ["explain", str(root / "data.csv"), "--model", str(root / "model.joblib")]
    assert main([*args, "--task", "shape", "--n", "4", "--out", str(out)]) == 0
    assert f"heatmaps of shape for 4 images written to {out}" in capsys.readouterr().out
    with Image.open(out) as figure:
        assert figure.format == "PNG"
    image = root / "images" / df["filename"][0]
    one = tmp_path / "one.svg"
    assert main(["explain", str(image), *args[2:], "--task", "color", "--label", "red",
                 "--out", str(one)]) == 0
    assert one.read_text().startswith("<?xml")
    assert "heatmaps of color for 1 image written to" in capsys.readouterr().out


@pytest.mark.parametrize(
    "options, message",
    [
        (["--task", "age"], r"--task age: the model's tasks are \['color', 'shape', 'area'\]$"),
        (["--task", "area", "--label", "big"], "error: --label: task area is a regression"),
        (["--task", "color", "--label", "mauve"], r"error: --label mauve: task color's labels are"),
        (["--task", "color", "--n", "0"], "error: --n must be a positive number of images; got 0"),
        (["--task", "color", "--target-layer", "layer4"], "target_layer='layer4' is no layer of"),
    ],
)
def test_explain_refuses_a_bad_task_label_or_count_in_one_line(workspace, tmp_path, capsys,
                                                                options, message):
    root, _, _ = workspace
    code = main(["explain", str(root / "data.csv"), "--model", str(root / "model.joblib"),
                 *options, "--out", str(tmp_path / "heat.png")])
    _assert_one_line_error(code, capsys.readouterr().err, message)
    assert not (tmp_path / "heat.png").exists()


def test_explain_with_an_onnx_model_says_torch_is_needed(workspace, shipped, tmp_path, capsys):
    root, _, _ = workspace
    _, onnx = shipped
    code = main(["explain", str(root / "data.csv"), "--model", str(onnx), "--task", "color",
                 "--out", str(tmp_path / "heat.png")])
    _assert_one_line_error(
        code, capsys.readouterr().err,
        r"model.onnx is an ONNX model: explain needs torch .* pass the model's .skmt or pickle",
    )


# --- hostile files and options: every one ends in exactly one line -----------------------


class _Payload:
    """A pickle that creates a file when it is loaded: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _write(name, content):
    def setup(tmp, paths):
        data = content(paths) if callable(content) else content
        (tmp / name).write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def _pickle(name, obj):
    return lambda tmp, paths: joblib.dump(obj, tmp / name)


def _zip(name, members):
    def setup(tmp, paths):
        import zipfile

        with zipfile.ZipFile(tmp / name, "w") as archive:
            for member, text in members.items():
                archive.writestr(member, text)

    return setup


def _onnx(name, change):
    """The shipped ONNX model with its metadata document changed by ``change``."""

    def setup(tmp, paths):
        import onnx

        model = onnx.load(paths["onnx"])
        document = json.loads({p.key: p.value for p in model.metadata_props}["sk_multitask"])
        onnx.helper.set_model_props(model, {"sk_multitask": change(document)})
        onnx.save(model, tmp / name)

    return setup


def _without(key):
    return lambda d: json.dumps({k: v for k, v in d.items() if k != key})


def _batch_size(d):
    return json.dumps(d | {"params": d["params"] | {"batch_size": -1}})


def _small_pixel_limit(tmp, paths):
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = 100  # restored by the test: 16 px images become "bombs"


PREDICT = ["predict", "{data}", "--out", "{tmp}/p.csv", "--model"]
FIT = ["fit", "{data}", "--targets", "color", "--model", "{tmp}/m.joblib"]
FORMATS = r"a model file is named \.skmt \(safe file\), \.onnx \(ONNX\) or \.joblib"
#: A line of a progress bar (``predict`` shows one before it meets a bad image), or its end.
PROGRESS = re.compile(r"^(\w+: +\d+%\|.*|\s*)$")
#: name: (setup, arguments, the one line's pattern).
HOSTILE = {
    "pickle named .bin": (_pickle("m.bin", "x"), [*PREDICT, "{tmp}/m.bin"], FORMATS),
    "pickle named .safetensors": (
        _pickle("m.safetensors", "x"), [*PREDICT, "{tmp}/m.safetensors"], FORMATS
    ),
    "pickle named .skmt.bak": (_pickle("m.skmt.bak", "x"), [*PREDICT, "{tmp}/m.skmt.bak"], FORMATS),
    "pickle without extension": (_pickle("model", "x"), [*PREDICT, "{tmp}/model"], FORMATS),
    "a dict pickled": (_pickle("d.pkl", {"a": 1}), [*PREDICT, "{tmp}/d.pkl"], "holds a dict"),
    "a truncated pickle": (
        _write("t.joblib", lambda p: Path(p["model"]).read_bytes()[:5000]),
        [*PREDICT, "{tmp}/t.joblib"],
        "is not a model file saved by",
    ),
    "a folder named as a model": (
        lambda tmp, p: (tmp / "dir.joblib").mkdir(), [*PREDICT, "{tmp}/dir.joblib"], "not found"
    ),
    "an empty safe file": (_write("e.skmt", b""), [*PREDICT, "{tmp}/e.skmt"], "e.skmt"),
    "random bytes as a safe file": (
        _write("r.skmt", os.urandom(4096)), [*PREDICT, "{tmp}/r.skmt"], "r.skmt"
    ),
    "a zip without a document": (
        _zip("z.skmt", {"other.txt": "x"}), [*PREDICT, "{tmp}/z.skmt"], "z.skmt"
    ),
    "a document that is a list": (
        _zip("l.skmt", {"sk_multitask.json": "[]"}), [*PREDICT, "{tmp}/l.skmt"], "l.skmt"
    ),
    "an empty document": (
        _zip("o.skmt", {"sk_multitask.json": "{}"}), [*PREDICT, "{tmp}/o.skmt"], "o.skmt"
    ),
    "a document that is not JSON": (
        _zip("j.skmt", {"sk_multitask.json": "{nope"}), [*PREDICT, "{tmp}/j.skmt"], "j.skmt"
    ),
    "text as ONNX": (_write("t.onnx", "hello"), [*PREDICT, "{tmp}/t.onnx"], "not an ONNX model"),
    "an empty ONNX file": (_write("e.onnx", b""), [*PREDICT, "{tmp}/e.onnx"], "e.onnx"),
    "ONNX metadata without params": (
        _onnx("p.onnx", _without("params")), [*PREDICT, "{tmp}/p.onnx"], "p.onnx"
    ),
    "ONNX metadata without tasks": (
        _onnx("t.onnx", _without("tasks")), [*PREDICT, "{tmp}/t.onnx"], "t.onnx"
    ),
    "ONNX metadata not JSON": (
        _onnx("n.onnx", lambda d: "{"), [*PREDICT, "{tmp}/n.onnx"], "not valid JSON"
    ),
    "ONNX batch size -1": (
        _onnx("b.onnx", _batch_size),
        [*PREDICT, "{tmp}/b.onnx"],
        "batch.size must be a positive int; got -1",
    ),
    "predictions over the data": (
        None,
        ["predict", "{data}", "--model", "{model}", "--out", "{data}"],
        r"data.csv is the data input",
    ),
    "metrics over the data": (
        _write("metrics.csv", lambda p: Path(p["data"]).read_bytes()),
        ["evaluate", "{tmp}/metrics.csv", "--model", "{model}", "--out", "{tmp}"],
        r"metrics.csv is the data input",
    ),
    "a model over the data": (
        _write("d.pkl", lambda p: Path(p["data"]).read_bytes()),
        ["fit", "{tmp}/d.pkl", "--targets", "color", "--model", "{tmp}/d.pkl"],
        r"d.pkl is the data input",
    ),
    "an export over its model": (
        None, ["export", "--model", "{model}", "--out", "{model}"], r"is the --model input"
    ),
    "fit to a model name of no format": (
        None, ["fit", "{data}", "--targets", "color", "--model", "{tmp}/m.bin"], FORMATS
    ),
    "export to a name of no format": (
        None, ["export", "--model", "{model}", "--out", "{tmp}/m.zip"], FORMATS
    ),
    "int8 without calibration images": (
        None, ["export", "--model", "{model}", "--out", "{tmp}/q.onnx", "--quantize", "int8"],
        "--quantize int8 needs --calibration",
    ),
    "int8 to a safe file": (
        None,
        ["export", "--model", "{model}", "--out", "{tmp}/q.skmt", "--quantize", "int8",
         "--calibration", "{data}"],
        r"--quantize int8 writes ONNX: name --out NAME.onnx",
    ),
    "calibration without int8": (
        None, ["export", "--model", "{model}", "--out", "{tmp}/q.onnx", "--calibration", "{data}"],
        "--calibration is for --quantize int8",
    ),
    "a metric drop without labels": (
        _write("unlabelled.csv", "filename\nimg_00000.jpg\n"),
        ["export", "--model", "{model}", "--out", "{tmp}/q.onnx", "--quantize", "int8",
         "--calibration", "{tmp}/unlabelled.csv", "--images", "{images}",
         "--max-metric-drop", "0.01"],
        "--max-metric-drop needs labels: none of the model's targets",
    ),
    "an empty data file": (_write("e.csv", b""), [*FIT[:1], "{tmp}/e.csv", *FIT[2:]], "e.csv"),
    "binary data": (
        _write("b.csv", os.urandom(2048)),
        [*FIT[:1], "{tmp}/b.csv", *FIT[2:]],
        "cannot read .*b.csv as a CSV",
    ),
    "data without the image column": (
        _write("n.csv", "a,color\n1,red\n"), [*PREDICT[:1], "{tmp}/n.csv", *PREDICT[2:], "{model}"],
        r"image column \['filename'\] not in the data",
    ),
    "an image that is text": (
        _write("bad.jpg", "not an image"),
        ["predict", "{tmp}/bad.jpg", "--model", "{model}", "--out", "-"],
        "bad.jpg",
    ),
    "a decompression bomb": (
        _small_pixel_limit, [*PREDICT, "{model}"], "img_000"
    ),
    "no target column to evaluate": (
        _write("x.csv", "filename\nimg_00000.jpg\n"),
        ["evaluate", "{tmp}/x.csv", "--model", "{model}", "--images", "{images}", "--out", "{tmp}"],
        "none of the model's targets",
    ),
    "batch size 0": (None, [*FIT, "--batch-size", "0"], "--batch-size"),
    "a negative image size": (None, [*FIT, "--image-size", "-5"], "--image-size"),
    "a task kind that is no kind": (None, [*FIT, "--tasks", "color=nonsense"], "--tasks"),
    "no targets": (
        None,
        ["fit", "{data}", "--targets", ",", "--model", "{tmp}/m.joblib"],
        "--targets ',' names no column",
    ),
    "an output folder under a file": (
        None, ["predict", "{data}", "--model", "{model}", "--out", "{data}/p.csv"],
        "cannot write the predictions to",
    ),
    # Usage errors: exit status 2, one line too.
    "an epoch count that is no number": (None, [*FIT, "--epochs", "x"], "invalid int value"),
    "an unknown option": (None, [*FIT, "--nope"], "unrecognized arguments: --nope"),
    "a missing --model": (None, ["predict", "{data}", "--out", "-"], "--model"),
    "no command": (None, [], "the following arguments are required: COMMAND"),
    "an unknown command": (None, ["train"], "invalid choice: 'train'"),
}


def test_the_hostile_table_is_long_enough():
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_files_and_options_end_in_one_line(
    workspace, shipped, case, tmp_path, capsys, monkeypatch
):
    from PIL import Image

    root, _, _ = workspace
    setup, args, message = HOSTILE[case]
    paths = {
        "data": str(root / "data.csv"), "model": str(root / "model.joblib"),
        "onnx": str(shipped[1]), "images": str(root / "images"), "tmp": str(tmp_path),
    }
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    data_before = (root / "data.csv").read_bytes()
    if setup is not None:
        setup(tmp_path, paths)
    capsys.readouterr()
    try:
        code = main([a.format(**paths) for a in args])
    except SystemExit as exit_:  # a usage error, from argparse
        code = exit_.code
    err = capsys.readouterr().err
    assert code in (1, 2), (code, err)
    lines = [line for line in err.strip().splitlines() if not PROGRESS.match(line)]
    assert len(lines) == 1 and "Traceback" not in err, lines
    assert re.search(r"^sk-multitask( \w[\w-]*)?: error: ", lines[0]), lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert (root / "data.csv").read_bytes() == data_before


@pytest.mark.parametrize("case", ["ONNX metadata without params", "pickle named .bin"])
def test_hostile_files_end_in_one_line_in_a_process_without_torch(
    workspace, shipped, case, tmp_path
):
    root, _, _ = workspace
    setup, args, message = HOSTILE[case]
    paths = {"data": str(root / "data.csv"), "onnx": str(shipped[1]), "tmp": str(tmp_path)}
    setup(tmp_path, paths)
    result = run_without_torch(*[a.format(**paths) for a in args])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("name", ["model.bin", "model.safetensors", "model.skmt.bak", "model"])
def test_a_pickle_under_any_other_name_never_runs(workspace, tmp_path, name, capsys):
    root, _, _ = workspace
    marker = tmp_path / "code-ran"
    joblib.dump(_Payload(marker), tmp_path / name)
    args = ["predict", str(root / "data.csv"), "--out", str(tmp_path / "p.csv")]
    code = main([*args, "--model", str(tmp_path / name)])
    _assert_one_line_error(code, capsys.readouterr().err, FORMATS)
    assert not marker.exists() and not (tmp_path / "p.csv").exists()
    # The same bytes named as a pickle do run: the payload is real (load only what you trust).
    os.replace(tmp_path / name, tmp_path / "model.pkl")
    code = main([*args, "--model", str(tmp_path / "model.pkl")])
    _assert_one_line_error(code, capsys.readouterr().err, "holds a NoneType")
    assert marker.exists()


def test_debug_shows_the_traceback(workspace, tmp_path, capsys):
    root, _, _ = workspace
    (tmp_path / "o.skmt").write_bytes(b"")
    args = ["predict", str(root / "data.csv"), "--model", str(tmp_path / "o.skmt"), "--out", "-"]
    assert main([*args, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("sk-multitask predict: error: ")


def test_the_demo_hint_names_the_command_as_run(monkeypatch, tmp_path):
    from sk_multitask.cli import invoked_as

    script = tmp_path / ".venv" / "bin" / "sk-multitask"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [".venv/bin/sk-multitask", "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert invoked_as() == os.path.join(".venv", "bin", "sk-multitask")
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")  # the environment activated
    assert invoked_as() == "sk-multitask"
    monkeypatch.setattr(sys, "argv", ["pytest"])
    assert invoked_as() == "sk-multitask"


# -- intervals and class sets -----------------------------------------------------------


def _network_never_runs(self, X):
    raise AssertionError("the network ran")


@pytest.mark.parametrize("interval", ["1.5", "0", "1", "nan", "-0.1", "x"])
def test_a_bad_interval_is_refused_as_the_command_line_is_read(
    workspace, tmp_path, interval, capsys, monkeypatch
):
    from sk_multitask.predicting._protocol import MultiTaskPredictor

    root, _, _ = workspace
    monkeypatch.setattr(MultiTaskPredictor, "predict_raw", _network_never_runs)
    model, data = str(root / "model.joblib"), str(root / "data.csv")
    for args in (["predict", data, "--out", "-"], ["evaluate", data, "--out", str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_:
            main([*args, "--model", model, "--interval", interval])
        assert exit_.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and re.search(
            rf"--interval: expected a coverage strictly between 0 and 1 .*got '{interval}'",
            lines[0],
        ), lines


def test_an_uncalibrated_model_is_refused_before_predicting_intervals(
    workspace, tmp_path, capsys, monkeypatch
):
    from sk_multitask.predicting._calibration import Calibration
    from sk_multitask.predicting._protocol import MultiTaskPredictor

    root, _, _ = workspace
    fitted = joblib.load(root / "model.joblib")
    calibrated = fitted.calibration_
    fitted.calibration_ = None
    uncalibrated = str(fitted.save(tmp_path / "uncalibrated.skmt"))
    fitted.calibration_ = Calibration({n: t for n, t in calibrated.tasks.items() if n != "area"})
    without_area = str(fitted.save(tmp_path / "without_area.skmt"))
    monkeypatch.setattr(MultiTaskPredictor, "predict_raw", _network_never_runs)
    data = str(root / "data.csv")
    for model, message in [
        (uncalibrated, "the model is not calibrated: fit it with validation rows"),
        (without_area, "task 'area' is not calibrated"),
    ]:
        for args in (["predict", data, "--out", "-"], ["evaluate", data, "--out", str(tmp_path)]):
            code = main([*args, "--model", model, "--interval", "0.9"])
            _assert_one_line_error(code, capsys.readouterr().err, message)
    assert not (tmp_path / "metrics.csv").exists()


#: Labels a CSV cell, or a set joined by "|", would mangle.
ODD_LABELS = {
    "red": "red|rouge",
    "green": 'green "vert"',
    "blue": "blue, bleu",
    "yellow": "jaune|",
    "purple": "violet ß",
}


@pytest.fixture(scope="module")
def odd_labels(tmp_path_factory):
    """A model fitted by ``sk-multitask fit`` on labels holding ``|``, quotes and commas,
    and on class codes with empty cells (read as floats) given as a classification."""
    root = tmp_path_factory.mktemp("odd")
    df = make_multitask_images(64, image_size=16, path=root / "images", random_state=0)
    df["color"] = df["color"].map(ODD_LABELS)
    codes = np.random.default_rng(0).integers(0, 4, len(df)).astype(float)
    codes[::5] = np.nan
    df["code"] = codes
    df.to_csv(root / "data.csv", index=False)
    assert pd.read_csv(root / "data.csv")["code"].dtype == float  # as pandas reads it
    code = main(
        ["fit", str(root / "data.csv"), "--images", str(root / "images"),
         "--targets", "color,code,area", "--tasks", "code=classification",
         "--valid-col", "is_valid", "--backbone", "simple_cnn", "--weights", "none",
         "--epochs", "1", "--image-size", "16", "--seed", "0",
         "--model", str(root / "model.joblib")]
    )  # fmt: skip
    assert code == 0
    return root, df


def test_class_codes_with_empty_cells_come_back_as_integers(odd_labels, capsys):
    root, df = odd_labels
    model = joblib.load(root / "model.joblib")
    assert model.tasks_["code"].dtype == "Int64"
    assert list(model.tasks_["code"].classes_) == [0, 1, 2, 3]
    out = root / "codes.csv"
    code = main(["predict", str(root / "data.csv"), "--model", str(root / "model.joblib"),
                 "--proba", "--interval", "0.8", "--out", str(out)])  # fmt: skip
    assert code == 0
    written = pd.read_csv(out, dtype=str)
    assert written["code"].str.fullmatch(r"[0-3]").all()  # not "3.0"
    assert {"code_proba_0", "code_proba_3"} <= set(written.columns)
    sets = written["code_set"].dropna().map(json.loads)
    assert all(isinstance(label, int) for labels in sets for label in labels)
    folder = root / "evaluation"
    assert main(["evaluate", str(root / "data.csv"), "--model", str(root / "model.joblib"),
                 "--out", str(folder)]) == 0  # fmt: skip
    metrics = pd.read_csv(folder / "metrics.csv", index_col="task")
    assert metrics.loc["code", "n_labelled"] == df["code"].notna().sum()


@pytest.mark.parametrize("set_method", ["lac", "lac_top"])
def test_predict_makes_the_sets_the_set_method_names(odd_labels, set_method):
    root, df = odd_labels
    model = joblib.load(root / "model.joblib")
    out = root / f"sets-{set_method}.csv"
    args = ["--interval", "0.05", "--set-method", set_method, "--out", str(out)]
    model_path = str(root / "model.joblib")
    assert main(["predict", str(root / "data.csv"), "--model", model_path, *args]) == 0
    written = pd.read_csv(out)["code_set"].map(json.loads)
    expected = model.predict_interval(df, 0.05, set_method)[("code", "set")]
    assert [sorted(s) for s in written] == [sorted(s) for s in expected]
    # At 5% coverage LAC leaves most sets empty (the threshold is the 5% quantile of the
    # scores), lac_top none: the two methods differ.
    assert (written.map(len) == 0).any() == (set_method == "lac")


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_class_sets_round_trip_whatever_their_labels_hold(odd_labels, suffix):
    root, df = odd_labels
    out = root / f"sets{suffix}"
    code = main(["predict", str(root / "data.csv"), "--model", str(root / "model.joblib"),
                 "--interval", "0.8", "--out", str(out)])  # fmt: skip
    assert code == 0
    read = {".csv": pd.read_csv, ".json": pd.read_json, ".parquet": pd.read_parquet}[suffix]
    written = read(out)
    expected = joblib.load(root / "model.joblib").predict_interval(df, 0.8)
    assert written["color_set"].map(json.loads).tolist() == expected["color", "set"].tolist()
    assert set(ODD_LABELS.values()) >= {label for s in expected["color", "set"] for label in s}

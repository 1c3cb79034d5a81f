import subprocess
import sys

import joblib

from sk_multitask.cli import main


def test_demo_fits_prints_metrics_and_saves_a_model(tmp_path, capsys):
    code = main(
        ["demo", "--out", str(tmp_path), "--n-samples", "80", "--image-size", "16", "--epochs", "1"]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "validation metrics" in out
    for line in ("color", "shape", "area"):
        assert any(row.strip().startswith(line) for row in out.splitlines())
    model = joblib.load(tmp_path / "model.joblib")
    assert set(model.tasks_) == {"color", "shape", "area"}


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "sk_multitask.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--out" in result.stdout

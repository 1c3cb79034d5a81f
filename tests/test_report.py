import base64
import io
import os
import re

import numpy as np
import pandas as pd
import pytest
import sklearn
import torch
from conftest import TARGETS, reload, run_python_without
from matplotlib.figure import Figure
from PIL import Image

from sk_multitask import __version__, report
from sk_multitask.report import (
    TOP_LOSS_HEATMAPS,
    TOP_LOSSES,
    figure_to_png_bytes,
    write_report,
)


def embedded_images(text):
    return [
        Image.open(io.BytesIO(base64.b64decode(data)))
        for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    ]


def test_report_is_one_html_file_with_metrics_and_embedded_figures(fitted, image_set, tmp_path):
    path = write_report(fitted, image_set, image_set[TARGETS], tmp_path / "report.html", k=4)

    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<table" in text and "balanced_accuracy" in text and "<th>area</th>" in text
    # history, one confusion matrix per classification task, area's plot, top losses, and
    # (calibrated on the validation rows) a reliability diagram per classification task
    # and area's intervals, then the labels to check
    assert text.count("data:image/png;base64,") == 9
    assert text.count("<h2>Confusion matrix:") == 2
    assert "<h2>Predicted and true: area</h2>" in text
    assert text.count("<h2>Reliability diagram:") == 2
    assert "<h2>Prediction intervals: area</h2>" in text
    for image in embedded_images(text):
        image.load()
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    # Self-contained: nothing to fetch.
    assert re.findall(r'src="(?!data:)', text) == []
    assert "<script" not in text and "<link" not in text and "http" not in text


def test_report_on_a_regression_target_has_no_confusion_matrix(fitted, image_set, tmp_path):
    path = write_report(fitted, image_set, image_set[["area"]], tmp_path / "area.html", k=2)

    text = path.read_text(encoding="utf-8")
    assert "Confusion matrix" not in text and "Metrics per class" not in text
    assert "<h2>Predicted and true: area</h2>" in text
    # history, predicted and true, intervals, top losses
    assert len(embedded_images(text)) == 4


def test_report_names_versions_sizes_epochs_classes_and_parameters(fitted, image_set, tmp_path):
    y = image_set[TARGETS]
    text = write_report(fitted, image_set, y, tmp_path / "report.html", k=2).read_text()

    for version in (
        f"sk-multitask {__version__}",
        f"torch {torch.__version__}",
        f"scikit-learn {sklearn.__version__}",
    ):
        assert version in text
    sizes = re.search(r"<h2>Data</h2>(.*?)</table>", text, re.S).group(1)
    n_valid = int(image_set["is_valid"].sum())
    cells = ["rows", len(image_set) - n_valid, n_valid, len(image_set)]
    assert re.search(r"\s*".join(f"<t[hd]>{c}</t[hd]>" for c in cells), sizes)
    labelled = ["area", *fitted.data_sizes_.loc["area"], y["area"].notna().sum()]
    assert re.search(r"\s*".join(f"<t[hd]>{c}</t[hd]>" for c in labelled), sizes)
    per_class = re.search(r"<h2>Metrics per class</h2>(.*?)</table>", text, re.S).group(1)
    assert "roc_auc" in per_class and "triangle" in per_class and "purple" in per_class
    history = re.search(r"<h2>Training history</h2>(.*?)</table>", text, re.S).group(1)
    assert "valid_color_acc" in history and "valid_area_mae" in history
    assert "<th>max_epochs</th>" in text and "<td>'simple_cnn'</td>" in text


def report_body(text):
    """The report without its figures (their PNG bytes depend on the font cache)."""
    return re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', text)


@pytest.mark.parametrize("how", ["safe file", "joblib"])
def test_a_loaded_model_writes_the_report_of_the_fitted_one(fitted, image_set, tmp_path, how):
    loaded = reload(fitted, tmp_path, how)
    y = image_set[TARGETS]
    original = write_report(fitted, image_set, y, tmp_path / "fitted.html", k=3).read_text()
    text = write_report(loaded, image_set, y, tmp_path / "loaded.html", k=3).read_text()
    assert text.count("data:image/png;base64,") == 9
    sizes = re.search(r"<h2>Data</h2>(.*?)</table>", text, re.S).group(1)
    labelled = ["area", *fitted.data_sizes_.loc["area"], y["area"].notna().sum()]
    assert re.search(r"\s*".join(f"<t[hd]>{c}</t[hd]>" for c in labelled), sizes)
    assert report_body(text) == report_body(original)


def test_the_cli_evaluates_a_safe_file_with_its_report(fitted, image_set, tmp_path, capsys):
    from sk_multitask.cli import main

    data = image_set.assign(filename=[os.path.join(image_set.attrs["image_root"], f)
                                      for f in image_set["filename"]])
    data.to_csv(tmp_path / "data.csv", index=False)
    model = fitted.save(tmp_path / "m.skmt")
    out = tmp_path / "evaluation"
    assert main(["evaluate", str(tmp_path / "data.csv"), "--model", model, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "metrics and report written to" in captured.out
    assert "Traceback" not in captured.err
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 9


def test_the_report_replaces_its_file_atomically(fitted, image_set, tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old")
    with monkeypatch.context() as patch:
        patch.setattr(report, "_page", lambda *args: 1 / 0)  # fails while writing
        with pytest.raises(ZeroDivisionError):
            write_report(fitted, image_set, image_set[TARGETS], path, k=2)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    write_report(fitted, image_set, image_set[TARGETS], path, k=2)
    assert path.read_text().startswith("<!DOCTYPE html>")


def test_report_runs_the_network_once_then_explains_the_top_losses(
    fitted_copy, image_set, tmp_path, monkeypatch
):
    rows = []
    get_iterator = fitted_copy.net_.get_iterator  # one iterator per pass over the data

    def counted(dataset, *args, **kwargs):
        rows.append(len(dataset))
        return get_iterator(dataset, *args, **kwargs)

    monkeypatch.setattr(fitted_copy.net_, "get_iterator", counted)
    write_report(fitted_copy, image_set, image_set[TARGETS], tmp_path / "report.html", k=2)
    # Once over X; then the heatmaps of each task on the two images shown only.
    assert rows == [len(image_set), 2, 2, 2]


def test_the_report_shows_each_tasks_heatmaps_over_the_top_losses(fitted, image_set, tmp_path):
    from sk_multitask.evaluation._figures import top_losses_figure

    y = image_set[TARGETS]
    text = write_report(fitted, image_set, y, tmp_path / "report.html", k=3).read_text()

    section = report_sections(text)["Largest losses"]
    assert "heatmap over it: where the network looked for its prediction" in section
    shown = re.search(
        rf'<img alt="{TOP_LOSS_HEATMAPS}" src="data:image/png;base64,([^"]+)"', text
    )
    embedded = base64.b64decode(shown.group(1))
    top = fitted.top_losses(image_set, y, k=3)
    with_heatmaps = top_losses_figure(fitted, image_set, top, heatmap=True)
    assert embedded == figure_to_png_bytes(with_heatmaps)
    assert embedded != figure_to_png_bytes(top_losses_figure(fitted, image_set, top))
    assert Image.open(io.BytesIO(embedded)).size == with_heatmaps.canvas.get_width_height()


def test_the_report_shows_the_labels_to_check_and_to_add_next(fitted, image_set, tmp_path):
    from sk_multitask.labels import find_label_issues, suggest_labels

    y = image_set[TARGETS]
    text = write_report(fitted, image_set, y, tmp_path / "report.html", k=3).read_text()
    sections = report_sections(text)
    check, add = sections["Labels to check"], sections["Labels to add next"]
    assert 'alt="labels to check"' in check
    # The k worst flagged cells of the model's own predictions; the k first to label.
    issues = find_label_issues(fitted, image_set.drop(columns="is_valid"), y, cv="prefit")
    worst = issues[issues["is_label_issue"]].head(3)
    assert re.findall(r"<th>(\d+)</th>", check) == [str(row) for row in worst["row"]]
    first = suggest_labels(fitted, image_set, y, n=3)
    assert re.findall(r"<th>(\d+)</th>", add) == [str(row) for row in first["row"]]


def test_figure_to_png_bytes_renders_at_the_given_dpi():
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([0, 1], [1, 0])

    png = figure_to_png_bytes(fig, dpi=50)

    assert Image.open(io.BytesIO(png)).size == (150, 100)


def report_sections(text):
    """Section title to its body, the figures left out."""
    parts = re.split(r"<h2>(.*?)</h2>", report_body(text))
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def numbers(html):
    return np.array([float(v) for v in re.findall(r">(-?[0-9][0-9.e+-]*)</td>", html)])


@pytest.mark.slow
def test_the_onnx_predictor_writes_the_report_of_the_estimator_without_torch(
    fitted, fitted_onnx, image_set, tmp_path
):
    onnx = fitted_onnx
    image_set.to_pickle(tmp_path / "data.pkl")
    result = run_python_without(
        f"""
        import sys
        import pandas as pd
        from sk_multitask.onnx import OnnxPredictor
        from sk_multitask.report import write_report

        predictor = OnnxPredictor({str(onnx)!r})
        data = pd.read_pickle({str(tmp_path / "data.pkl")!r})
        write_report(predictor, data, data[{TARGETS!r}], {str(tmp_path / "onnx.html")!r}, k=4)
        predictor.top_losses(data, data[{TARGETS!r}], k=6).to_pickle({str(tmp_path / "top.pkl")!r})
        print(sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # nothing of torch was imported
    y = image_set[TARGETS]
    report = write_report(fitted, image_set, y, tmp_path / "fitted.html", k=4)
    fitted_top = fitted.top_losses(image_set, y, k=6)
    expected = report_sections(report.read_text())
    text = (tmp_path / "onnx.html").read_text()
    sections = report_sections(text)
    assert list(sections) == list(expected)  # the same sections: metrics, figures, top losses
    # The top losses without heatmaps: an ONNX predictor has no gradients.
    assert f'alt="{TOP_LOSSES}"' in text and TOP_LOSS_HEATMAPS not in text
    assert f'alt="{TOP_LOSS_HEATMAPS}"' in report.read_text()
    # History, two confusion matrices, the regression, the top losses; then how sure the
    # calibrated model is: two reliability diagrams and the interval plot; the labels to check.
    pngs = "data:image/png;base64,"
    assert text.count(pngs) == report.read_text().count(pngs) == 9
    for title in ("Data", "Metrics per task", "Metrics per class", "Training history"):
        np.testing.assert_allclose(numbers(sections[title]), numbers(expected[title]), rtol=1e-3)
    params = re.findall(r"<tr>\s*<th>(.*?)</th>\s*<td>(.*?)</td>", sections["Parameters"])
    assert len(params) > 20 and set(params) <= set(
        re.findall(r"<tr>\s*<th>(.*?)</th>\s*<td>(.*?)</td>", expected["Parameters"])
    )
    top = pd.read_pickle(tmp_path / "top.pkl")
    pd.testing.assert_frame_equal(top.drop(columns="loss"), fitted_top.drop(columns="loss"))
    np.testing.assert_allclose(top["loss"], fitted_top["loss"], rtol=1e-4)
    assert top["loss"].is_monotonic_decreasing and top["loss"].iloc[-1] > 0

import base64
import io
import re

from conftest import TARGETS
from matplotlib.figure import Figure
from PIL import Image

from sk_multitask.report import figure_to_png_bytes, write_report


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
    # history, one confusion matrix per classification task, top losses
    assert text.count("data:image/png;base64,") == 4
    assert text.count("<h2>Confusion matrix:") == 2
    for image in embedded_images(text):
        image.load()
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    # Self-contained: nothing to fetch.
    assert re.findall(r'src="(?!data:)', text) == []
    assert "<script" not in text and "<link" not in text and "http" not in text


def test_report_on_a_regression_target_has_no_confusion_matrix(fitted, image_set, tmp_path):
    path = write_report(fitted, image_set, image_set[["area"]], tmp_path / "area.html", k=2)

    text = path.read_text(encoding="utf-8")
    assert "Confusion matrix" not in text
    assert len(embedded_images(text)) == 2


def test_figure_to_png_bytes_renders_at_the_given_dpi():
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([0, 1], [1, 0])

    png = figure_to_png_bytes(fig, dpi=50)

    assert Image.open(io.BytesIO(png)).size == (150, 100)

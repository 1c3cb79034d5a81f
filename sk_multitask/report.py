"""A self-contained HTML report of a fitted model on labelled data.

The report is one file: its figures are embedded as base64 PNG data, with no external
image, style sheet or script, so it opens anywhere and can be mailed or archived.

Examples
--------
>>> import os, tempfile
>>> from sk_multitask import MultiTaskImageEstimator
>>> from sk_multitask.datasets import make_multitask_images
>>> from sk_multitask.report import write_report
>>> df = make_multitask_images(32, image_size=16, random_state=0)
>>> y = df[["color", "shape", "area"]]
>>> est = MultiTaskImageEstimator(
...     image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
...     image_size=16, max_epochs=1, valid_split="is_valid", random_state=0).fit(df, y)
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_report(est, df, y, os.path.join(folder, "report.html"), k=4)
...     path.name, path.read_text().count("data:image/png;base64,")
('report.html', 4)
"""

from __future__ import annotations

import base64
import html
import io
import pathlib

from .plotting import _confusion_figure, plot_history, plot_top_losses
from .tasks import CLASSIFICATION, REGRESSION, check_targets

__all__ = ["figure_to_png_bytes", "write_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; }
th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
"""


def figure_to_png_bytes(fig, dpi=100):
    """The PNG encoding of a matplotlib figure.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    dpi : float, default=100

    Returns
    -------
    bytes
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def write_report(estimator, X, y, path, k=9):
    """Write an HTML report of the model's per-task performance on ``X``, ``y``.

    The report holds the per-task metrics table (:meth:`evaluate
    <sk_multitask.MultiTaskImageEstimator.evaluate>`), the training history, a
    confusion matrix for each classification task of ``y`` with a labelled cell, and
    the ``k`` images with the largest combined loss. Figures are embedded as PNG
    data: the file needs nothing else to open.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    X : image input, as for ``fit``
    y : DataFrame or Series
        True targets for some or all tasks; missing cells are left out.
    path : str or path
        The HTML file to write (overwritten if it exists).
    k : int, default=9
        How many images the largest-losses figure shows.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    metrics = estimator.evaluate(X, y)
    predictions = estimator.predict(X)
    y = check_targets(y, estimator.tasks_, len(predictions))
    sections = [
        _section(
            "Metrics per task",
            "<p>Each task on its labelled cells only; mae and rmse in the target's units.</p>\n"
            + metrics.to_html(float_format=_format_float, na_rep=""),
        ),
        _section("Training history", _image(plot_history(estimator), "training history")),
    ]
    for name in y.columns:
        task = estimator.tasks_[name]
        if task.kind == CLASSIFICATION and y[name].notna().any():
            figure = _confusion_figure(task, y[name], predictions[name])
            sections.append(
                _section(f"Confusion matrix: {name}", _image(figure, f"{name} confusion matrix"))
            )
    top_losses = plot_top_losses(estimator, X, y, k=k)
    sections.append(_section("Largest losses", _image(top_losses, "images with the largest loss")))
    tasks = ", ".join(_describe(name, task) for name, task in estimator.tasks_.items())
    document = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sk-multitask model report</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Model report</h1>
<p>{len(predictions)} images. Tasks: {html.escape(tasks)}.</p>
<pre>{html.escape(repr(estimator))}</pre>
{"".join(sections)}
</body>
</html>
"""
    path = pathlib.Path(path)
    path.write_text(document, encoding="utf-8")
    return path


def _describe(name, task):
    if task.kind == REGRESSION:
        return f"{name} ({task.kind})"
    what = "classes" if task.kind == CLASSIFICATION else "labels"
    return f"{name} ({task.kind}, {len(task.classes_)} {what})"


def _format_float(value):
    return f"{value:.4g}"


def _section(title, body):
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _image(fig, alt):
    data = base64.b64encode(figure_to_png_bytes(fig)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

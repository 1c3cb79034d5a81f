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
('report.html', 6)
"""

from __future__ import annotations

import base64
import html
import io
import pathlib
import platform
import sys
import warnings

import pandas as pd

from . import __version__
from .evaluation._diagnostics import top_loss_table
from .evaluation._figures import (
    confusion_figure,
    history_figure,
    interval_figure,
    label_issues_figure,
    regression_figure,
    reliability_figure,
    top_losses_figure,
)
from .evaluation._metrics import evaluate_tasks, per_class_metrics, scorable_rows
from .exceptions import LabelsWarning
from .inputs._files import atomic_write
from .inputs._tabular import fitted_table_encoder
from .labels._issues import cleanlab_modules, label_issue_table
from .labels._out_of_fold import model_predictions
from .labels._suggest import suggestion_table
from .predicting._calibration import calibrated_outputs, interval_metrics, min_cells
from .predicting._protocol import checked_outputs
from .predicting._thresholds import decided_predictions, decision_decoders
from .targets import CLASSIFICATION, LABEL_KINDS, MULTILABEL, REGRESSION
from .training._parameters import redacted_params

__all__ = ["figure_to_png_bytes", "write_report"]

#: Packages whose versions the report names, besides sk-multitask and Python, when the
#: model imported them (the ONNX predictor runs without torch).
_PACKAGES = ("torch", "torchvision", "skorch", "onnxruntime", "sklearn", "pandas", "numpy")

#: The alt text of the top losses' figure, without and with the tasks' heatmaps.
TOP_LOSSES = "largest losses"
TOP_LOSS_HEATMAPS = "largest losses, with a heatmap per task"

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


def write_report(estimator, X, y, path, k=9, coverage=None):
    """Write an HTML report of the model's per-task performance on ``X``, ``y``.

    The report holds the versions it was made with, the data sizes (rows and labelled
    cells per task in training, validation and the evaluated data), the per-task
    metrics table (:meth:`evaluate <sk_multitask.MultiTaskImageEstimator.evaluate>`)
    and the per-class one of the classification tasks, the training history (figure
    and epoch table), a confusion matrix for each classification task of ``y`` and a
    predicted-against-true plot with residuals for each regression task, the ``k``
    images with the largest combined loss, each with every task's heatmap over it
    (where the network looked: :meth:`~sk_multitask.MultiTaskImageEstimator.explain`,
    run on those ``k`` images only; an ONNX predictor, without gradients, shows the
    images alone), and the estimator's parameters (credentials redacted:
    :func:`~sk_multitask.training._parameters.redacted_params`). A calibrated model
    (``calibration_``) adds how sure it is: ECE, coverage and widths, a reliability
    diagram per classification task and an interval plot per regression task. A model
    with table columns (``tabular_cols``) adds each task's score drop when each column is
    permuted (:meth:`table_importance
    <sk_multitask.MultiTaskImageEstimator.table_importance>`, 2 repeats). Then the labels
    to check (the labelled cells the model's predictions flag, with their images:
    :mod:`sk_multitask.labels`, with cleanlab installed) and the missing cells to label
    next. The network runs once over ``X`` for the rest (and twice more per table
    column). Figures are embedded as PNG data: the file needs nothing else to open.

    The same report comes from the estimator and from the
    :class:`~sk_multitask.onnx.OnnxPredictor` of its ONNX export, which needs no torch:
    the losses are computed from the outputs (:mod:`sk_multitask.targets._cell_loss`) and the
    images decoded by :mod:`sk_multitask.inputs._decoding`.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator or OnnxPredictor
    X : image input, as for ``fit``
    y : DataFrame or Series
        True targets for some or all tasks; missing cells are left out.
    path : str or path
        The HTML file to write (replaced atomically if it exists).
    k : int, default=9
        How many images the largest-losses figure shows.
    coverage : float, default=None
        The coverage of the intervals and sets shown; None: 0.9.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    outputs, index, y, _ = checked_outputs(estimator, X, y)
    fitted = decision_decoders(estimator)
    tasks = {name: fitted[name] for name in y.columns}
    calibration = getattr(estimator, "calibration_", None)
    calibrated = calibrated_outputs(calibration, outputs)
    sections = [
        _section("Data", _table(_sizes(estimator, y))),
        *_metric_sections(tasks, calibrated, y, _thresholds_note(estimator)),
        _section(
            "Training history",
            _image(history_figure(estimator.tasks_, estimator.history_), "training history")
            + _table(_epochs(estimator)),
        ),
        *_figure_sections(tasks, calibrated, index, y),
        *_how_sure_sections(calibration, tasks, outputs, index, y, coverage or 0.9),
        _top_loss_section(estimator, X, y, outputs, index, k),
        *_table_sections(estimator, X, y),
        *_label_sections(estimator, X, y, outputs, index, k),
        _section("Parameters", _table(_parameters(estimator))),
    ]
    path = pathlib.Path(path)
    with atomic_write(path) as file:
        file.write(_page(estimator, len(index), sections).encode("utf-8"))
    return path


def _thresholds_note(model):
    """The decision thresholds a model predicts with, in words ('' without any)."""
    thresholds = getattr(model, "decision_thresholds_", None)
    if not thresholds:
        return ""
    shown = [
        f"{name}: "
        + (
            ", ".join(f"{label} {t:.3g}" for label, t in threshold.items())
            if isinstance(threshold, dict)
            else f"{threshold:.3g}"
        )
        for name, threshold in thresholds.items()
    ]
    return html.escape(f" Decision thresholds ({'; '.join(shown)}).")


def _metric_sections(tasks, outputs, y, thresholds=""):
    """The per-task metrics table, and the per-class one when a task is a classification;
    ``thresholds``: the decision thresholds in words."""
    sections = [
        _section(
            "Metrics per task",
            "<p>Each task on its labelled cells only; mae and rmse in the target's units."
            f"{thresholds}</p>\n" + _table(evaluate_tasks(tasks, outputs, y)),
        )
    ]
    if any(task.kind in LABEL_KINDS for task in tasks.values()):
        sections.append(
            _section(
                "Metrics per class",
                "<p>One class against the rest; roc_auc from the predicted probability.</p>\n"
                + _table(per_class_metrics(tasks, outputs, y)),
            )
        )
    return sections


def _figure_sections(tasks, outputs, index, y):
    """A confusion matrix per classification task, predicted-and-true per regression."""
    sections = []
    for name, task in tasks.items():
        # A multi-label task's metrics are in the table; it has no figure of its own.
        scored = scorable_rows(y[name], outputs[name])
        if task.kind == MULTILABEL or not len(scored):
            continue
        truth = y[name].iloc[scored]
        predicted = task.decode(outputs[name][scored], index[scored])
        if task.kind in LABEL_KINDS:
            figure, title = confusion_figure(task, truth, predicted), "Confusion matrix"
        else:
            figure, title = regression_figure(name, truth, predicted), "Predicted and true"
        sections.append(_section(f"{title}: {name}", _image(figure, f"{name} {title.lower()}")))
    return sections


def _how_sure_sections(calibration, tasks, outputs, index, y, coverage):
    """How sure a calibrated model is: the table, then a reliability diagram per
    classification task and an interval plot per regression task (none uncalibrated)."""
    if calibration is None:
        return []
    # A task with too few calibration cells for the coverage has unbounded intervals.
    ready = {
        name: task
        for name, task in tasks.items()
        if task.kind != MULTILABEL
        and name in calibration.tasks
        and calibration.tasks[name].n_cells >= min_cells(coverage)
        and len(scorable_rows(y[name], outputs[name]))
    }
    if not ready:
        return []
    note = (
        f"<p>Calibrated on {_calibration_rows(calibration, ready)}; intervals and sets of "
        f"coverage {coverage}. ece: expected calibration error of the calibrated "
        "probabilities; coverage: how often the interval or set holds the truth.</p>\n"
    )
    table = interval_metrics(calibration, ready, outputs, y, coverage)
    sections = [_section("How sure", note + _table(table))]
    for name, task in ready.items():
        if task.kind in LABEL_KINDS:  # an ordinal task's ranges are in the table
            figure = reliability_figure(task, outputs[name], y[name], calibration)
            title = "Reliability diagram"
        else:
            frame = calibration.intervals({name: task}, {name: outputs[name]}, index, coverage)
            figure = interval_figure(
                name, y[name], frame[name, "lower"], frame[name, "upper"], coverage
            )
            title = "Prediction intervals"
        sections.append(_section(f"{title}: {name}", _image(figure, f"{name} {title.lower()}")))
    return sections


def _calibration_rows(calibration, tasks):
    """How many cells each task was calibrated on, in words."""
    return ", ".join(f"{calibration.tasks[name].n_cells} {name} cells" for name in tasks)


#: The permutations per table column of the report's importance table (each one runs
#: the model over X again).
REPORT_REPEATS = 2


def _table_sections(estimator, X, y):
    """With table columns: each task's score drop when each column is permuted."""
    if fitted_table_encoder(estimator) is None:
        return []
    drops = estimator.table_importance(X, y, n_repeats=REPORT_REPEATS)
    note = (
        f"<p>Each task's score (accuracy, R², micro F1) minus its mean over "
        f"{REPORT_REPEATS} permutations of each table column: how much the model relies "
        "on it (0: not at all).</p>"
    )
    return [_section("Table columns: permutation importance", note + _table(drops))]


def _top_loss_section(estimator, X, y, outputs, index, k):
    """The top losses; with each task's heatmap where the model can draw them (an ONNX
    predictor cannot: it has no gradients)."""
    predicted = decided_predictions(estimator, outputs, index)
    top = top_loss_table(estimator, X, y, outputs, index, k=k, predicted=predicted)
    if not estimator.explainable:
        figure = top_losses_figure(estimator, X, top)
        return _section("Largest losses", _image(figure, TOP_LOSSES))
    note = (
        "<p>Each image once per task, with the task's heatmap over it: where the network "
        "looked for its prediction (Grad-CAM on the backbone's last feature map; red "
        "counts most).</p>\n"
    )
    figure = top_losses_figure(estimator, X, top, heatmap=True)
    return _section("Largest losses", note + _image(figure, TOP_LOSS_HEATMAPS))


def _label_sections(model, X, y, outputs, index, k):
    """Labels to check (the model's own predictions against ``y``'s labels: cleanlab's
    confident learning, where it is installed) and the missing cells to label next."""
    positions = pd.RangeIndex(len(index))
    try:
        cleanlab_modules()
    except ImportError as exc:
        check = f"<p>{html.escape(str(exc))}.</p>"
    else:
        predictions = model_predictions(model, outputs, positions)
        table, notes = _noting(label_issue_table, predictions, y, positions)
        flagged = table[table["is_label_issue"]].head(k)
        check = (
            "<p>The labelled cells whose label the model finds least likely (judged by the "
            "model's own predictions: fair on rows it did not train on; "
            "<code>sk_multitask.labels.find_label_issues</code> judges out of fold).</p>\n"
        )
        if len(flagged):
            check += _image(label_issues_figure(model, X, flagged), "labels to check")
            check += _table(flagged.assign(row=index[flagged["row"]]).set_index("row"))
        else:
            check += "<p>No label flagged.</p>"
        check += "".join(f"<p>{html.escape(note)}.</p>" for note in notes)
    nexts, notes = _noting(suggestion_table, model, outputs, index, y, list(y.columns))
    nexts = nexts.head(k)
    add = "".join(f"<p>{html.escape(note)}.</p>" for note in notes) + (
        "<p>The missing cells the model is least sure of, each task's in turn "
        "(<code>sk_multitask.labels.suggest_labels</code>).</p>\n"
        + (_table(nexts.set_index("row")) if len(nexts) else "<p>No missing cell.</p>")
    )
    return [_section("Labels to check", check), _section("Labels to add next", add)]


def _noting(function, *args):
    """``function(*args)`` and the :class:`LabelsWarning` messages it warned, to be shown
    in the report rather than warned (its other warnings are warned)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LabelsWarning)
        result = function(*args)
    notes = []
    for warning in caught:
        if issubclass(warning.category, LabelsWarning):
            notes.append(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return result, notes


def _parameters(model):
    """The parameters, credentials redacted (:func:`redacted_params`)."""
    # An ONNX predictor holds the estimator's parameters as saved.
    params = model.get_params(deep=False) if hasattr(model, "get_params") else model.params
    shown = redacted_params(params)
    return pd.DataFrame({"value": {name: repr(value) for name, value in shown.items()}})


def _page(estimator, n_images, sections):
    """The HTML document around the sections."""
    described = ", ".join(_describe(name, task) for name, task in estimator.tasks_.items())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sk-multitask model report</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Model report</h1>
<p>{n_images} images. Tasks: {html.escape(described)}.</p>
<p>{html.escape(_versions())}</p>
{"".join(sections)}
</body>
</html>
"""


def _versions():
    versions = [f"sk-multitask {__version__}", f"Python {platform.python_version()}"]
    for name in _PACKAGES:
        if name in sys.modules:
            version = sys.modules[name].__version__
            versions.append(f"{'scikit-learn' if name == 'sklearn' else name} {version}")
    return "Made with " + ", ".join(versions) + "."


def _sizes(estimator, y):
    """Rows and labelled cells per task: training, validation (as fitted), evaluated.

    A model loaded from a file of format version 1 has no ``data_sizes_`` (None): the
    evaluated data's column only.
    """
    sizes = estimator.data_sizes_
    if sizes is None:
        sizes = pd.DataFrame(index=["rows", *estimator.tasks_])
    sizes = sizes.copy()
    evaluated = y.notna().sum().reindex(sizes.index[1:])
    sizes["evaluated"] = [len(y), *evaluated.fillna(0).astype(int).tolist()]
    return sizes


def _epochs(estimator):
    """The history as a table: epoch, the losses, each task's metrics, duration."""
    rows = [{k: v for k, v in row.items() if k != "batches"} for row in estimator.history_]
    frame = pd.DataFrame(rows).set_index("epoch")
    return frame[[c for c in frame.columns if not c.endswith("_best")]]


def _table(frame):
    return frame.to_html(float_format=_format_float, na_rep="")


def _describe(name, task):
    if task.kind == REGRESSION:
        return f"{name} ({task.kind})"
    what = {CLASSIFICATION: "classes", MULTILABEL: "labels"}.get(task.kind, "levels")
    return f"{name} ({task.kind}, {len(task.classes_)} {what})"


def _format_float(value):
    return f"{value:.4g}"


def _section(title, body):
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _image(fig, alt):
    data = base64.b64encode(figure_to_png_bytes(fig)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

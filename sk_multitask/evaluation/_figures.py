"""Figures from a fitted model's outputs and history, without torch.

The figures of :mod:`sk_multitask.plotting` and of the report
(:mod:`sk_multitask.report`), built from computed tables, outputs and histories: so that
the torch-free :class:`~sk_multitask.onnx.OnnxPredictor` draws them too. matplotlib is
imported inside each function; every function returns a new
:class:`matplotlib.figure.Figure` that pyplot does not track.
"""

from __future__ import annotations

import math

import numpy as np

from ..inputs._decoding import decode_image
from ..inputs._sources import image_references, input_rows, input_table, resolve_images
from ..inputs._tabular import fitted_table_encoder
from ..targets import CLASSIFICATION, MULTILABEL, ORDINAL, REGRESSION, is_missing
from ._calibration_metrics import expected_calibration_error, reliability_bins
from ._metrics import scorable_rows

#: The history metric plotted per task kind.
_KIND_METRICS = {CLASSIFICATION: "acc", REGRESSION: "mae", MULTILABEL: "f1", ORDINAL: "mae"}
#: History metric suffix -> (axes title word, y-axis label).
_METRIC_LABELS = {
    "acc": ("accuracy", "accuracy"),
    "mae": ("mean absolute error", "MAE"),
    "f1": ("micro F1", "micro F1"),
}
_TITLE_SIZE = 9
#: Inches per title character at ``_TITLE_SIZE`` points, to size grid cells so that
#: neighbouring titles do not overlap.
_CHAR_WIDTH = 0.075
#: How opaque a heatmap is over its image where it is 1 (it fades with its value).
_HEATMAP_ALPHA = 0.7


def top_losses_figure(model, X, top, ranked_by="combined loss", ncols=3, heatmap=False):
    """The figure of :func:`~sk_multitask.plotting.plot_top_losses` from a computed
    ``top_losses`` table: each image decoded and resized as the network sees it.

    Parameters
    ----------
    model : fitted MultiTaskImageEstimator or OnnxPredictor
    X : image input the table was computed on
    top : DataFrame
        As returned by :meth:`MultiTaskImageEstimator.top_losses`.
    ranked_by : str, default="combined loss"
        What the rows are ranked by, for the title.
    ncols : int, default=3
    heatmap : bool, default=False
        Show each image once per task, that task's heatmap over it
        (:meth:`~sk_multitask.MultiTaskImageEstimator.explain` of its prediction): one
        row of panels per image, ``ncols`` ignored.

    Returns
    -------
    matplotlib.figure.Figure
    """
    X, images = _model_images(model, X)
    # The first image of X that each row of the table names (a path, "X[<position>]" for
    # an image in memory, a position in an array of images).
    first = {}
    for position, reference in enumerate(image_references(X, model.image_col)):
        first.setdefault(reference, position)
    positions = [first[reference] for reference in top["image"]]
    images = [decode_image(source, model.image_size_) for source in images[positions]]
    suptitle = f"Largest {ranked_by} (prediction/truth)"
    encoder = fitted_table_encoder(model)
    columns = [] if encoder is None else encoder.columns
    if not heatmap:
        titles = [_top_loss_title(model.tasks_, row, columns) for _, row in top.iterrows()]
        return image_grid(images, titles, ncols, suptitle)
    rows = input_rows(X, model.image_col, positions)
    maps = {name: model.explain(rows, name) for name in model.tasks_}
    panels, titles, heatmaps = [], [], []
    for i, (_, row) in enumerate(top.iterrows()):
        for j, (name, task) in enumerate(model.tasks_.items()):
            panels.append(images[i])
            heatmaps.append(maps[name][i])
            title = _prediction_and_truth(name, task, row)
            if j == 0:
                title += f"\nloss {_format_number(row['loss'])}" + _table_line(row, columns)
            titles.append(title)
    suptitle += "\nover each, where a task looked for its prediction (Grad-CAM)"
    return image_grid(panels, titles, len(model.tasks_), suptitle, heatmaps)


def explain_figure(images, heatmaps, titles, ncols, suptitle):
    """The figure of :func:`~sk_multitask.plotting.plot_explain` from images and their
    heatmaps.

    Parameters
    ----------
    images : list of ndarray (H, W, 3), uint8
        The images as the network sees them, all of one size.
    heatmaps : ndarray of shape (n_images, H, W)
        In [0, 1], as :meth:`~sk_multitask.MultiTaskImageEstimator.explain` returns them:
        drawn over the images, red where 1 and fading to nothing at 0; none for a
        missing (NaN) heatmap.
    titles : list of str
    ncols : int
        Images per row.
    suptitle : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    return image_grid(images, titles, ncols, suptitle, heatmaps)


def label_issues_figure(model, X, issues, ncols=4):
    """The image of each cell of ``issues`` (a
    :func:`~sk_multitask.labels.find_label_issues` table whose ``row`` is the position in
    ``X``), titled with its task, given and predicted label: the report's labels to check.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _, images = _model_images(model, X)
    pictures = [decode_image(images[position], model.image_size_) for position in issues["row"]]
    titles = [
        f"{row.task}: given {format_value(model.tasks_[row.task], row.given)}\n"
        f"predicted {format_value(model.tasks_[row.task], row.predicted)}"
        for row in issues.itertuples()
    ]
    return image_grid(pictures, titles, ncols, "Labels to check (given, predicted)")


def _model_images(model, X):
    """``X`` as a table, and its images as ``model`` reads them (its image column, root
    and storage options)."""
    X = input_table(X, model.image_col)
    images, _ = resolve_images(
        X, model.image_col, model.image_root, check_files=False,
        storage_options=model.storage_options,
    )
    return X, images


def history_figure(tasks, history):
    """Training curves: the total loss, then each task's loss and metric per epoch.

    The first row shows the total loss; then each task has a row with its loss (left)
    and its metric (right): accuracy for a classification, the mean absolute error in
    original units for a regression, the micro F1 over labels for a multi-label task.
    Every axes has a ``train`` line and, when the model held out validation rows, a
    ``valid`` line.

    Parameters
    ----------
    tasks : dict
        The fitted model's tasks (name to a task or decoder with a ``kind``).
    history : list of dict
        One dict per epoch, as the fitted model's ``history_``.

    Returns
    -------
    matplotlib.figure.Figure
        ``1 + 2 * n_tasks`` axes, titled ``"total loss"``, ``"<task>: loss"`` and
        ``"<task>: accuracy"``, ``"<task>: mean absolute error"`` or
        ``"<task>: micro F1"``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 2.3 * (1 + len(tasks))), layout="constrained")
    grid = fig.add_gridspec(1 + len(tasks), 2)
    panels = [(grid[0, :], "total loss", "loss", "loss")]
    for row, (name, task) in enumerate(tasks.items(), start=1):
        metric = _KIND_METRICS[task.kind]
        title, label = _METRIC_LABELS[metric]
        panels += [
            (grid[row, 0], f"{name}: loss", "loss", f"{name}_loss"),
            (grid[row, 1], f"{name}: {title}", label, f"{name}_{metric}"),
        ]
    epochs = [row["epoch"] for row in history]
    for cell, title, label, key in panels:
        ax = fig.add_subplot(cell)
        for prefix in ("train", "valid"):
            column = f"{prefix}_{key}"
            if any(column in row for row in history):  # no valid_* keys without validation
                values = [row.get(column, np.nan) for row in history]
                ax.plot(epochs, np.asarray(values, dtype=float), marker="o", label=prefix)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.suptitle("Training history")
    return fig


def regression_figure(name, truth, predicted):
    """The figure of :func:`~sk_multitask.plotting.plot_regression` from true and
    predicted Series.

    Parameters
    ----------
    name : str
        The task's name, for the titles.
    truth, predicted : Series
        True and predicted values, aligned; the rows where ``truth`` is missing are
        left out.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from sklearn.metrics import PredictionErrorDisplay

    labelled = truth.notna().to_numpy()
    if not labelled.any():
        raise ValueError(f"y has no labelled cell for task {name!r}")
    true = truth.to_numpy(dtype=float)[labelled]
    pred = predicted.to_numpy(dtype=float)[labelled]
    fig = Figure(figsize=(9, 4), layout="constrained")
    kinds = (
        ("actual_vs_predicted", "true against predicted"),
        ("residual_vs_predicted", "residuals"),
    )
    for ax, (kind, title) in zip(fig.subplots(1, 2), kinds, strict=True):
        PredictionErrorDisplay.from_predictions(
            true, pred, kind=kind, ax=ax, subsample=2000, random_state=0
        )
        ax.set_title(f"{name}: {title}", fontsize=10)
    fig.suptitle(f"{name}: {int(labelled.sum())} labelled images")
    return fig


def _format_number(value):
    """2-3 significant digits, without an exponent below 1000."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def format_value(task, value):
    """A label as it came in, a regression value to 3 digits, a multi-label cell as
    ``[a, b]``, ``?`` when missing."""
    if is_missing(value):
        return "?"
    if task.kind == MULTILABEL:
        return "[" + ", ".join(map(str, value)) + "]"
    return _format_number(value) if task.kind == REGRESSION else str(value)


def _prediction_and_truth(name, task, row):
    """``color red/blue``: a task's prediction and truth in a top-losses row."""
    predicted = format_value(task, row[f"{name}_pred"])
    return f"{name} {predicted}/{format_value(task, row[f'{name}_true'])}"


def _top_loss_title(tasks, row, columns=()):
    """``color red/blue | area 0.31/0.62`` then ``loss 2.3`` on a second line, and the
    table ``columns``' values (``age=41 | sex=F``) on a third."""
    fields = " | ".join(_prediction_and_truth(name, task, row) for name, task in tasks.items())
    return f"{fields}\nloss {_format_number(row['loss'])}" + _table_line(row, columns)


def _table_line(row, columns):
    """A new line of the table ``columns``' values in a top-losses row (none without)."""
    if not columns:
        return ""
    return "\n" + " | ".join(f"{c}={_table_value(row[c])}" for c in columns)


def _table_value(value):
    if isinstance(value, float):
        return _format_number(value)
    return str(value)[:12]


def image_grid(images, titles, ncols, suptitle, heatmaps=None):
    """One titled, axis-less image per array ``(H, W, 3)`` of ``images`` (all of one
    size), ``ncols`` to a row; with ``heatmaps``, each image's map ``(H, W)`` in [0, 1]
    drawn over it (none where it is missing: NaN)."""
    from matplotlib.figure import Figure

    ncols = min(ncols, len(titles))
    nrows = math.ceil(len(titles) / ncols)
    lines = [title.splitlines() for title in titles]
    width = max(2.2, _CHAR_WIDTH * max(len(line) for title in lines for line in title))
    image_height, image_width = images[0].shape[:2]
    side = min(width, 2.5)  # inches: wide titles widen the cells, not the images
    height = side * image_height / image_width + 0.2 * max(map(len, lines))
    fig = Figure(figsize=(ncols * width, nrows * height + 0.4), layout="constrained")
    for i, title in enumerate(titles):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(images[i])
        if heatmaps is not None and np.isfinite(heatmaps[i]).all():
            alpha = _HEATMAP_ALPHA * heatmaps[i]  # faint where it counts little
            ax.imshow(heatmaps[i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
        ax.set_title(title, fontsize=_TITLE_SIZE)
        ax.set_axis_off()
    fig.suptitle(suptitle)
    return fig


def confusion_figure(task, truth, predicted, normalize=None):
    """The figure of :func:`~sk_multitask.plotting.plot_confusion_matrix` from true and
    predicted Series.

    Parameters
    ----------
    task : Task
        The fitted classification or ordinal task (``est.tasks_[name]``): its classes
        (levels) order the matrix, which counts the labelled cells of ``truth`` of a
        class it knows (the title says how many others there were).
    truth, predicted : Series
        True and predicted labels, aligned.
    normalize : str or None, default=None
        ``"true"``, ``"pred"``, ``"all"`` or None, as scikit-learn's ``confusion_matrix``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    classes = task.classes_
    labelled = truth.notna().to_numpy()
    # confusion_matrix silently drops labels outside `classes`: count them openly.
    known = labelled & truth.isin(classes).to_numpy()
    if not known.any():
        raise ValueError(f"y has no labelled cell of a known class for task {task.name!r}")
    side = max(3.5, 0.55 * len(classes) + 1.8)
    fig = Figure(figsize=(side, side), layout="constrained")
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(
        truth.to_numpy()[known],
        predicted.to_numpy()[known],
        labels=classes,
        normalize=normalize,
        ax=ax,
        cmap="Blues",
        colorbar=False,
        xticks_rotation=45 if max(len(str(c)) for c in classes) > 7 else "horizontal",
        values_format=None if normalize is None else ".2f",
    )
    ax.set_xlabel(f"predicted {task.name}")
    ax.set_ylabel(f"true {task.name}")
    title = f"{task.name}: {int(known.sum())} labelled images"
    unseen = int(labelled.sum() - known.sum())
    if unseen:
        title += f"\n({unseen} more of classes unseen in training)"
    ax.set_title(title, fontsize=10)
    return fig


def reliability_figure(decoder, outputs, truth, calibration=None, n_bins=10):
    """The figure of :func:`~sk_multitask.plotting.plot_reliability` from one task's raw
    outputs and truth.

    Parameters
    ----------
    decoder : OutputDecoder
        The task's decoder (``sk_multitask.targets._outputs.OutputDecoder.from_task``).
    outputs : ndarray of shape (n_rows, n_classes)
        The task's raw network outputs (logits).
    truth : Series
        True labels, aligned with ``outputs``; missing cells are left out.
    calibration : Calibration or None, default=None
        The model's ``calibration_``: adds the temperature-scaled curve.
    n_bins : int, default=10
        Equal-width confidence bins.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    scored = scorable_rows(truth, outputs)
    labels = truth.to_numpy()[scored]
    known = np.isin(labels, decoder.classes)
    if not known.any():
        raise ValueError(f"y has no labelled cell of a known class for task {decoder.name!r}")
    out = np.asarray(outputs, dtype=np.float32)[scored][known]
    codes = decoder.class_codes(labels[known])
    curves = {"raw": out}
    temperature = None
    if calibration is not None and decoder.name in calibration.tasks:
        temperature = calibration.tasks[decoder.name].temperature
    if temperature is not None:  # an ordinal task has none
        curves[f"calibrated (T = {temperature:.3g})"] = calibration.scale({decoder.name: out})[
            decoder.name
        ]
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    for label, logits in curves.items():
        probabilities = decoder.probabilities(logits)
        table = reliability_bins(probabilities, codes, n_bins)
        ece = expected_calibration_error(probabilities, codes, n_bins)
        ax.plot(table["confidence"], table["accuracy"], marker="o", label=f"{label}, ECE {ece:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{decoder.name}: {len(codes)} labelled images", fontsize=10)
    return fig


def interval_figure(name, truth, lower, upper, coverage):
    """The figure of :func:`~sk_multitask.plotting.plot_intervals` from true values and
    the intervals' bounds.

    Parameters
    ----------
    name : str
        The task's name, for the titles.
    truth, lower, upper : array-like of shape (n_rows,)
        True values and the intervals' bounds; rows with a missing value are left out.
    coverage : float
        The intervals' coverage, for the legend and title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    true, low, high = (np.asarray(v, dtype=float) for v in (truth, lower, upper))
    kept = ~(np.isnan(true) | np.isnan(low) | np.isnan(high))
    if not kept.any():
        raise ValueError(f"y has no labelled cell for task {name!r}")
    true, low, high = true[kept], low[kept], high[kept]
    order = np.argsort((low + high) / 2, kind="stable")
    true, low, high = true[order], low[order], high[order]
    covered = (low <= true) & (true <= high)
    rank = np.arange(len(true))
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    band = f"{coverage:.0%} interval"
    ax.fill_between(rank, low, high, step="mid", color="lightgrey", label=band)
    ax.plot(rank, (low + high) / 2, color="grey", linewidth=1, label="prediction")
    ax.scatter(rank[covered], true[covered], s=8, color="tab:blue", label="true, inside")
    ax.scatter(rank[~covered], true[~covered], s=10, color="tab:red", label="true, outside")
    ax.set(xlabel="images, by prediction", ylabel=str(name))
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(
        f"{name}: {covered.mean():.1%} of {len(true)} labelled images inside the "
        f"{coverage:.0%} intervals (mean width {np.mean(high - low):.3g})",
        fontsize=10,
    )
    return fig

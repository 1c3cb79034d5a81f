"""Figures of what a fitted model learned: worst rows, training curves, confusions, batches.

matplotlib is imported inside each function, so that importing sk_multitask does not
import it. Every function returns a new :class:`matplotlib.figure.Figure` that pyplot
does not track: nothing is shown, nothing accumulates, no backend is switched. Save it
with ``fig.savefig("name.png")``; in Jupyter, with ``%matplotlib inline``, a figure that
is a cell's value is drawn.

Examples
--------
>>> from sk_multitask import MultiTaskImageEstimator
>>> from sk_multitask.datasets import make_multitask_images
>>> from sk_multitask.plotting import plot_history, plot_top_losses
>>> df = make_multitask_images(32, image_size=16, random_state=0)
>>> y = df[["color", "shape", "area"]]
>>> est = MultiTaskImageEstimator(
...     image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
...     image_size=16, max_epochs=1, valid_split="is_valid", random_state=0).fit(df, y)
>>> len(plot_top_losses(est, df, y, k=4).axes)
4
>>> [ax.get_title() for ax in plot_history(est).axes][:3]
['total loss', 'color: loss', 'color: accuracy']
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import pandas as pd
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .dataset import ImageDataset, train_transform
from .metrics import scorable_rows
from .outputs import OutputDecoder
from .sources import is_pixel_array, resolve_images
from .targets import (
    CLASSIFICATION,
    MULTILABEL,
    REGRESSION,
    check_targets,
    check_task,
    is_missing,
)

__all__ = [
    "confusion_figure",
    "plot_confusion_matrix",
    "plot_history",
    "plot_lr_find",
    "plot_lr_schedule",
    "plot_regression",
    "plot_top_losses",
    "regression_figure",
    "show_batch",
    "top_losses_figure",
]

#: The history metric plotted per task kind.
_KIND_METRICS = {CLASSIFICATION: "acc", REGRESSION: "mae", MULTILABEL: "f1"}
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


def plot_top_losses(estimator, X, y, k=9, task=None, ncols=3):
    """The ``k`` images with the largest loss, with every task's prediction and truth.

    Each image is shown as the network sees it (decoded and resized to the
    estimator's ``image_size_``), titled ``task prediction/truth`` for every task
    (``?`` for a missing truth; numbers to 3 significant digits) and, on a second
    line, its loss.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    X : image input, as for ``fit``
    y : DataFrame or Series
        True targets; tasks absent from ``y`` count as missing.
    k : int, default=9
    task : hashable, default=None
        Rank by this task's loss (over the rows where it is labelled); None: by the
        combined loss. See :meth:`MultiTaskImageEstimator.top_losses`.
    ncols : int, default=3
        Images per row of the grid.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per image, largest loss first; the suptitle names the loss.
    """
    check_is_fitted(estimator)
    _check_positive(ncols, "ncols")
    top = estimator.top_losses(X, y, k=k, task=task)
    ranked_by = "combined loss" if task is None else f"{task} loss"
    return top_losses_figure(estimator, X, top, ranked_by, ncols)


def top_losses_figure(estimator, X, top, ranked_by="combined loss", ncols=3):
    """The figure of :func:`plot_top_losses` from a computed ``top_losses`` table.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    X : image input the table was computed on
    top : DataFrame
        As returned by :meth:`MultiTaskImageEstimator.top_losses`.
    ranked_by : str, default="combined loss"
        What the rows are ranked by, for the title.
    ncols : int, default=3

    Returns
    -------
    matplotlib.figure.Figure
    """
    references = top["image"].to_numpy()
    if is_pixel_array(X):  # references are positions in the array
        sources = X[references.astype(np.intp)]
    else:
        sources, _ = resolve_images(
            pd.Series(references, dtype=object),
            image_root=estimator.image_root,
            storage_options=estimator.storage_options,
        )
    titles = [_top_loss_title(estimator.tasks_, row) for _, row in top.iterrows()]
    dataset = ImageDataset(sources, image_size=estimator.image_size_)
    return _image_grid(dataset, titles, ncols, f"Largest {ranked_by} (prediction/truth)")


def plot_history(estimator):
    """Training curves: the total loss, then each task's loss and metric per epoch.

    The first row shows the total loss; then each task has a row with its loss (left)
    and its metric (right): accuracy for a classification, the mean absolute error in
    original units for a regression, the micro F1 over labels for a multi-label task.
    Every axes has a ``train`` line and, when the
    estimator held out validation rows, a ``valid`` line.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator

    Returns
    -------
    matplotlib.figure.Figure
        ``1 + 2 * n_tasks`` axes, titled ``"total loss"``, ``"<task>: loss"`` and
        ``"<task>: accuracy"``, ``"<task>: mean absolute error"`` or
        ``"<task>: micro F1"``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    check_is_fitted(estimator)
    fig = Figure(figsize=(9, 2.3 * (1 + len(estimator.tasks_))), layout="constrained")
    grid = fig.add_gridspec(1 + len(estimator.tasks_), 2)
    panels = [(grid[0, :], "total loss", "loss", "loss")]
    for row, (name, task) in enumerate(estimator.tasks_.items(), start=1):
        metric = _KIND_METRICS[task.kind]
        title, label = _METRIC_LABELS[metric]
        panels += [
            (grid[row, 0], f"{name}: loss", "loss", f"{name}_loss"),
            (grid[row, 1], f"{name}: {title}", label, f"{name}_{metric}"),
        ]
    history = estimator.history_
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


def plot_lr_find(result):
    """The loss against the learning rate of :meth:`~sk_multitask.MultiTaskImageEstimator.lr_find`.

    Parameters
    ----------
    result : LRFindResult
        What ``lr_find`` returned: ``(history, suggested_lr)``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes, the rate on a log scale: the loss of each batch (faint), the smoothed
        loss, and the suggested rate marked.

    Examples
    --------
    >>> import pandas as pd
    >>> from sk_multitask.lr_finder import LRFindResult
    >>> history = pd.DataFrame({"lr": [1e-4, 1e-3, 1e-2], "loss": [2.0, 1.5, 3.0],
    ...                         "smoothed_loss": [2.0, 1.7, 2.2]})
    >>> plot_lr_find(LRFindResult(history, 1e-3)).axes[0].get_xscale()
    'log'
    """
    from matplotlib.figure import Figure

    history, suggested = result
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(history["lr"], history["loss"], color="0.75", linewidth=1, label="loss")
    ax.plot(history["lr"], history["smoothed_loss"], label="smoothed loss")
    ax.axvline(suggested, color="C3", linestyle="--", label=f"suggested: {suggested:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    losses = history[["loss", "smoothed_loss"]].to_numpy()
    finite = losses[np.isfinite(losses)]
    if len(finite):  # the divergence at the end would flatten the curve
        low, high = finite.min(), history["smoothed_loss"].iloc[0]
        ax.set_ylim(low - 0.05 * (high - low + 1e-12), max(high, low) * 1.3)
    ax.legend(fontsize=8)
    ax.set_title("Learning-rate finder")
    return fig


def plot_lr_schedule(estimator):
    """The heads' and the backbone's learning rate at every training batch of the fit.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator

    Returns
    -------
    matplotlib.figure.Figure
        One axes: the heads' and the backbone's rate at every training batch (the batch
        history's ``event_lr`` and ``event_backbone_lr``), with epochs as the x axis.
    """
    from matplotlib.figure import Figure

    check_is_fitted(estimator)
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    x, rates = [], {"event_lr": [], "event_backbone_lr": []}
    for row in estimator.history_:
        batches = [batch for batch in row["batches"] if "event_lr" in batch]  # training
        x += list(row["epoch"] - 1 + np.arange(len(batches)) / max(len(batches), 1))
        for key, values in rates.items():
            values += [batch.get(key, np.nan) for batch in batches]
    ax.plot(x, rates["event_lr"], label="heads")
    ax.plot(x, rates["event_backbone_lr"], label="backbone (0: frozen)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=8)
    ax.set_title("Learning-rate schedule")
    return fig


def plot_confusion_matrix(estimator, X, y, task, normalize=None):
    """The confusion matrix of one classification task, on its labelled cells.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    X : image input, as for ``fit``
    y : DataFrame or Series
        True targets, with a column for ``task``; missing cells are left out.
    task : hashable
        A classification task of the estimator.
    normalize : {"true", "pred", "all"}, default=None
        As in :func:`sklearn.metrics.confusion_matrix`; None: counts.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: rows are the true classes, columns the predicted ones, both in the
        order of the task's ``classes_``.
    """
    check_is_fitted(estimator)
    fitted = _fitted_task(estimator, task, CLASSIFICATION, "a confusion matrix")
    return confusion_figure(fitted, *_truth_and_prediction(estimator, X, y, task), normalize)


def plot_regression(estimator, X, y, task):
    """Predicted against true values of one regression task, and the residuals.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    X : image input, as for ``fit``
    y : DataFrame or Series
        True targets, with a column for ``task``; missing cells are left out.
    task : hashable
        A regression task of the estimator.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: predicted against true (with the diagonal), and the residual
        (true - predicted) against the prediction, both in the target's units.
    """
    check_is_fitted(estimator)
    _fitted_task(estimator, task, REGRESSION, "a predicted-against-true plot")
    return regression_figure(task, *_truth_and_prediction(estimator, X, y, task))


def regression_figure(name, truth, predicted):
    """The figure of :func:`plot_regression` from true and predicted Series.

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


def show_batch(estimator, X, y, n=9, ncols=3, random_state=None):
    """A random sample of training images as the network sees them, with their labels.

    The images are decoded, resized to the estimator's ``image_size_`` and, when it
    was fitted with ``augment=True``, augmented as in training. Each is titled with
    its targets in ``y`` (``?`` for a missing cell).

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    X : image input, as for ``fit``
    y : DataFrame or Series
        The targets of ``X``'s rows (some or all tasks).
    n : int, default=9
        How many images; at most the number of rows of ``X``.
    ncols : int, default=3
        Images per row of the grid.
    random_state : int, RandomState instance or None, default=None
        Seeds which rows are drawn and their augmentation.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per image.
    """
    check_is_fitted(estimator)
    _check_positive(n, "n")
    _check_positive(ncols, "ncols")
    images, _ = resolve_images(
        X, estimator.image_col, estimator.image_root, storage_options=estimator.storage_options
    )
    y = check_targets(y, estimator.tasks_, len(images))
    rng = check_random_state(random_state)
    rows = rng.choice(len(images), size=min(n, len(images)), replace=False)
    titles = [
        " | ".join(
            f"{name} {_format_value(estimator.tasks_[name], value)}"
            for name, value in y.iloc[row].items()
        )
        for row in rows
    ]
    dataset = ImageDataset(
        images[rows], image_size=estimator.image_size_, transform=train_transform(estimator.augment)
    )
    height, width = estimator.image_size_
    how = "augmented" if estimator.augment else "not augmented"
    # The augmentation draws from torch's global generator: seed it, then restore it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        return _image_grid(dataset, titles, ncols, f"Training images at {height}×{width} px, {how}")


# -- helpers -----------------------------------------------------------------------


def _check_positive(value, name):
    if not (isinstance(value, Integral) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _format_number(value):
    """2-3 significant digits, without an exponent below 1000."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _format_value(task, value):
    """A label as it came in, a regression value to 3 digits, a multi-label cell as
    ``[a, b]``, ``?`` when missing."""
    if is_missing(value):
        return "?"
    if task.kind == MULTILABEL:
        return "[" + ", ".join(map(str, value)) + "]"
    return _format_number(value) if task.kind == REGRESSION else str(value)


def _top_loss_title(tasks, row):
    """``color red/blue | area 0.31/0.62`` then ``loss 2.3`` on a second line."""
    fields = " | ".join(
        f"{name} {_format_value(task, row[f'{name}_pred'])}/"
        f"{_format_value(task, row[f'{name}_true'])}"
        for name, task in tasks.items()
    )
    return f"{fields}\nloss {_format_number(row['loss'])}"


def _image_grid(dataset, titles, ncols, suptitle):
    """One titled, axis-less image per item of ``dataset``, ``ncols`` to a row."""
    from matplotlib.figure import Figure

    ncols = min(ncols, len(titles))
    nrows = math.ceil(len(titles) / ncols)
    lines = [title.splitlines() for title in titles]
    width = max(2.2, _CHAR_WIDTH * max(len(line) for title in lines for line in title))
    image_height, image_width = dataset.image_size
    side = min(width, 2.5)  # inches: wide titles widen the cells, not the images
    height = side * image_height / image_width + 0.2 * max(map(len, lines))
    fig = Figure(figsize=(ncols * width, nrows * height + 0.4), layout="constrained")
    for i, title in enumerate(titles):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(dataset[i][0].permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=_TITLE_SIZE)
        ax.set_axis_off()
    fig.suptitle(suptitle)
    return fig


def _fitted_task(estimator, task, kind, figure):
    """The fitted task named ``task``, which ``figure`` needs to be of ``kind``."""
    check_task(task, estimator.tasks_)
    fitted = estimator.tasks_[task]
    if fitted.kind != kind:
        raise ValueError(f"task {task!r} is a {fitted.kind}; {figure} needs a {kind} task")
    return fitted


def _truth_and_prediction(estimator, X, y, task):
    """``task``'s column of ``y`` and its prediction for ``X``, as Series, on the rows
    that can be scored (:func:`sk_multitask.metrics.scorable_rows`)."""
    outputs, index = estimator.predict_raw(X)
    truth = check_targets(y, estimator.tasks_, len(index))
    if task not in truth.columns:
        raise ValueError(f"y has no column {task!r}; its columns are {list(truth.columns)}")
    scored = scorable_rows(truth[task], outputs[task])
    decoder = OutputDecoder.from_task(estimator.tasks_[task])
    predicted = decoder.decode(outputs[task][scored], index[scored])
    return truth[task].iloc[scored], predicted


def confusion_figure(task, truth, predicted, normalize=None):
    """The figure of :func:`plot_confusion_matrix` from true and predicted Series.

    Parameters
    ----------
    task : Task
        The fitted classification task (``est.tasks_[name]``): its classes order the
        matrix, which counts the labelled cells of ``truth`` of a class it knows (the
        title says how many others there were).
    truth, predicted : Series
        True and predicted labels, aligned.
    normalize : {"true", "pred", "all"} or None, default=None
        As scikit-learn's ``confusion_matrix``.

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

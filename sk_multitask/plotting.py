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

from numbers import Integral

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params
from sklearn.utils.validation import check_is_fitted

from .evaluation._figures import (
    confusion_figure,
    explain_figure,
    format_value,
    history_figure,
    image_grid,
    interval_figure,
    regression_figure,
    reliability_figure,
    top_losses_figure,
)
from .evaluation._metrics import scorable_rows
from .inputs._dataset import ImageDataset, train_transform
from .inputs._decoding import decode_image
from .inputs._sources import input_rows, resolve_images
from .predicting._protocol import checked_outputs, interval_calibration
from .targets import LABEL_KINDS, REGRESSION, check_aligned, check_targets, check_task
from .targets._outputs import OutputDecoder, decoders

__all__ = [
    "confusion_figure",
    "explain_figure",
    "interval_figure",
    "plot_confusion_matrix",
    "plot_explain",
    "plot_history",
    "plot_intervals",
    "plot_lr_find",
    "plot_lr_schedule",
    "plot_regression",
    "plot_reliability",
    "plot_top_losses",
    "regression_figure",
    "reliability_figure",
    "show_batch",
    "top_losses_figure",
]


#: A positive number of images or columns of a grid.
_COUNT = [Interval(Integral, 1, None, closed="left")]


@validate_params(
    {"ncols": _COUNT, "heatmap": ["boolean"]}, prefer_skip_nested_validation=False
)
def plot_top_losses(estimator, X, y, k=9, task=None, ncols=3, heatmap=False):
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
    heatmap : bool, default=False
        Show each image once per task with that task's heatmap over it (where the
        network looked for its prediction: :meth:`MultiTaskImageEstimator.explain`),
        one row of panels per image (``ncols`` is then the number of tasks).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per image (per image and task with ``heatmap``), largest loss first; the
        suptitle names the loss.
    """
    check_is_fitted(estimator)
    top = estimator.top_losses(X, y, k=k, task=task)
    ranked_by = "combined loss" if task is None else f"{task} loss"
    return top_losses_figure(estimator, X, top, ranked_by, ncols, heatmap=heatmap)


@validate_params({"n": _COUNT, "ncols": _COUNT}, prefer_skip_nested_validation=False)
def plot_explain(estimator, X, task, label=None, n=9, ncols=3, target_layer=None):
    """Where the network looked for one task: the first ``n`` images with their heatmaps.

    Each image is shown as the network sees it, with the task's Grad-CAM heatmap over it
    (:meth:`MultiTaskImageEstimator.explain`: red where the feature map raised the
    explained output most, nothing where no part did), titled with the task's
    prediction.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    X : image input, as for ``fit``
    task : hashable
        One of the estimator's tasks.
    label : object, default=None
        Explain this class (or label) on every image; None: each image's prediction.
    n : int, default=9
        How many images: the first ``n`` rows of ``X``.
    ncols : int, default=3
        Images per row of the grid.
    target_layer : str or torch.nn.Module, default=None
        The backbone's layer to weigh, as for ``explain``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per image. An image skipped as unreadable (``on_bad_image="skip"``)
        is titled so, without a heatmap.
    """
    check_is_fitted(estimator)
    images, _ = resolve_images(
        X, estimator.image_col, estimator.image_root, check_files=False,
        storage_options=estimator.storage_options,
    )
    rows = input_rows(X, estimator.image_col, range(min(n, len(images))))
    heatmaps = estimator.explain(rows, task, label, target_layer=target_layer)
    predicted = estimator.predict(rows)[task]
    fitted = estimator.tasks_[task]
    shown, titles = [], []
    size = estimator.image_size_
    for source, heatmap, value in zip(images[: len(rows)], heatmaps, predicted, strict=True):
        readable = np.isfinite(heatmap).all()
        blank = np.full((*size, 3), 128, dtype=np.uint8)
        shown.append(decode_image(source, size) if readable else blank)
        titles.append(f"{task} {format_value(fitted, value)}" if readable else "unreadable")
    what = "each image's prediction" if label is None else f"{label!r} on every image"
    suptitle = f"Where the network looked for {task}: Grad-CAM of {what}"
    return explain_figure(shown, heatmaps, titles, ncols, suptitle)


def plot_history(estimator):
    """Training curves: the total loss, then each task's loss and metric per epoch.

    The axes and their titles are :func:`sk_multitask.evaluation._figures.history_figure`'s.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator

    Returns
    -------
    matplotlib.figure.Figure
        One row of axes for the total loss, then one per task (its loss, its metric).
    """
    check_is_fitted(estimator)
    return history_figure(estimator.tasks_, estimator.history_)


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
    >>> from sk_multitask.training._lr_finder import LRFindResult
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
    normalize : str or None, default=None
        ``"true"``, ``"pred"`` or ``"all"``, as in
        :func:`sklearn.metrics.confusion_matrix`; None: counts.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: rows are the true classes, columns the predicted ones, both in the
        order of the task's ``classes_``.
    """
    check_is_fitted(estimator)
    fitted = _fitted_task(estimator, task, LABEL_KINDS, "a confusion matrix")
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
    _fitted_task(estimator, task, (REGRESSION,), "a predicted-against-true plot")
    return regression_figure(task, *_truth_and_prediction(estimator, X, y, task))


@validate_params({"n": _COUNT, "ncols": _COUNT}, prefer_skip_nested_validation=False)
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
    check_aligned(X, y)
    images, _ = resolve_images(
        X, estimator.image_col, estimator.image_root, storage_options=estimator.storage_options
    )
    y = check_targets(y, estimator.tasks_, len(images))
    rng = check_random_state(random_state)
    rows = rng.choice(len(images), size=min(n, len(images)), replace=False)
    titles = [
        " | ".join(
            f"{name} {format_value(estimator.tasks_[name], value)}"
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
        images = [dataset[i][0].permute(1, 2, 0).numpy() for i in range(len(dataset))]
        return image_grid(images, titles, ncols, f"Training images at {height}×{width} px, {how}")


# -- helpers -----------------------------------------------------------------------


def _fitted_task(estimator, task, kinds, figure):
    """The fitted task named ``task``, which ``figure`` needs to be of one of ``kinds``."""
    check_task(task, estimator.tasks_)
    fitted = estimator.tasks_[task]
    if fitted.kind not in kinds:
        article = "an" if fitted.kind[0] in "aeiou" else "a"
        needs = " or ".join(kinds)
        raise ValueError(f"task {task!r} is {article} {fitted.kind}; {figure} needs a {needs} task")
    return fitted


def _truth_and_prediction(estimator, X, y, task):
    """``task``'s column of ``y`` and its prediction for ``X``, as Series, on the rows
    that can be scored (:func:`sk_multitask.evaluation._metrics.scorable_rows`)."""
    outputs, index, y, _ = checked_outputs(estimator, X, y)
    truth = _task_column(y, task)
    scored = scorable_rows(truth, outputs[task])
    decoder = OutputDecoder.from_task(estimator.tasks_[task])
    predicted = decoder.decode(outputs[task][scored], index[scored])
    return truth.iloc[scored], predicted


def _task_column(y, task):
    """``task``'s column of the checked targets ``y``."""
    if task not in y.columns:
        raise ValueError(f"y has no column {task!r}; its columns are {list(y.columns)}")
    return y[task]


def plot_reliability(estimator, X, y, task, n_bins=10):
    """The reliability diagram of one classification task: accuracy against confidence.

    Parameters
    ----------
    estimator, X, y, task
        As for :func:`plot_confusion_matrix`.
    n_bins : int, default=10
        Equal-width confidence bins.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: per bin, how often the top class is right against its mean top
        probability, for the raw probabilities and (once calibrated) the
        temperature-scaled ones, each with its ECE; the diagonal is perfect calibration.
    """
    check_is_fitted(estimator)
    decoder = OutputDecoder.from_task(
        _fitted_task(estimator, task, LABEL_KINDS, "a reliability diagram")
    )
    outputs, _, y, _ = checked_outputs(estimator, X, y)
    truth = _task_column(y, task)
    calibration = getattr(estimator, "calibration_", None)
    return reliability_figure(decoder, outputs[task], truth, calibration, n_bins)


def plot_intervals(estimator, X, y, task, coverage=0.9):
    """The calibrated prediction intervals of one regression task, with the truth.

    Parameters
    ----------
    estimator, X, y, task
        As for :func:`plot_regression`; ``estimator`` calibrated (``calibration_``).
    coverage : float, default=0.9
        As in :meth:`~sk_multitask.MultiTaskImageEstimator.predict_interval`.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: the rows sorted by prediction, each interval a grey band, the true
        values as points (red where outside their interval); the title gives the
        measured coverage.
    """
    check_is_fitted(estimator)
    _fitted_task(estimator, task, (REGRESSION,), "an interval plot")
    calibration, coverage = interval_calibration(estimator, coverage, [task])
    outputs, index, y, _ = checked_outputs(estimator, X, y)
    intervals = calibration.intervals(decoders(estimator.tasks_), outputs, index, coverage)
    truth = _task_column(y, task)
    lower, upper = intervals[task, "lower"], intervals[task, "upper"]
    return interval_figure(task, truth, lower, upper, coverage)

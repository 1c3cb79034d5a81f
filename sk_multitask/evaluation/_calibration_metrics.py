"""How sure a model is, measured, torch-free: calibration error and reliability bins of
probabilities, coverage and size of intervals and prediction sets.

:mod:`sk_multitask.predicting._calibration` reports these after ``calibrate`` and
:mod:`sk_multitask.evaluation._figures` draws the reliability diagram from them; the scores of
predictions themselves are :mod:`sk_multitask.evaluation._metrics`'. Imports numpy and pandas only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def reliability_bins(probabilities, codes, n_bins=10, sample_weight=None):
    """The reliability table of a classification: its rows binned by their top
    probability (the confidence) into ``n_bins`` equal-width bins.

    Parameters
    ----------
    probabilities : array (N, n_classes)
    codes : array of int (N,)
        The true classes' output positions.
    n_bins : int, default=10
    sample_weight : array (N,), default=None
        Row weights: the bins' means are weighted, and ``weight`` sums them.

    Returns
    -------
    DataFrame
        One row per non-empty bin: ``confidence`` (mean top probability), ``accuracy``
        (how often the top class is the truth), ``count`` and ``weight`` (the count,
        without ``sample_weight``).

    Examples
    --------
    >>> import numpy as np
    >>> reliability_bins(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 1]), n_bins=2)
       confidence  accuracy  count  weight
    1        0.85       0.5      2     2.0
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(codes)
    weight = np.ones(len(confidence)) if sample_weight is None else np.asarray(sample_weight)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    frame = pd.DataFrame(
        {"bin": bins, "confidence": weight * confidence, "accuracy": weight * correct,
         "count": 1, "weight": weight.astype(np.float64)}
    )  # fmt: skip
    table = frame.groupby("bin").sum()
    table[["confidence", "accuracy"]] = table[["confidence", "accuracy"]].div(
        table["weight"], axis=0
    )
    table.index.name = None
    return table


def expected_calibration_error(probabilities, codes, n_bins=15, sample_weight=None):
    """The expected calibration error (ECE, Guo et al. 2017): the mean over the rows'
    confidence bins (:func:`reliability_bins`) of ``|accuracy - confidence|``, weighted by
    the bins' counts; 0 for a perfectly calibrated classifier.

    Examples
    --------
    >>> import numpy as np
    >>> round(expected_calibration_error(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 1])), 2)
    0.45
    """
    table = reliability_bins(probabilities, codes, n_bins, sample_weight)
    weights = table["weight"] / table["weight"].sum()
    return float((weights * (table["accuracy"] - table["confidence"]).abs()).sum())


def interval_scores(truth, lower, upper, sample_weight=None):
    """``(coverage, mean_width)`` of regression intervals: how often ``lower <= truth <=
    upper``, and the mean of ``upper - lower`` (weighted by ``sample_weight``).

    Examples
    --------
    >>> interval_scores([1.0, 5.0], [0.0, 0.0], [2.0, 2.0])
    (0.5, 2.0)
    """
    truth, lower, upper = (np.asarray(v, dtype=np.float64) for v in (truth, lower, upper))
    covered = (lower <= truth) & (truth <= upper)
    return (
        float(np.average(covered, weights=sample_weight)),
        float(np.average(upper - lower, weights=sample_weight)),
    )


def set_scores(truth, sets, sample_weight=None):
    """``(coverage, mean_size)`` of prediction sets: how often the truth is in its
    row's set, and the sets' mean size (weighted by ``sample_weight``).

    Examples
    --------
    >>> set_scores(["a", "b"], [["a"], ["a", "c"]])
    (0.5, 1.5)
    """
    covered = [label in labels for label, labels in zip(truth, sets, strict=True)]
    sizes = [len(labels) for labels in sets]
    return (
        float(np.average(covered, weights=sample_weight)),
        float(np.average(sizes, weights=sample_weight)),
    )

"""How sure a model is, measured, torch-free: calibration error and reliability bins of
probabilities, coverage and size of intervals and prediction sets.

:mod:`sk_multitask.predicting._calibration` reports these after ``calibrate`` and
:mod:`sk_multitask.evaluation._figures` draws the reliability diagram from them; the scores of
predictions themselves are :mod:`sk_multitask.evaluation._metrics`'. Imports numpy and pandas only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def reliability_bins(probabilities, codes, n_bins=10):
    """The reliability table of a classification: its rows binned by their top
    probability (the confidence) into ``n_bins`` equal-width bins.

    Parameters
    ----------
    probabilities : array (N, n_classes)
    codes : array of int (N,)
        The true classes' output positions.
    n_bins : int, default=10

    Returns
    -------
    DataFrame
        One row per non-empty bin: ``confidence`` (mean top probability), ``accuracy``
        (how often the top class is the truth) and ``count``.

    Examples
    --------
    >>> import numpy as np
    >>> reliability_bins(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 1]), n_bins=2)
       confidence  accuracy  count
    1        0.85       0.5      2
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(codes)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    frame = pd.DataFrame({"bin": bins, "confidence": confidence, "accuracy": correct})
    table = frame.groupby("bin").agg(
        confidence=("confidence", "mean"), accuracy=("accuracy", "mean"),
        count=("confidence", "size"),
    )  # fmt: skip
    table.index.name = None
    return table


def expected_calibration_error(probabilities, codes, n_bins=15):
    """The expected calibration error (ECE, Guo et al. 2017): the mean over the rows'
    confidence bins (:func:`reliability_bins`) of ``|accuracy - confidence|``, weighted by
    the bins' counts; 0 for a perfectly calibrated classifier.

    Examples
    --------
    >>> import numpy as np
    >>> round(expected_calibration_error(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 1])), 2)
    0.45
    """
    table = reliability_bins(probabilities, codes, n_bins)
    weights = table["count"] / table["count"].sum()
    return float((weights * (table["accuracy"] - table["confidence"]).abs()).sum())


def interval_scores(truth, lower, upper):
    """``(coverage, mean_width)`` of regression intervals: how often ``lower <= truth <=
    upper``, and the mean of ``upper - lower``.

    Examples
    --------
    >>> interval_scores([1.0, 5.0], [0.0, 0.0], [2.0, 2.0])
    (0.5, 2.0)
    """
    truth, lower, upper = (np.asarray(v, dtype=np.float64) for v in (truth, lower, upper))
    covered = (lower <= truth) & (truth <= upper)
    return float(covered.mean()), float((upper - lower).mean())


def set_scores(truth, sets):
    """``(coverage, mean_size)`` of prediction sets: how often the truth is in its
    row's set, and the sets' mean size.

    Examples
    --------
    >>> set_scores(["a", "b"], [["a"], ["a", "c"]])
    (0.5, 1.5)
    """
    covered = [label in labels for label, labels in zip(truth, sets, strict=True)]
    return float(np.mean(covered)), float(np.mean([len(labels) for labels in sets]))

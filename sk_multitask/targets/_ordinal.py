"""Ordinal tasks: their levels, and CORN's outputs to probabilities, levels and ranges.

Torch-free (numpy and pandas): the estimator, the ONNX predictor, the per-cell losses and
the calibration read an ordinal head's outputs through this module, so that they agree.
Its torch twin, for training and for explaining a level, is
:func:`sk_multitask.network._loss.corn_log_probabilities`.

An ordinal task of ``K`` ordered levels has a head of ``K - 1`` outputs, CORN's
(Shi, Cao and Raschka, "Deep neural networks for rank-consistent ordinal regression
based on conditional training sets", 2023): output ``j`` is the logit of the
*conditional* probability ``P(y > j | y >= j)``. The chain rule gives
``P(y > j) = prod_{i <= j} P(y > i | y >= i)``, a product of numbers below 1, so the
cumulative probabilities never increase with ``j`` whatever the weights (rank
consistency), and ``P(y = k) = P(y >= k) P(y = k | y >= k)`` is a distribution over the
levels (non-negative, summing to 1). Training on output ``j`` only the rows with
``y >= j`` is the same as minimising the negative log-likelihood of the true level under
that distribution, the per-cell loss :func:`level_nll`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "LevelEncoder",
    "level_log_probabilities",
    "level_nll",
    "level_ranges",
    "median_levels",
    "tail_scores",
]


class LevelEncoder:
    """An ordinal task's levels, in their order, and their positions.

    Parameters
    ----------
    levels : array-like
        The levels from lowest to highest: an ordered categorical's categories, or
        the distinct integer values, ascending.

    Attributes
    ----------
    classes_ : ndarray
        The levels, in order: the columns of ``predict_proba``.

    Examples
    --------
    >>> encoder = LevelEncoder(["low", "mid", "high"])
    >>> encoder.transform(["high", "low"])
    array([2, 0])
    """

    def __init__(self, levels):
        self.classes_ = np.asarray(levels)

    def transform(self, values):
        """The positions of ``values`` among the levels (``-1`` for a value not one)."""
        return pd.Index(self.classes_).get_indexer(pd.Index(np.asarray(values)))

    def inverse_transform(self, positions):
        """The levels at ``positions``."""
        return self.classes_[np.asarray(positions, dtype=np.intp)]


def _log_sigmoid(z):
    # log(1 / (1 + exp(-z))), finite for logits of any size.
    return -np.logaddexp(0.0, -z)


def level_log_probabilities(logits):
    """``log P(y = k)`` of each level from CORN logits.

    Parameters
    ----------
    logits : array-like of shape (n_rows, n_levels - 1)

    Returns
    -------
    ndarray of shape (n_rows, n_levels), float64
        A row of NaN logits (an image that could not be read) gives a row of NaN.

    Examples
    --------
    >>> np.exp(level_log_probabilities(np.zeros((1, 2)))).round(3)  # a fair coin per step
    array([[0.5 , 0.25, 0.25]])
    """
    z = np.asarray(logits, dtype=np.float64)
    first = np.zeros((len(z), 1))
    reach = np.concatenate([first, np.cumsum(_log_sigmoid(z), axis=1)], axis=1)  # y >= k
    stay = np.concatenate([_log_sigmoid(-z), first], axis=1)  # y = k given y >= k
    return reach + stay


def median_levels(logits):
    """The median level's position of each row: how many ``P(y > j)`` exceed 0.5.

    CORN's prediction rule; the median minimises the expected absolute error in levels.
    Its probabilities may put more mass on another level than on the median: the median
    is the level with less than half of the mass on either side.

    Examples
    --------
    >>> median_levels(np.array([[3.0, 3.0, -3.0], [-3.0, 0.0, 0.0]]))
    array([2, 0])
    """
    z = np.asarray(logits, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # NaN rows (unreadable images): decoded as missing
        return (np.cumsum(_log_sigmoid(z), axis=1) > np.log(0.5)).sum(axis=1)


def level_nll(logits, positions):
    """Each row's negative log-likelihood of its true level ``positions``: the sum of
    CORN's binary cross-entropies over the conditional outputs that row trains.

    Examples
    --------
    >>> round(float(level_nll(np.zeros((1, 2)), np.array([1]))[0]), 6)  # log 4
    1.386294
    """
    log_p = level_log_probabilities(logits)
    return -np.take_along_axis(log_p, np.asarray(positions, dtype=np.intp)[:, None], axis=1)[:, 0]


def tail_scores(probabilities):
    """Each level's conformal score: ``max(P(y < k), P(y > k))``, how far into a tail of
    the predicted distribution level ``k`` lies.

    Lowest at the median; it never decreases away from it on either side, so that the
    levels scoring at most a threshold are a contiguous range (Chernozhukov, Wüthrich
    and Zhu's distributional conformal prediction, 2021, for ordered levels).

    Parameters
    ----------
    probabilities : ndarray of shape (n_rows, n_levels)

    Returns
    -------
    ndarray of shape (n_rows, n_levels), in [0, 1]
    """
    p = np.asarray(probabilities, dtype=np.float64)
    below = np.cumsum(p, axis=1) - p  # sums, not 1 - a sum: no cancellation near 0
    above = np.cumsum(p[:, ::-1], axis=1)[:, ::-1] - p
    return np.clip(np.maximum(below, above), 0.0, 1.0)


def level_ranges(probabilities, predicted, q):
    """Conformal ranges of levels: per row, the positions ``(lower, upper)`` of the
    smallest range holding every level whose :func:`tail_scores` is at most ``q``, and
    the predicted level ``predicted`` (so that a range is never empty).

    Examples
    --------
    >>> p = np.array([[0.1, 0.6, 0.2, 0.1]])
    >>> level_ranges(p, np.array([1]), 0.75)
    (array([1]), array([2]))
    """
    inside = tail_scores(probabilities) <= q
    inside[np.arange(len(inside)), predicted] = True
    lower = inside.argmax(axis=1)
    upper = inside.shape[1] - 1 - inside[:, ::-1].argmax(axis=1)
    return lower, upper

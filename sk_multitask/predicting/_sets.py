"""Prediction sets of a classification, from its calibrated probabilities; torch-free.

Split-conformal sets with the LAC score ``1 - p(true class)`` (Sadinle et al. 2019):
every class whose calibrated probability is at least ``1 - q``, ``q`` the conformal
quantile of the calibration scores (:mod:`sk_multitask.predicting._calibration`). Such a
set may be empty: on a row where no class is likely enough, about one held-out row in
ten on digits at coverage 0.9. An empty set tells a user nothing, so
``predict_interval(..., set_method=)`` offers:

- ``"lac_top"`` (the default): the LAC set with the most probable class always in. It is
  the LAC set wherever that is not empty, so it keeps LAC's small sets (the smallest on
  average for the coverage); it holds the LAC set, so it holds the truth at least as
  often (the guarantee stands); it costs at most one class on the rows whose LAC set
  was empty. APS (Romano et al. 2020) is never empty either, but its sets are larger on
  average for the same coverage (Angelopoulos et al. 2021), and it needs scores of its
  own;
- ``"lac"``: the plain LAC set, possibly empty (exactly at the guarantee's size).
"""

from __future__ import annotations

import numpy as np

#: The rules of :func:`prediction_sets`; the first is the default.
SET_METHODS = ("lac_top", "lac")


def check_set_method(set_method):
    """``set_method`` if it is one of :data:`SET_METHODS`, else a one-line ValueError.

    Examples
    --------
    >>> check_set_method("lac")
    'lac'
    """
    if not (isinstance(set_method, str) and set_method in SET_METHODS):
        raise ValueError(f"set_method must be one of {list(SET_METHODS)}; got {set_method!r}")
    return set_method


def prediction_sets(probabilities, classes, q, set_method="lac_top"):
    """Each row's set of ``classes``: those whose probability is at least ``1 - q``
    (and, with ``"lac_top"``, the most probable one); None for a missing (NaN) row.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    >>> prediction_sets(p, ["a", "b", "c"], 0.4, "lac")
    [[], ['a']]
    >>> prediction_sets(p, ["a", "b", "c"], 0.4)
    [['a'], ['a']]
    """
    check_set_method(set_method)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    classes = np.asarray(list(classes), dtype=object)
    chosen = 1 - probabilities <= q
    if set_method == "lac_top" and len(probabilities):
        chosen[np.arange(len(probabilities)), probabilities.argmax(axis=1)] = True
    return [
        None if np.isnan(row).any() else classes[kept].tolist()
        for row, kept in zip(probabilities, chosen, strict=True)
    ]

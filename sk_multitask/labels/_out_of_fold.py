"""Out-of-fold predictions of every task of a multi-task estimator (torch-free).

A label can only be judged against a prediction of a model that did not learn it. One
fit per fold serves every task: a row is held out for all its tasks at once, so the
fold's clone is fitted on the other rows (every task, their missing cells masked as in
any fit) and predicts the rows it held out. The folds are dealt among the rows that have
a labelled cell, after sorting them by which tasks they label and by their class in each
classification task, so that every task's labelled rows, and every class, spread evenly
over the folds. ``groups`` keeps a group's rows in one fold (scikit-learn's
``GroupKFold``); a splitter of one's own must hold every labelled row out once, as for
``cross_val_predict``. The folds run through joblib (``n_jobs``), so under
``joblib.parallel_backend("dask")`` they run on a Dask cluster, as searches do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import pandas as pd

from ..exceptions import LabelsWarning
from ..predicting._calibration import calibrated_outputs
from ..targets._outputs import decoders, prediction_frame, probability_frames

#: What ``cv="prefit"`` judges, said in the result's ``attrs["predictions"]``.
PREFIT = "the fitted model's predictions, on rows it did not train on"


@dataclass(frozen=True)
class Predictions:
    """A model's predictions of the rows to judge, indexed by their position in ``X``.

    Attributes
    ----------
    kinds : dict
        Task name to its kind.
    proba : dict
        Task name to a DataFrame of probabilities (class labels as columns) for each
        classification and multi-label task.
    predicted : DataFrame
        One column per task: labels, label lists or values.
    how : str
        How they were made: out of fold, or the fitted model's on held-out rows.
    """

    kinds: dict
    proba: dict
    predicted: pd.DataFrame
    how: str


def model_predictions(model, outputs, positions, how=PREFIT):
    """The :class:`Predictions` of a fitted model from its raw outputs (``predict_raw``)
    of the rows at ``positions``; probabilities calibrated where the model is."""
    fitted = decoders(model.tasks_)
    calibrated = calibrated_outputs(getattr(model, "calibration_", None), outputs)
    return Predictions(
        {name: task.kind for name, task in fitted.items()},
        probability_frames(fitted, calibrated, positions),
        prediction_frame(fitted, outputs, positions),
        how,
    )


def check_cv(cv, n_labelled):
    """``cv`` as a number of folds or a splitter, checked against the rows that have a
    labelled cell: a one-line ValueError for more folds than rows."""
    if isinstance(cv, Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"cv must be at least 2 folds, 'prefit' or a splitter; got {cv}")
        if cv > n_labelled:
            raise ValueError(
                f"cv={cv} folds need at least {cv} rows with a labelled cell; y has {n_labelled}"
            )
        return int(cv)
    if hasattr(cv, "split") and hasattr(cv, "get_n_splits"):
        return cv
    raise ValueError(
        f"cv must be a number of folds, 'prefit' or a cross-validation splitter; got {cv!r}"
    )


def assign_folds(y, n_splits, groups=None, random_state=None):
    """The fold of each row of ``y`` (-1: a row without a labelled cell, in none).

    Without ``groups``, the labelled rows are shuffled, sorted by which tasks they label
    and their class in each classification task, and dealt to the folds in turn: each
    task's labelled rows and each class split into near-equal parts. With ``groups``,
    scikit-learn's ``GroupKFold`` over the labelled rows.
    """
    from sklearn.model_selection import GroupKFold
    from sklearn.utils import check_random_state

    labelled = np.flatnonzero(y.notna().to_numpy().any(axis=1))
    folds = np.full(len(y), -1)
    if groups is not None:
        splits = GroupKFold(n_splits).split(labelled, groups=np.asarray(groups)[labelled])
        for fold, (_, test) in enumerate(splits):
            folds[labelled[test]] = fold
        return folds
    rng = check_random_state(random_state)
    rows = labelled[rng.permutation(len(labelled))]
    cells = y.iloc[rows].astype(object).where(y.iloc[rows].notna(), None)
    keys = pd.factorize(cells.apply(lambda row: repr(tuple(map(_key, row))), axis=1))[0]
    order = rows[np.argsort(keys, kind="stable")]
    folds[order] = np.arange(len(order)) % n_splits
    return folds


def _key(cell):
    """A cell in the sort key: its label (a classification's class), or whether it is
    labelled (a value, a label list: their exact values do not split the folds)."""
    if cell is None or isinstance(cell, (float, list, tuple, set, frozenset)):
        return cell is not None
    return cell


def fold_splits(y, cv, groups, random_state):
    """The ``(train, test)`` positions of each fold: folds among the labelled rows."""
    labelled = np.flatnonzero(y.notna().to_numpy().any(axis=1))
    if isinstance(cv, int):
        folds = assign_folds(y, cv, groups, random_state)
        return [(np.flatnonzero((folds != k) & (folds >= 0)), np.flatnonzero(folds == k))
                for k in range(cv)]
    groups = None if groups is None else np.asarray(groups)[labelled]
    splits = [
        (labelled[train], labelled[test])
        for train, test in cv.split(labelled, y.iloc[labelled], groups)
    ]
    held = np.sort(np.concatenate([test for _, test in splits]))
    if not np.array_equal(held, labelled):
        raise ValueError(
            "cv must hold every row with a labelled cell out exactly once (its test folds "
            "a partition of them, as for cross_val_predict)"
        )
    return splits


def judged_tasks(y, n_splits):
    """The tasks of ``y`` with enough labelled cells for ``n_splits`` folds; a
    :class:`~sk_multitask.exceptions.LabelsWarning` names each of the others."""
    counts = y.notna().sum()
    for name, count in counts[counts < n_splits].items():
        warnings.warn(
            f"task {name!r} has {count} labelled cells, fewer than the {n_splits} folds: "
            "its labels are not judged",
            LabelsWarning,
            stacklevel=3,
        )
    kept = [name for name, count in counts.items() if count >= n_splits]
    if not kept:
        raise ValueError(f"no task of y has {n_splits} labelled cells, one per fold")
    return kept


def out_of_fold(estimator, X, y, cv, groups=None, n_jobs=None, random_state=None):
    """Out-of-fold :class:`Predictions` of every labelled row of ``y``: one clone of
    ``estimator`` fitted per fold (joblib, ``n_jobs`` at once) on every task."""
    from joblib import Parallel, delayed

    labelled = y.notna().to_numpy().any(axis=1)
    cv = check_cv(cv, int(labelled.sum()))
    n_splits = cv if isinstance(cv, int) else cv.get_n_splits(None, None, groups)
    kept = judged_tasks(y, n_splits)
    params = _without_tasks(estimator, set(y.columns) - set(kept))
    y = y[kept]
    splits = fold_splits(y, cv, groups, random_state)
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_predict)(estimator, params, X, y, train, test)
        for train, test in splits
    )
    kinds = results[0].kinds
    proba = {
        name: pd.concat([r.proba[name] for r in results], sort=False).fillna(0.0)
        for name in results[0].proba
    }
    predicted = pd.concat([r.predicted for r in results])
    return Predictions(kinds, proba, predicted, f"out of fold: {len(splits)} folds, a fit each")


def _without_tasks(estimator, dropped):
    """The parameters keyed by task (``tasks``, ``loss_weights``, ``class_weight``) without
    the ``dropped`` tasks, which the folds do not fit (None where none is left)."""
    params = {}
    for name, value in estimator.get_params(deep=False).items():
        if isinstance(value, dict) and dropped & set(value):
            params[name] = {k: v for k, v in value.items() if k not in dropped} or None
    return params


def _fit_and_predict(estimator, params, X, y, train, test):
    """One fold: a clone fitted on the ``train`` rows, its predictions of the ``test`` ones."""
    from sklearn.base import clone
    from sklearn.utils import _safe_indexing

    model = clone(estimator).set_params(**params).fit(_safe_indexing(X, train), y.iloc[train])
    outputs, _ = model.predict_raw(_safe_indexing(X, test))
    return model_predictions(model, outputs, pd.Index(test))


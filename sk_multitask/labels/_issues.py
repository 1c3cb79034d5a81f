"""Which labels look wrong: each labelled cell judged against a prediction of a model that
did not learn it (torch-free; cleanlab imported inside the functions that use it).

- A classification (or an ordinal task, its levels as classes): cleanlab's confident
  learning (``cleanlab.filter.find_label_issues`` flags,
  ``cleanlab.rank.get_label_quality_scores`` scores, self-confidence: the probability
  given to the given label).
- A multi-label task: the same, label by label (present or not, against its
  probability); a cell is flagged when one of its labels is, its quality is its worst
  label's.
- A regression: the out-of-fold residuals against their robust spread, not cleanlab
  (its regression scores have no cut-off, and its ``CleanLearning`` fits its own model):
  ``z = |r - median(r)| / (1.4826 * MAD)``, the residual in robust standard deviations
  (the median absolute deviation: the few wrong values hardly move it, as they would a
  standard deviation or a high quantile); a cell is flagged when ``z`` exceeds
  ``regression_threshold``; its quality is the two-sided normal tail ``erfc(z / sqrt 2)``,
  1 for the median residual, near 0 far out.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy.special import erfc

from ..exceptions import LabelsWarning
from ..predicting._protocol import checked_outputs
from ..targets import LABEL_KINDS, MULTILABEL, check_aligned, target_frame
from ._out_of_fold import PREFIT, model_predictions, out_of_fold

#: The columns of :func:`find_label_issues`' table.
COLUMNS = ["row", "task", "given", "predicted", "label_quality", "is_label_issue"]
#: The robust standard deviation of a normal sample is its MAD times this.
_MAD_TO_SD = 1.4826


def cleanlab_modules():
    """``cleanlab.filter`` and ``cleanlab.rank``, or an ImportError naming the extra."""
    try:
        # Importing cleanlab (2.9) adds a filter that ignores every warning, for the whole
        # process (cleanlab.datalab's spurious_correlation module): kept inside the import.
        with warnings.catch_warnings():
            from cleanlab import filter, rank
    except ImportError:
        raise ImportError(
            'judging labels needs cleanlab: pip install "sk-multitask[cleanlab]"'
        ) from None
    return filter, rank


def find_label_issues(
    estimator, X, y, cv=5, *, groups=None, n_jobs=None, regression_threshold=3.5,
    random_state=None,
):
    """Which labels of ``y`` look wrong, judged against out-of-fold predictions.

    Out-of-fold: a clone of ``estimator`` fitted per fold, on every task at once, predicts
    the rows it held out (:mod:`sk_multitask.labels._out_of_fold`: folds among the rows
    that have a labelled cell, each task's labelled rows and each class spread evenly
    over them). Then per task, on its labelled cells only (a missing cell is never
    judged): cleanlab's confident learning for a classification and for each label of a
    multi-label task, the residuals against their robust spread for a regression (see
    :mod:`sk_multitask.labels._issues`). Needs the ``cleanlab`` extra.

    Parameters
    ----------
    estimator : MultiTaskImageEstimator
        Fitted or not: each fold fits a clone of it. With ``cv="prefit"``, fitted.
    X : image input
        As for ``fit``.
    y : DataFrame or Series
        The labels to judge, a row per row of ``X``; missing cells are left out.
    cv : int, cross-validation splitter or "prefit", default=5
        The number of folds (at most the rows with a labelled cell), a splitter whose test
        folds hold every labelled row out once (as for ``cross_val_predict``), or
        ``"prefit"``: the fitted ``estimator``'s own predictions, which are fair only on
        rows it did not train on: with a ``valid_split`` column in ``X``, its validation
        rows only; otherwise ``X`` must be held-out rows. ``attrs["predictions"]`` says
        which predictions were judged.
    groups : array-like of shape (n_rows,), default=None
        Group labels: a group's rows stay in one fold (``GroupKFold``).
    n_jobs : int, default=None
        Folds fitted at once (joblib; under ``joblib.parallel_backend("dask")``, on a
        Dask cluster). None: one, but under a joblib backend context.
    regression_threshold : float, default=3.5
        A regression cell is flagged when its out-of-fold residual is more than this many
        robust standard deviations from the median residual.
    random_state : int, RandomState or None, default=None
        Shuffles the rows before they are dealt to the folds.

    Returns
    -------
    DataFrame
        One row per labelled cell judged: ``row`` (``X``'s index label), ``task``,
        ``given``, ``predicted`` (a label, a value, or a multi-label task's label list),
        ``label_quality`` (0 to 1, low: likely wrong), ``is_label_issue``; the flagged
        cells first, each group by ``label_quality``, lowest first.

    Warns
    -----
    LabelsWarning
        A task with fewer labelled cells than folds, naming it: it is not judged.

    Raises
    ------
    ValueError
        ``cv`` more folds than rows with a labelled cell, or not a valid ``cv``.
    NotFittedError
        ``cv="prefit"`` with an estimator that is not fitted.

    Examples
    --------
    >>> from sk_multitask import MultiTaskImageEstimator
    >>> from sk_multitask.datasets import make_multitask_images
    >>> from sk_multitask.labels import find_label_issues
    >>> df = make_multitask_images(48, image_size=16, random_state=0)
    >>> est = MultiTaskImageEstimator(
    ...     image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
    ...     image_size=16, max_epochs=1, valid_split=None, random_state=0)
    >>> issues = find_label_issues(est, df, df[["shape", "area"]], cv=2, random_state=0)
    >>> list(issues.columns)
    ['row', 'task', 'given', 'predicted', 'label_quality', 'is_label_issue']
    >>> issues.attrs["predictions"]
    'out of fold: 2 folds, a fit each'
    """
    cleanlab_modules()  # before any fit
    check_aligned(X, y)
    y = target_frame(y)
    if isinstance(cv, str) and cv == "prefit":
        predictions, y = _prefit(estimator, X, y)
    else:
        predictions = out_of_fold(estimator, X, y, cv, groups, n_jobs, random_state)
    index = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(y))
    return label_issue_table(predictions, y, index, regression_threshold)


def _prefit(model, X, y):
    """A fitted model's predictions of the rows it did not train on: its ``valid_split``
    column's rows where ``X`` has it, else every row (``X`` held out)."""
    outputs, _, y, _ = checked_outputs(model, X, y)
    column = getattr(model, "valid_split", None)
    held = np.ones(len(y), dtype=bool)
    how = PREFIT + " (X as given: rows held out from its training)"
    if isinstance(column, str) and isinstance(X, pd.DataFrame) and column in X.columns:
        held = X[column].to_numpy(dtype=bool)
        how = PREFIT + f" (its validation rows, X[{column!r}])"
    positions = np.flatnonzero(held)
    outputs = {name: values[positions] for name, values in outputs.items()}
    return model_predictions(model, outputs, pd.Index(positions), how), y


def label_issue_table(predictions, y, index, regression_threshold=3.5):
    """The table of :func:`find_label_issues` from :class:`Predictions` of ``y``'s rows
    (``index``: ``X``'s labels of the rows, by position)."""
    frames = []
    y = y.reset_index(drop=True)  # by position, as the predictions
    for name in y.columns:
        if name not in predictions.kinds:
            continue
        predicted = predictions.predicted[name]
        given = y[name].reindex(predicted.index)
        judged = given.notna().to_numpy() & predicted.notna().to_numpy()
        if not judged.any():
            continue
        given, predicted = given[judged], predicted[judged]
        kind = predictions.kinds[name]
        if kind in LABEL_KINDS:  # an ordinal task's levels as classes
            judgement = _classification(name, given, predictions.proba[name])
        elif kind == MULTILABEL:
            judgement = _multilabel(name, given, predictions.proba[name])
        else:
            judgement = _regression(given, predicted, regression_threshold)
        if judgement is None:
            continue
        quality, issue = judgement
        frames.append(
            pd.DataFrame(
                {
                    "row": index[given.index],
                    "task": name,
                    "given": given.to_numpy(dtype=object),
                    "predicted": predicted.to_numpy(dtype=object),
                    "label_quality": quality,
                    "is_label_issue": issue,
                }
            )
        )
    if not frames:
        return _empty(predictions.how)
    table = pd.concat(frames, ignore_index=True)
    table = table.sort_values(
        ["is_label_issue", "label_quality"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
    table.attrs["predictions"] = predictions.how
    return table


def _empty(how):
    table = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    table = table.astype({"label_quality": float, "is_label_issue": bool})
    table.attrs["predictions"] = how
    return table


def _confident_learning(name, codes, probabilities):
    """cleanlab's label quality and flags of integer ``codes`` against ``probabilities``
    (the classes that no cell was given are left out: nothing can be learned of them);
    None, warned, for a single class."""
    filter, rank = cleanlab_modules()
    present = np.unique(codes)
    if len(present) < 2:
        warnings.warn(
            f"task {name!r} has one class among its labelled cells judged: "
            "its labels are not judged",
            LabelsWarning,
            stacklevel=4,
        )
        return None
    probabilities = probabilities[:, present]
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True).clip(1e-12)
    codes = np.searchsorted(present, codes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quality = rank.get_label_quality_scores(codes, probabilities)
        issue = filter.find_label_issues(codes, probabilities, n_jobs=1)
    for message in dict.fromkeys(str(w.message) for w in caught):  # cleanlab's, once each
        warnings.warn(f"task {name!r}: {message}", LabelsWarning, stacklevel=4)
    return quality, issue


def _classification(name, given, proba):
    frame = proba.loc[given.index]
    codes = frame.columns.get_indexer(given.to_numpy())
    return _confident_learning(name, codes, frame.to_numpy(dtype=np.float64))


def _multilabel(name, given, proba):
    """Each label as a two-class task (present or not); a cell's worst label decides."""
    frame = proba.loc[given.index]
    qualities, issues = [], []
    for label in frame.columns:
        present = np.array([label in set(cell) for cell in given], dtype=int)
        p = frame[label].to_numpy(dtype=np.float64)
        judgement = _confident_learning(
            f"{name}[{label!r}]", present, np.column_stack([1 - p, p])
        )
        if judgement is not None:
            qualities.append(judgement[0])
            issues.append(judgement[1])
    if not qualities:
        return None
    return np.min(qualities, axis=0), np.any(issues, axis=0)


def _regression(given, predicted, threshold):
    """Quality and flags of values from their residuals' robust spread."""
    residuals = given.to_numpy(dtype=np.float64) - predicted.to_numpy(dtype=np.float64)
    deviations = np.abs(residuals - np.median(residuals))
    spread = _MAD_TO_SD * np.median(deviations)
    if not spread > 0:  # half the residuals equal: any other one stands out
        spread = np.finfo(np.float64).tiny
    z = deviations / spread
    return erfc(z / math.sqrt(2)), z > threshold

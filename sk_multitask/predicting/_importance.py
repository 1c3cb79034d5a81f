"""Which table column matters: permutation importance of the ``tabular_cols``, per task
(torch-free).

scikit-learn's ``permutation_importance`` idea over the columns the user named, not the
encoded ones: a column's cells are shuffled among the rows (its one-hot levels and its
missing indicator move together), the model predicts again, and each task's score
(:func:`~sk_multitask.predicting._scoring.model_task_scores`: accuracy, R², micro F1)
drops by how much the model relied on it. The estimator and the ONNX predictor share it
(:meth:`MultiTaskPredictor.table_importance
<sk_multitask.predicting._protocol.MultiTaskPredictor.table_importance>`), and the
report shows it. Each repeat of each column runs the model over ``X`` once more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..inputs._sources import input_table
from ..inputs._tabular import fitted_table_encoder
from ._scoring import model_task_scores


def table_importance(model, X, y, n_repeats=5, random_state=0, sample_weight=None):
    """The mean drop of each task's score when each table column is permuted.

    Parameters
    ----------
    model : MultiTaskPredictor
        A fitted estimator or ONNX predictor with table columns.
    X : DataFrame or datasets.Dataset
        The images and the table columns, as for ``predict``.
    y : DataFrame or Series
        True targets (missing cells left out); held-out rows show what generalises.
    n_repeats : int, default=5
        Permutations per column, averaged.
    random_state : int, default=0
        Seeds the permutations.
    sample_weight : array-like of shape (n_rows,), default=None

    Returns
    -------
    DataFrame
        One row per task of ``y`` (scored), one column per table column: the score
        without permutation minus the mean score with the column permuted (positive:
        the column helped).

    Raises
    ------
    ValueError
        If the model has no table columns, or ``n_repeats`` is not a positive integer.
    """
    encoder = fitted_table_encoder(model)
    if encoder is None:
        raise ValueError(
            "the model has no table columns (tabular_cols): there is no column to permute"
        )
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive integer; got {n_repeats!r}")
    X = input_table(X, model.image_col, *encoder.columns)
    base = model_task_scores(model, X, y, sample_weight=sample_weight)
    rng = np.random.default_rng(random_state)
    drops = {}
    for column in encoder.columns:
        totals = dict.fromkeys(base, 0.0)
        for _ in range(n_repeats):
            shuffled = X.copy()
            values = shuffled[column].to_numpy()
            shuffled[column] = pd.Series(values[rng.permutation(len(values))], index=X.index)
            shuffled[column] = shuffled[column].astype(X[column].dtype)
            scores = model_task_scores(model, shuffled, y, sample_weight=sample_weight)
            for task in base:
                totals[task] += scores[task]
        drops[column] = {task: base[task] - totals[task] / n_repeats for task in base}
    frame = pd.DataFrame(drops, columns=list(encoder.columns))
    frame.index.name = "task"
    return frame

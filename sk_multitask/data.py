"""The row split into training and validation rows (moving to :mod:`sk_multitask.targets`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

__all__ = ["split_rows"]


def split_rows(X, n, valid_split, rng):
    """Positions of the training and validation rows (validation None: none held out).

    Parameters
    ----------
    X : image input
        A DataFrame when ``valid_split`` names its boolean validation column.
    n : int
        The number of rows.
    valid_split : float, str or None
        A fraction held out at random, a column of ``X``, or None.
    rng : RandomState
    """
    if valid_split is None:
        return np.arange(n), None
    if isinstance(valid_split, str):
        if not isinstance(X, pd.DataFrame) or valid_split not in X.columns:
            raise ValueError(
                f"valid_split={valid_split!r} names a column that X does not "
                "have; pass a DataFrame X with that boolean column, a fraction, or None"
            )
        column = X[valid_split]
        if not pd.api.types.is_bool_dtype(column.dtype) or column.isna().any():
            raise ValueError(
                f"the valid_split column {valid_split!r} must be boolean "
                f"without missing values; its dtype is {column.dtype}"
            )
        is_valid = column.to_numpy(dtype=bool)
        return np.flatnonzero(~is_valid), (np.flatnonzero(is_valid) if is_valid.any() else None)
    try:
        return train_test_split(np.arange(n), test_size=valid_split, random_state=rng)
    except ValueError as exc:
        raise ValueError(f"cannot hold out valid_split={valid_split} of {n} rows: {exc}") from exc

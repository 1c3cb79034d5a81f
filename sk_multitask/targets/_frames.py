"""y as a frame of targets: checks against X and the fitted tasks, data sizes, the row split."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from ._tasks import no_training_label

# scikit-learn is imported inside the functions that need it: the torch-free ONNX
# predictor checks y through this module, without scikit-learn.


def check_not_inputs(y, image_col=None, valid_col=None):
    """Refuse a ``y`` that holds the image column or the validation column of ``X``.

    ``est.fit(df, df)`` or ``y = df.drop(columns="filename")`` would otherwise train a
    head on the file names or on the validation marker.

    Parameters
    ----------
    y : DataFrame
    image_col : hashable, optional
        The column of ``X`` holding the image paths (None: ``X`` is not a DataFrame).
    valid_col : hashable, optional
        The boolean column of ``X`` marking validation rows, if any; a column named
        ``"is_valid"`` counts as one whatever ``valid_split`` is.
    """
    for column, what in ((image_col, "the image column"), (valid_col, "the validation column")):
        if column is not None and column in y.columns:
            raise ValueError(
                f"y holds {what} {column!r} of X as a target; pass the target columns "
                f"only, e.g. y = df[[...]] or df.drop(columns=[{column!r}, ...])"
            )
    if "is_valid" in y.columns and ptypes.is_bool_dtype(y["is_valid"].dtype):
        raise ValueError(
            "y holds a boolean column 'is_valid', which marks validation rows, as a "
            "target; leave it out of y (and pass valid_split='is_valid' to use it), or "
            "rename it if it really is a target"
        )


def data_sizes(y, **parts):
    """How many rows, and labelled cells of each task, each part of the data has.

    Parameters
    ----------
    y : DataFrame
        The targets, one column per task, missing cells as NaN, None or ``pd.NA``.
    **parts : array of row positions, or None
        E.g. ``train=..., valid=...``; None: an empty part.

    Returns
    -------
    DataFrame
        Index ``rows`` then the task names; one integer column per part.

    Examples
    --------
    >>> import numpy as np
    >>> y = pd.DataFrame({"color": ["red", "blue", None], "area": [np.nan, 0.5, 0.1]})
    >>> data_sizes(y, train=[0, 1], valid=[2])
           train  valid
    rows       2      1
    color      2      0
    area       1      1
    """
    labelled = y.notna().to_numpy()
    columns = {}
    for part, rows in parts.items():
        rows = np.asarray([] if rows is None else rows, dtype=np.intp)
        columns[part] = [len(rows), *labelled[rows].sum(axis=0).tolist()]
    return pd.DataFrame(columns, index=["rows", *y.columns])


def target_frame(y):
    """``y`` as a DataFrame of one column per task.

    A Series becomes one column (named ``"target"`` when it has no name); a 1-D or
    2-D array becomes a frame with default column names; a Hugging Face
    ``datasets.Dataset`` (``ds.select_columns([...])``) becomes its ``to_pandas()``.

    Raises
    ------
    ValueError
        If ``y`` has more than two dimensions, no column, or duplicate column names
        (also once turned into strings: ``1`` and ``"1"``).
    """
    if _is_hf_dataset(y):  # as X: one column per feature (a ClassLabel's integers)
        y = y.to_pandas()
    if isinstance(y, pd.Series):
        y = y.to_frame(name="target" if y.name is None else y.name)
    elif not isinstance(y, pd.DataFrame):
        array = np.asarray(y)
        if array.ndim == 1:
            y = pd.DataFrame({"target": array})
        elif array.ndim == 2:
            y = pd.DataFrame(array)
        else:
            raise ValueError(
                "y must be a DataFrame, a Series or a 1-D/2-D array; got "
                f"{type(y).__name__} of shape {array.shape}"
            )
    if y.shape[1] == 0:
        raise ValueError("y has no columns: pass one column per task")
    if y.columns.has_duplicates:
        raise ValueError(f"y has duplicate column names: {list(y.columns)}")
    _check_names_distinct_as_strings(y.columns)
    lists = {name: _label_lists(y[name]) for name in y.columns}
    lists = {name: column for name, column in lists.items() if column is not None}
    if lists:
        y = y.copy()
        for name, column in lists.items():
            y[name] = column
    return y


def _is_hf_dataset(y):
    """Whether ``y`` is a Hugging Face ``datasets.Dataset`` (told by its type's module:
    ``datasets`` is not imported for it)."""
    return type(y).__module__.partition(".")[0] == "datasets" and hasattr(y, "to_pandas")


def _label_lists(column):
    """A column of label sets as Arrow or Hugging Face give them, as lists; else None.

    An Arrow list column (``pd.ArrowDtype(pa.list_(...))``) and an object column of 1-D
    numpy arrays (``datasets``' ``Sequence`` after ``to_pandas()``) become object
    columns of lists, missing cells kept: a multi-label task like a column of lists.
    """
    arrow = getattr(column.dtype, "pyarrow_dtype", None)
    if arrow is not None:
        import pyarrow as pa  # installed: the column is Arrow's

        kinds = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
        if not any(is_kind(arrow) for is_kind in kinds):
            return None
        cells = list(column)  # lists, and pd.NA where missing
    elif ptypes.is_object_dtype(column.dtype) and any(
        isinstance(cell, np.ndarray) for cell in column
    ):
        cells = [cell.tolist() if isinstance(cell, np.ndarray) else cell for cell in column]
    else:
        return None
    lists = np.empty(len(cells), dtype=object)
    for i, cell in enumerate(cells):
        lists[i] = cell
    return pd.Series(lists, index=column.index, name=column.name)


def _check_names_distinct_as_strings(columns):
    """Refuse columns such as ``1`` and ``"1"``: task names become strings in the epoch
    table, ``history_``, ``top_losses`` and the saved files, where one would overwrite
    the other."""
    seen = {}
    for name in columns:
        if str(name) in seen:
            raise ValueError(
                f"y has columns {seen[str(name)]!r} and {name!r}, which are the same task "
                "name as text; rename one"
            )
        seen[str(name)] = name


def check_aligned(X, y, name="y"):
    """Refuse a pandas ``y`` (or ``sample_weight``, as ``name`` says) whose index differs
    from a pandas ``X``'s.

    Rows pair up by position; when both carry an index that disagrees (``y`` shuffled,
    filtered or re-indexed apart from ``X``), pairing them would silently train or
    score on the wrong targets.

    Raises
    ------
    ValueError
        If ``X`` and ``y`` are both pandas objects of the same length with different
        indexes.

    Examples
    --------
    >>> X = pd.DataFrame({"image": ["a.png", "b.png"]})
    >>> check_aligned(X, pd.Series([1.0, 2.0], index=[1, 0]))
    Traceback (most recent call last):
    ...
    ValueError: y's index does not match X's: ... at position 0 X has 0 but y has 1. ...
    """
    pandas = (pd.DataFrame, pd.Series)
    if not (isinstance(X, pandas) and isinstance(y, pandas)) or len(X) != len(y):
        return
    if not X.index.equals(y.index):
        differ = int(np.argmax(X.index.to_numpy() != y.index.to_numpy()))
        raise ValueError(
            f"{name}'s index does not match X's: rows pair up by position, and at position "
            f"{differ} X has {X.index.tolist()[differ]!r} but {name} has "
            f"{y.index.tolist()[differ]!r}. Align {name} "
            f"first ({name} = {name}.loc[X.index]) or reset both indexes"
        )


def check_targets(y, tasks, n_rows):
    """``y`` as a frame whose columns are all fitted tasks, with ``n_rows`` rows.

    Parameters
    ----------
    y : DataFrame, Series or array
        True targets for some or all of ``tasks``.
    tasks : dict
        Task name to fitted :class:`Task`.
    n_rows : int
        How many rows (images) ``y`` must have.
    """
    y = target_frame(y)
    unknown = [name for name in y.columns if name not in tasks]
    if unknown:
        raise ValueError(
            f"y has columns {unknown} that are not tasks of the estimator {list(tasks)}"
        )
    if len(y) != n_rows:
        raise ValueError(f"X has {n_rows} images but y has {len(y)} rows")
    return y


def check_same_tasks(fitted, tasks, method="warm_start"):
    """``fitted``, if ``tasks`` have the same names and kinds (a warm start, or
    ``method`` ``"partial_fit"``, continues them).

    Raises
    ------
    ValueError
        Naming both sets of tasks, if they differ.
    """
    new = {name: task.kind for name, task in tasks.items()}
    old = {name: task.kind for name, task in fitted.items()}
    if new != old:
        fix = "warm_start=False" if method == "warm_start" else "or call fit"
        raise ValueError(
            f"{method} continues a model of tasks {old} but y has tasks {new}; "
            f"fit a new estimator ({fix}) to change the tasks"
        )
    return fitted


def check_sample_weight(sample_weight, n_rows):
    """Row weights as a float64 array of ``n_rows`` finite non-negative values, the
    largest 1.

    Every loss and metric they weight is a weighted mean, which their scale does not
    change; scaled, weights of 1e-320 (which float32, the training's precision, holds
    as 0: nothing would train) or 1e308 (whose sums overflow to infinity) weigh as
    weights of 1 do. Weights of one are kept as they are.

    Parameters
    ----------
    sample_weight : array-like of shape (n_rows,) or None
    n_rows : int
        The rows of ``X`` (and ``y``).

    Returns
    -------
    ndarray of float64, or None when ``sample_weight`` is None

    Raises
    ------
    ValueError
        One line naming the cause: not 1-D, another length, not numbers, not finite,
        negative.

    Examples
    --------
    >>> check_sample_weight([1, 0.5], 2)
    array([1. , 0.5])
    >>> check_sample_weight([1e-320, 2e-320], 2)
    array([0.5, 1. ])
    >>> check_sample_weight([1, -1], 2)
    Traceback (most recent call last):
    ...
    ValueError: sample_weight must be non-negative; got -1.0 at position 1
    """
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight)
    if weights.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D (a weight per row); got shape {weights.shape}")
    if len(weights) != n_rows:
        raise ValueError(f"sample_weight has {len(weights)} values but X has {n_rows} rows")
    try:
        weights = weights.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sample_weight must be numbers; {exc}") from None
    for bad, what in ((~np.isfinite(weights), "finite"), (weights < 0, "non-negative")):
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"sample_weight must be {what}; got {weights[position]} at position {position}"
            )
    largest = weights.max(initial=0.0)
    return weights / largest if largest > 0 else weights


def check_trainable(y_train):
    """Check that the training rows (their targets ``y_train``) can train every task.

    Raises
    ------
    ValueError
        With fewer than 2 training rows, or a task without a labelled training cell.
    """
    if len(y_train) < 2:
        raise ValueError(
            f"need at least 2 training rows (outside the validation split); got {len(y_train)}"
        )
    for name in y_train.columns:
        if y_train[name].isna().all():
            raise no_training_label(name)


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
    from sklearn.model_selection import train_test_split

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

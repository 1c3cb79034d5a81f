"""Table columns beside the images (``tabular_cols``): the ONE encoder of the estimator
and the ONNX predictor, torch-free.

The default preprocessing is scikit-learn's, fitted on the training rows only
(:func:`fit_table_encoder`): numeric and boolean columns go through
``SimpleImputer(strategy="median", add_indicator=True)`` then ``StandardScaler``; other
columns (object, string, category) through ``OneHotEncoder(handle_unknown="ignore")``,
a missing cell being its own level. Its fitted state is exported as plain data
(:meth:`TableEncoder.to_dict`: medians, means, scales, categories), which the model
document stores, and :meth:`TableEncoder.encode` applies it in numpy, so that the
estimator (fitted or loaded) and the torch-free ONNX predictor encode a row the same
way (as :mod:`sk_multitask.targets._cell_loss` is the one per-cell loss;
tests/test_tabular.py checks it against scikit-learn's own ``transform``).

A transformer of the user's (``tabular_transformer``) is cloned, fitted on the training
rows and wrapped in :class:`TransformerTable`, which has the same interface; it is code,
so only a pickle (joblib, skops) carries it.

This module imports numpy and pandas only; scikit-learn is imported by
:func:`fit_table_encoder`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from ..exceptions import TableColumnWarning
from ._sources import input_table

#: The most one-hot levels a column may have in a model document (a crafted file must
#: not declare millions).
MAX_CATEGORIES = 10_000


def check_tabular_cols(columns, image_col, valid_col=None, targets=()):
    """Refuse a ``tabular_cols`` that is not a non-empty list of distinct column names, or
    that names the image column, the validation column or a target."""
    if not isinstance(columns, list) or not columns:
        raise ValueError(
            f"tabular_cols must be a non-empty list of X's column names (None: images "
            f"only); got {columns!r}"
        )
    seen = set()
    for column in columns:
        if column in seen:
            raise ValueError(f"tabular_cols names column {column!r} twice")
        seen.add(column)
    roles = [(image_col, "the image column (image_col)"), (valid_col, "the valid_split column")]
    for name, role in roles:
        if name is not None and name in seen:
            raise ValueError(f"tabular_cols names {name!r}, {role}: it cannot be a table input")
    both = [column for column in targets if column in seen]
    if both:
        raise ValueError(
            f"column {both[0]!r} is both a target (in y) and a table input (tabular_cols): "
            "a model must not be given what it predicts"
        )


def table_frame(X, columns, image_col):
    """The ``columns`` of ``X`` (a DataFrame or a ``datasets.Dataset``), as a DataFrame.

    Raises
    ------
    ValueError
        In one line: ``X`` holds no table, or a column is missing (named).
    """
    X = input_table(X, image_col, *columns)
    if not isinstance(X, pd.DataFrame):
        raise ValueError(
            f"the model reads table columns {list(columns)} (tabular_cols) beside the "
            f"images: X must be a DataFrame holding them; got a {type(X).__name__}"
        )
    missing = [column for column in columns if column not in X.columns]
    if missing:
        raise ValueError(
            f"table column {missing[0]!r} (tabular_cols) is not in X; its columns are "
            f"{list(X.columns)[:20]}"
        )
    return X[list(columns)]


def fitted_table_encoder(model):
    """The fitted encoding of a model's table columns (its ``table_encoder_``, of the
    estimator or of the ONNX predictor), or None for a model of images only."""
    return getattr(model, "table_encoder_", None)


def encoded_table(X, encoder, image_col):
    """``X``'s table columns encoded by ``encoder`` (float32 ``(N, n_features)``), or None
    for a model without table columns (``encoder`` None): what the network's ``table``
    input gets, in the estimator and in the ONNX predictor."""
    if encoder is None:
        return None
    return encoder.encode(table_frame(X, encoder.columns, image_col))


def _is_numeric(series):
    dtype = series.dtype
    return pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
    )


def _numbers(series):
    """A column as float64, missing cells NaN (booleans 0/1; numbers written as text
    parsed), or a ValueError naming it."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    try:
        values = pd.to_numeric(series, errors="raise")
        return np.asarray(pd.Series(values, dtype="Float64").to_numpy(na_value=np.nan), float)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"table column {series.name!r} was numeric in fit but holds {exc}"
        ) from None


def _labels(series):
    """A column's cells as strings (the one-hot levels), missing cells None."""
    cells = series.astype(object).to_numpy()
    return np.array([None if _missing(v) else str(v) for v in cells], dtype=object)


def _missing(value):
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array cell: not missing
        return False


class TableEncoder:
    """The default preprocessing of the table columns, fitted, as plain data.

    Made by :func:`fit_table_encoder` from scikit-learn's fitted transformers, or by
    :meth:`from_dict` from a model document.

    Parameters
    ----------
    columns : list
        The table columns, in ``tabular_cols`` order.
    numeric : dict
        ``columns`` (the numeric ones), ``medians`` (the imputer's), ``indicators``
        (positions among them of those with a missing indicator), ``means`` and
        ``scales`` (the scaler's, over the imputed values then the indicators).
    categorical : list of dict
        Per other column: ``column``, ``categories`` (strings, sorted) and ``missing``
        (whether a missing cell was a level in the training rows; it comes last).
    """

    def __init__(self, columns, numeric, categorical):
        self.columns = list(columns)
        self.numeric = numeric
        self.categorical = categorical

    @property
    def n_features(self):
        """The width of the encoded table."""
        numeric = len(self.numeric["columns"]) + len(self.numeric["indicators"])
        levels = sum(len(c["categories"]) + c["missing"] for c in self.categorical)
        return numeric + levels

    def feature_names(self):
        """One name per encoded column: ``z``, ``z_missing``, ``group=a``, ``group=<NA>``."""
        names = [str(c) for c in self.numeric["columns"]]
        names += [f"{self.numeric['columns'][i]}_missing" for i in self.numeric["indicators"]]
        for state in self.categorical:
            names += [f"{state['column']}={level}" for level in state["categories"]]
            names += [f"{state['column']}=<NA>"] * state["missing"]
        return names

    def encode(self, frame):
        """The table ``frame`` (its ``columns``) encoded: float32 ``(N, n_features)``.

        A missing number is imputed (and flagged where fit saw missing values), an
        unseen category or a missing one not seen in fit is all zeros: always finite.
        """
        parts = []
        numeric = self.numeric
        if numeric["columns"]:
            values = np.column_stack([_numbers(frame[c]) for c in numeric["columns"]])
            missing = np.isnan(values)
            values = np.where(missing, np.asarray(numeric["medians"]), values)
            values = np.column_stack([values, missing[:, numeric["indicators"]]])
            parts.append((values - np.asarray(numeric["means"])) / np.asarray(numeric["scales"]))
        for state in self.categorical:
            labels = _labels(frame[state["column"]])
            levels = list(state["categories"]) + [None] * state["missing"]
            parts.append(labels[:, None] == np.array(levels, dtype=object)[None, :])
        return np.column_stack(parts).astype(np.float32) if parts else np.empty((len(frame), 0))

    def to_dict(self):
        """The fitted state as JSON-able data (the model document's ``tabular.encoder``)."""
        return {
            "numeric": {key: list(value) for key, value in self.numeric.items()},
            "categorical": [dict(state) for state in self.categorical],
        }

    @classmethod
    def from_dict(cls, columns, state):
        """The encoder of ``columns`` whose fitted ``state`` :meth:`to_dict` wrote, checked.

        Raises
        ------
        TypeError
            Naming what is not as :meth:`to_dict` writes it.
        """
        _require(isinstance(state, dict) and state.keys() == {"numeric", "categorical"},
                 "tabular encoder is not {numeric, categorical}")
        numeric, categorical = state["numeric"], state["categorical"]
        keys = {"columns", "medians", "indicators", "means", "scales"}
        _require(isinstance(numeric, dict) and numeric.keys() == keys
                 and all(isinstance(numeric[k], list) for k in keys),
                 "tabular encoder's numeric part is not lists of columns, medians, ...")
        n = len(numeric["columns"])
        _require(
            all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n
                for i in numeric["indicators"])
            and len(set(numeric["indicators"])) == len(numeric["indicators"])
            and len(numeric["medians"]) == n
            and len(numeric["means"]) == len(numeric["scales"]) == n + len(numeric["indicators"])
            and all(_finite(v) for k in ("medians", "means") for v in numeric[k])
            and all(_finite(v) and v > 0 for v in numeric["scales"]),
            "tabular encoder's numeric part has bad sizes or values",
        )
        _require(isinstance(categorical, list), "tabular encoder's categorical part is no list")
        for part in categorical:
            _require(
                isinstance(part, dict) and part.keys() == {"column", "categories", "missing"}
                and isinstance(part["missing"], bool)
                and isinstance(part["categories"], list)
                and all(isinstance(c, str) for c in part["categories"])
                and len(part["categories"]) <= MAX_CATEGORIES,
                "tabular encoder has a categorical column that is not "
                f"(column, at most {MAX_CATEGORIES} string categories, missing)",
            )
        named = list(numeric["columns"]) + [part["column"] for part in categorical]
        _require(
            isinstance(columns, list) and sorted(map(repr, named)) == sorted(map(repr, columns)),
            "tabular encoder's columns are not the tabular columns",
        )
        return cls(columns, numeric, categorical)


def _require(condition, what):
    if not condition:
        raise TypeError(what)


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TransformerTable:
    """A fitted transformer of the user's (``tabular_transformer``) over the table
    columns: :class:`TableEncoder`'s interface, its state code (pickles only)."""

    def __init__(self, columns, transformer, n_features):
        self.columns = list(columns)
        self.transformer = transformer
        self.n_features = int(n_features)

    def feature_names(self):
        try:
            return [str(name) for name in self.transformer.get_feature_names_out()]
        except (AttributeError, ValueError, TypeError):
            return [f"table{i}" for i in range(self.n_features)]

    def encode(self, frame):
        encoded = _dense(self.transformer.transform(frame))
        if encoded.shape != (len(frame), self.n_features):
            raise ValueError(
                f"tabular_transformer returned shape {encoded.shape}; fit gave "
                f"{self.n_features} columns per row"
            )
        if not np.isfinite(encoded).all():
            raise ValueError(
                f"tabular_transformer {type(self.transformer).__name__} returned missing or "
                "infinite values: impute them in it (the default preprocessing does)"
            )
        return encoded


def _dense(values):
    if hasattr(values, "toarray"):  # a sparse matrix (OneHotEncoder's default)
        values = values.toarray()
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tabular_transformer returned non-numbers: {exc}") from None


def fit_table_encoder(frame, transformer=None):
    """The table encoder fitted on ``frame`` (the training rows' table columns).

    ``transformer`` None: the default preprocessing, fitted with scikit-learn and
    exported as a :class:`TableEncoder`; else a clone of it, fitted
    (:class:`TransformerTable`). A column that is constant or all missing in ``frame``
    is named by a :class:`~sk_multitask.exceptions.TableColumnWarning`.
    """
    from sklearn.base import clone

    _warn_uninformative(frame)
    if transformer is not None:
        fitted = clone(transformer)
        encoded = _dense(fitted.fit_transform(frame))
        width = encoded.shape[1] if encoded.ndim == 2 else 0
        table = TransformerTable(frame.columns, fitted, width)
        table.encode(frame)  # its shape and values checked now, not at the first batch
        return table
    numeric = [c for c in frame.columns if _is_numeric(frame[c])]
    categorical = [c for c in frame.columns if c not in numeric]
    numeric_state = {"columns": numeric, "medians": [], "indicators": [], "means": [], "scales": []}
    if numeric:
        numeric_state = _fit_numeric(frame, numeric)
    return TableEncoder(
        frame.columns, numeric_state, [_fit_categorical(frame[c]) for c in categorical]
    )


def _fit_numeric(frame, columns):
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    values = np.column_stack([_numbers(frame[c]) for c in columns])
    imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
    scaler = StandardScaler().fit(imputer.fit_transform(values))
    indicator = imputer.indicator_
    indicators = [] if indicator is None else [int(i) for i in indicator.features_]
    return {
        "columns": list(columns),
        # An all-missing column's median is imputed as 0 (keep_empty_features).
        "medians": [float(v) if math.isfinite(v) else 0.0 for v in imputer.statistics_],
        "indicators": indicators,
        "means": [float(v) for v in scaler.mean_],
        "scales": [float(v) for v in scaler.scale_],
    }


def _fit_categorical(series):
    from sklearn.preprocessing import OneHotEncoder

    labels = _labels(series)
    missing = bool(any(label is None for label in labels))
    # A missing cell is its own level: a marker no label can be (sorted last).
    marker = "\uffff<missing>"
    coded = np.array([marker if v is None else v for v in labels], dtype=object)[:, None]
    encoder = OneHotEncoder(handle_unknown="ignore").fit(coded)
    categories = [str(c) for c in encoder.categories_[0] if c != marker]
    return {"column": series.name, "categories": categories, "missing": missing}


def _warn_uninformative(frame):
    for column in frame.columns:
        values = frame[column]
        if values.isna().all():
            why = "all missing"
        elif values.nunique(dropna=False) <= 1:
            why = "constant"
        else:
            continue
        warnings.warn(
            TableColumnWarning(
                f"table column {column!r} is {why} in the training rows: it tells the "
                "network nothing (drop it from tabular_cols)"
            ),
            stacklevel=5,
        )

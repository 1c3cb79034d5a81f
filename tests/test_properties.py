"""Property-based tests (hypothesis) of the pieces that see many input shapes.

Written against the public API (``fit_tasks``, ``encode_targets``, ``OutputDecoder``,
``MaskedMultiTaskLoss``, ``multitask_scorer``), so that new task kinds and losses can
join the strategies below.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TARGETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, r2_score

from sk_multitask import multitask_scorer
from sk_multitask.network._loss import MaskedMultiTaskLoss
from sk_multitask.targets import REGRESSION, encode_targets, fit_tasks
from sk_multitask.targets._outputs import OutputDecoder

# Generated float targets are often a few integers with missing cells, which fit_tasks
# rightly warns may be class codes, and the label "" beside others, which it rightly warns
# may mean missing: expected here, where any frame must be handled.
pytestmark = [
    pytest.mark.filterwarnings("ignore:target .*integer class codes read as floats"),
    pytest.mark.filterwarnings("ignore::sk_multitask.exceptions.MissingLikeLabelWarning"),
]

FAST = settings(max_examples=25, deadline=None)
SLOW = settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- targets: any column names, dtypes and missing patterns ----------------------------------

names = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.tuples(st.text(max_size=3)))

LABELS = {
    "object": (st.sampled_from(["a", "b", "é", "cat dog", ""]), object),
    "category": (st.sampled_from(["x", "y", "z"]), "category"),
    "string": (st.sampled_from(["x", "y", "z"]), "string"),
    "bool": (st.booleans(), bool),
    "boolean": (st.booleans(), "boolean"),
    "int": (st.integers(-3, 3), np.int64),
    "Int64": (st.integers(0, 4), "Int64"),
    "float": (st.floats(-1e6, 1e6, allow_nan=False, width=32), np.float64),
}
MISSABLE = {"object", "category", "string", "boolean", "Int64", "float"}


@st.composite
def target_columns(draw, n_rows):
    kind = draw(st.sampled_from(sorted(LABELS)))
    values, dtype = LABELS[kind]
    cells = draw(st.lists(values, min_size=n_rows, max_size=n_rows))
    column = pd.Series(cells, dtype=dtype)
    if kind in MISSABLE:
        missing = draw(st.lists(st.booleans(), min_size=n_rows, max_size=n_rows))
        column = column.mask(np.array(missing))
    return column


@st.composite
def target_frames(draw):
    n_rows = draw(st.integers(1, 12))
    columns = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    return pd.DataFrame(
        {name: draw(target_columns(n_rows)) for name in columns}, columns=pd.Index(columns)
    )


def _one_hot(encoded, n_classes):
    """Head outputs whose argmax is each encoded class; NaN rows where the cell is missing."""
    outputs = np.zeros((len(encoded), n_classes))
    labelled = ~np.isnan(encoded)
    outputs[np.flatnonzero(labelled), encoded[labelled].astype(int)] = 1.0
    outputs[~labelled] = np.nan
    return outputs


@FAST
@given(target_frames())
def test_encode_decode_round_trip(y):
    try:
        tasks = fit_tasks(y)
    except ValueError as exc:
        # Refused only for a reason that names the column at fault.
        assert any(repr(name) in str(exc) for name in y.columns)
        return
    assert list(tasks) == list(y.columns)
    encoded = encode_targets(y, tasks)
    assert encoded.dtype == np.float32
    # Missing cells and only they are NaN: missing is never a class.
    np.testing.assert_array_equal(np.isnan(encoded), y.isna().to_numpy())
    for column, (name, task) in enumerate(tasks.items()):
        codes = encoded[:, column]
        if task.kind == "classification":
            assert set(codes[~np.isnan(codes)]) <= set(range(task.n_outputs))
            decoded = OutputDecoder.from_task(task).decode(_one_hot(codes, task.n_outputs), y.index)
            expected = y[name]
            assert decoded.isna().equals(expected.isna())
            labelled = expected.notna()
            assert list(decoded[labelled]) == list(expected[labelled])
        else:
            decoder = OutputDecoder.from_task(task)
            decoded = decoder.decode(codes.reshape(-1, 1).astype(np.float64), y.index)
            expected = y[name].to_numpy(dtype=np.float64, na_value=np.nan)
            # Encoded targets are float32: about 7 significant digits of the column's scale.
            scale = np.nanmax(np.abs(expected))
            np.testing.assert_allclose(decoded, expected, rtol=0, atol=1e-6 * scale + 1e-9)


@FAST
@given(target_frames(), st.randoms(use_true_random=False))
def test_scalers_are_those_of_the_training_rows(y, random):
    train = sorted(random.sample(range(len(y)), k=random.randint(1, len(y))))
    try:
        tasks = fit_tasks(y, train=train)
    except ValueError as exc:
        assert any(repr(name) in str(exc) for name in y.columns)
        return
    for name, task in tasks.items():
        if task.kind == REGRESSION:
            training = y[name].iloc[train].to_numpy(dtype=np.float64, na_value=np.nan)
            np.testing.assert_allclose(task.encoder.mean_, [np.nanmean(training)], rtol=1e-9)
            assert task.encoder.n_samples_seen_ == np.isfinite(training).sum()
    assert encode_targets(y, tasks).shape[0] == len(y)  # every row encodes


@FAST
@given(target_frames(), st.randoms(use_true_random=False))
def test_task_inference_ignores_row_order(y, random):
    order = list(range(len(y)))
    random.shuffle(order)
    try:
        kinds = {n: t.kind for n, t in fit_tasks(y).items()}
    except ValueError as exc:
        with pytest.raises(ValueError, match="target"):
            fit_tasks(y.iloc[order])
        assert "target" in str(exc)
        return
    tasks = fit_tasks(y.iloc[order])
    assert {n: t.kind for n, t in tasks.items()} == kinds
    np.testing.assert_array_equal(
        encode_targets(y.iloc[order], tasks), encode_targets(y, fit_tasks(y))[order]
    )


# -- the masked loss ------------------------------------------------------------------------


@st.composite
def loss_cases(draw):
    """Task specs, outputs, targets (NaN where missing) and loss weights."""
    n_tasks = draw(st.integers(1, 4))
    specs = []
    for t in range(n_tasks):
        if draw(st.booleans()):
            specs.append((f"task{t}", "classification", draw(st.integers(2, 5))))
        else:
            specs.append((f"task{t}", "regression", 1))
    n_rows = draw(st.integers(1, 10))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    outputs = torch.randn(n_rows, sum(n for _, _, n in specs), generator=generator) * 3
    targets = torch.stack(
        [
            torch.randint(0, n, (n_rows,), generator=generator).float()
            if kind == "classification"
            else torch.randn(n_rows, generator=generator)
            for _, kind, n in specs
        ],
        dim=1,
    )
    missing = torch.rand(n_rows, n_tasks, generator=generator) < draw(st.floats(0, 1))
    targets[missing] = float("nan")
    weights = {name: draw(st.floats(0, 10)) for name, _, _ in specs}
    return specs, outputs, targets, weights


def _loss_and_grad(specs, weights, outputs, targets):
    outputs = outputs.clone().requires_grad_(True)
    loss = MaskedMultiTaskLoss(specs, weights)(outputs, targets)
    loss.backward()
    return loss.detach(), outputs.grad


@FAST
@given(loss_cases(), st.floats(-1e3, 1e3))
def test_masked_cells_never_change_the_loss_or_any_gradient(case, noise):
    specs, outputs, targets, weights = case
    loss, grad = _loss_and_grad(specs, weights, outputs, targets)
    assert torch.isfinite(loss)
    missing = torch.isnan(targets)
    changed, start = outputs.clone(), 0
    for column, (_, _, n) in enumerate(specs):
        # A task's outputs in a row where its target is missing get exactly zero gradient...
        assert (grad[missing[:, column], start : start + n] == 0).all()
        changed[missing[:, column], start : start + n] += noise
        start += n
    # ... and whatever the network outputs there, the loss and gradients stay the same.
    other_loss, other_grad = _loss_and_grad(specs, weights, changed, targets)
    assert torch.equal(loss, other_loss)
    assert torch.equal(grad, other_grad)


@FAST
@given(loss_cases(), st.randoms(use_true_random=False))
def test_row_order_does_not_change_the_loss(case, random):
    specs, outputs, targets, weights = case
    order = list(range(len(outputs)))
    random.shuffle(order)
    loss, grad = _loss_and_grad(specs, weights, outputs, targets)
    shuffled_loss, shuffled_grad = _loss_and_grad(specs, weights, outputs[order], targets[order])
    torch.testing.assert_close(shuffled_loss, loss)
    torch.testing.assert_close(shuffled_grad, grad[order])


@FAST
@given(loss_cases())
def test_all_missing_adds_exactly_zero(case):
    specs, outputs, targets, weights = case
    loss, grad = _loss_and_grad(specs, weights, outputs, torch.full_like(targets, float("nan")))
    assert loss.item() == 0.0
    assert (grad == 0).all()


# -- the scorer -------------------------------------------------------------------------------


@st.composite
def scoring_subsets(draw, n_rows):
    rows = draw(st.lists(st.integers(0, n_rows - 1), min_size=2, max_size=40, unique=True))
    hidden = draw(st.lists(st.booleans(), min_size=3 * len(rows), max_size=3 * len(rows)))
    return rows, np.array(hidden).reshape(len(rows), 3)


@SLOW
@given(scoring_subsets(160), st.randoms(use_true_random=False))
def test_scorer_equals_metrics_on_labelled_cells_whatever_the_order(
    fitted, image_set, subset, random
):
    rows, hidden = subset
    X = image_set.iloc[rows]
    y = X[TARGETS].mask(hidden)
    if y.isna().all().all():
        with pytest.raises(ValueError, match="y has no labelled cell in any task"):
            multitask_scorer()(fitted, X, y)
        return
    with warnings.catch_warnings():
        # R² of a single labelled cell is undefined: NaN, and scikit-learn warns.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        scores = multitask_scorer()(fitted, X, y)
        predicted = fitted.predict(X)
        expected = {}
        for name in TARGETS:
            labelled = y[name].notna()
            if labelled.any():
                metric = r2_score if name == "area" else accuracy_score
                expected[name] = metric(y.loc[labelled, name], predicted.loc[labelled, name])
        order = list(range(len(X)))
        random.shuffle(order)
        shuffled = multitask_scorer()(fitted, X.iloc[order], y.iloc[order])
    # Every task has its key (the folds of a search agree); one without a label is NaN.
    assert list(scores) == [*TARGETS, "mean"]
    for name in TARGETS:
        value = expected.get(name, np.nan)
        np.testing.assert_allclose(scores[name], value, rtol=1e-9, equal_nan=True)
    assert scores["mean"] == pytest.approx(np.mean(list(expected.values())), nan_ok=True)
    for name in scores:
        np.testing.assert_allclose(shuffled[name], scores[name], rtol=1e-6, equal_nan=True)

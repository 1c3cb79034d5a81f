"""sample_weight: in every task's loss, the validation loss, the metrics, and routed by
scikit-learn's metadata routing to fit and score."""

import shutil

import numpy as np
import pandas as pd
import pytest
import sklearn
import torch
from conftest import TARGETS, small_estimator
from sklearn import metrics as skm
from sklearn.model_selection import GridSearchCV, cross_validate

from sk_multitask import multitask_scorer
from sk_multitask.network._loss import MaskedMultiTaskLoss
from sk_multitask.targets import encode_targets

NAN = float("nan")
SPECS = [("gender", "classification", 2), ("tags", "multilabel", 2), ("age", "regression", 1)]


def _batch(n=8, seed=0):
    """Outputs (with gradient), encoded targets with a fifth of the cells missing, weights."""
    generator = torch.Generator().manual_seed(seed)
    y_pred = torch.randn(n, 5, generator=generator, requires_grad=True)
    gender = torch.randint(0, 2, (n, 1), generator=generator).float()
    tags = torch.randint(0, 2, (n, 2), generator=generator).float()
    age = torch.randn(n, 1, generator=generator)
    y_true = torch.cat([gender, tags, age], dim=1)
    missing = torch.rand(n, 3, generator=generator) < 0.2
    for task, columns in enumerate([[0], [1, 2], [3]]):
        y_true[:, columns] = torch.where(missing[:, [task]], NAN, y_true[:, columns])
    weights = torch.rand(n, generator=generator) * 2
    return y_pred, y_true, weights


def _with_weights(y_true, weights):
    return torch.cat([y_true, weights[:, None]], dim=1)


@pytest.mark.parametrize("class_weight", [None, {"gender": [0.5, 2.0]}])
def test_each_term_is_the_weighted_mean_over_labelled_cells(class_weight):
    y_pred, y_true, weights = _batch()
    criterion = MaskedMultiTaskLoss(SPECS, class_weight=class_weight)
    cells, labelled = criterion.cell_losses(y_pred, y_true)  # unweighted rows
    _, cell_weights, _ = criterion._cells(y_pred, y_true)
    mask = labelled.float()
    expected = (weights[:, None] * cells * mask).sum(0) / (
        weights[:, None] * cell_weights * mask
    ).sum(0)

    loss = criterion(y_pred, _with_weights(y_true, weights))

    assert loss.item() == pytest.approx(expected.sum().item(), rel=1e-6)


def test_weights_of_one_change_nothing_bit_for_bit():
    y_pred, y_true, _ = _batch()
    criterion = MaskedMultiTaskLoss(SPECS, class_weight={"gender": [0.5, 2.0]})
    plain = criterion(y_pred, y_true)
    (plain_grad,) = torch.autograd.grad(plain, y_pred)
    ones = criterion(y_pred, _with_weights(y_true, torch.ones(len(y_true))))
    (ones_grad,) = torch.autograd.grad(ones, y_pred)

    assert torch.equal(plain, ones)
    assert torch.equal(plain_grad, ones_grad)


@pytest.mark.parametrize("loss_weights", [None, "uncertainty"])
def test_zero_weight_rows_are_as_if_left_out(loss_weights):
    y_pred, y_true, weights = _batch(n=12)
    weights[[1, 4, 5, 9]] = 0.0
    y_pred.data[4] = 1e30  # a left-out row's huge loss must not leak in as NaN or inf
    keep = weights > 0
    criterion = MaskedMultiTaskLoss(SPECS, loss_weights=loss_weights)
    kept_pred = y_pred.detach()[keep].clone().requires_grad_(True)

    weighted = criterion(y_pred, _with_weights(y_true, weights))
    (grad,) = torch.autograd.grad(weighted, y_pred)
    left_out = criterion(kept_pred, _with_weights(y_true[keep], weights[keep]))
    (kept_grad,) = torch.autograd.grad(left_out, kept_pred)

    torch.testing.assert_close(weighted, left_out, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad[keep], kept_grad, rtol=1e-6, atol=0)
    assert torch.equal(grad[~keep], torch.zeros_like(grad[~keep]))


def test_batch_without_weight_mass_adds_zero_never_nan():
    y_pred, y_true, _ = _batch()
    criterion = MaskedMultiTaskLoss(SPECS, loss_weights="uncertainty")

    loss = criterion(y_pred, _with_weights(y_true, torch.zeros(len(y_true))))
    loss.backward()

    assert loss.item() == 0.0
    assert torch.equal(y_pred.grad, torch.zeros_like(y_pred))
    assert torch.equal(criterion.log_vars.grad, torch.zeros(3))


def test_targets_of_another_width_are_refused():
    y_pred, y_true, _ = _batch()
    with pytest.raises(ValueError, match="targets have 6 columns; the tasks take 4"):
        MaskedMultiTaskLoss(SPECS)(y_pred, torch.cat([y_true, y_true[:, :2]], dim=1))


# -- fits -----------------------------------------------------------------------------


def _weights(n, seed=0):
    weights = np.random.default_rng(seed).uniform(0, 2, n)
    weights[::7] = 0.0
    return weights


@pytest.fixture(scope="module")
def unweighted(image_set):
    return small_estimator(image_set, max_epochs=1, batch_size=64).fit(
        image_set, image_set[TARGETS]
    )


@pytest.fixture(scope="module")
def weighted(image_set):
    est = small_estimator(image_set, max_epochs=1, batch_size=64)
    return est.fit(image_set, image_set[TARGETS], sample_weight=_weights(len(image_set)))


def _learned(history):
    """The history without its timings."""
    return [{k: v for k, v in epoch.items() if k != "dur"} for epoch in history]


def _state(est):
    return {**est.net_.module_.state_dict(), **est.net_.criterion_.state_dict()}


def test_weights_of_one_train_exactly_the_unweighted_model(image_set, unweighted):
    ones = small_estimator(image_set, max_epochs=1, batch_size=64)
    ones.fit(image_set, image_set[TARGETS], sample_weight=np.ones(len(image_set)))

    assert all(torch.equal(value, _state(unweighted)[key]) for key, value in _state(ones).items())
    assert _learned(ones.history_) == _learned(unweighted.history_)
    assert ones.predict(image_set).equals(unweighted.predict(image_set))


def test_weights_change_the_training_and_the_validation_loss(image_set, unweighted, weighted):
    assert not torch.equal(_state(weighted)["heads.0.weight"], _state(unweighted)["heads.0.weight"])
    # The validation loss recorded is the weighted loss of the validation rows (one batch).
    valid = image_set["is_valid"].to_numpy()
    assert valid.sum() <= 64
    outputs, _ = weighted.predict_raw(image_set[valid])
    targets = encode_targets(image_set[TARGETS][valid], weighted.tasks_)
    y_true = torch.as_tensor(np.column_stack([targets, _weights(len(image_set))[valid]]))
    logits = torch.as_tensor(np.concatenate(list(outputs.values()), axis=1))
    expected = weighted.net_.criterion_(logits, y_true.float())

    assert weighted.history_[-1, "valid_loss"] == pytest.approx(expected.item(), rel=1e-5)
    unweighted_loss = unweighted.history_[-1, "valid_loss"]
    assert weighted.history_[-1, "valid_loss"] != pytest.approx(unweighted_loss, rel=1e-3)


def test_score_and_scorer_weight_as_scikit_learn_metrics(image_set, unweighted):
    y, weights = image_set[TARGETS], _weights(len(image_set), seed=1)
    predicted = unweighted.predict(image_set)
    expected = []
    for name, metric in (
        ("color", skm.accuracy_score),
        ("shape", skm.accuracy_score),
        ("area", skm.r2_score),
    ):
        labelled = y[name].notna().to_numpy()
        expected.append(
            metric(y[name][labelled], predicted[name][labelled], sample_weight=weights[labelled])
        )

    score = unweighted.score(image_set, y, sample_weight=weights)

    assert score == pytest.approx(np.mean(expected), rel=1e-12)
    assert score != pytest.approx(unweighted.score(image_set, y), rel=1e-6)
    series = pd.Series(weights, index=y.index)  # a Series weighs by position, as an array
    scores = multitask_scorer()(unweighted, image_set, y, sample_weight=series)
    assert scores["mean"] == score


def test_zero_weights_score_and_evaluate_as_rows_left_out(image_set, unweighted):
    image_set = image_set.iloc[:80]
    y = image_set[TARGETS]
    weights = (np.arange(len(y)) % 3 != 0).astype(float)
    kept = weights > 0
    weighted = unweighted.evaluate(image_set, y, sample_weight=weights)
    left_out = unweighted.evaluate(image_set[kept], y[kept])

    assert unweighted.score(image_set, y, sample_weight=weights) == pytest.approx(
        unweighted.score(image_set[kept], y[kept]), rel=1e-9
    )
    assert weighted.drop(columns="kind").to_numpy(float) == pytest.approx(
        left_out.drop(columns="kind").to_numpy(float), rel=1e-6, nan_ok=True
    )
    per_class = unweighted.evaluate(image_set, y, per_class=True, sample_weight=weights)
    expected = unweighted.evaluate(image_set[kept], y[kept], per_class=True)
    assert per_class.to_numpy(float) == pytest.approx(expected.to_numpy(float), nan_ok=True)


def test_evaluate_weights_the_regression_errors(image_set, unweighted):
    y, weights = image_set[TARGETS], _weights(len(image_set), seed=2)
    labelled = y["area"].notna().to_numpy() & (weights > 0)
    predicted = unweighted.predict(image_set)["area"][labelled]

    table = unweighted.evaluate(image_set, y, sample_weight=weights)

    assert table.loc["area", "n_labelled"] == labelled.sum()
    assert table.loc["area", "mae"] == pytest.approx(
        skm.mean_absolute_error(y["area"][labelled], predicted, sample_weight=weights[labelled])
    )


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (np.ones(3), r"^sample_weight has 3 values but X has 160 rows$"),
        (np.ones((160, 1)), r"^sample_weight must be 1-D \(a weight per row\); got shape"),
        (np.r_[np.ones(159), -1.0], r"^sample_weight must be non-negative; got -1.0 at position"),
        (np.r_[np.nan, np.ones(159)], r"^sample_weight must be finite; got nan at position 0$"),
        (np.r_[np.inf, np.ones(159)], r"^sample_weight must be finite; got inf at position 0$"),
        (["a"] * 160, r"^sample_weight must be numbers"),
        (np.zeros(160), r"^sample_weight is zero on every training row"),
    ],
)
def test_bad_weights_fail_in_one_line_and_leave_nothing_fitted(image_set, weights, match):
    est = small_estimator(image_set)
    with pytest.raises(ValueError, match=match):
        est.fit(image_set, image_set[TARGETS], sample_weight=weights)
    assert not hasattr(est, "net_")


def test_score_refuses_bad_weights(image_set, unweighted):
    with pytest.raises(ValueError, match="sample_weight has 2 values but X has 160 rows"):
        unweighted.score(image_set, image_set[TARGETS], sample_weight=[1.0, 2.0])


# -- metadata routing ---------------------------------------------------------------------


def test_cross_validate_and_grid_search_route_sample_weight(image_set):
    data = image_set.iloc[:64]
    y, weights = data[TARGETS], _weights(len(data), seed=3)
    with sklearn.config_context(enable_metadata_routing=True):
        est = small_estimator(image_set, max_epochs=1, valid_split=None)
        est.set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        scorer = multitask_scorer().set_score_request(sample_weight=True)
        params = {"sample_weight": weights}
        results = cross_validate(
            est,
            data,
            y,
            cv=2,
            params=params,
            scoring=scorer,
            return_estimator=True,
            return_indices=True,
        )
        search = GridSearchCV(est, {"lr": [est.lr]}, cv=2, refit=False).fit(data, y, **params)
        with pytest.raises(ValueError, match="sample_weight is zero on every training row"):
            cross_validate(
                est,
                data,
                y,
                cv=2,
                params={"sample_weight": np.zeros(len(data))},
                error_score="raise",
            )

    assert np.array_equal(weights, _weights(len(data), seed=3))  # not overwritten
    folds = zip(results["estimator"], results["indices"]["test"], strict=True)
    expected = [
        fold.score(data.iloc[test], y.iloc[test], sample_weight=weights[test])
        for fold, test in folds
    ]
    assert results["test_mean"].tolist() == pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(
        [
            fold.score(data.iloc[test], y.iloc[test])
            for fold, test in zip(results["estimator"], results["indices"]["test"], strict=True)
        ]
    )
    # The search's folds are cross_validate's: the same weighted fits and scores.
    grid = [search.cv_results_[f"split{i}_test_score"][0] for i in range(2)]
    assert grid == pytest.approx(expected, rel=1e-12)


def test_weights_follow_the_rows_when_bad_images_are_skipped(image_set, tmp_path):
    data = image_set.iloc[:40].copy()
    for name in data["filename"]:
        shutil.copy(f"{image_set.attrs['image_root']}/{name}", tmp_path / name)
    (tmp_path / data["filename"].iloc[0]).write_bytes(b"")  # left out before training
    (tmp_path / data["filename"].iloc[1]).write_bytes(b"not a JPEG")  # found when decoded
    weights = _weights(len(data))
    est = small_estimator(
        image_set, image_root=str(tmp_path), on_bad_image="skip", cache=False, max_epochs=1
    )

    with pytest.warns(UserWarning, match="2 image"):
        est.fit(data, data[TARGETS], sample_weight=weights)

    assert sorted(est.skipped_images_) == sorted(str(tmp_path / n) for n in data["filename"][:2])
    assert np.isfinite(est.history_[-1, "train_loss"])
    assert np.isfinite(est.history_[-1, "valid_loss"])

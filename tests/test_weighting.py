"""Class weights, and the task weightings of loss_weights ("uncertainty", "dwa")."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TARGETS, small_estimator
from sklearn.utils.class_weight import compute_class_weight

from sk_multitask.network._loss import MaskedMultiTaskLoss
from sk_multitask.network._weighting import check_class_weights, class_weights, dwa_weights
from sk_multitask.targets import fit_tasks


def test_balanced_weights_equal_compute_class_weight_on_labelled_cells():
    y = pd.DataFrame(
        {
            "ethnicity": ["a", "a", "a", None, "b", "c", "a", "b", np.nan],
            "gender": ["m", "f", "m", "m", None, "m", "m", "f", "m"],
            "age": np.arange(9.0),
        }
    )
    tasks = fit_tasks(y)

    weights = class_weights("balanced", tasks, y)

    assert list(weights) == ["ethnicity", "gender"]
    for name in weights:
        labelled = y[name].dropna().to_numpy()
        expected = compute_class_weight("balanced", classes=tasks[name].classes_, y=labelled)
        np.testing.assert_allclose(weights[name], expected)
    np.testing.assert_allclose(weights["ethnicity"], [7 / (3 * 4), 7 / (3 * 2), 7 / 3])


def test_a_class_absent_from_the_training_rows_weighs_one():
    y = pd.DataFrame({"e": ["a", "a", "b", "c"]})
    tasks = fit_tasks(y)  # fitted on every row; "c" is only in the (left-out) last row
    weights = class_weights({"e": "balanced"}, tasks, y.iloc[:3])
    np.testing.assert_allclose(weights["e"], [3 / 4, 3 / 2, 1.0])


def test_label_weights_by_task_unnamed_labels_weigh_one():
    y = pd.DataFrame({"e": ["a", "b", "c"], "g": ["m", "f", "m"]})
    weights = class_weights({"e": {"c": 4.0}, "g": "balanced"}, fit_tasks(y), y)
    np.testing.assert_allclose(weights["e"], [1.0, 1.0, 4.0])
    np.testing.assert_allclose(weights["g"], [1.5, 0.75])


@pytest.mark.parametrize(
    "class_weight, match",
    [
        ({"height": "balanced"}, "class_weight names unknown tasks \\['height'\\]"),
        ({"age": "balanced"}, "names tasks \\['age'\\] that are not classification or ordinal"),
        ({"e": {"d": 2.0}}, "task 'e' names labels \\['d'\\] that are not among its classes"),
        (
            {"e": {"a": -1.0}},
            "task 'e' must be 3 finite non-negative numbers .*got \\[-1.0, 1.0, 1.0\\]",
        ),
        ({"e": {"a": float("inf")}}, "finite non-negative"),
        ({"e": "auto"}, "task 'e' must be 'balanced' or a dict from label to weight"),
    ],
)
def test_bad_class_weight_names_the_cause(class_weight, match):
    y = pd.DataFrame({"e": ["a", "b", "c"], "age": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=match):
        class_weights(class_weight, fit_tasks(y), y)


def test_dwa_weights_follow_liu_et_al():
    rows = [
        {"train_a_loss": 2.0, "train_b_loss": 1.0, "train_c_loss": 1.0},
        {"train_a_loss": 1.0, "train_b_loss": 0.9, "train_c_loss": float("nan")},
    ]
    assert dwa_weights([], ["a", "b", "c"]).tolist() == [1.0, 1.0, 1.0]
    assert dwa_weights(rows[:1], ["a", "b", "c"]).tolist() == [1.0, 1.0, 1.0]

    weights = dwa_weights(rows, ["a", "b", "c"], temperature=2.0)

    ratios = np.array([0.5, 0.9, 1.0])  # an unlabelled epoch's ratio counts as 1
    expected = 3 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    np.testing.assert_allclose(weights, expected)
    assert weights.sum() == pytest.approx(3.0)


def test_dwa_sets_the_weights_each_epoch_from_the_training_losses(image_set):
    est = small_estimator(image_set, loss_weights="dwa", max_epochs=3)

    est.fit(image_set, image_set[TARGETS])

    history = est.history_
    recorded = np.array([[row[f"{n}_weight"] for n in TARGETS] for row in history])
    np.testing.assert_array_equal(recorded[:2], 1.0)
    for epoch in (2,):
        np.testing.assert_allclose(
            recorded[epoch], dwa_weights(history[:epoch], TARGETS), rtol=1e-6
        )
        assert recorded[epoch].sum() == pytest.approx(3.0, rel=1e-6)
    assert not np.allclose(recorded[2], 1.0)
    assert est.net_.criterion_.weights.tolist() == pytest.approx(recorded[-1].tolist())


def test_uncertainty_log_variances_are_optimised_and_recorded(image_set):
    est = small_estimator(
        image_set,
        loss_weights="uncertainty",
        lr=0.05,
        class_weight="balanced",
        regression_loss="huber",
    )

    est.fit(image_set, image_set[TARGETS])

    criterion = est.net_.criterion_
    optimised = [p for group in est.net_.optimizer_.param_groups for p in group["params"]]
    assert any(p is criterion.log_vars for p in optimised)
    assert torch.count_nonzero(criterion.log_vars.detach()) == len(TARGETS)  # they moved
    last = est.history_[-1]
    weights = torch.exp(-criterion.log_vars.detach()).tolist()
    assert [last[f"{n}_weight"] for n in TARGETS] == pytest.approx(weights)
    assert np.isfinite(est.history_[:, "train_loss"]).all()


def test_balanced_class_weights_of_a_fit_come_from_its_training_rows(image_set):
    est = small_estimator(image_set, class_weight={"color": "balanced"}, max_epochs=1)

    est.fit(image_set, image_set[TARGETS])

    train = image_set.loc[~image_set["is_valid"], "color"].dropna().to_numpy()
    classes = est.tasks_["color"].classes_
    expected = compute_class_weight("balanced", classes=classes, y=train)
    buffers = dict(est.net_.criterion_.named_buffers())
    np.testing.assert_allclose(buffers["class_weight_0"].numpy(), expected, rtol=1e-6)
    assert "class_weight_1" not in buffers  # shape: unweighted


@pytest.mark.parametrize(
    "params, match",
    [
        ({"loss_weights": "equal"}, "'loss_weights' parameter"),
        ({"class_weight": "auto"}, "'class_weight' parameter"),
        ({"regression_loss": "l2"}, "'regression_loss' parameter"),
        ({"loss_weights": {"area": float("nan")}}, "finite non-negative"),
        ({"loss_weights": {"size": 2.0}}, "loss_weights names unknown tasks \\['size'\\]"),
        ({"class_weight": {"area": "balanced"}}, "not classification or ordinal tasks"),
        ({"regression_loss": {"color": "l1"}}, "not regression tasks"),
    ],
)
def test_bad_weighting_parameters_raise_in_fit(image_set, params, match):
    est = small_estimator(image_set, **params)
    with pytest.raises(ValueError, match=match):
        est.fit(image_set, image_set[TARGETS])
    assert not hasattr(est, "net_")


def test_class_weights_and_the_loss_share_one_check():
    """The estimator's class_weight and the loss's class weights refuse the same things
    with the same message (one check, check_class_weights)."""
    y = pd.DataFrame({"e": ["a", "b", "c"], "age": [1.0, 2.0, 3.0]})
    tasks = fit_tasks(y)
    specs = [(name, task.kind, task.n_outputs) for name, task in tasks.items()]
    for given, match in [
        ({"e": {"a": -1.0}}, "class_weight of task 'e' must be 3 finite non-negative numbers"),
        ({"age": {}}, "class_weight names tasks \\['age'\\] that are not classification or"),
        ({"x": {}}, "class_weight names unknown tasks \\['x'\\]; the tasks .* \\['e', 'age'\\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            class_weights(given, tasks, y)
        as_arrays = {name: [-1.0, 1.0, 1.0] for name in given}
        with pytest.raises(ValueError, match=match):
            MaskedMultiTaskLoss(specs, class_weight=as_arrays)
    assert check_class_weights({"e": [1, 2, 3]}, tasks, {"e": 3})["e"].tolist() == [1.0, 2.0, 3.0]

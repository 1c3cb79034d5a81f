import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from sk_multitask.network._backbones import SimpleCNN
from sk_multitask.network._loss import REGRESSION_LOSSES, MaskedMultiTaskLoss, check_task_losses
from sk_multitask.network._model import MultiTaskModule
from sk_multitask.targets import encode_targets, fit_tasks
from sk_multitask.targets._cell_loss import REGRESSION_LOSS_NAMES

NAN = float("nan")
SPECS = [
    ("gender", "classification", 2),
    ("ethnicity", "classification", 3),
    ("age", "regression", 1),
]


def _log_softmax(row, k):
    return row[k] - math.log(sum(math.exp(v) for v in row))


def test_loss_equals_hand_computation_with_missing_cells():
    y_pred = torch.tensor(
        [
            [2.0, -1.0, 0.1, 0.2, 0.3, 1.5],
            [0.5, 0.5, 2.0, -2.0, 0.0, -0.5],
            [-1.0, 1.0, 0.0, 1.0, 3.0, 0.25],
        ]
    )
    y_true = torch.tensor(
        [
            [0.0, 2.0, NAN],
            [NAN, 0.0, 1.0],
            [1.0, NAN, -1.0],
        ]
    )
    rows = y_pred.tolist()
    gender = -(_log_softmax(rows[0][0:2], 0) + _log_softmax(rows[2][0:2], 1)) / 2
    ethnicity = -(_log_softmax(rows[0][2:5], 2) + _log_softmax(rows[1][2:5], 0)) / 2
    age = ((-0.5 - 1.0) ** 2 + (0.25 + 1.0) ** 2) / 2
    weights = {"gender": 2.0, "age": 0.5}
    expected = 2.0 * gender + 1.0 * ethnicity + 0.5 * age

    loss = MaskedMultiTaskLoss(SPECS, loss_weights=weights)(y_pred, y_true)

    assert loss.item() == pytest.approx(expected, rel=1e-6)
    sums, counts = MaskedMultiTaskLoss(SPECS).task_terms(y_pred, y_true)
    assert counts.tolist() == [2, 2, 2]
    assert sums.tolist() == pytest.approx([2 * gender, 2 * ethnicity, 2 * age], rel=1e-6)


def test_task_without_label_in_batch_adds_zero_and_zero_gradient():
    torch.manual_seed(0)
    module = MultiTaskModule(SimpleCNN(width=4), 32, {"gender": 2, "ethnicity": 3, "age": 1})
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    y_true = torch.tensor([[0.0, NAN, 0.3], [1.0, NAN, NAN], [1.0, NAN, -1.2], [0.0, NAN, 0.1]])
    criterion = MaskedMultiTaskLoss(SPECS)

    loss = criterion(module(images), y_true)
    loss.backward()

    assert torch.isfinite(loss)
    ethnicity_head = module.heads[1]
    assert torch.count_nonzero(ethnicity_head.weight.grad) == 0
    assert torch.count_nonzero(ethnicity_head.bias.grad) == 0
    assert torch.count_nonzero(module.heads[0].weight.grad) > 0
    assert torch.count_nonzero(module.heads[2].weight.grad) > 0
    sums, counts = criterion.task_terms(module(images), y_true)
    assert counts[1] == 0 and sums[1] == 0


def test_batch_with_no_label_at_all_gives_zero_loss_not_nan():
    y_pred = torch.randn(3, 6, requires_grad=True)
    y_true = torch.full((3, 3), NAN)

    loss = MaskedMultiTaskLoss(SPECS)(y_pred, y_true)
    loss.backward()

    assert loss.item() == 0.0
    assert torch.count_nonzero(y_pred.grad) == 0


def test_masked_cells_give_zero_gradient_even_when_outputs_are_huge():
    y_pred = torch.tensor([[1e30, -1e30, 0, 0, 0, 1e30]], requires_grad=True)
    y_true = torch.tensor([[NAN, 0.0, NAN]])

    loss = MaskedMultiTaskLoss(SPECS)(y_pred, y_true)
    loss.backward()

    assert torch.isfinite(loss)
    assert torch.isfinite(y_pred.grad).all()
    assert y_pred.grad[0, [0, 1, 5]].tolist() == [0.0, 0.0, 0.0]


def test_split_outputs_follows_head_sizes():
    y_pred = torch.arange(12.0).view(2, 6)
    gender, ethnicity, age = MaskedMultiTaskLoss(SPECS).split_outputs(y_pred)
    assert gender.tolist() == [[0, 1], [6, 7]]
    assert ethnicity.tolist() == [[2, 3, 4], [8, 9, 10]]
    assert age.tolist() == [[5], [11]]


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"height": 1.0}, "unknown tasks \\['height'\\]"),
        ({"age": -1.0}, "non-negative"),
        ({"age": float("nan")}, "non-negative"),
        ({"age": float("inf")}, "loss_weights must be finite"),
        ({"age": "a"}, "loss_weights must be finite"),
    ],
)
def test_bad_loss_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        MaskedMultiTaskLoss(SPECS, loss_weights=weights)


# -- class weights, regression losses, multi-label tasks, task weightings ---------------

ML_SPECS = [*SPECS, ("tags", "multilabel", 3)]


def _batch(n=8, seed=0):
    """Random outputs and targets for ML_SPECS, with missing cells in every task."""
    generator = torch.Generator().manual_seed(seed)
    y_pred = torch.randn(n, 9, generator=generator) * 2
    tags = (torch.rand(n, 3, generator=generator) > 0.5).float()
    y_true = torch.stack(
        [
            torch.randint(0, 2, (n,), generator=generator).float(),
            torch.randint(0, 3, (n,), generator=generator).float(),
            torch.randn(n, generator=generator),
        ],
        dim=1,
    )
    y_true = torch.cat([y_true, tags], dim=1)
    for column, rows in [(0, [1, 4]), (1, [0, 5, 6]), (2, [2, 3])]:
        y_true[rows, column] = NAN
    y_true[[0, 7], 3:] = NAN  # a missing multi-label cell: all its columns
    return y_pred, y_true


def test_class_weighted_term_equals_torch_weighted_cross_entropy_on_labelled_rows():
    y_pred, y_true = _batch()
    weights = [0.5, 2.0, 3.0]
    criterion = MaskedMultiTaskLoss(ML_SPECS, class_weight={"ethnicity": weights})

    sums, norms = criterion.task_terms(y_pred, y_true)

    labelled = ~torch.isnan(y_true[:, 1])
    expected = F.cross_entropy(
        y_pred[labelled, 2:5], y_true[labelled, 1].long(), weight=torch.tensor(weights)
    )
    assert (sums[1] / norms[1]).item() == pytest.approx(expected.item(), rel=1e-6)
    labelled = ~torch.isnan(y_true[:, 0])
    unweighted = F.cross_entropy(y_pred[labelled, 0:2], y_true[labelled, 0].long())
    assert (sums[0] / norms[0]).item() == pytest.approx(unweighted.item(), rel=1e-6)


@pytest.mark.parametrize(
    "name, reference",
    [("mse", F.mse_loss), ("l1", F.l1_loss), ("huber", F.huber_loss)],
)
def test_regression_loss_term_equals_torch_on_labelled_cells(name, reference):
    y_pred, y_true = _batch()
    criterion = MaskedMultiTaskLoss(ML_SPECS, regression_loss={"age": name})

    sums, norms = criterion.task_terms(y_pred, y_true)

    labelled = ~torch.isnan(y_true[:, 2])
    expected = reference(y_pred[labelled, 5], y_true[labelled, 2])
    assert (sums[2] / norms[2]).item() == pytest.approx(expected.item(), rel=1e-6)


def test_huber_is_quadratic_within_one_standard_deviation_and_linear_beyond():
    criterion = MaskedMultiTaskLoss([("age", "regression", 1)], regression_loss="huber")
    losses, _ = criterion.cell_losses(torch.tensor([[0.5], [3.0]]), torch.tensor([[0.0], [0.0]]))
    assert losses[:, 0].tolist() == pytest.approx([0.5 * 0.5**2, 3.0 - 0.5])


def test_multilabel_term_is_bce_averaged_over_labels_then_labelled_cells():
    y_pred, y_true = _batch()
    criterion = MaskedMultiTaskLoss(ML_SPECS)

    sums, norms = criterion.task_terms(y_pred, y_true)

    labelled = ~torch.isnan(y_true[:, 3])
    expected = F.binary_cross_entropy_with_logits(y_pred[labelled, 6:9], y_true[labelled, 3:6])
    assert norms[3].item() == labelled.sum().item() == 6
    assert (sums[3] / norms[3]).item() == pytest.approx(expected.item(), rel=1e-6)


VARIANTS = {
    "plain": {},
    "class weights": {"class_weight": {"gender": [1.0, 4.0], "ethnicity": [0.2, 1.0, 9.0]}},
    "l1": {"regression_loss": "l1"},
    "huber": {"regression_loss": "huber"},
    "uncertainty": {"loss_weights": "uncertainty"},
    "dwa": {"loss_weights": "dwa"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_masked_cells_give_exactly_zero_loss_and_gradient_in_every_variant(variant):
    y_pred, y_true = _batch()
    y_pred.requires_grad_(True)
    criterion = MaskedMultiTaskLoss(ML_SPECS, **VARIANTS[variant])

    loss = criterion(y_pred, y_true)
    loss.backward()

    losses, labelled = criterion.cell_losses(y_pred, y_true)
    assert torch.isfinite(loss)
    assert (losses[~labelled] == 0).all()
    columns = [slice(0, 2), slice(2, 5), slice(5, 6), slice(6, 9)]
    for task, outputs in enumerate(columns):
        masked = ~labelled[:, task]
        assert torch.count_nonzero(y_pred.grad[masked, outputs]) == 0
        assert torch.count_nonzero(y_pred.grad[~masked, outputs]) > 0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_task_without_label_in_the_batch_adds_zero_in_every_variant(variant):
    y_pred, y_true = _batch()
    y_true[:, 3:] = NAN  # no multi-label cell in this batch
    criterion = MaskedMultiTaskLoss(ML_SPECS, **VARIANTS[variant])
    without_tags = MaskedMultiTaskLoss(SPECS, **VARIANTS[variant])
    y_pred.requires_grad_(True)

    loss = criterion(y_pred, y_true)
    loss.backward()

    assert loss.item() == pytest.approx(without_tags(y_pred[:, :6], y_true[:, :3]).item())
    assert torch.count_nonzero(y_pred.grad[:, 6:]) == 0
    if variant == "uncertainty":
        assert criterion.log_vars.grad[3] == 0
        assert torch.count_nonzero(criterion.log_vars.grad[:3]) == 3


def test_uncertainty_loss_is_libmtl_form_and_its_log_variances_get_gradients():
    y_pred, y_true = _batch()
    criterion = MaskedMultiTaskLoss(ML_SPECS, loss_weights="uncertainty")
    with torch.no_grad():
        criterion.log_vars.copy_(torch.tensor([0.5, -0.3, 1.0, 0.0]))

    loss = criterion(y_pred, y_true)
    loss.backward()

    sums, norms = MaskedMultiTaskLoss(ML_SPECS).task_terms(y_pred, y_true)
    s = criterion.log_vars.detach()
    terms = sums / norms
    assert loss.item() == pytest.approx((torch.exp(-s) * terms + s).sum().item(), rel=1e-6)
    # d/ds_t = 1 - exp(-s_t) * L_t
    expected_grad = 1 - torch.exp(-s) * terms
    assert criterion.log_vars.grad.tolist() == pytest.approx(expected_grad.tolist(), rel=1e-5)
    assert criterion.weights.tolist() == pytest.approx(torch.exp(-s).tolist())
    assert [n for n, _ in criterion.named_parameters()] == ["log_vars"]


def test_dwa_weights_live_in_a_buffer_and_weigh_the_terms():
    y_pred, y_true = _batch()
    criterion = MaskedMultiTaskLoss(ML_SPECS, loss_weights="dwa")
    assert criterion.weights.tolist() == [1.0] * 4
    assert list(criterion.parameters()) == []
    criterion.task_weights.copy_(torch.tensor([0.5, 1.5, 1.0, 1.0]))

    sums, norms = criterion.task_terms(y_pred, y_true)

    expected = (torch.tensor([0.5, 1.5, 1.0, 1.0]) * sums / norms).sum()
    assert criterion(y_pred, y_true).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"loss_weights": {"age": float("inf")}}, "finite non-negative"),
        ({"loss_weights": "equal"}, "is not a weighting"),
        ({"class_weight": {"age": [1.0]}}, "not classification or ordinal tasks"),
        ({"class_weight": {"height": [1.0]}}, "unknown tasks \\['height'\\]"),
        ({"class_weight": {"gender": [1.0, 2.0, 3.0]}}, "must be 2 finite non-negative"),
        ({"class_weight": {"gender": [1.0, float("nan")]}}, "must be 2 finite non-negative"),
        ({"regression_loss": "cauchy"}, "unknown regression_loss 'cauchy' for task 'age'"),
        ({"regression_loss": {"gender": "l1"}}, "not regression tasks"),
        ({"regression_loss": {"age": "l2"}}, "unknown regression_loss 'l2'"),
    ],
)
def test_bad_weighting_parameters_name_the_cause(params, match):
    with pytest.raises(ValueError, match=match):
        MaskedMultiTaskLoss(SPECS, **params)


def test_loss_weights_all_zero_warn_that_nothing_trains():
    specs = [("pet", "classification", 2), ("age", "regression", 1)]
    with pytest.warns(UserWarning, match=r"every loss weight is 0 .*the network trains nothing"):
        check_task_losses(specs, loss_weights={"pet": 0, "age": 0.0})
    with pytest.warns(UserWarning, match=r"every class weight of task 'pet' is 0"):
        check_task_losses(specs, class_weight={"pet": [0.0, 0.0]})
    # Some weight left: no warning (warnings are errors in tests).
    check_task_losses(specs, loss_weights={"pet": 0}, class_weight={"pet": [0.0, 1.0]})


def _labelled_frame(n=40, seed=0):
    """Targets of the four ML_SPECS tasks and an ordinal one (``grade``, 4 levels) as a
    user gives them, a fifth of cells missing."""
    rng = np.random.default_rng(seed)
    y = pd.DataFrame(
        {
            "gender": rng.choice(["f", "m"], n).astype(object),
            "ethnicity": rng.choice(["a", "b", "c"], n).astype(object),
            "age": rng.normal(40, 12, n),
            "tags": [sorted(set(rng.choice(["x", "y", "z"], 2))) for _ in range(n)],
            "grade": pd.Categorical(rng.choice(list("DCBA"), n), list("DCBA"), ordered=True),
        }
    )
    for name in y.columns:
        y.loc[rng.random(n) < 0.2, name] = None if name != "age" else np.nan
    return y


@pytest.mark.parametrize("variant", [*VARIANTS, "l1 for age only"])
def test_numpy_cell_losses_equal_the_torch_loss_in_every_variant(variant):
    # The top-loss table (estimator and ONNX predictor) uses the numpy twin: it must
    # compute what training computes.
    y = _labelled_frame()
    tasks = fit_tasks(y, kinds={"tags": "multilabel"})
    params = VARIANTS.get(variant, {"regression_loss": {"age": "l1"}})
    if variant == "class weights":  # an ordinal task's weigh its true level
        params = {"class_weight": {**params["class_weight"], "grade": [3.0, 1.0, 0.5, 2.0]}}
    criterion = MaskedMultiTaskLoss([(n, t.kind, t.n_outputs) for n, t in tasks.items()], **params)
    if variant == "uncertainty":
        criterion.log_vars.data = torch.tensor([0.5, -1.0, 0.0, 2.0, 1.0])
    outputs = torch.randn(len(y), 12, generator=torch.Generator().manual_seed(1)) * 3
    outputs[5] = float("nan")  # an image that could not be read
    targets = torch.from_numpy(encode_targets(y, tasks))

    expected, expected_labelled = criterion.cell_losses(outputs, targets)
    twin = criterion.numpy_cell_loss(tasks)
    split = dict(zip(tasks, torch.split(outputs, [2, 3, 1, 3, 3], dim=1), strict=True))
    losses, labelled = twin.cell_losses(split, y)

    np.testing.assert_array_equal(labelled, expected_labelled.numpy())
    np.testing.assert_allclose(losses, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert np.isnan(losses[5][labelled[5]]).all() and (losses[~labelled] == 0).all()
    assert np.isfinite(np.delete(losses, 5, axis=0)).all() and (losses[labelled] > 0).mean() > 0.9
    np.testing.assert_allclose(twin.task_weights, criterion.weights.numpy(), rtol=1e-6)


def test_the_numpy_twin_knows_every_regression_loss():
    assert tuple(REGRESSION_LOSSES) == REGRESSION_LOSS_NAMES


def test_ordinal_term_is_the_sum_of_corn_binary_cross_entropies_on_its_conditional_rows():
    # CORN (Shi, Cao and Raschka): output j trains on the rows with level >= j, target
    # level > j. Its per-cell loss is the sum of those binary cross-entropies.
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.3, -1.0], [2.0, 1.0, 3.0]])
    levels = [0, 2, 3]
    criterion = MaskedMultiTaskLoss([("grade", "ordinal", 3)])
    losses, _ = criterion.cell_losses(logits, torch.tensor([[float(k)] for k in levels]))
    for row, level in enumerate(levels):
        trained = range(min(level + 1, 3))  # the outputs this row trains
        expected = sum(
            F.binary_cross_entropy_with_logits(logits[row, j], torch.tensor(float(level > j)))
            for j in trained
        )
        assert losses[row, 0].item() == pytest.approx(expected.item(), rel=1e-6)


def test_ordinal_class_weights_are_checked_against_its_levels():
    with pytest.raises(ValueError, match="class_weight of task 'grade' must be 4 finite"):
        MaskedMultiTaskLoss([("grade", "ordinal", 3)], class_weight={"grade": [1.0, 1.0, 1.0]})

import math

import pytest
import torch

from sk_multitask.criterion import MaskedMultiTaskLoss
from sk_multitask.module import MultiTaskModule, SimpleCNN

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
    ],
)
def test_bad_loss_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        MaskedMultiTaskLoss(SPECS, loss_weights=weights)

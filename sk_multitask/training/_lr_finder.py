"""The learning-rate range test behind ``lr_find``: :func:`find_lr`, :class:`LRFindResult`."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from torch.optim import lr_scheduler

from ..network._model import multitask_module


class LRFindResult(NamedTuple):
    """What :meth:`~sk_multitask.MultiTaskImageEstimator.lr_find` returns.

    Attributes
    ----------
    history : DataFrame
        One row per batch: ``lr`` (the heads' rate), ``loss`` and ``smoothed_loss``
        (an exponential moving average, debiased, with factor 0.98).
    suggested_lr : float
        The rate in the "valley" of the smoothed loss curve (fastai's default
        suggestion): two thirds of the way down its longest descent.
    """

    history: pd.DataFrame
    suggested_lr: float


_SMOOTHING = 0.98
_DIVERGED = 4.0  # stop once the smoothed loss exceeds 4 x its minimum (fastai)


def find_lr(net, dataset, start_lr=1e-7, end_lr=10.0, num_it=100, freeze=False):
    """The learning-rate range test (Smith 2015; fastai's ``lr_find``) on an initialised net.

    Trains ``net`` on batches of ``dataset`` (cycling through it as needed) with the rate
    growing exponentially from ``start_lr`` to ``end_lr`` over ``num_it`` batches
    (torch's ``ExponentialLR``; the backbone's group keeps its ratio to the heads'), and
    stops early once the loss diverges. ``net`` is trained: pass a throw-away one.

    Returns
    -------
    LRFindResult
    """
    optimizer = net.optimizer_
    ratios = [group["lr"] / net.lr for group in optimizer.param_groups]
    for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
        group["lr"] = start_lr * ratio
    gamma = (end_lr / start_lr) ** (1 / max(num_it - 1, 1))
    scheduler = lr_scheduler.ExponentialLR(optimizer, gamma)
    multitask_module(net).freeze_backbone(freeze)
    rows, average, best = [], 0.0, math.inf
    while len(rows) < num_it:
        for batch in net.get_iterator(dataset, training=True):
            lr = optimizer.param_groups[0]["lr"]
            loss = net.train_step(batch)["loss"].item()
            average = _SMOOTHING * average + (1 - _SMOOTHING) * loss
            smoothed = average / (1 - _SMOOTHING ** (len(rows) + 1))
            rows.append((lr, loss, smoothed))
            best = min(best, smoothed)
            scheduler.step()
            if not math.isfinite(smoothed) or smoothed > _DIVERGED * best or len(rows) >= num_it:
                break
        if not math.isfinite(smoothed) or smoothed > _DIVERGED * best:
            break
    history = pd.DataFrame(rows, columns=["lr", "loss", "smoothed_loss"])
    return LRFindResult(history, _valley(history))


def _valley(history):
    """fastai's "valley" suggestion: about half-way down the longest valley of the curve.

    The valley is the longest decreasing subsequence of the (finite) smoothed losses; the
    suggestion is the rate at its start plus a third and a sixth of its span.
    """
    finite = np.isfinite(history["smoothed_loss"].to_numpy())
    losses = history["smoothed_loss"].to_numpy()[finite]
    lrs = history["lr"].to_numpy()[finite]
    if len(losses) < 2:
        return float(history["lr"].iloc[0])
    length = np.ones(len(losses), dtype=int)  # of the longest descent ending at each point
    for i in range(1, len(losses)):
        higher = losses[:i] > losses[i]
        if higher.any():
            length[i] = length[:i][higher].max() + 1
    end = int(np.argmax(length))
    start = max(end - int(length[end]), 0)
    third = (end - start) / 3
    return float(lrs[start + int(third) + int(third / 2)])

"""The task loss weights of ``loss_weights="dwa"``, set every epoch."""

from __future__ import annotations

import torch
from skorch.callbacks import Callback

from ...network._weighting import dwa_weights

__all__ = ["DynamicWeightAverage"]


class DynamicWeightAverage(Callback):
    """Set the loss's task weights by :func:`dwa_weights` at the start of every epoch.

    The weighting of ``loss_weights="dwa"``: the net's criterion must be a
    :class:`~sk_multitask.network._loss.MaskedMultiTaskLoss`, whose ``task_weights``
    buffer this callback overwrites.

    Parameters
    ----------
    temperature : float, default=2.0
        ``T`` of the softmax: larger, the weights stay closer to 1.
    """

    def __init__(self, temperature=2.0):
        self.temperature = temperature

    def on_epoch_begin(self, net, **kwargs):
        criterion = net.criterion_
        # skorch opened the current epoch's row before this runs: the finished ones precede it.
        weights = dwa_weights(net.history[:-1], criterion.names, self.temperature)
        criterion.task_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))

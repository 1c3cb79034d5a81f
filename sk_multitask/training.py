"""The skorch net that trains a :class:`~sk_multitask.module.MultiTaskModule`, and its wiring.

:class:`MultiTaskNet` is skorch's :class:`~skorch.NeuralNet` with mixed precision; the
training recipe (schedules, freezing, early stopping...) is made of skorch callbacks
assembled here, so that the estimator only chooses them from its parameters.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from skorch import NeuralNet
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator

__all__ = ["OPTIMIZERS", "MultiTaskNet", "seeded"]

#: Optimizers by the name the estimator's ``optimizer`` parameter takes.
OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": functools.partial(torch.optim.SGD, momentum=0.9),
}


class MultiTaskNet(NeuralNet):
    """skorch's NeuralNet with mixed precision: autocast forward, fp16 gradient scaling."""

    def __init__(self, *args, precision="fp32", **kwargs):
        super().__init__(*args, **kwargs)
        self.precision = precision

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=torch.device(self.device).type, dtype=dtype)

    def infer(self, x, **fit_params):
        with self._autocast():
            return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        # The loss in float32 whatever the forward pass's precision.
        return super().get_loss(y_pred.float(), y_true, X=X, training=training)

    def train_step(self, batch, **fit_params):
        if self.precision != "fp16":
            return super().train_step(batch, **fit_params)
        # fp16 gradients underflow without a scaler; bf16 has float32's range.
        if getattr(self, "grad_scaler_", None) is None:
            self.grad_scaler_ = torch.amp.GradScaler(torch.device(self.device).type)
        self.optimizer_.zero_grad()
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self.grad_scaler_.scale(loss).backward()
        self.grad_scaler_.unscale_(self.optimizer_)  # callbacks see true gradients
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
        )
        self.grad_scaler_.step(self.optimizer_)
        self.grad_scaler_.update()
        return {"loss": loss, "y_pred": y_pred}


@contextlib.contextmanager
def seeded(seed, device):
    """Seed torch inside the block and restore its global random state after."""
    if seed is None:
        yield
        return
    cuda = device.startswith("cuda")
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield

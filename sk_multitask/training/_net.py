"""The skorch net that trains a :class:`~sk_multitask.network._model.MultiTaskModule`.

:class:`MultiTaskNet` is skorch's :class:`~skorch.NeuralNet` with mixed precision (torch
AMP), and with Ctrl-C that stops the caller too. :class:`AcceleratedMultiTaskNet` is the
same net trained data-parallel by Accelerate (:mod:`sk_multitask.training._distributed`). The
recipe is in the callbacks (:mod:`sk_multitask.training.callbacks`), chosen by
:func:`sk_multitask.training._build.build_net`.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping
from skorch.dataset import unpack_data
from skorch.hf import AccelerateMixin

from ._distributed import launched_processes
from .callbacks import StopTraining

#: Optimizers by the name the estimator's ``optimizer`` parameter takes.
OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": functools.partial(torch.optim.SGD, momentum=0.9),
}


def check_optimizer(optimizer, lr):
    """Refuse a callable ``optimizer`` that the net cannot use, before any data is read.

    The net calls it as torch's optimizers are called, ``optimizer(param_groups,
    lr=lr)``, and needs a :class:`torch.optim.Optimizer` back: a probe call on one
    zero parameter checks both. A name of :data:`OPTIMIZERS` needs no check.

    Raises
    ------
    ValueError
        Naming the callable and what is wrong.
    """
    if isinstance(optimizer, str):
        return
    name = getattr(optimizer, "__name__", None) or repr(optimizer)[:80]
    probe = [{"params": [torch.nn.Parameter(torch.zeros(1))]}]
    try:
        made = optimizer(probe, lr=lr)
    except Exception as exc:  # the user's code: whatever it raises, name the call
        raise ValueError(
            f"optimizer {name} cannot be called as optimizer(param_groups, lr=lr), as "
            f"torch's optimizers are: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(made, torch.optim.Optimizer):
        raise ValueError(
            f"optimizer {name} must return a torch.optim.Optimizer when called as "
            f"optimizer(param_groups, lr=lr); it returned {type(made).__name__}"
        )


def _raised_in(exc, function):
    """Whether ``exc`` was raised inside ``function`` (skorch's own ``EarlyStopping``, say)."""
    traceback = exc.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code is function.__code__:
            return True
        traceback = traceback.tb_next
    return False


class MultiTaskNet(NeuralNet):
    """skorch's NeuralNet with mixed precision and an interrupt that reaches the caller.

    - ``precision``: autocast forward pass ("bf16"/"fp16"); for fp16, torch's
      ``GradScaler`` scales the loss and unscales the gradients before the callbacks'
      ``on_grad_computed`` (bf16 has float32's range and needs none);
    - Ctrl-C (``KeyboardInterrupt``) ends training, drops the unfinished epoch from the
      history, runs the callbacks' ``on_train_end`` and is then raised again, so that a
      script or a search stops (skorch alone swallows it).
      :class:`~sk_multitask.training.callbacks.StopTraining`, and skorch's ``EarlyStopping``
      among the user's callbacks, end the fit quietly.
    """

    def __init__(self, *args, precision="fp32", **kwargs):
        super().__init__(*args, **kwargs)
        self.precision = precision

    def notify(self, method_name, **cb_kwargs):
        super().notify(method_name, **cb_kwargs)
        if method_name == "on_epoch_end":
            #: Epochs whose every callback has run: the history rows that are complete.
            self.epochs_completed_ = len(self.history)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        self.epochs_completed_ = len(self.history)
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt as exc:
            if isinstance(exc, StopTraining) or _raised_in(exc, EarlyStopping.on_epoch_end):
                raise  # a callback ending the fit: skorch stops quietly

            del self.history[self.epochs_completed_ :]
            self.interrupted_ = exc
            raise

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        self.interrupted_ = None
        super().partial_fit(X, y, classes, **fit_params)
        interrupted, self.interrupted_ = self.interrupted_, None
        if interrupted is not None:
            raise interrupted
        return self

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

    def _grad_scaler(self):
        """torch AMP's gradient scaler of an fp16 fit (None otherwise), made on first use."""
        if self.precision != "fp16":
            return None
        if getattr(self, "grad_scaler_", None) is None:
            self.grad_scaler_ = torch.amp.GradScaler(torch.device(self.device).type)
        return self.grad_scaler_

    def train_step_single(self, batch, **fit_params):
        scaler = self._grad_scaler()
        if scaler is None:
            return super().train_step_single(batch, **fit_params)
        # skorch's step, its backward pass through the scaler (fp16 gradients underflow).
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler.scale(loss).backward()
        scaler.unscale_(self.optimizer_)  # callbacks see true gradients
        return {"loss": loss, "y_pred": y_pred}

    def _step_optimizer(self, step_fn):
        scaler = self._grad_scaler()
        if scaler is None:
            return super()._step_optimizer(step_fn)
        step_fn()  # the scaler takes no closure
        scaler.step(self.optimizer_)  # skipped when the gradients overflowed
        scaler.update()
        return None


_MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def make_accelerator(precision, device, batch_size):
    """The Accelerator of a data-parallel fit in this launched process group.

    ``batch_size`` is the total over the processes, which must divide it.
    """
    try:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration
    except ImportError as exc:
        raise ImportError(
            "data-parallel training needs Accelerate: pip install 'sk-multitask[accelerate]'"
        ) from exc
    processes = launched_processes()
    if batch_size % processes:
        raise ValueError(
            f"batch_size={batch_size} is the total batch size of the {processes} launched "
            f"processes and must be a multiple of {processes}"
        )
    return Accelerator(
        # batch_size is the total over the processes (Accelerate ignores its own
        # split_batches argument, deprecated, without a word).
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        mixed_precision=_MIXED_PRECISION[precision],
        cpu=not device.startswith("cuda"),
    )


class AcceleratedMultiTaskNet(AccelerateMixin, MultiTaskNet):
    """:class:`MultiTaskNet` trained data-parallel by Accelerate.

    The module's gradients are averaged over the processes by DDP, the criterion's (its
    learned task weights) by the net, before every optimizer step.
    Mixed precision is Accelerate's (the net's own ``precision`` stays ``"fp32"``).
    The loss each step returns is averaged over the processes, for the history.
    ``local_params_`` (set by :func:`~sk_multitask.training._build.build_net`) are the
    parameters of the plain net :meth:`to_local` makes.
    """

    def _initialize_accelerator(self):
        # The criterion only goes to the device, unwrapped: the callbacks read its
        # attributes (task_terms, weights), which a DistributedDataParallel wrapper hides,
        # and DDP refuses a module without parameters. The gradients of the parameters it
        # may have are averaged by train_step_single instead.
        criterion, self.criterion_ = self.criterion_, None
        try:
            return super()._initialize_accelerator()
        finally:
            self.criterion_ = criterion.to(self.accelerator.device)

    def train_step_single(self, batch, **fit_params):
        step = super().train_step_single(batch, **fit_params)
        if self.accelerator.sync_gradients:  # when DDP averaged the module's gradients
            self._average_criterion_gradients()
        return step

    def _average_criterion_gradients(self):
        """Average the gradients of the criterion's learned parameters (the log-variances
        of ``loss_weights="uncertainty"``) over the processes, as DDP does the module's, so
        that every process takes the same step. The loss gives each a gradient every step
        (zero for a task absent from the batch)."""
        params = [p for p in self.criterion_.parameters() if p.requires_grad]
        averaged = self.accelerator.reduce([p.grad for p in params], reduction="mean")
        for param, grad in zip(params, averaged, strict=True):
            param.grad = grad

    def train_step(self, batch, **fit_params):
        step = super().train_step(batch, **fit_params)
        step["loss"] = self.accelerator.reduce(step["loss"].detach(), reduction="mean")
        return step

    def validation_step(self, batch, **fit_params):
        step = super().validation_step(batch, **fit_params)
        step["loss"] = self.accelerator.reduce(step["loss"].detach(), reduction="mean")
        return step

    def to_local(self):
        """The trained network in a plain :class:`MultiTaskNet` of ``local_params_``.

        It predicts in one process and pickles (no Accelerator, no DDP wrapper: skorch
        unwraps the module when training ends); it keeps the history, not the
        optimizer's state.
        """
        params = {
            **self.local_params_,
            "module": self.module_,
            "criterion": self.criterion_,
            # The epoch table is the same instance; AccelerateMixin pointed its sink at
            # the Accelerator's print (which holds the accelerated optimizer: not
            # picklable).
            "callbacks__print_log__sink": print,
        }
        plain = MultiTaskNet(**params)
        plain.initialize()
        plain.history = self.history
        return plain

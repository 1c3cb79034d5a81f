"""Training on several processes: data-parallel with Accelerate, and within Dask workers.

Data parallel: when a script (a user's, or the ``sk-multitask fit`` command) runs under
``accelerate launch --multi_gpu --num_processes N`` or ``torchrun --nproc_per_node N``, each of the
N processes calls ``fit`` on the same data, and the estimator (``accelerator="auto"``)
trains one model with skorch's :class:`~skorch.hf.AccelerateMixin`: Accelerate wraps the
network in ``DistributedDataParallel`` (gradients all-reduced every step), gives each
process its shard of every epoch's batches, and the losses and per-task metrics are
reduced across processes before they are recorded, so that every process keeps the same
history (and the same early-stopping or schedule decisions). ``batch_size`` stays the
total batch size (split between the processes). On CUDA, BatchNorm layers become
``SyncBatchNorm``; on a CPU (gloo) torch has no synced BatchNorm, so each process
normalises its batches with its own statistics and the running statistics are those
of the first process (DDP broadcasts them).

Dask: a fit inside a Dask worker uses one torch thread per worker thread (Dask's own
convention, ``OMP_NUM_THREADS``), so that workers do not oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch
from skorch.hf import AccelerateMixin

from .training import MultiTaskNet

__all__ = [
    "AcceleratedMultiTaskNet",
    "accelerated_net",
    "dask_worker_threads",
    "is_main_process",
    "launched_processes",
    "local_net",
    "uses_accelerate",
]

_MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def launched_processes():
    """The number of processes ``accelerate launch`` or ``torchrun`` started (1 if neither)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def uses_accelerate(accelerator):
    """Whether the estimator's ``accelerator`` parameter means data-parallel training now."""
    return accelerator == "auto" and launched_processes() > 1


def is_main_process():
    """Whether this process writes files: the first of a launched group, or a lone one.

    Examples
    --------
    >>> from sk_multitask.distributed import is_main_process
    >>> is_main_process()  # not launched by accelerate or torchrun
    True
    """
    return int(os.environ.get("RANK", "0")) == 0


class AcceleratedMultiTaskNet(AccelerateMixin, MultiTaskNet):
    """:class:`~sk_multitask.training.MultiTaskNet` trained data-parallel by Accelerate.

    Mixed precision is Accelerate's (the net's own ``precision`` stays ``"fp32"``).
    The loss each step returns is averaged over the processes, for the history.
    """

    def _initialize_accelerator(self):
        # The criterion has no parameters, and DistributedDataParallel refuses to wrap a
        # module without any: it only goes to the device.
        criterion, self.criterion_ = self.criterion_, None
        try:
            return super()._initialize_accelerator()
        finally:
            self.criterion_ = criterion.to(self.accelerator.device)

    def train_step(self, batch, **fit_params):
        step = super().train_step(batch, **fit_params)
        step["loss"] = self.accelerator.reduce(step["loss"].detach(), reduction="mean")
        return step

    def validation_step(self, batch, **fit_params):
        step = super().validation_step(batch, **fit_params)
        step["loss"] = self.accelerator.reduce(step["loss"].detach(), reduction="mean")
        return step


def accelerated_net(*, precision, batch_size, **net_params):
    """An :class:`AcceleratedMultiTaskNet` for this launched process group.

    ``net_params`` are :class:`~sk_multitask.training.MultiTaskNet`'s; ``device`` is
    left to Accelerate (each process its own GPU, or the CPU). :func:`local_net` turns
    the trained net into a plain one with those parameters.
    """
    local_params = {"precision": precision, "batch_size": batch_size, **net_params}
    try:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration
    except ImportError as exc:
        raise ImportError(
            "data-parallel training needs Accelerate: pip install 'sk-multitask[accelerate]'"
        ) from exc
    device = net_params.pop("device")
    processes = launched_processes()
    if batch_size % processes:
        raise ValueError(
            f"batch_size={batch_size} is the total batch size of the {processes} launched "
            f"processes and must be a multiple of {processes}"
        )
    accelerator = Accelerator(
        # batch_size is the total over the processes (Accelerate ignores its own
        # split_batches argument, deprecated, without a word).
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        mixed_precision=_MIXED_PRECISION[precision],
        cpu=not device.startswith("cuda"),
    )
    module = net_params.pop("module")
    if device.startswith("cuda"):
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    net = AcceleratedMultiTaskNet(
        module=module,
        accelerator=accelerator,
        precision="fp32",
        batch_size=batch_size,
        device=None,
        **net_params,
    )
    net.local_params_ = local_params
    return net


def local_net(net):
    """The trained network of an :func:`accelerated_net` in a plain :class:`MultiTaskNet`.

    It predicts in one process and pickles (no Accelerator, no DDP wrapper: skorch
    unwraps the module when training ends); it keeps the history, not the optimizer's
    state.
    """
    params = {
        **net.local_params_,
        "module": net.module_,
        "criterion": net.criterion_,
        # The epoch table is the same instance; AccelerateMixin pointed its sink at the
        # Accelerator's print (which holds the accelerated optimizer: not picklable).
        "callbacks__print_log__sink": print,
    }
    plain = MultiTaskNet(**params)
    plain.initialize()
    plain.history = net.history
    return plain


@contextlib.contextmanager
def dask_worker_threads():
    """Inside a Dask worker, run torch with one thread per worker thread.

    Dask's nanny sets ``OMP_NUM_THREADS`` (1 by default) in its workers; torch reads it
    when it is imported, but not when it was imported before (a preloaded worker, a
    worker without nanny). The previous thread count is restored on exit. Outside a
    Dask worker, nothing changes.
    """
    if not _in_dask_worker():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _in_dask_worker():
    if "distributed" not in sys.modules:  # not imported: cannot be a Dask worker
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True

"""Training on several processes: data-parallel with Accelerate, and within Dask workers.

Data parallel: when a script (a user's, or the ``sk-multitask fit`` command) runs under
``accelerate launch --multi_gpu --num_processes N`` or ``torchrun --nproc_per_node N``, each of the
N processes calls ``fit`` on the same data, and the estimator (``accelerator="auto"``)
trains one model with skorch's :class:`~skorch.hf.AccelerateMixin`: Accelerate wraps the
network in ``DistributedDataParallel`` (gradients all-reduced every step; those of the
loss's learned task weights too, by the net), gives each
process its shard of every epoch's batches, and the losses and per-task metrics are
reduced across processes before they are recorded, so that every process keeps the same
history (and the same early-stopping or schedule decisions). ``batch_size`` stays the
total batch size (split between the processes). On CUDA, BatchNorm layers become
``SyncBatchNorm``; on a CPU (gloo) torch has no synced BatchNorm, so each process
normalises its batches with its own statistics and the running statistics are those
of the first process (DDP broadcasts them).

The net itself is :class:`sk_multitask.training._net.AcceleratedMultiTaskNet`; this module holds the
process helpers only.

Dask: a fit inside a Dask worker uses one torch thread per worker thread (Dask's own
convention, ``OMP_NUM_THREADS``), so that workers do not oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch


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
    >>> from sk_multitask.training._distributed import is_main_process
    >>> is_main_process()  # not launched by accelerate or torchrun
    True
    """
    return int(os.environ.get("RANK", "0")) == 0


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

"""Every skorch callback of a fit, by concern.

- :class:`TaskScoring`, :func:`epoch_table`, :func:`progress_bar` (``_scoring``): per-task
  losses and metrics of every epoch, and how they are shown;
- :class:`FineTuneSchedule` (``_schedule``): the learning rates, with frozen first epochs;
- :class:`ResumableEarlyStopping`, :class:`FiniteLoss` (``_stopping``): ending a fit;
- :class:`AtomicCheckpoint` (skorch's ``Checkpoint``, safetensors), :class:`RunState`,
  :func:`checkpoint_callbacks`, :func:`load_checkpoint` (``_checkpoint``): what resuming
  needs, after every epoch, and resuming;
- :class:`DynamicWeightAverage` (``_weighting``): the task weights of ``loss_weights="dwa"``;
- :func:`check_callbacks`, :func:`copy_callbacks` (``_user``): the user's own callbacks.
"""

from ._checkpoint import (
    RUN_FILE,
    AtomicCheckpoint,
    RunState,
    checkpoint_callbacks,
    load_checkpoint,
    run_fingerprint,
)
from ._schedule import LR_SCHEDULES, FineTuneSchedule
from ._scoring import (
    EpochTable,
    TaskScoring,
    batch_task_stats,
    epoch_table,
    progress_bar,
    task_metrics,
)
from ._stopping import (
    FiniteLoss,
    ResumableEarlyStopping,
    StopTraining,
    check_monitor,
    monitor_direction,
)
from ._user import check_callbacks, copy_callbacks
from ._weighting import DynamicWeightAverage

__all__ = [
    "LR_SCHEDULES",
    "RUN_FILE",
    "AtomicCheckpoint",
    "DynamicWeightAverage",
    "EpochTable",
    "FineTuneSchedule",
    "FiniteLoss",
    "ResumableEarlyStopping",
    "RunState",
    "StopTraining",
    "TaskScoring",
    "batch_task_stats",
    "check_callbacks",
    "check_monitor",
    "checkpoint_callbacks",
    "copy_callbacks",
    "epoch_table",
    "load_checkpoint",
    "monitor_direction",
    "progress_bar",
    "run_fingerprint",
    "task_metrics",
]

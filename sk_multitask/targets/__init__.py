"""Task kinds, their inference from ``y``'s dtypes, per-task target encoders, y checks.

Each column of ``y`` is one task. A classification task encodes its observed labels
with :class:`~sklearn.preprocessing.LabelEncoder`; a regression task standardises
with :class:`~sklearn.preprocessing.StandardScaler` (which ignores NaN); a multi-label
task (cells that are lists, sets or tuples of labels) binarises them with
:class:`~sklearn.preprocessing.MultiLabelBinarizer`, one column per label; an ordinal
task (an ordered categorical, or integer levels) encodes each level as its position. Missing cells
(NaN, None, ``pd.NA``) become NaN in the encoded targets and are masked in the loss:
they are never a class. A string that usually means missing (``'NA'``, ``''``...)
beside real labels is one, with a
:class:`~sk_multitask.exceptions.MissingLikeLabelWarning`. An empty list is a labelled
cell with no label. Decoding the network's outputs back to labels and values is
:mod:`sk_multitask.targets._outputs`'.

The concept lives in private modules: ``_tasks`` (task kinds, inference, the fitted
:class:`Task` and its encoding, task names), ``_frames`` (``y`` as a frame: its checks
against ``X`` and the fitted tasks, data sizes, the row split), ``_outputs`` (raw
outputs back to labels, values and probabilities), ``_ordinal`` (an ordinal task's
levels and CORN outputs) and ``_cell_loss`` (each cell's training loss, in numpy).
"""

from ._frames import (
    check_aligned,
    check_not_inputs,
    check_same_tasks,
    check_sample_weight,
    check_targets,
    check_trainable,
    data_sizes,
    split_rows,
    target_frame,
)
from ._tasks import (
    CLASSIFICATION,
    IDENTIFIER_CLASS_FRACTION,
    LABEL_KINDS,
    LABEL_SETS,
    MAX_INTEGER_CLASSES,
    MISSING_LIKE_LABELS,
    MULTILABEL,
    ORDINAL,
    REGRESSION,
    TASK_KINDS,
    Task,
    binarize,
    check_task,
    check_task_names,
    encode_targets,
    fit_tasks,
    head_outputs,
    infer_task_kind,
    is_missing,
    target_width,
)

__all__ = [
    "CLASSIFICATION",
    "IDENTIFIER_CLASS_FRACTION",
    "LABEL_KINDS",
    "LABEL_SETS",
    "MAX_INTEGER_CLASSES",
    "MISSING_LIKE_LABELS",
    "MULTILABEL",
    "ORDINAL",
    "REGRESSION",
    "TASK_KINDS",
    "Task",
    "binarize",
    "check_aligned",
    "check_not_inputs",
    "check_same_tasks",
    "check_sample_weight",
    "check_targets",
    "check_task",
    "check_task_names",
    "check_trainable",
    "data_sizes",
    "encode_targets",
    "fit_tasks",
    "head_outputs",
    "infer_task_kind",
    "is_missing",
    "split_rows",
    "target_frame",
    "target_width",
]

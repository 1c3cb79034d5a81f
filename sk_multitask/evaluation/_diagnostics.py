"""Diagnostics of a fitted model: the rows it gets most wrong (top losses).

The table behind :meth:`MultiTaskImageEstimator.top_losses
<sk_multitask.MultiTaskImageEstimator.top_losses>`, the report's top-losses section and
:func:`sk_multitask.plotting.plot_top_losses`. Torch-free: the losses are computed from
the outputs by :class:`~sk_multitask.targets._cell_loss.CellLoss`, so that the report of the ONNX
predictor ranks the rows the estimator ranks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..inputs._sources import image_references
from ..inputs._tabular import fitted_table_encoder, table_frame
from ..targets import check_targets
from ..targets._outputs import decoders


def top_loss_table(model, X, y, outputs, index, k=9, task=None, predicted=None):
    """The table of :meth:`MultiTaskImageEstimator.top_losses`, from computed outputs.

    Parameters
    ----------
    model : fitted MultiTaskImageEstimator or OnnxPredictor
    X : image input the outputs were computed on
    y : DataFrame or Series
        True targets; tasks absent from ``y`` count as missing.
    outputs, index
        As returned by :meth:`MultiTaskImageEstimator.predict_raw` (NaN rows: images
        skipped as unreadable, left out of the table).
    k : int, default=9
    task : hashable, default=None
        Rank by this task's loss over its labelled rows; None: the combined loss.
    predicted : DataFrame, default=None
        What ``predict`` gives for every row (labels decided at the model's thresholds);
        None: decoded from ``outputs``.
    """
    tasks = model.tasks_
    y = check_targets(y, tasks, len(index)).reindex(columns=list(tasks))
    loss = model._cell_loss()
    losses, labelled = loss.cell_losses(outputs, y)
    if task is None:
        row_loss, rows = losses @ loss.task_weights, np.arange(len(y))
    else:
        column = list(tasks).index(task)
        row_loss, rows = losses[:, column], np.flatnonzero(labelled[:, column])
    rows = rows[~np.isnan(row_loss[rows])]  # images that could not be read
    top = rows[np.argsort(-row_loss[rows], kind="stable")[:k]]
    frame = pd.DataFrame({"image": image_references(X, model.image_col)[top]}, index=index[top])
    encoder = fitted_table_encoder(model)
    if encoder is not None:  # what the table told the network, beside the image
        table = table_frame(X, encoder.columns, model.image_col)
        for column in encoder.columns:
            frame[column] = table[column].iloc[top].to_numpy()
    for name, decoder in decoders(tasks).items():
        if predicted is None:
            frame[f"{name}_pred"] = decoder.decode(outputs[name][top], index[top])
        else:
            frame[f"{name}_pred"] = predicted[name].iloc[top].set_axis(index[top])
        frame[f"{name}_true"] = y[name].iloc[top].to_numpy()
    frame["loss"] = row_loss[top]
    return frame

"""Diagnostics of a fitted model: the rows it gets most wrong (top losses).

The table behind :meth:`MultiTaskImageEstimator.top_losses
<sk_multitask.MultiTaskImageEstimator.top_losses>`, the report's top-losses section and
:func:`sk_multitask.plotting.plot_top_losses`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .outputs import decoders
from .sources import image_references
from .targets import check_targets, encode_targets

__all__ = ["top_loss_table"]


def top_loss_table(estimator, X, y, outputs, index, k=9, task=None):
    """The table of :meth:`MultiTaskImageEstimator.top_losses`, from computed outputs.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    X : image input the outputs were computed on
    y : DataFrame or Series
        True targets; tasks absent from ``y`` count as missing.
    outputs, index
        As returned by :meth:`MultiTaskImageEstimator.predict_raw` (NaN rows: images
        skipped as unreadable, left out of the table).
    k : int, default=9
    task : hashable, default=None
        Rank by this task's loss over its labelled rows; None: the combined loss.
    """
    tasks = estimator.tasks_
    y = check_targets(y, tasks, len(index)).reindex(columns=list(tasks))
    criterion = estimator.net_.criterion_
    targets = torch.from_numpy(encode_targets(y, tasks))
    losses, labelled = criterion.cell_losses(torch.cat(list(outputs.values()), dim=1), targets)
    if task is None:
        row_loss, rows = (losses * criterion.weights).sum(dim=1), np.arange(len(y))
    else:
        column = list(tasks).index(task)
        row_loss, rows = losses[:, column], np.flatnonzero(labelled[:, column].numpy())
    row_loss = row_loss.numpy()
    rows = rows[~np.isnan(row_loss[rows])]  # images that could not be read
    top = rows[np.argsort(-row_loss[rows], kind="stable")[:k]]
    frame = pd.DataFrame({"image": image_references(X, estimator.image_col)[top]}, index=index[top])
    for name, decoder in decoders(tasks).items():
        frame[f"{name}_pred"] = decoder.decode(outputs[name][top], index[top])
        frame[f"{name}_true"] = y[name].iloc[top].to_numpy()
    frame["loss"] = row_loss[top].astype(np.float64)
    return frame

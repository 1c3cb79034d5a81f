"""A fit's data, checked and prepared: everything a fit (or ``lr_find``) needs but the net.

:func:`prepare_fit` checks the parameters (:mod:`sk_multitask.training._config`), resolves and
screens the images, splits the rows, fits the tasks on the training rows, resolves the
:class:`~sk_multitask.training._config.Plan` and builds the datasets, into a :class:`FitData` that
:func:`sk_multitask.training._build.build_net` builds the net from; :func:`fitted_attributes` are
what the estimator keeps of the trained net and its data.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from ..inputs._bad_images import screen_images, warn_skipped
from ..inputs._cache import cached_images
from ..inputs._dataset import ImageDataset, bad_image_log, train_transform
from ..inputs._decoding import check_image_size
from ..inputs._sources import input_table, resolve_images
from ..inputs._tabular import check_tabular_cols, fit_table_encoder, table_frame
from ..network._loss import check_task_losses
from ..network._weighting import class_weights
from ..targets import (
    check_aligned,
    check_not_inputs,
    check_same_tasks,
    check_sample_weight,
    check_trainable,
    data_sizes,
    encode_targets,
    fit_tasks,
    split_rows,
    target_frame,
)
from ._config import Plan, check_named_tasks, check_parameters, resolve_num_workers
from ._net import AcceleratedMultiTaskNet
from .callbacks import check_monitor, run_fingerprint


@dataclasses.dataclass(frozen=True)
class FitData:
    """A fit's checked data and plan: everything :func:`build_net` and the estimator use.

    Attributes
    ----------
    tasks : dict
        Task name to fitted :class:`~sk_multitask.targets.Task`.
    plan : Plan
    train_set, valid_set : ImageDataset or None
    n_train : int
        Training rows.
    class_weights : dict or None
        Task name to the class weights of its cross-entropy.
    data_sizes : DataFrame or None
        Rows and labelled cells per task, train and valid.
    skipped : list of (str, str)
        Image files found bad before training, with the reason.
    bad_images : log or None
        The log of images found bad when decoded (``on_bad_image="skip"``).
    fingerprint : str or None
        What the fit depends on, for its checkpoint (``checkpoint_dir``).
    valid_y : DataFrame or None
        The validation rows of ``y``, as given (``fit`` calibrates on them).
    network_params : dict
        The parameters that built the network (the fitted ``network_params_``).
    table_encoder : TableEncoder, TransformerTable or None
        The encoding of the table columns, fitted on the training rows (or the warm
        start's); None: images only.
    """

    tasks: dict
    plan: Plan
    train_set: Any = None
    valid_set: Any = None
    n_train: int = 0
    class_weights: dict | None = None
    data_sizes: pd.DataFrame | None = None
    skipped: list = dataclasses.field(default_factory=list)
    bad_images: Any = None
    fingerprint: str | None = None
    valid_y: pd.DataFrame | None = None
    network_params: dict = dataclasses.field(default_factory=dict)
    table_encoder: Any = None

    @property
    def n_table(self):
        """The width of the encoded table (0: images only)."""
        return 0 if self.table_encoder is None else self.table_encoder.n_features


def _fingerprint(config, image_size, images, targets, sample_weight, train, valid):
    """The checkpoint's fingerprint of this fit's data and learning parameters (None
    without ``checkpoint_dir``)."""
    if config.checkpoint_dir is None:
        return None
    weighted = targets if sample_weight is None else np.column_stack([targets, sample_weight])
    # The resolved size: "auto" and the size it stands for are one run
    params = {**config.learning_params(), "image_size": image_size}
    return run_fingerprint(params, images, weighted, train, valid)


def prepare_fit(config, X, y, warm=None, sample_weight=None):
    """Check the data and parameters: everything a fit (or ``lr_find``) needs but the net.

    Resolves the images, screens bad ones (``on_bad_image``), splits the rows, fits the
    tasks (or checks them against ``warm``'s, a :class:`~sk_multitask.training._config.WarmStart`),
    resolves the plan and builds the datasets; ``sample_weight`` (row weights, checked
    here) goes into both datasets, so that the training and the validation loss are
    weighted.

    Every parameter is checked before the first image is opened: those that need no
    data first (:func:`check_parameters`), those that name tasks once ``y`` is read.

    Returns
    -------
    FitData
    """
    image_size = check_parameters(config, warm)
    X, y, images, skipped, sample_weight = _screened_inputs(config, X, y, sample_weight)
    rng = check_random_state(config.random_state)
    train, valid = split_rows(X, len(images), config.valid_split, rng)
    tasks, targets, weights = _fitted_targets(config, y, train, valid, warm)
    encoder, table = _fitted_table(config, X, y, train, warm)
    if sample_weight is not None and not sample_weight[train].any():
        raise ValueError("sample_weight is zero on every training row: there is nothing to train")
    seed = None if config.random_state is None else int(rng.randint(np.iinfo(np.int32).max))
    plan = Plan.resolve(config, image_size, seed=seed, decoded=False, warm=warm)
    check_image_size(images, image_size)
    learned = targets if table is None else np.column_stack([targets, table])
    fingerprint = _fingerprint(config, image_size, images, learned, sample_weight, train, valid)
    bad_images = bad_image_log(config.on_bad_image)  # None: raise
    images, decoded = cached_images(
        images,
        image_size,
        cache=config.cache,
        max_bytes=config.cache_max_bytes,
        cache_dir=config.cache_dir,
        num_workers=plan.num_workers,
        bad_images=bad_images,
    )
    if decoded and bad_images is not None:  # rows of images that cannot be decoded train nothing
        targets[list(bad_images.read())] = np.nan
    train_set, valid_set = _datasets(
        config, image_size, images, (targets, sample_weight, table), train, valid, bad_images
    )
    return FitData(
        tasks=tasks,
        plan=dataclasses.replace(plan, num_workers=resolve_num_workers(config, cache=decoded)),
        train_set=train_set,
        valid_set=valid_set,
        n_train=len(train),
        class_weights=weights,
        data_sizes=data_sizes(y, train=train, valid=valid),
        skipped=skipped,
        bad_images=bad_images,
        fingerprint=fingerprint,
        valid_y=None if valid is None else y.iloc[valid],
        network_params=config.network_params(),
        table_encoder=encoder,
    )


def _fitted_table(config, X, y, train, warm):
    """The encoding of the table columns fitted on the ``train`` rows (a warm start's
    kept), and the encoded table of every row; (None, None) for images only."""
    if config.tabular_cols is None:
        return None, None
    valid_col = config.valid_split if isinstance(config.valid_split, str) else None
    check_tabular_cols(config.tabular_cols, config.image_col, valid_col, list(y.columns))
    frame = table_frame(X, config.tabular_cols, config.image_col)
    encoder = warm.table_encoder if warm is not None else None
    if encoder is None:
        encoder = fit_table_encoder(frame.iloc[train], config.tabular_transformer)
    return encoder, encoder.encode(frame)


def _fitted_targets(config, y, train, valid, warm):
    """The tasks fitted on the ``train`` rows (or checked against ``warm``'s), the encoded
    targets and the class weights, with the checks that need the task names."""
    kinds = config.tasks
    if warm is not None:  # a chunk of the data must not infer other kinds than the fit's
        kinds = {n: t.kind for n, t in warm.tasks.items() if n in y.columns} | (kinds or {})
    tasks = fit_tasks(y, kinds, train=train)
    if warm is not None:
        tasks = check_same_tasks(warm.tasks, tasks, warm.method)
    targets = encode_targets(y, tasks)
    check_trainable(y.iloc[train])
    if config.early_stopping:
        check_monitor(config.monitor, tasks, has_valid=valid is not None)
    weights = class_weights(config.class_weight, tasks, y.iloc[train])
    if warm is None:  # a warm start keeps the fitted criterion
        check_task_losses(task_specs(tasks), config.loss_weights, weights, config.regression_loss)
    return tasks, targets, weights


def _screened_inputs(config, X, y, sample_weight):
    """``X``, ``y`` and ``sample_weight`` checked and aligned, the image sources, and the
    bad files left out."""
    if y is None:  # scikit-learn's wording, which its tools and checks recognise
        raise ValueError(
            "This MultiTaskImageEstimator estimator requires y to be passed, but the target "
            "y is None: pass one column of targets per task"
        )
    skip = config.on_bad_image == "skip"
    check_aligned(X, y)
    check_aligned(X, sample_weight, "sample_weight")
    # A datasets.Dataset: a frame of the columns the fit reads.
    X = input_table(X, config.image_col, config.valid_split, *(config.tabular_cols or ()))
    images, _ = resolve_images(
        X,
        config.image_col,
        config.image_root,
        check_files=not skip,
        storage_options=config.storage_options,
    )
    y = target_frame(y)
    check_named_tasks(config, y)
    if len(y) != len(images):
        raise ValueError(f"X has {len(images)} images but y has {len(y)} rows")
    sample_weight = check_sample_weight(sample_weight, len(images))
    keep, skipped = screen_images(images, config.on_bad_image, config.check_images)
    if not keep.all():  # rows of files found bad up front ("skip")
        X = X.iloc[keep] if isinstance(X, (pd.DataFrame, pd.Series)) else X
        y, images = y.iloc[keep], images[keep]
        sample_weight = None if sample_weight is None else sample_weight[keep]
    check_not_inputs(
        y,
        image_col=config.image_col if isinstance(X, pd.DataFrame) else None,
        valid_col=config.valid_split if isinstance(config.valid_split, str) else None,
    )
    return X, y, images, skipped, sample_weight


def _datasets(config, image_size, images, labels, train, valid, bad_images):
    """The training and validation datasets (None: no validation); ``labels`` are the
    encoded targets, the row weights and the encoded table (or None)."""
    targets, weights, table = labels

    def rows(part):
        return {
            "targets": targets[part],
            "sample_weight": None if weights is None else weights[part],
            "table": None if table is None else table[part],
        }

    train_set = ImageDataset(
        images[train],
        **rows(train),
        image_size=image_size,
        transform=train_transform(config.augment),
        bad_images=bad_images,
    )
    if valid is None:
        return train_set, None
    valid_set = ImageDataset(
        images[valid], **rows(valid), image_size=image_size, bad_images=bad_images
    )
    return train_set, valid_set


def task_specs(tasks):
    """The loss's ``(name, kind, n_outputs)`` of each task."""
    return [(n, t.kind, t.n_outputs) for n, t in tasks.items()]


def fitted_attributes(net, data):
    """The fitted attributes of an estimator that trained ``net`` on ``data`` (a
    :class:`FitData`): ``tasks_``, ``data_sizes_``, ``skipped_images_``, ``image_size_``,
    ``pretrained_``, ``network_params_``, ``table_encoder_``, ``net_``, ``history_`` and,
    with early stopping, ``best_epoch_``.

    One :class:`~sk_multitask.exceptions.BadImageWarning` counts the images left out of
    training. An accelerated net becomes one process's plain copy (it predicts alone
    and pickles).
    """
    if isinstance(net, AcceleratedMultiTaskNet):
        net = net.to_local()
    # The validation set (paths, or the user's whole array) must not be pickled
    # with the model.
    net.train_split = None
    skipped = list(data.skipped)
    if data.bad_images is not None:
        skipped += data.bad_images.collect().values()
    skipped = dict(skipped)  # path: reason
    if skipped:
        warn_skipped(list(skipped.items()), "left out of training", stacklevel=4)
    fitted = {
        "tasks_": data.tasks,
        "data_sizes_": data.data_sizes,
        "skipped_images_": list(skipped),
        "image_size_": data.plan.image_size,
        "pretrained_": data.plan.pretrained,
        "network_params_": data.network_params,
        "table_encoder_": data.table_encoder,
        "net_": net,
        "history_": net.history,
    }
    early = dict(net.callbacks_).get("early_stopping")
    if early is not None:
        fitted["best_epoch_"] = int(early.best_epoch_)
    return fitted

"""MultiTaskImageEstimator: one network, several mixed targets from images."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Hashable
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from pandas.api import types as ptypes
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import ProgressBar
from skorch.helper import predefined_split
from torch import nn
from tqdm.auto import tqdm

from .cache import cached_images
from .callbacks import TaskScoring
from .criterion import MaskedMultiTaskLoss
from .data import ImageDataset, as_size, image_references, resolve_images, train_transform
from .distributed import accelerated_net, dask_worker_threads, local_net, uses_accelerate
from .metrics import evaluate_tasks, task_scores
from .module import MultiTaskModule, build_backbone
from .tasks import CLASSIFICATION, check_targets, encode_targets, fit_tasks, target_frame
from .training import OPTIMIZERS, MultiTaskNet, seeded

__all__ = ["MultiTaskImageEstimator"]

class MultiTaskImageEstimator(BaseEstimator):
    """Train one network that predicts several targets of mixed kinds from images.

    A shared backbone feeds one head per column of ``y``. Each column's task kind is
    inferred from its dtype (float: regression; object, string, category, bool:
    classification; integer: classification if it has at most 20 distinct values,
    else regression) unless given in ``tasks``. Missing cells (NaN, None, ``pd.NA``)
    are left out of their task's loss and metrics; the row still trains the other
    tasks. Regression targets are standardised for training and predicted in their
    original units; class labels come back as they came in.

    Training runs in a :class:`skorch.NeuralNet` built by :meth:`fit` (``net_``).

    Parameters
    ----------
    image_col : hashable, default="filename"
        The column of a DataFrame ``X`` that holds the image paths.
    image_root : str or path, default=None
        Folder that relative image paths are resolved against; None: as given.
    backbone : str or torch.nn.Module, default="resnet18"
        ``"simple_cnn"`` (a small CNN, fast on a CPU), a classification model name of
        torchvision's registry, or a module mapping a float image batch
        ``(N, 3, H, W)`` to feature vectors (the feature size is found by a dry run).
    weights : str, path or None, default="DEFAULT"
        torchvision weights of a registry backbone (``"DEFAULT"``,
        ``"IMAGENET1K_V1"``...; downloaded once into torch's cache), the path of a
        local state-dict file for any backbone, or None to start from random weights.
    image_size : int or (int, int), default=224
        Images are resized to this (height, width).
    tasks : dict, default=None
        Task name to ``"classification"`` or ``"regression"``, overriding inference.
    loss_weights : dict, default=None
        Task name to a non-negative weight of its loss term; unnamed tasks weigh 1.
    max_epochs : int, default=10
    lr : float, default=1e-3
    batch_size : int, default=64
    optimizer : {"adamw", "adam", "sgd"} or callable, default="adamw"
        A name (SGD uses momentum 0.9), or a callable ``(params, lr=lr)`` returning a
        torch optimizer, e.g. ``functools.partial(torch.optim.AdamW, weight_decay=0.05)``.
    valid_split : float, str or None, default=0.2
        A fraction of the rows held out at random for validation, the name of a
        boolean column of ``X`` marking validation rows, or None for no validation.
    augment : bool, default=False
        Light augmentation of training batches (flip, small affine, colour jitter).
    num_workers : int or "auto", default="auto"
        DataLoader worker processes decoding images. ``"auto"``: none when the images
        are cached (in memory or in ``cache_dir``) and not augmented (there is nothing
        left to decode); else, on CUDA, one per CPU core up to 8; on a CPU none, since
        torch's threads already use every core to train (see ``docs/performance.md``).
    cache : bool or "auto", default="auto"
        True: decode and resize every image file once at the start of ``fit`` and
        train from the uint8 pixels kept in memory (``N * 3 * H * W`` bytes): the
        epochs then cost what the network costs. False: images stream from disk
        every epoch and memory does not grow with the data set. ``"auto"``: True when
        the decoded images fit ``cache_max_bytes``, else False; an array ``X`` is in
        memory already (only ``cache=True`` copies it, resized).
    cache_max_bytes : int, default=None
        The memory budget of ``cache="auto"``; None: a quarter of the memory available
        when ``fit`` starts (``MemAvailable`` of ``/proc/meminfo`` on Linux).
    cache_dir : str or path, default=None
        A folder where decoded, resized images are written once (``.npy`` files) and
        read by later epochs, later fits (every fold and candidate of a search, other
        processes) and the predicting methods; each image keyed by its path, file
        size, modification time and ``image_size``, so a changed file is decoded again
        (:mod:`sk_multitask.cache`). Memory stays flat for sets larger than it. Set,
        it replaces ``cache`` for image files.
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Mixed precision for the network's forward pass (``torch.autocast``), with a
        gradient scaler for fp16. (Convolutions always run channels-last.)
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or any torch device.
    accelerator : "auto" or None, default="auto"
        ``"auto"``: when the script runs under ``accelerate launch`` or ``torchrun``
        with several processes, they train one model together, data-parallel
        (:mod:`sk_multitask.distributed`; ``batch_size`` is the total over the
        processes); else, and with None, every process trains its own.
    callbacks : list, default=None
        Extra skorch callbacks (or ``(name, callback)`` pairs): learning-rate
        schedules, early stopping, checkpoints. They are copied, never modified.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, weight initialisation, shuffling and
        augmentation. Torch's global random state is restored after ``fit``.
    verbose : int, default=0
        0: silent; 1 or more: skorch's progress bar and per-epoch table in ``fit``,
        a progress bar in ``predict`` and the other methods that run the network.

    Attributes
    ----------
    tasks_ : dict
        Task name to :class:`sk_multitask.tasks.Task` (kind, fitted encoder, classes).
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_`` is a :class:`MultiTaskModule`.
    history_ : skorch.History
        Per epoch: ``train_loss``, ``valid_loss``, and per task
        ``{train,valid}_{task}_loss`` with ``_acc`` (classification) or ``_mae`` and
        ``_rmse`` (regression, original units).
    image_size_ : (int, int)
        The (height, width) the network was trained on.

    Examples
    --------
    >>> from sk_multitask import MultiTaskImageEstimator
    >>> from sk_multitask.datasets import make_multitask_images
    >>> df = make_multitask_images(64, image_size=16, random_state=0)
    >>> est = MultiTaskImageEstimator(
    ...     image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
    ...     image_size=16, max_epochs=1, valid_split="is_valid", random_state=0)
    >>> est.fit(df, df[["color", "shape", "area"]]).predict(df.head(2)).columns.tolist()
    ['color', 'shape', 'area']
    """

    _parameter_constraints = {
        "image_col": [Hashable],
        "image_root": [str, os.PathLike, None],
        "backbone": [str, nn.Module],
        "weights": [str, os.PathLike, None],
        "image_size": [Interval(Integral, 1, None, closed="left"), tuple, list],
        "tasks": [dict, None],
        "loss_weights": [dict, None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS)), callable],
        "valid_split": [Interval(Real, 0, 1, closed="neither"), str, None],
        "augment": ["boolean"],
        "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "cache": ["boolean", StrOptions({"auto"})],
        "cache_max_bytes": [Interval(Integral, 0, None, closed="left"), None],
        "cache_dir": [str, os.PathLike, None],
        "precision": [StrOptions({"fp32", "bf16", "fp16"})],
        "device": [str],
        "accelerator": [StrOptions({"auto"}), None],
        "callbacks": [list, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        image_col="filename",
        image_root=None,
        backbone="resnet18",
        weights="DEFAULT",
        image_size=224,
        tasks=None,
        loss_weights=None,
        max_epochs=10,
        lr=1e-3,
        batch_size=64,
        optimizer="adamw",
        valid_split=0.2,
        augment=False,
        num_workers="auto",
        cache="auto",
        cache_max_bytes=None,
        cache_dir=None,
        precision="fp32",
        device="auto",
        accelerator="auto",
        callbacks=None,
        random_state=None,
        verbose=0,
    ):
        self.image_col = image_col
        self.image_root = image_root
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.tasks = tasks
        self.loss_weights = loss_weights
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.valid_split = valid_split
        self.augment = augment
        self.num_workers = num_workers
        self.cache = cache
        self.cache_max_bytes = cache_max_bytes
        self.cache_dir = cache_dir
        self.precision = precision
        self.device = device
        self.accelerator = accelerator
        self.callbacks = callbacks
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y):
        """Train the network on images ``X`` and targets ``y``.

        Parameters
        ----------
        X : DataFrame, Series, list of paths, or uint8 ndarray (N, H, W[, C])
            A DataFrame holds image paths in ``image_col`` (and, optionally, the
            ``valid_split`` column); paths are resolved against ``image_root``.
        y : DataFrame or Series
            One column per task, missing cells as NaN, None or ``pd.NA``.

        Returns
        -------
        self
        """
        self._validate_params()
        image_size = as_size(self.image_size)
        images, _ = resolve_images(X, self.image_col, self.image_root)
        y = target_frame(y)
        if len(y) != len(images):
            raise ValueError(f"X has {len(images)} images but y has {len(y)} rows")
        tasks = fit_tasks(y, self.tasks)
        targets = encode_targets(y, tasks)
        rng = check_random_state(self.random_state)
        train, valid = self._split(X, len(images), rng)
        self._check_trainable(tasks, targets[train])
        device = self._resolve_device()
        seed = None if self.random_state is None else int(rng.randint(np.iinfo(np.int32).max))

        images, decoded = cached_images(
            images,
            image_size,
            cache=self.cache,
            max_bytes=self.cache_max_bytes,
            cache_dir=self.cache_dir,
            num_workers=self._num_workers(cache=False),
        )
        with seeded(seed, device), dask_worker_threads():
            backbone, n_features, (mean, std) = build_backbone(
                self.backbone, self.weights, image_size
            )
            module = MultiTaskModule(
                backbone, n_features, {n: t.n_outputs for n, t in tasks.items()}, mean, std
            )
            # Channels-last input: 25-35% faster convolutions on a CPU here
            # (docs/performance.md); on CUDA, with channels-last weights, cuDNN's fastest.
            module.channels_last = True
            if device.startswith("cuda"):
                module.to(memory_format=torch.channels_last)
            criterion = MaskedMultiTaskLoss(
                [(n, t.kind, t.n_outputs) for n, t in tasks.items()], self.loss_weights
            )
            train_set = ImageDataset(
                images[train],
                targets[train],
                image_size=image_size,
                transform=train_transform(self.augment),
            )
            valid_set = (
                None
                if valid is None
                else ImageDataset(images[valid], targets[valid], image_size=image_size)
            )
            net = self._build_net(
                module, criterion, tasks, valid_set, len(train), device, decoded
            )
            net.fit(train_set, y=None)
            if uses_accelerate(self.accelerator):
                net = local_net(net)  # one process's copy: predicts alone, pickles
        # The validation set (paths, or the user's whole array) must not be pickled
        # with the model.
        net.train_split = None

        self.tasks_ = tasks
        self.image_size_ = image_size
        self.net_ = net
        self.history_ = net.history
        return self

    def predict(self, X):
        """Predict every task.

        Returns
        -------
        DataFrame
            ``X``'s index (a RangeIndex for non-pandas ``X``) and one column per task:
            class labels with the dtype they were fitted with, regression values as
            float in original units.
        """
        outputs, index = self._forward(X)
        return pd.DataFrame(
            {name: task.decode(outputs[name], index) for name, task in self.tasks_.items()},
            index=index,
        )

    def predict_proba(self, X):
        """Class probabilities of every classification task.

        Returns
        -------
        dict
            Task name to a DataFrame with ``X``'s index and one column per class
            label (the original labels); rows sum to 1.
        """
        outputs, index = self._forward(X)
        return {
            name: pd.DataFrame(
                torch.softmax(outputs[name], dim=1).numpy(),
                index=index,
                columns=pd.Index(task.classes_),
            )
            for name, task in self.tasks_.items()
            if task.kind == CLASSIFICATION
        }

    def score(self, X, y):
        """Mean over tasks of accuracy (classification) and R² (regression).

        Each task is scored on its labelled cells in ``y`` only; ``y`` may hold a
        subset of the tasks.
        """
        check_is_fitted(self)
        return float(np.mean(list(task_scores(self, X, y).values())))

    def evaluate(self, X, y):
        """Per-task metrics on the labelled cells of ``y``, in original labels and units.

        Parameters
        ----------
        X : image input, as for :meth:`fit`
        y : DataFrame or Series
            True targets for some or all tasks; missing cells are left out.

        Returns
        -------
        DataFrame
            One row per task of ``y`` (indexed by task name): ``kind``, ``n_labelled``;
            for a classification ``accuracy``, ``balanced_accuracy``, ``f1_macro`` and
            ``log_loss``; for a regression ``mae``, ``rmse`` and ``r2``. NaN where a
            metric does not apply or a task has no labelled cell.
        """
        outputs, index = self._forward(X)
        y = check_targets(y, self.tasks_, len(index))
        return evaluate_tasks({n: self.tasks_[n] for n in y.columns}, outputs, y)

    def top_losses(self, X, y, k=9, task=None):
        """The ``k`` rows with the largest loss, with each task's prediction and truth.

        Parameters
        ----------
        X : image input, as for :meth:`fit`
        y : DataFrame or Series
            True targets; tasks absent from ``y`` count as missing.
        k : int, default=9
        task : hashable, default=None
            Rank by this task's loss, over the rows where it is labelled; None: by the
            combined loss, the sum over labelled tasks of each task's loss times its
            fitted loss weight (a missing truth adds nothing).

        Returns
        -------
        DataFrame
            ``X``'s index of those rows, largest loss first; ``image`` (the path as
            given in ``X``, or the position in an image array), ``<task>_pred`` and
            ``<task>_true`` for every task (a missing truth stays missing), ``loss``.
            Losses are those of training: cross-entropy, or the squared error of the
            standardised value.
        """
        check_is_fitted(self)
        if task is not None and task not in self.tasks_:
            raise ValueError(f"unknown task {task!r}; tasks are {list(self.tasks_)}")
        if not (isinstance(k, Integral) and k >= 1):
            raise ValueError(f"k must be a positive integer, got {k!r}")
        outputs, _, index = self._outputs(X)
        y = check_targets(y, self.tasks_, len(index)).reindex(columns=list(self.tasks_))
        criterion = self.net_.criterion_
        targets = torch.from_numpy(encode_targets(y, self.tasks_))
        losses, labelled = criterion.cell_losses(outputs, targets)
        if task is None:
            row_loss, rows = (losses * criterion.weights).sum(dim=1), np.arange(len(y))
        else:
            column = list(self.tasks_).index(task)
            row_loss, rows = losses[:, column], np.flatnonzero(labelled[:, column].numpy())
        row_loss = row_loss.numpy()
        top = rows[np.argsort(-row_loss[rows], kind="stable")[:k]]
        split = criterion.split_outputs(outputs[top])
        frame = pd.DataFrame({"image": image_references(X, self.image_col)[top]}, index=index[top])
        for (name, fitted), out in zip(self.tasks_.items(), split, strict=True):
            frame[f"{name}_pred"] = fitted.decode(out, index[top])
            frame[f"{name}_true"] = y[name].iloc[top].to_numpy()
        frame["loss"] = row_loss[top].astype(np.float64)
        return frame

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Images: paths (strings) or uint8 arrays (N, H, W[, C]), not a 2-D table.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.two_d_labels = True
        return tags

    # -- helpers -------------------------------------------------------------------

    def _outputs(self, X):
        """The network's concatenated outputs (a CPU tensor), image sources and index."""
        check_is_fitted(self)
        images, index = resolve_images(X, self.image_col, self.image_root, check_files=False)
        if self.cache_dir is not None:
            images, _ = cached_images(images, self.image_size_, cache=False,
                                      cache_dir=self.cache_dir)
        dataset = ImageDataset(images, image_size=self.image_size_)
        batches = self.net_.forward_iter(dataset, training=False, device="cpu")
        if self.verbose:
            total = math.ceil(len(dataset) / self.net_.batch_size)
            batches = tqdm(batches, total=total, desc="predict", unit="batch", leave=False)
        # One buffer filled batch by batch: kept per-batch tensors fragment the heap,
        # and memory grew with the number of images (docs/performance.md).
        n_outputs = sum(task.n_outputs for task in self.tasks_.values())
        outputs = torch.empty(len(dataset), n_outputs)
        start = 0
        with dask_worker_threads():
            for batch in batches:
                outputs[start : start + len(batch)] = batch
                start += len(batch)
        return outputs, images, index

    def _forward(self, X):
        """Each task's raw outputs (CPU tensors) for ``X``, and ``X``'s index."""
        outputs, _, index = self._outputs(X)
        split = self.net_.criterion_.split_outputs(outputs)
        return dict(zip(self.tasks_, split, strict=True)), index

    def _split(self, X, n, rng):
        """Positions of the training and validation rows (None: no validation)."""
        if self.valid_split is None:
            return np.arange(n), None
        if isinstance(self.valid_split, str):
            if not isinstance(X, pd.DataFrame) or self.valid_split not in X.columns:
                raise ValueError(
                    f"valid_split={self.valid_split!r} names a column that X does not "
                    "have; pass a DataFrame X with that boolean column, a fraction, or None"
                )
            column = X[self.valid_split]
            if not ptypes.is_bool_dtype(column.dtype) or column.isna().any():
                raise ValueError(
                    f"the valid_split column {self.valid_split!r} must be boolean "
                    f"without missing values; its dtype is {column.dtype}"
                )
            is_valid = column.to_numpy(dtype=bool)
            return np.flatnonzero(~is_valid), (np.flatnonzero(is_valid) if is_valid.any() else None)
        try:
            return train_test_split(np.arange(n), test_size=self.valid_split, random_state=rng)
        except ValueError as exc:
            raise ValueError(
                f"cannot hold out valid_split={self.valid_split} of {n} rows: {exc}"
            ) from exc

    @staticmethod
    def _check_trainable(tasks, train_targets):
        if len(train_targets) < 2:
            raise ValueError(
                "need at least 2 training rows (outside the validation split); "
                f"got {len(train_targets)}"
            )
        for column, name in enumerate(tasks):
            if np.isnan(train_targets[:, column]).all():
                raise ValueError(
                    f"target {name!r} has no labelled cell among the training rows "
                    "(its labels are all in the validation rows)"
                )

    def _num_workers(self, cache):
        """The DataLoader worker count that ``num_workers`` stands for."""
        if self.num_workers != "auto":
            return self.num_workers
        if cache and not self.augment:
            return 0
        if self._resolve_device().startswith("cuda"):
            return min(8, os.cpu_count() or 1)
        # On a CPU every core already trains the network (torch's intra-op threads): a
        # worker process would oversubscribe them, which cost 5-10x per epoch on 2 cores.
        return 0

    def _resolve_device(self):
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"device={self.device!r} but no CUDA device is available; use 'auto' or 'cpu'"
            )
        return self.device

    def _build_net(self, module, criterion, tasks, valid_set, n_train, device, decoded):
        scoring = TaskScoring(tasks)
        callbacks = [("task_scoring", scoring)]
        if self.verbose:
            callbacks.append(("progress_bar", ProgressBar()))
        callbacks += copy.deepcopy(self.callbacks or [])
        shown = {"train_loss", "valid_loss", *scoring.metric_keys("valid")}
        hidden = [
            f"{prefix}_{name}_{metric}"
            for prefix in ("train", "valid")
            for name in tasks
            for metric in ("loss", "acc", "mae", "rmse")
            if f"{prefix}_{name}_{metric}" not in shown
        ]
        workers = self._num_workers(cache=decoded)
        loader = {"num_workers": workers, "pin_memory": device.startswith("cuda")}
        if workers:
            loader["persistent_workers"] = True
        optimizer = (
            OPTIMIZERS[self.optimizer] if isinstance(self.optimizer, str) else self.optimizer
        )
        params = dict(
            module=module,
            precision=self.precision,
            criterion=criterion,
            optimizer=optimizer,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=None if valid_set is None else predefined_split(valid_set),
            callbacks=callbacks,
            # A last batch of 1 would break BatchNorm; shuffling still uses every row.
            iterator_train__drop_last=n_train > self.batch_size,
            iterator_train__shuffle=True,
            **{f"iterator_train__{k}": v for k, v in loader.items()},
            **{f"iterator_valid__{k}": v for k, v in loader.items()},
            callbacks__print_log__keys_ignored=hidden,
            device=device,
            verbose=self.verbose,
        )
        if uses_accelerate(self.accelerator):
            return accelerated_net(**params)
        return MultiTaskNet(**params)

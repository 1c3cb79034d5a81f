"""MultiTaskImageEstimator: one network, several mixed targets from images."""

from __future__ import annotations

import os
from numbers import Integral, Real

from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import (
    Interval,
    validate_parameter_constraints,
)
from sklearn.utils.validation import check_is_fitted

from .inputs._sources import resolve_images
from .inputs._tabular import encoded_table, fitted_table_encoder
from .persistence._pickling import VersionedPickleMixin, load_fitted
from .persistence._safe_file import save
from .predicting._calibration import calibrate
from .predicting._explain import explain_images
from .predicting._inference import network_outputs, validation_calibration
from .predicting._protocol import MultiTaskPredictor, checked_outputs
from .predicting._thresholds import check_thresholds, fit_thresholds
from .targets._outputs import decoders
from .training._build import build_net, continue_order
from .training._config import TrainingConfig, WarmStart, seeded
from .training._distributed import dask_worker_threads
from .training._fit_data import fitted_attributes, prepare_fit
from .training._lr_finder import find_lr
from .training._parameters import check_network_unchanged, parameter_constraints
from .training.callbacks import load_checkpoint

__all__ = ["MultiTaskImageEstimator", "load"]

#: The constraints of lr_find's own arguments (the estimator's are its parameters').
_LR_FIND_CONSTRAINTS = {
    "start_lr": [Interval(Real, 0, None, closed="neither")],
    "end_lr": [Interval(Real, 0, None, closed="neither")],
    "num_it": [Interval(Integral, 2, None, closed="left")],
}

#: The documentation site (``site_url`` in mkdocs.yml; tests/test_sklearn.py checks both).
DOCS_URL = "https://sk-multitask.readthedocs.io/en/latest/"


class MultiTaskImageEstimator(
    MultiTaskPredictor,
    VersionedPickleMixin,
    TransformerMixin,
    ClassNamePrefixFeaturesOutMixin,
    BaseEstimator,
):
    """Train one network that predicts several targets of mixed kinds from images.

    A shared backbone feeds one head per column of ``y``. Each column's task kind is
    inferred from its dtype (float: regression; object, string, category, bool:
    classification; integer: classification if it has at most 20 distinct values,
    else regression) unless given in ``tasks``. Missing cells (NaN, None, ``pd.NA``)
    are left out of their task's loss and metrics; the row still trains the other
    tasks. Regression targets are standardised for training and predicted in their
    original units; class labels come back as they came in.

    Training runs in a :class:`skorch.NeuralNet` built by :meth:`fit` (``net_``), with
    fastai's fine-tuning recipe by default: one-cycle learning rates; with a pretrained
    backbone, one epoch of training the heads alone, then the backbone at a tenth of the
    heads' rate. Ctrl-C stops the fit and is raised again, with the epochs completed kept.

    Parameters
    ----------
    image_col : hashable, default="filename"
        The column of a DataFrame (or ``datasets.Dataset``) ``X`` that holds the images:
        paths, encoded bytes, PIL images or ``{"bytes", "path"}`` dicts.
    image_root : str or path, default=None
        Folder that relative image paths are resolved against; None: as given.
    tabular_cols : list, default=None
        Columns of the DataFrame ``X`` read beside the images (a patient's age and sex
        beside the scan): their encoding and the image features go through a small MLP
        (``fusion_width``, ``fusion_depth``) before the heads, so that a target may
        depend on both and on their interactions. None: images only (no fusion, the
        network of a model without a table). See ``docs/tabular.md``.
    tabular_transformer : scikit-learn transformer or None, default=None
        None: the default preprocessing, fitted on the training rows: numeric and
        boolean columns median-imputed with a missing indicator, then standardised;
        other columns one-hot (unknown categories ignored, missing its own level),
        stored as data in saved and exported models. A transformer of yours (a
        ``ColumnTransformer``, a ``Pipeline``) is cloned and fitted on the training
        rows' table columns; being code, only pickles (joblib, skops) carry it.
    fusion_width : int, default=256
        Units of each hidden layer of the fusion MLP (with ``tabular_cols``).
    fusion_depth : int, default=1
        Hidden layers (linear, ReLU) of the fusion MLP (with ``tabular_cols``).
    backbone : str or torch.nn.Module, default="resnet18"
        ``"simple_cnn"`` (a small CNN, fast on a CPU), a classification model name of
        torchvision's registry, ``"timm/<name>"`` (a timm model by its Hugging Face hub
        id, e.g. ``"timm/resnet18.a1_in1k"``; the ``timm`` extra), or a module mapping a
        float image batch ``(N, 3, H, W)`` to feature vectors (the feature size is found
        by a dry run). Classifiers are removed: a timm model's by
        ``reset_classifier(0)``, a torchvision classification model's (name or
        instance) by making its last linear layer the identity. The input
        normalisation is the pretrained weights' (a timm model's ``pretrained_cfg``),
        else ImageNet's. See ``docs/backbones.md``.
    weights : str, path or None, default="DEFAULT"
        Pretrained weights of a registry backbone (``"DEFAULT"``; torchvision's
        ``"IMAGENET1K_V1"``...; downloaded once into torch's or Hugging Face's cache),
        the path of a local weights file for any backbone (a state dict, wrapped or
        not, its classifier ignored; ``.safetensors`` too), ``"pretrained"`` for a
        module of your own whose weights are trained already, or None to start from
        random weights. A module of your own keeps its weights unless given a file;
        with ``"pretrained"`` or a file the recipe fine-tunes it (``freeze_epochs``,
        ``backbone_lr_scale``).
    image_size : int, (int, int) or "auto", default=224
        Images are resized to this (height, width). ``fit`` warns, with their measured
        size, when the images are less than half of it on both sides. ``"auto"``: the
        backbone's own input size (a timm model's ``pretrained_cfg["input_size"]``, the
        crop size of named torchvision weights, else 224), resolved in ``fit`` into
        ``image_size_``; a continued fit (``warm_start``, ``partial_fit``) keeps the
        fitted size. See ``docs/backbones.md``.
    on_bad_image : {"raise", "skip"}, default="raise"
        What an image file that is missing, empty, truncated or not an image does.
        ``"raise"``: an error naming it. ``"skip"``: in ``fit`` its row is left out of
        every task (``skipped_images_``); in ``predict`` and the other methods its row
        of predictions is missing (NaN, None or ``pd.NA``). One
        :class:`~sk_multitask.exceptions.BadImageWarning` counts them and names the first
        few. See ``docs/reliability.md``.
    check_images : bool, default=False
        Before training, open every image file's header (PIL ``verify``, no
        decoding) so that a bad file fails the run in seconds (or is skipped), not
        during an epoch. A truncated JPEG passes this check; it is found when decoded.
    tasks : dict, default=None
        Task name to ``"classification"``, ``"regression"``, ``"multilabel"`` or
        ``"ordinal"``, overriding inference. A column whose labelled cells are lists,
        sets or tuples of labels is inferred multi-label: one sigmoid output per label,
        an empty list a labelled "no label". An ordered pandas ``Categorical`` is
        inferred ordinal (CORN's rank-consistent head; ``"ordinal"`` also takes
        integer levels).
    loss_weights : dict, "uncertainty", "dwa" or None, default=None
        How the task losses are weighted. A dict: task name to a finite non-negative
        weight (unnamed tasks weigh 1). ``"uncertainty"``: learned weights (Kendall
        et al. 2018), ``sum_t exp(-s_t) * L_t + s_t`` with a learned ``s_t`` per task.
        ``"dwa"``: dynamic weight average (Liu et al. 2019, T=2), from the ratio of
        each task's training loss in the last two epochs. The weights in effect are
        in ``history_`` as ``{task}_weight``.
    class_weight : None, "balanced" or dict, default=None
        Class weights of classification tasks' cross-entropy (an ordinal task's
        likelihood, by level): ``"balanced"`` (every classification and ordinal task,
        scikit-learn's ``compute_class_weight`` on the labelled training cells), or a
        dict from task name to ``"balanced"`` or ``{label: weight}`` (unnamed labels
        weigh 1).
    regression_loss : {"mse", "l1", "huber"} or dict, default="mse"
        The regression tasks' loss on the standardised targets (Huber: delta 1), or
        a dict from regression task name to one (unnamed tasks: ``"mse"``).
    max_epochs : int, default=10
        Epochs of training, the frozen ones included.
    lr : float, default=1e-3
        The heads' peak learning rate (with ``lr_schedule="constant"``, their rate).
    lr_schedule : {"onecycle", "cosine", "constant"}, default="onecycle"
        The learning rate over the fit, stepped after every batch: ``"onecycle"``
        (torch's ``OneCycleLR``, warm-up over 30% of the steps from ``lr`` / 25 to ``lr``
        then cosine annealing, momentum cycled inversely; fastai's recipe), ``"cosine"``
        (linear warm-up over 10% of the steps, then cosine annealing to 0) or
        ``"constant"``. With frozen epochs, each phase runs its own schedule (see
        ``docs/training.md``). The rate of each epoch is in ``history_`` (``lr``,
        ``backbone_lr``).
    freeze_epochs : int or "auto", default="auto"
        For the first ``freeze_epochs`` of the ``max_epochs``, train the heads only: the
        backbone gets no gradient and its BatchNorm statistics stay as they are; then
        everything trains. ``"auto"``: 1 when the backbone starts from pretrained
        weights and ``max_epochs`` > 1 (fastai's ``fine_tune``), else 0.
    backbone_lr_scale : float or "auto", default="auto"
        The backbone's learning rate as a fraction of the heads'. ``"auto"``: 0.1 when
        the backbone starts from pretrained weights (discriminative rates, as fastai's
        ``fine_tune`` lowers its early layers'), else 1.
    early_stopping : bool, default=False
        Stop when ``monitor`` has not improved for ``patience`` epochs, and in any case
        restore the weights of its best epoch at the end (``best_epoch_``). Needs
        validation data unless ``monitor`` is a ``train_`` key.
    patience : int, default=5
        Epochs without improvement before early stopping.
    monitor : str, default="valid_loss"
        The history key early stopping watches: ``"valid_loss"``, ``"train_loss"`` or a
        per-task key such as ``"valid_age_mae"``; losses, MAE and RMSE are lower-is-better,
        accuracies (``_acc``) higher-is-better.
    warm_start : bool, default=False
        When fitted already, a new ``fit`` continues from the fitted network, its
        optimizer state and history, for ``max_epochs`` more epochs under a new schedule
        (no frozen epochs); ``y`` must have the same tasks, of the same kinds.
    checkpoint_dir : str, path or None, default=None
        Write a checkpoint there after every epoch (atomically). A ``fit`` with the same
        ``checkpoint_dir``, parameters and data resumes after the last finished epoch,
        exactly as if never stopped (same ``random_state``, on a CPU); a checkpoint of
        other parameters or data is ignored with a warning and overwritten.
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
        (:mod:`sk_multitask.inputs._cache`). Memory stays flat for sets larger than it. Set,
        it replaces ``cache`` for image files.
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Mixed precision for the network's forward pass (``torch.autocast``), with a
        gradient scaler for fp16. (Convolutions always run channels-last.)
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or any torch device.
    accelerator : "auto" or None, default="auto"
        ``"auto"``: when the script runs under ``accelerate launch`` or ``torchrun``
        with several processes, they train one model together, data-parallel
        (:mod:`sk_multitask.training._distributed`; ``batch_size`` is the total over the
        processes); else, and with None, every process trains its own.
    callbacks : list, default=None
        Extra skorch callbacks (or ``(name, callback)`` pairs), run after the built-in
        ones (per-task scoring, the schedule, early stopping). They are copied, never
        modified.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, weight initialisation, shuffling and
        augmentation. Torch's global random state is restored after ``fit``.
    verbose : int, default=0
        0: silent; 1 or more: skorch's progress bar and per-epoch table in ``fit``,
        a progress bar in ``predict`` and the other methods that run the network.
    storage_options : dict, default=None
        Passed to fsspec to read image paths (or an ``image_root``) that are URLs:
        ``s3://`` (extra ``s3``), ``gs://`` (``gcs``), ``az://`` (``azure``),
        ``https://`` (``http``), ``memory://``... as pandas' ``storage_options``
        (credentials, ``client_kwargs={"endpoint_url": ...}``, ``anon=True``). Objects are
        read in the DataLoader workers, retried on transient errors; with ``cache_dir``
        an image cached once is never read again (see ``docs/object_storage.md``).
        A run-time setting: never saved in a model file, and None in a pickle.
    tta : int, default=0
        Test-time augmentation: ``predict``, ``predict_proba``, ``predict_interval``,
        ``evaluate`` and the calibration average the outputs (logits, standardised
        values) of the plain images and of ``tta`` augmented views of them, from 0 to
        11: the horizontal flip, then 90% crops at the corners and the centre, each as
        is and flipped (:func:`sk_multitask.inputs._decoding.tta_views`). Each view costs one
        more pass of the network. ``transform`` and the ONNX predictor use the plain
        images only.
    decision_thresholds : None, "tuned" or dict, default=None
        When ``predict`` says yes for a binary classification task (its second class,
        ``classes_[1]``) and for each label of a multi-label task: when that
        probability (``predict_proba``'s, calibrated once calibrated) is at least the
        threshold. None: 0.5 (the most probable class). ``"tuned"``: per task and label,
        the threshold that maximises ``threshold_metric`` on the validation rows (or
        on the rows of :meth:`calibrate`); a task without a labelled one keeps 0.5,
        with a :class:`~sk_multitask.exceptions.CalibrationWarning`. A dict: task name
        to a threshold, or for a multi-label task a dict label to threshold (those
        left out: 0.5). See :mod:`sk_multitask.predicting._thresholds`.
    threshold_metric : str, default="f1"
        What ``decision_thresholds="tuned"`` maximises: ``"f1"``,
        ``"balanced_accuracy"``, ``"accuracy"``, ``"jaccard"`` or
        ``"matthews_corrcoef"`` (scikit-learn's scorer names).

    Attributes
    ----------
    tasks_ : dict
        Task name to :class:`sk_multitask.targets.Task` (kind, fitted encoder, classes).
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_`` is a :class:`MultiTaskModule`.
    history_ : skorch.History
        Per epoch: ``train_loss``, ``valid_loss``, and per task
        ``{train,valid}_{task}_loss`` with ``_acc`` (classification), ``_mae`` and
        ``_rmse`` (regression, original units) or ``_f1`` (multi-label, micro F1),
        and ``{task}_weight``, the task's loss weight.
    image_size_ : (int, int)
        The (height, width) the network was trained on (what ``"auto"`` resolved to).
    best_epoch_ : int
        With ``early_stopping``: the epoch (as numbered in ``history_``) whose weights
        the model has.
    data_sizes_ : DataFrame
        Rows and labelled cells of each task (index ``rows``, then the tasks) in the
        ``train`` and ``valid`` parts of the data given to ``fit``.
    pretrained_ : bool
        Whether the backbone started from pretrained weights (in the first fit, for a
        warm start): a ``warm_start`` fit keeps their recipe (``backbone_lr_scale``).
    network_params_ : dict
        The parameters that built the network, as ``fit`` took them: ``tabular_cols``,
        ``tabular_transformer``, ``fusion_width``, ``fusion_depth``, ``backbone``,
        ``weights``, ``image_size``, ``tasks``, ``loss_weights``, ``class_weight``,
        ``regression_loss`` (those the parameter table marks ``network``). Setting one
        of them after ``fit`` changes nothing fitted (``predict`` and the other methods
        use the fitted network), but ``partial_fit``, a ``warm_start`` fit, :meth:`save`,
        the pickle and :meth:`export_onnx` then refuse, naming it, until a new ``fit``.
        A saved model's parameters are these.
    table_encoder_ : TableEncoder, TransformerTable or None
        The fitted encoding of the ``tabular_cols`` (None without them):
        :mod:`sk_multitask.inputs._tabular`.
    skipped_images_ : list of str
        The image files left out of training (``on_bad_image="skip"``); empty when
        every image was read.
    calibration_ : Calibration or None
        Per task, the temperature(s) and conformal scores of :meth:`calibrate` (by
        default fitted on the validation rows; None without any):
        :class:`sk_multitask.predicting._calibration.Calibration`.
    decision_thresholds_ : dict or None
        The thresholds ``predict`` decides with (None: ``decision_thresholds=None``):
        each binary classification task to a float, each multi-label task to a dict
        label to float.

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

    _parameter_constraints = parameter_constraints()
    # The HTML repr's "?" opens the class's page of the API reference, named by its
    # public import path (scikit-learn's documentation-link mechanism).
    _doc_link_module = "sk_multitask"
    _doc_link_template = DOCS_URL + "api/sk_multitask.{estimator_name}/"

    def __init__(
        self,
        image_col="filename",
        image_root=None,
        tabular_cols=None,
        tabular_transformer=None,
        fusion_width=256,
        fusion_depth=1,
        backbone="resnet18",
        weights="DEFAULT",
        image_size=224,
        on_bad_image="raise",
        check_images=False,
        tasks=None,
        loss_weights=None,
        class_weight=None,
        regression_loss="mse",
        max_epochs=10,
        lr=1e-3,
        lr_schedule="onecycle",
        freeze_epochs="auto",
        backbone_lr_scale="auto",
        early_stopping=False,
        patience=5,
        monitor="valid_loss",
        warm_start=False,
        checkpoint_dir=None,
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
        storage_options=None,
        tta=0,
        decision_thresholds=None,
        threshold_metric="f1",
    ):
        self.image_col = image_col
        self.image_root = image_root
        self.tabular_cols = tabular_cols
        self.tabular_transformer = tabular_transformer
        self.fusion_width = fusion_width
        self.fusion_depth = fusion_depth
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.on_bad_image = on_bad_image
        self.check_images = check_images
        self.tasks = tasks
        self.loss_weights = loss_weights
        self.class_weight = class_weight
        self.regression_loss = regression_loss
        self.max_epochs = max_epochs
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.freeze_epochs = freeze_epochs
        self.backbone_lr_scale = backbone_lr_scale
        self.early_stopping = early_stopping
        self.patience = patience
        self.monitor = monitor
        self.warm_start = warm_start
        self.checkpoint_dir = checkpoint_dir
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
        self.storage_options = storage_options
        self.tta = tta
        self.decision_thresholds = decision_thresholds
        self.threshold_metric = threshold_metric

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the network on images ``X`` and targets ``y``.

        Parameters
        ----------
        X : DataFrame, datasets.Dataset, Series, list, uint8 ndarray or tensor
            A DataFrame (or Hugging Face ``datasets.Dataset``) holds the images in
            ``image_col`` (and, optionally, the ``valid_split`` column); a Series or
            list holds the images. An image is a path (resolved against
            ``image_root``), encoded bytes, a PIL image, a uint8 array or a
            ``{"bytes", "path"}`` dict; an array holds uint8 images
            ``(N, H, W[, C])``, a tensor ``(N, C, H, W)`` or ``(N, H, W, C)``; one
            path or PIL image is one row. See ``docs/inputs.md``. With
            ``tabular_cols``, a DataFrame (or Dataset) that holds those columns too.
        y : DataFrame or Series
            One column per task, missing cells as NaN, None or ``pd.NA``.
        sample_weight : array-like of shape (n_rows,), default=None
            Finite non-negative row weights. Each task's loss is then the weighted
            mean over its labelled cells, ``sum(w * loss) / sum(w)``, on the training
            and the validation rows (``valid_loss``, early stopping and the per-task
            metrics of ``history_`` are weighted too); a row of weight 0 trains
            nothing. Weights of one train exactly the unweighted model.

        Returns
        -------
        self

        Notes
        -----
        With validation rows, the fitted model is calibrated on them (:meth:`calibrate`;
        a task without a labelled validation cell is left uncalibrated). Rows that also
        chose the epoch (``early_stopping``) are not quite new to the model, which weakens
        the coverage guarantee of :meth:`predict_interval`; :meth:`calibrate` on rows
        used for nothing else keeps it.
        """
        config = TrainingConfig.from_estimator(self)
        return self._train(config, self._warm_start(), X, y, sample_weight)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Train one epoch on ``X`` and ``y``, continuing the fitted network if any.

        The first call fits the tasks on ``y`` and builds the network; each later
        call trains one more epoch of the same network (its optimizer state kept, as
        with ``warm_start``) on the rows given, which must hold the same tasks (of the
        same kinds, with no class unseen by the first call: give it every class).
        ``history_`` grows by one epoch per call. Each call runs ``lr_schedule`` over
        its one epoch, without frozen epochs; ``max_epochs``, ``early_stopping`` and
        ``checkpoint_dir`` do not apply (as ``MLPClassifier.partial_fit`` ignores
        ``early_stopping``). ``valid_split`` holds out rows of each call's data.

        Parameters
        ----------
        X : image input
            The images, as for :meth:`fit`.
        y : DataFrame or Series
            The targets, as for :meth:`fit`.
        sample_weight : array-like of shape (n_rows,), default=None
            Row weights, as for :meth:`fit`.

        Returns
        -------
        self

        Examples
        --------
        >>> from sk_multitask.datasets import make_multitask_images
        >>> df = make_multitask_images(32, image_size=16, random_state=0)
        >>> est = MultiTaskImageEstimator(image_root=df.attrs["image_root"],
        ...     backbone="simple_cnn", image_size=16, valid_split=None, random_state=0)
        >>> for _ in range(3):
        ...     est = est.partial_fit(df, df[["color", "shape", "area"]])
        >>> est.history_[:, "epoch"]
        [1, 2, 3]
        """
        config = TrainingConfig.from_estimator(self).one_epoch()
        return self._train(config, self._warm_start(partial=True), X, y, sample_weight)

    def _train(self, config, warm, X, y, sample_weight):
        """Check the data, build the net (or continue ``warm``'s), train it, keep it."""
        data = prepare_fit(config, X, y, warm, sample_weight)
        check_thresholds(self.decision_thresholds, data.tasks)
        plan = data.plan
        with seeded(plan.seed, plan.device), dask_worker_threads():
            net = build_net(config, data, warm)
            if config.checkpoint_dir is not None:
                load_checkpoint(net, os.fspath(config.checkpoint_dir), data.fingerprint)
                continue_order(net)
            done = len(net.history) - plan.start_epoch  # resumed epochs of this fit
            try:
                net.partial_fit(data.train_set, epochs=config.max_epochs - done)
            except KeyboardInterrupt:
                # Ctrl-C: keep the epochs completed (if any), then stop the caller too.
                if len(net.history) > plan.start_epoch:
                    self._set_fitted(net, data)
                raise
        self._set_fitted(net, data)
        self.calibration_, self.decision_thresholds_ = validation_calibration(
            self.net_, data, on_bad_image=self.on_bad_image, tta=self.tta,
            thresholds=self.decision_thresholds, metric=self.threshold_metric,
        )
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def lr_find(self, X, y, start_lr=1e-7, end_lr=10.0, num_it=100):
        """Find a learning rate: the loss while the rate grows exponentially, batch by batch.

        The range test of Smith (2015), as fastai's ``lr_find``: a copy of the network that
        :meth:`fit` would train (from fresh weights, or from the fitted ones with
        ``warm_start``; the backbone frozen if the fit would start frozen) trains on the
        training rows for ``num_it`` batches, the rate going from ``start_lr`` to ``end_lr``,
        stopping early once the loss diverges. The estimator itself is left as it was.

        Parameters
        ----------
        X : image input
            The images, as for :meth:`fit`.
        y : DataFrame or Series
            The targets, as for :meth:`fit`.
        start_lr : float, default=1e-7
            The heads' first rate (the backbone keeps its ``backbone_lr_scale``).
        end_lr : float, default=10.0
            The heads' last rate.
        num_it : int, default=100
            Batches to train (the training rows are cycled through as often as needed).

        Returns
        -------
        LRFindResult
            ``(history, suggested_lr)``: a DataFrame of ``lr``, ``loss`` and
            ``smoothed_loss`` per batch, and the rate fastai's "valley" rule suggests.
            :func:`sk_multitask.plotting.plot_lr_find` draws it.

        Examples
        --------
        >>> from sk_multitask.datasets import make_multitask_images
        >>> df = make_multitask_images(64, image_size=16, random_state=0)
        >>> est = MultiTaskImageEstimator(image_root=df.attrs["image_root"],
        ...     backbone="simple_cnn", image_size=16, batch_size=16, random_state=0)
        >>> history, lr = est.lr_find(df, df[["color", "shape", "area"]], num_it=20)
        >>> list(history.columns), 1e-7 <= lr <= 10
        (['lr', 'loss', 'smoothed_loss'], True)
        """
        # Not @validate_params: wrapped around _fit_context, it would give the estimator's
        # own parameter errors lr_find's name.
        validate_parameter_constraints(
            _LR_FIND_CONSTRAINTS,
            {"start_lr": start_lr, "end_lr": end_lr, "num_it": num_it},
            caller_name=f"{type(self).__name__}.lr_find",
        )
        if start_lr >= end_lr:
            raise ValueError(f"need start_lr < end_lr; got {start_lr!r} and {end_lr!r}")
        config = TrainingConfig.from_estimator(self)
        warm = self._warm_start()
        data = prepare_fit(config, X, y, warm)
        with seeded(data.plan.seed, data.plan.device):
            net = build_net(config, data, warm)
            freeze = data.plan.freeze_epochs > 0
            return find_lr(net, data.train_set, start_lr, end_lr, num_it, freeze=freeze)

    def calibrate(self, X, y):
        """Calibrate the fitted model on held-out labelled rows: ``calibration_``.

        Per task, on its labelled cells only: a classification's temperature (fitted
        on the negative log-likelihood; :meth:`predict_proba` then returns the scaled
        probabilities) and conformal scores for :meth:`predict_interval`'s sets, a
        regression's absolute residuals in original units, a multi-label task's one
        temperature per label (no temperature below 1 without ten misses). With
        ``decision_thresholds="tuned"``, the thresholds are tuned anew on these rows
        (``decision_thresholds_``). See :mod:`sk_multitask.predicting._calibration` and
        ``docs/how_sure.md``. The guarantee holds for new rows like these: use rows
        the model was neither trained nor early-stopped on.

        Parameters
        ----------
        X : image input
            The images, as for :meth:`fit`.
        y : DataFrame or Series
            True targets of every task; missing cells are left out.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Naming a task that has no labelled cell in ``y``.
        """
        outputs, _, y, _ = checked_outputs(self, X, y)
        calibration = calibrate(decoders(self.tasks_), outputs, y)
        self.decision_thresholds_ = fit_thresholds(
            self.decision_thresholds, self.threshold_metric, self.tasks_,
            calibration.scale(outputs), y, rows="calibration rows",
        )
        self.calibration_ = calibration
        return self

    def transform(self, X):
        """The features of every row the heads read: the estimator as a feature extractor.

        The backbone's features of the image, or, with ``tabular_cols``, the fusion
        MLP's output over the image features and the encoded table columns.

        In a :class:`~sklearn.pipeline.Pipeline` it feeds the features to the next
        step (a ``LogisticRegression``, UMAP...); the network is the one ``fit``
        trained (with ``max_epochs`` epochs on ``y``).

        Parameters
        ----------
        X : image input
            The images, as for :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images, n_features), float32
            Named by :meth:`get_feature_names_out`. The row of an image skipped as
            unreadable (``on_bad_image="skip"``) is NaN.
        """
        features, _ = self._raw_outputs(X, features=True)
        return features

    @property
    def _n_features_out(self):
        return self.net_.module_.heads[0].in_features

    def save(self, path):
        """Write the fitted model to ``path`` (``.skmt`` by convention) without pickle.

        One zip file: the weights as safetensors and the model document (parameters,
        tasks, image size, history, data sizes, skipped images, best epoch...).
        :meth:`load` reads it back, and reading it runs no code. See
        :mod:`sk_multitask.persistence._safe_file` and ``docs/deployment.md``.

        Returns
        -------
        str
            ``path``.
        """
        return save(self, path)

    @classmethod
    def load(cls, path, backbone=None, **settings):
        """Load a model written by :meth:`save`; safe for files from elsewhere.

        The file says what the model is, never how this machine runs it: the run-time
        parameters (those the parameter table marks so,
        :data:`~sk_multitask.training._parameters.RUNTIME_PARAMS`) take their defaults,
        or the values given here.

        Parameters
        ----------
        path : str or path
        backbone : torch.nn.Module, default=None
            Required for a model trained with a backbone module of your own (an
            instance built the same way; the error names its class).
        **settings
            Run-time parameters, e.g. ``device="cpu"``, ``cache_dir=...``.

        Returns
        -------
        MultiTaskImageEstimator
            Fitted: it predicts, scores, evaluates and writes the report like the saved
            one, and keeps its ``history_``, ``data_sizes_``, ``skipped_images_`` and
            ``best_epoch_``.
        """
        return load_fitted(cls, path, backbone, settings)

    def export_onnx(
        self, path, quantize=None, calibration_X=None, calibration_y=None, max_metric_drop=None
    ):
        """Write the network to an ONNX file, for :class:`sk_multitask.onnx.OnnxPredictor`.

        The file's metadata holds the model document (tasks, history, data sizes...).
        ``quantize="int8"`` writes it in int8, calibrated on ``calibration_X`` and, with
        ``calibration_y``, checked per task (returning the path and the per-task drops).
        Needs the ``onnx`` extra. See :func:`sk_multitask.onnx.export_onnx`.
        """
        from .onnx._export import export_onnx

        return export_onnx(self, path, quantize, calibration_X, calibration_y, max_metric_drop)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Images (paths, bytes, PIL images, uint8 arrays (N, H, W[, C])), not a 2-D table.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.two_d_labels = True
        # transform gives float32 features whatever X (images) is.
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- helpers -------------------------------------------------------------------

    #: :meth:`explain` draws heatmaps with the network (an ONNX predictor cannot).
    explainable = True

    def _check_fitted(self):
        check_is_fitted(self)

    def _raw_outputs(self, X, features=False):
        """The network's concatenated outputs (or features) for ``X``, and ``X``'s index."""
        check_is_fitted(self)
        images, index = resolve_images(
            X, self.image_col, self.image_root, check_files=False,
            storage_options=self.storage_options,
        )
        outputs = network_outputs(
            self.net_,
            images,
            self.image_size_,
            table=encoded_table(X, fitted_table_encoder(self), self.image_col),
            on_bad_image=self.on_bad_image,
            cache_dir=self.cache_dir,
            verbose=self.verbose,
            features=features,
            tta=0 if features else self.tta,
        )
        return outputs.numpy(), index

    def _heatmaps(self, X, task, label, target_layer):
        """One task's Grad-CAM heatmaps for ``X`` (:meth:`explain`)."""
        images, _ = resolve_images(
            X, self.image_col, self.image_root, check_files=False,
            storage_options=self.storage_options,
        )
        return explain_images(
            self.net_, images, self.image_size_, self.tasks_[task], label,
            target_layer=target_layer, backbone=self.backbone, on_bad_image=self.on_bad_image,
            cache_dir=self.cache_dir, verbose=self.verbose,
            table=encoded_table(X, fitted_table_encoder(self), self.image_col),
        )

    def _cell_loss(self):
        """Each cell's loss as the network was trained (its criterion's numpy twin)."""
        return self.net_.criterion_.numpy_cell_loss(self.tasks_)

    def _warm_start(self, partial=False):
        """The fitted state a ``warm_start`` fit (or ``partial_fit``) continues (None: a
        new fit)."""
        if not ((partial or self.warm_start) and hasattr(self, "net_")):
            return None
        method = "partial_fit" if partial else "warm_start"
        params = self.get_params(deep=False)
        check_network_unchanged(self.network_params_, params, self.image_size_, method)
        return WarmStart(
            self.net_, self.tasks_, self.image_size_, self.pretrained_, method,
            fitted_table_encoder(self),
        )

    def _set_fitted(self, net, data):
        vars(self).update(fitted_attributes(net, data))
        return self


def load(path, backbone=None, **settings):
    """Load an estimator saved by :meth:`MultiTaskImageEstimator.save`.

    Safe for files from elsewhere: the file holds JSON and tensors, and reading it
    runs no code. See :meth:`MultiTaskImageEstimator.load`.

    Parameters
    ----------
    path : str or path
    backbone : torch.nn.Module, optional
        Required when the model was trained with a backbone module of your own: an
        instance built the same way (its weights are loaded from the file).
    **settings
        Run-time parameters (``device``, ``cache_dir``, ``num_workers``...): they never
        come from the file.

    Returns
    -------
    MultiTaskImageEstimator
    """
    return MultiTaskImageEstimator.load(path, backbone=backbone, **settings)

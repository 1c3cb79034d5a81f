"""The one prediction surface of a fitted model, torch-free.

:class:`MultiTaskPredictor` is what :class:`~sk_multitask.MultiTaskImageEstimator` and
:class:`~sk_multitask.onnx.OnnxPredictor` predict with: the same methods, parameters,
checks and return types. They differ only in how a batch of images becomes the
network's raw outputs (:meth:`MultiTaskPredictor._raw_outputs`: torch and skorch, or
ONNX Runtime) and in where each cell's training loss comes from
(:meth:`MultiTaskPredictor._cell_loss`). :func:`checked_outputs` is the one check of
``X`` against ``y`` and ``sample_weight``, used by every method here, the report and the
figures; :func:`interval_calibration` what intervals need, checked before any image is
read (by :meth:`~MultiTaskPredictor.predict_interval` and the command line). This module
imports numpy and pandas only; scikit-learn is imported by the methods that score
(``evaluate``, ``score``, ``top_losses``), with a one-line error naming it where it is
not installed.
"""

from __future__ import annotations

from numbers import Integral

from ..evaluation._diagnostics import top_loss_table
from ..predicting._calibration import calibrated_outputs, check_coverage, interval_metrics
from ..predicting._sets import check_set_method
from ..predicting._thresholds import decided_predictions, decision_decoders
from ..targets import check_aligned, check_sample_weight, check_targets, check_task
from ..targets._outputs import decoders, probability_frames, split_outputs

#: The heatmap methods of :meth:`MultiTaskPredictor.explain`.
EXPLAIN_METHODS = ("gradcam",)
#: Why a model without torch (an ONNX predictor) draws no heatmap, and what does.
NEEDS_TORCH = (
    "explain needs torch and the network's layers (Grad-CAM takes gradients inside the "
    "network), which an ONNX model does not have: load the model's safe file (.skmt) or "
    "pickle with sk_multitask.load and explain with it"
)
#: Why a model has no calibration, and how it gets one.
NOT_CALIBRATED = (
    "the model is not calibrated: fit it with validation rows (valid_split) or call "
    "calibrate(X, y) with held-out labelled rows (before exporting it to ONNX)"
)


def scoring_module(what):
    """:mod:`sk_multitask.evaluation._metrics` (which needs scikit-learn), or an
    ImportError in one line naming ``what`` needs it and how to install it."""
    try:
        from ..evaluation import _metrics
    except ImportError as exc:
        raise ImportError(
            f"{what} needs scikit-learn ({exc.name} cannot be imported): pip install scikit-learn"
        ) from None
    return _metrics


def checked_outputs(model, X, y, sample_weight=None):
    """The one check of ``X`` against ``y`` (and ``sample_weight``), around the model's
    raw outputs for ``X``.

    A pandas ``y`` or ``sample_weight`` whose index differs from a pandas ``X``'s is
    refused before the network runs (rows pair up by position); then ``y`` must have a
    row per image and only columns that are tasks of ``model``.

    Parameters
    ----------
    model : MultiTaskPredictor
        A fitted estimator or ONNX predictor.
    X : image input
    y : DataFrame or Series
    sample_weight : array-like of shape (n_rows,), default=None

    Returns
    -------
    outputs : dict
        Task name to raw outputs (float32 array ``(N, n_outputs)``).
    index : pandas Index
        ``X``'s index.
    y : DataFrame
        The targets, one column per task of ``y``.
    sample_weight : ndarray or None
        The checked row weights.
    """
    check_aligned(X, y)
    check_aligned(X, sample_weight, "sample_weight")
    outputs, index = model.predict_raw(X)
    y = check_targets(y, model.tasks_, len(index))
    return outputs, index, y, check_sample_weight(sample_weight, len(index))


def interval_calibration(model, coverage, tasks=None):
    """What :meth:`MultiTaskPredictor.predict_interval` needs, checked before any image is
    read: ``coverage`` strictly between 0 and 1, and a calibration of every task that has
    intervals or sets (all but multi-label ones).

    Parameters
    ----------
    model : MultiTaskPredictor
        A fitted estimator or ONNX predictor.
    coverage : float
    tasks : list, default=None
        The tasks whose intervals are asked (``evaluate`` measures those of ``y``);
        None: every task.

    Returns
    -------
    calibration : Calibration
        ``model.calibration_``.
    coverage : float

    Raises
    ------
    ValueError
        Naming the coverage, or saying how the model (or which task) gets calibrated.
    """
    coverage = check_coverage(coverage)
    calibration = model._calibration()
    fitted = decoders(model.tasks_)
    calibration.check_tasks(fitted if tasks is None else {name: fitted[name] for name in tasks})
    return calibration, coverage


class MultiTaskPredictor:
    """The prediction side of a fitted multi-task model (a mixin).

    A subclass provides ``tasks_`` (task name to fitted task or decoder, in the order
    of the network's heads), ``image_col``, optionally ``calibration_``, and three
    hooks: :meth:`_check_fitted`, :meth:`_raw_outputs` and :meth:`_cell_loss`; a model that
    runs its network with torch provides :meth:`_heatmaps` too, and sets
    :attr:`explainable`.
    """

    #: Whether :meth:`explain` draws heatmaps: it needs torch and the network's layers,
    #: which the estimator has and an ONNX predictor has not.
    explainable = False

    def _check_fitted(self):
        """Raise if the model is not fitted (an ONNX predictor always is)."""

    def _raw_outputs(self, X):
        """The network's concatenated outputs for ``X`` (an array ``(N, width)``, NaN rows
        for images skipped as unreadable) and ``X``'s index."""
        raise NotImplementedError

    def _cell_loss(self):
        """The :class:`~sk_multitask.targets._cell_loss.CellLoss` the network was trained
        with."""
        raise NotImplementedError

    def _heatmaps(self, X, task, label, target_layer):
        """One task's heatmaps for ``X``: an array ``(N, height, width)``, see
        :meth:`explain`."""
        raise TypeError(NEEDS_TORCH)

    def predict_raw(self, X):
        """Each task's raw outputs: what the heads compute, before decoding.

        :meth:`predict`, :meth:`evaluate` and :meth:`top_losses` are computed from
        them; :func:`sk_multitask.report.write_report` runs the network once for all.
        The row of an image skipped as unreadable (``on_bad_image="skip"``) is NaN.

        Parameters
        ----------
        X : image input
            Paths, encoded bytes, PIL images, arrays, a ``datasets.Dataset``... (see
            the inputs page of the documentation), as ``fit`` takes it.

        Returns
        -------
        outputs : dict
            Task name to a float32 array ``(N, n_outputs)``: class logits, or the
            standardised regression value.
        index : pandas Index
            ``X``'s index (a RangeIndex for non-pandas ``X``).
        """
        self._check_fitted()
        outputs, index = self._raw_outputs(X)
        return split_outputs(decoders(self.tasks_), outputs), index

    def predict(self, X):
        """Predict every task.

        Parameters
        ----------
        X : image input
            As for :meth:`predict_raw`.

        Returns
        -------
        DataFrame
            ``X``'s index (a RangeIndex for non-pandas ``X``) and one column per task:
            class labels with the dtype they were fitted with, regression values as
            float in original units. A binary task, and each label of a multi-label
            task, is decided at its threshold of ``decision_thresholds_`` where the
            model has them (0.5 otherwise).
        """
        outputs, index = self.predict_raw(X)
        return decided_predictions(self, outputs, index)

    def predict_proba(self, X):
        """Class probabilities of every classification and multi-label task.

        Parameters
        ----------
        X : image input
            As for :meth:`predict_raw`.

        Returns
        -------
        dict
            Task name to a DataFrame with ``X``'s index and one column per class
            label (the original labels); rows sum to 1 for a classification. A
            multi-label task has one independent probability per label. Once
            calibrated (``calibration_``), the temperature-scaled probabilities.
        """
        outputs, index = self.predict_raw(X)
        return probability_frames(decoders(self.tasks_), self._calibrated(outputs), index)

    def predict_interval(self, X, coverage=0.9, set_method="lac_top"):
        """Prediction intervals and sets that hold the truth with probability ``coverage``.

        Split-conformal (:mod:`sk_multitask.predicting._calibration`) on the calibration
        rows (``calibration_``): for a new row exchangeable with them, its interval or
        set holds the truth with probability at least ``coverage``, task by task.

        Parameters
        ----------
        X : image input
            As for :meth:`predict_raw`.
        coverage : float, default=0.9
            Strictly between 0 and 1; it and the calibration are checked before any
            image is read (:func:`interval_calibration`). Too few calibration cells for
            it: the interval is unbounded, the set holds every class, and a
            :class:`~sk_multitask.exceptions.CalibrationWarning` names the task and its
            count.
        set_method : {"lac_top", "lac"}, default="lac_top"
            How a classification's set is made from its calibrated probabilities
            (:mod:`sk_multitask.predicting._sets`): ``"lac_top"``, every class whose
            probability is at least a threshold (LAC) and the most probable class, so
            that no set is empty; ``"lac"``, the LAC set alone, empty on a row where no
            class is likely enough.

        Returns
        -------
        DataFrame
            ``X``'s index; two-level columns: ``(task, "lower")`` and ``(task, "upper")``
            for a regression (original units), ``(task, "set")`` for a classification
            (a list of original labels, as ``set_method`` says). Multi-label tasks have
            none. An ordinal task has ``(task, "lower")`` and ``(task, "upper")`` too: the
            lowest and highest level of a contiguous range, which holds the predicted
            level. The row of an image skipped as unreadable is missing.
        """
        check_set_method(set_method)
        calibration, coverage = interval_calibration(self, coverage)
        outputs, index = self.predict_raw(X)
        return calibration.intervals(decoders(self.tasks_), outputs, index, coverage, set_method)

    def evaluate(
        self, X, y, per_class=False, coverage=None, sample_weight=None, set_method="lac_top"
    ):
        """Per-task metrics on the labelled cells of ``y``, in original labels and units.

        Parameters
        ----------
        X : image input
            As for :meth:`predict_raw`.
        y : DataFrame or Series
            True targets for some or all tasks, a row per row of ``X`` (a pandas ``y``
            with the same index); missing cells are left out.
        per_class : bool, default=False
            Return the per-class table of the classification tasks instead (precision,
            recall, F1, support and ROC AUC per class).
        coverage : float, default=None
            Add how sure the model is (needs ``calibration_``): ``ece`` (calibration
            error of a classification's probabilities), ``coverage`` (how often the
            :meth:`predict_interval` interval or set at this coverage holds the truth),
            ``mean_width`` (regression) and ``mean_set_size`` (classification; the
            levels of an ordinal task's range).
        sample_weight : array-like of shape (n_rows,), default=None
            Row weights of every metric (scikit-learn's ``sample_weight``); rows of
            weight 0 are left out (and out of ``n_labelled`` and ``support``).
        set_method : {"lac_top", "lac"}, default="lac_top"
            The sets whose coverage and size ``coverage`` measures, as for
            :meth:`predict_interval`.

        Returns
        -------
        DataFrame
            One row per task of ``y`` (indexed by task name): ``kind``, ``n_labelled``;
            for a classification ``accuracy``, ``balanced_accuracy``, ``f1_macro`` and
            ``log_loss``; for a regression ``mae``, ``rmse`` and ``r2``; for a
            multi-label task ``accuracy`` (exact label set), ``f1_macro``,
            ``f1_micro``, ``hamming_loss`` and ``log_loss`` (per label); for an
            ordinal task ``accuracy``, ``mae`` in levels and ``log_loss``. Only the
            columns of the kinds present; NaN where a task has none. With ``per_class``:
            one row per (task, class) with ``precision``, ``recall``, ``f1``,
            ``support`` and one-vs-rest ``roc_auc``. Probabilities (``log_loss``) are
            the calibrated ones once calibrated.
        """
        metrics = scoring_module("evaluate")
        calibration = None
        check_set_method(set_method)
        if coverage is not None and not per_class:
            # Checked before any image is read; the tasks of y are checked as measured.
            calibration, coverage = interval_calibration(self, coverage, tasks=[])
        outputs, _, y, sample_weight = checked_outputs(self, X, y, sample_weight)
        fitted = decision_decoders(self)
        tasks = {name: fitted[name] for name in y.columns}
        table = (metrics.per_class_metrics if per_class else metrics.evaluate_tasks)(
            tasks, self._calibrated(outputs), y, sample_weight
        )
        if calibration is None:
            return table
        return table.join(
            interval_metrics(calibration, tasks, outputs, y, coverage, sample_weight, set_method)
        )

    def score(self, X, y, sample_weight=None):
        """Mean over tasks of accuracy (classification), R² (regression) and micro F1
        over labels (multi-label).

        Each task is scored on its labelled cells in ``y`` only; ``y`` may hold a
        subset of the tasks. ``sample_weight`` (row weights) weights each task's
        metric as scikit-learn's ``sample_weight`` does.

        Parameters
        ----------
        X : image input
            As for :meth:`predict_raw`.
        y : DataFrame or Series
            As for :meth:`evaluate`.
        sample_weight : array-like of shape (n_rows,), default=None

        Returns
        -------
        float
        """
        from ._scoring import model_task_scores

        scores = model_task_scores(self, X, y, sample_weight=sample_weight)
        return float(sum(scores.values()) / len(scores))

    def top_losses(self, X, y, k=9, task=None):
        """The ``k`` rows with the largest loss, with each task's prediction and truth.

        Parameters
        ----------
        X : image input
            As for :meth:`predict_raw`.
        y : DataFrame or Series
            True targets; tasks absent from ``y`` count as missing.
        k : int, default=9
        task : hashable, default=None
            Rank by this task's loss, over the rows where it is labelled; None: by the
            combined loss, the sum over labelled tasks of each task's loss times its
            loss weight at the end of training (a missing truth adds nothing).

        Returns
        -------
        DataFrame
            ``X``'s index of those rows, largest loss first; ``image`` (the path as
            given in ``X``, or the position in an image array), the table columns'
            values (``tabular_cols``) as given in ``X``, ``<task>_pred`` and
            ``<task>_true`` for every task (a missing truth stays missing), ``loss``.
            Losses are those of training (see ``CellLoss.cell_losses``):
            cross-entropy (times the true label's class weight), binary cross-entropy
            averaged over labels, or the regression loss of the standardised value.
        """
        self._check_fitted()
        if task is not None:
            check_task(task, self.tasks_)
        if isinstance(k, bool) or not (isinstance(k, Integral) and k >= 1):
            raise ValueError(f"k must be a positive integer, got {k!r}")
        scoring_module("top_losses")  # scikit-learn encodes the targets
        outputs, index, y, _ = checked_outputs(self, X, y)
        predicted = decided_predictions(self, outputs, index)
        return top_loss_table(self, X, y, outputs, index, k=k, task=task, predicted=predicted)

    def table_importance(self, X, y, n_repeats=5, random_state=0, sample_weight=None):
        """Which table column matters: each task's score drop when a column is permuted.

        Permutation importance (scikit-learn's ``permutation_importance`` idea) over the
        ``tabular_cols``: each column's cells are shuffled among the rows ``n_repeats``
        times, and each task's score (accuracy, R², micro F1, as :meth:`score`) drops by
        how much the model relies on it. Each repeat of each column runs the model over
        ``X`` again. See :func:`sk_multitask.predicting._importance.table_importance`.

        Parameters
        ----------
        X : DataFrame
            Images and table columns, as for :meth:`predict_raw`; use held-out rows.
        y : DataFrame or Series
            True targets; missing cells are left out.
        n_repeats : int, default=5
        random_state : int, default=0
        sample_weight : array-like of shape (n_rows,), default=None

        Returns
        -------
        DataFrame
            Tasks (rows) by table columns: the mean score drop (positive: it helped).
        """
        from ._importance import table_importance

        self._check_fitted()
        return table_importance(self, X, y, n_repeats, random_state, sample_weight)

    def explain(self, X, task, label=None, method="gradcam", target_layer=None):
        """Where the network looked for one task: a heatmap per image (Grad-CAM).

        Grad-CAM (Selvaraju et al. 2017, through Captum's ``LayerGradCam``) weighs the
        channels of the backbone's last spatial feature map by the mean gradient of one
        output of the task's head, sums them and keeps the positive part: the parts of the
        image that raise that output. The output explained is the logit of the predicted
        class of a classification (or of ``label``), the largest logit of a multi-label
        task (or that of ``label``), the expected level of an ordinal task (or the
        log-probability of the level ``label``), and the predicted value of a regression. The
        model is left as it was: the same weights, modes and predictions, no gradient
        kept. See ``docs/interpretation.md``.

        Parameters
        ----------
        X : image input
            As for :meth:`predict_raw`; the images are read, resized and batched as
            :meth:`predict` reads them (not augmented: no ``tta``).
        task : hashable
            One of the model's tasks.
        label : object, default=None
            A class (label, level) of the task, as ``y`` held it: explain its output on
            every row. None: each row's prediction. A regression takes none.
        method : {"gradcam"}, default="gradcam"
        target_layer : str or torch.nn.Module, default=None
            The backbone's layer whose feature map is weighed: its name in
            ``est.net_.module_.backbone.named_modules()`` (``"layer3"``) or the module.
            None: its last layer with a feature map larger than 1 x 1 (a ResNet's
            ``layer4``, an EfficientNet's or ConvNeXt's ``features``, a timm model's last
            stage); a backbone whose last layers work on tokens (a vision transformer)
            is refused in one line naming the layer to pass.

        Returns
        -------
        ndarray of shape (n_images, height, width), float32
            One heatmap per row of ``X``, at the model's input size (``image_size_``),
            in [0, 1] (1 where the map counts most; all 0 where nothing raises the
            output). The row of an image skipped as unreadable
            (``on_bad_image="skip"``) is NaN.

        Raises
        ------
        TypeError
            For an ONNX predictor: it has no gradients.
        ValueError
            For an unknown task, method, label or layer, before any image is read.
        """
        self._check_fitted()
        check_task(task, self.tasks_)
        if method not in EXPLAIN_METHODS:
            raise ValueError(f"method must be one of {list(EXPLAIN_METHODS)}; got {method!r}")
        return self._heatmaps(X, task, label, target_layer)

    # -- helpers -------------------------------------------------------------------

    def _calibration(self):
        self._check_fitted()
        calibration = getattr(self, "calibration_", None)
        if calibration is None:
            raise ValueError(NOT_CALIBRATED)
        return calibration

    def _calibrated(self, outputs):
        return calibrated_outputs(getattr(self, "calibration_", None), outputs)

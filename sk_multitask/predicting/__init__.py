"""From a fitted network's raw outputs to predictions.

- ``_protocol`` (torch-free): :class:`MultiTaskPredictor`, the one prediction surface of
  the estimator and the ONNX predictor, and :func:`checked_outputs`, the one check of
  ``X`` against ``y``;
- ``_scoring`` (torch-free): per-task scores of a model, :func:`multitask_scorer`;
- ``_inference``: the one batching iterator of every method that runs the network;
- ``_explain``: heatmaps of where the network looked for a task (Grad-CAM, Captum);
- ``_calibration`` (torch-free): temperature scaling and conformal sets and intervals.
"""

from .. import _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(
    __name__,
    {
        "_calibration": [
            "MAX_CALIBRATION_SCORES",
            "TEMPERATURE_RANGE",
            "Calibration",
            "TaskCalibration",
            "calibrate",
            "calibrated_outputs",
            "check_coverage",
            "conformal_quantile",
            "fit_temperature",
            "interval_metrics",
            "min_cells",
            "nll",
            "read_calibration",
        ],
        "_explain": ["explain_images", "explained_output"],
        "_inference": ["batch_results", "network_outputs", "validation_calibration"],
        "_protocol": [
            "MultiTaskPredictor",
            "checked_outputs",
            "interval_calibration",
            "scoring_module",
        ],
        "_scoring": ["MultitaskScorer", "model_task_scores", "multitask_scorer"],
    },
)

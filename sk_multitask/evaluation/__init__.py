"""Scores, diagnostics and figures of predictions against true targets (torch-free).

- ``_metrics``: per-task scores (one rule for scorable rows), the metrics by name;
- ``_calibration_metrics``: calibration error, reliability bins, interval and set coverage;
- ``_diagnostics``: the top-losses table; ``_figures``: the figures, as matplotlib figures.
"""

from .. import _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(
    __name__,
    {
        "_calibration_metrics": [
            "expected_calibration_error",
            "interval_scores",
            "reliability_bins",
            "set_scores",
        ],
        "_diagnostics": ["top_loss_table"],
        "_figures": [
            "confusion_figure",
            "format_value",
            "history_figure",
            "image_grid",
            "interval_figure",
            "regression_figure",
            "reliability_figure",
            "top_losses_figure",
        ],
        "_metrics": [
            "check_metrics",
            "evaluate_tasks",
            "label_codes",
            "per_class_metrics",
            "scorable_rows",
            "task_scores",
        ],
    },
)

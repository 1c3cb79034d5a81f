"""A fit: its parameters, its plan, the skorch net and its callbacks.

- ``_parameters`` (torch-free): the parameter table (defaults, constraints, run-time
  settings, fingerprint, command-line options);
- ``_config``: the frozen config of a fit, its checks and its plan (the resolved
  ``"auto"`` values);
- ``_fit_data``: a fit's data checked and prepared; ``_build``: config + plan to the
  skorch net (for a fit and for a loaded model); ``_net``: the skorch net;
- ``callbacks``: every skorch callback of a fit; ``_lr_finder``: the learning-rate range
  test; ``_distributed``: launched processes and Dask workers.
"""

from .. import _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(
    __name__,
    {
        "_build": [
            "DRY_RUN_SIDE",
            "build_net",
            "continue_order",
            "rebuild_net",
            "rebuild_saved_net",
        ],
        "_config": [
            "Plan",
            "TrainingConfig",
            "WarmStart",
            "check_image_size_bound",
            "check_named_tasks",
            "check_parameters",
            "check_writable_folder",
            "resolve_device",
            "resolve_num_workers",
            "seeded",
        ],
        "_distributed": [
            "dask_worker_threads",
            "is_main_process",
            "launched_processes",
            "uses_accelerate",
        ],
        "_fit_data": ["FitData", "fitted_attributes", "prepare_fit", "task_specs"],
        "_lr_finder": ["LRFindResult", "find_lr"],
        "_net": ["OPTIMIZERS", "AcceleratedMultiTaskNet", "MultiTaskNet", "make_accelerator"],
        "_parameters": [
            "DEFAULTS",
            "FINGERPRINT_PARAMS",
            "NETWORK_PARAMS",
            "PARAMETERS",
            "REDACTED",
            "RUNTIME_PARAMS",
            "SECRET_PARAMS",
            "check_network_unchanged",
            "is_credential_name",
            "parameter_constraints",
            "redacted_params",
        ],
    },
)

"""sk-multitask: one network, several mixed targets from images, scikit-learn native.

Public names are imported on first use, so that ``sk_multitask.onnx`` (the torch-free
predictor) can be imported without torch.
"""

import importlib

#: The version of the package.
__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "InconsistentVersionWarning": "pickling",
    "MultiTaskImageEstimator": "estimator",
    "load": "estimator",
    "multitask_scorer": "metrics",
}

#: The public names of the package.
__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])

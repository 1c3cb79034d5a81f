"""sk-multitask: one network, several mixed targets from images, scikit-learn native.

Public names are imported on first use, so that ``sk_multitask.onnx`` (the torch-free
predictor) can be imported without torch. The package is laid out by the stages of its
data flow (``docs/architecture.md``): ``inputs``, ``targets``, ``network``, ``training``,
``predicting``, ``evaluation``, ``persistence``, then ``onnx``, the estimator, ``labels``
and the tools on top (``plotting``, ``report``, ``mlflow``, ``cli``).
"""

import importlib

#: The version of the package.
__version__ = "0.1.0"


def _lazy_exports(package, modules):
    """``__getattr__``, ``__dir__`` and ``__all__`` of a package whose public names are
    imported from its private modules (``{module: [name, ...]}``) on first use.

    Every stage package re-exports its public names so: importing one torch-free module
    of a package (``sk_multitask.inputs._sources``) then imports none of its torch ones.
    """
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name):
        if name in where:
            value = getattr(importlib.import_module(f".{where[name]}", package), name)
            setattr(importlib.import_module(package), name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted([*vars(importlib.import_module(package)), *where])

    return __getattr__, __dir__, sorted(where)


__getattr__, __dir__, _names = _lazy_exports(
    __name__,
    {
        "estimator": ["MultiTaskImageEstimator", "load"],
        "predicting._scoring": ["multitask_scorer"],
        "persistence._versions": ["InconsistentVersionWarning"],
    },
)
#: The public names of the package.
__all__ = ["__version__", *_names]

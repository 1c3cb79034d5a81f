"""sk-multitask: one network, several mixed targets from images, scikit-learn native."""

from .estimator import MultiTaskImageEstimator
from .metrics import multitask_scorer

#: The version of the package.
__version__ = "0.1.0"

__all__ = ["MultiTaskImageEstimator", "__version__", "multitask_scorer"]

"""ONNX: export a fitted estimator, predict without torch (the documented import path).

:func:`export_onnx` (:mod:`sk_multitask.onnx._export`) writes a fitted network as one ONNX
file with the model document in its metadata; :class:`OnnxPredictor`
(:mod:`sk_multitask.onnx._predictor`) reads such a file and predicts with ONNX Runtime,
without torch. ``export_onnx(..., quantize="int8")`` writes the file in int8, checked
per task against the float model (:mod:`sk_multitask.onnx._quantize`). Importing this
module imports neither torch nor onnx.
"""

from ._export import export_onnx
from ._predictor import OnnxPredictor

__all__ = ["OnnxPredictor", "export_onnx"]

"""ONNX export of a fitted estimator, and a predictor that runs it without torch.

:func:`export_onnx` (also ``est.export_onnx(path)``) writes the network as one ONNX
file: input ``images``, uint8 ``(N, 3, H, W)`` with a dynamic batch size, the
normalisation inside the graph; output ``outputs``, every task's head concatenated.
The model's JSON document (:func:`sk_multitask.persistence.model_document`: tasks,
classes, image size, parameters) is stored in the file's metadata.

:class:`OnnxPredictor` reads such a file and predicts with ONNX Runtime. It imports
numpy, pandas, PIL and onnxruntime only, not torch, skorch or scikit-learn, and
decodes images and outputs with the code the estimator uses
(:mod:`sk_multitask.images`, :class:`sk_multitask.outputs.OutputDecoder`), so that
both return the same DataFrames.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .images import array_pixels, is_pixel_array, read_image, resolve_images
from .outputs import OutputDecoder, prediction_frame, probability_frames
from .persistence import check_document, decode_params, model_document
from .targets import check_targets

__all__ = ["OnnxPredictor", "export_onnx"]

#: The metadata key of the ONNX file that holds the model's JSON document.
METADATA_KEY = "sk_multitask"
INPUT, OUTPUT = "images", "outputs"


def _missing_extra(what, exc):
    return ImportError(
        f"{what} needs the onnx extra ({exc.name} is not installed): "
        "pip install 'sk-multitask[onnx]'"
    )


def export_onnx(estimator, path):
    """Write a fitted estimator's network to ``path`` as ONNX, with its metadata.

    The graph takes uint8 images ``(N, 3, H, W)`` of the training size (any ``N``)
    and returns the concatenated raw outputs of every task's head, computed in
    float32 whatever the estimator's ``precision``. Exported with torch's
    ``torch.export``-based exporter (which needs onnx and onnxscript).

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    path : str or path

    Returns
    -------
    str
        The path written.
    """
    import copy

    import torch
    from sklearn.utils.validation import check_is_fitted

    try:
        import onnx
        import onnxscript  # noqa: F401 -- torch's exporter needs it
    except ImportError as exc:
        raise _missing_extra("export_onnx", exc) from exc
    check_is_fitted(estimator)
    module = copy.deepcopy(estimator.net_.module_).cpu().float().eval()
    module.channels_last = False  # a memory format means nothing in the graph
    example = torch.zeros(2, 3, *estimator.image_size_, dtype=torch.uint8)
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        verbose=False,
    )
    model = program.model_proto
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(model_document(estimator))})
    path = os.fspath(path)
    onnx.save(model, path)
    return path


class OnnxPredictor:
    """Predict with a model exported by :func:`export_onnx`, without torch.

    Parameters
    ----------
    path : str or path
        The ONNX file.
    image_root : str or path, default=None
        Folder relative image paths are resolved against; None: the estimator's.
    batch_size : int, default=None
        Images per ONNX Runtime call; None: the estimator's ``batch_size``.
    providers : list, default=None
        ONNX Runtime execution providers; None: ``["CPUExecutionProvider"]``.
    session_options : onnxruntime.SessionOptions, default=None
        E.g. the number of threads (``intra_op_num_threads``); None: ONNX Runtime's.

    Attributes
    ----------
    tasks_ : dict
        Task name to :class:`~sk_multitask.outputs.OutputDecoder` (kind, classes...),
        in the order of the estimator's ``tasks_``.
    params : dict
        The estimator's parameters, as saved.
    image_col, image_root, image_size, batch_size
        What :meth:`predict` reads ``X`` with.

    Examples
    --------
    >>> import tempfile, os
    >>> from sk_multitask import MultiTaskImageEstimator
    >>> from sk_multitask.datasets import make_multitask_images
    >>> from sk_multitask.onnx import OnnxPredictor
    >>> df = make_multitask_images(32, image_size=16, random_state=0)
    >>> est = MultiTaskImageEstimator(
    ...     image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
    ...     image_size=16, max_epochs=1, valid_split=None, random_state=0)
    >>> est = est.fit(df, df[["color", "shape", "area"]])
    >>> path = est.export_onnx(os.path.join(tempfile.mkdtemp(), "model.onnx"))
    >>> predictor = OnnxPredictor(path)
    >>> onnx_predictions, predictions = predictor.predict(df), est.predict(df)
    >>> onnx_predictions[["color", "shape"]].equals(predictions[["color", "shape"]])
    True
    >>> float((onnx_predictions["area"] - predictions["area"]).abs().max()) < 1e-4
    True
    """

    def __init__(
        self, path, image_root=None, batch_size=None, providers=None, session_options=None
    ):
        try:
            import onnxruntime
        except ImportError as exc:
            raise _missing_extra("OnnxPredictor", exc) from exc
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX file not found: {path!r}")
        try:
            self.session = onnxruntime.InferenceSession(
                path, session_options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{path!r} is not an ONNX model ONNX Runtime can run: {exc}") from exc
        metadata = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in metadata:
            raise ValueError(
                f"{path!r} is an ONNX model but not one exported by sk-multitask "
                f"(its metadata has no {METADATA_KEY!r} entry)"
            )
        self.document = json.loads(metadata[METADATA_KEY])
        check_document(self.document, path)
        self.params = decode_params(self.document)
        self.tasks_ = {}
        for state in self.document["tasks"]:
            decoder = OutputDecoder.from_dict(state)
            self.tasks_[decoder.name] = decoder
        self.image_col = self.params["image_col"]
        self.image_root = self.params["image_root"] if image_root is None else image_root
        self.image_size = tuple(self.document["image_size"])
        self.batch_size = self.params["batch_size"] if batch_size is None else batch_size
        self.path = path

    def outputs(self, X):
        """Each task's raw head outputs (float32 arrays) for ``X``, and ``X``'s index."""
        images, index = resolve_images(X, self.image_col, self.image_root, check_files=False)
        pixels = array_pixels if is_pixel_array(images) else read_image
        sizes = [decoder.n_outputs for decoder in self.tasks_.values()]
        outputs = np.empty((len(images), sum(sizes)), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            stop = min(start + self.batch_size, len(images))
            batch = np.stack([pixels(images[i], self.image_size) for i in range(start, stop)])
            feed = {INPUT: np.ascontiguousarray(batch.transpose(0, 3, 1, 2))}
            outputs[start:stop] = self.session.run([OUTPUT], feed)[0]
        split = np.split(outputs, np.cumsum(sizes)[:-1], axis=1)
        return dict(zip(self.tasks_, split, strict=True)), index

    def predict(self, X):
        """Predict every task: the DataFrame ``MultiTaskImageEstimator.predict`` returns.

        Parameters
        ----------
        X : DataFrame with the image column, Series or list of paths, or uint8 ndarray
            (N, H, W[, C])
        """
        return prediction_frame(self.tasks_, *self.outputs(X))

    def predict_proba(self, X):
        """Class probabilities: what ``MultiTaskImageEstimator.predict_proba`` returns."""
        return probability_frames(self.tasks_, *self.outputs(X))

    def evaluate(self, X, y):
        """Per-task metrics: the table of ``MultiTaskImageEstimator.evaluate``.

        Needs scikit-learn (for the metrics), not torch.
        """
        from .metrics import evaluate_tasks

        outputs, index = self.outputs(X)
        y = check_targets(y, self.tasks_, len(index))
        return evaluate_tasks({n: self.tasks_[n] for n in y.columns}, outputs, y)

    def __repr__(self):
        return f"OnnxPredictor({self.path!r})"

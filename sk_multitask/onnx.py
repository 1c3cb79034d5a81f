"""ONNX export of a fitted estimator, and a predictor that runs it without torch.

:func:`export_onnx` (also ``est.export_onnx(path)``; defined in
:mod:`sk_multitask.onnx_export`) writes the network as one ONNX file, with the model
document (:mod:`sk_multitask.document`) in its metadata.

:class:`OnnxPredictor` reads such a file and predicts with ONNX Runtime. It imports
numpy, pandas, PIL and onnxruntime only, not torch, skorch or scikit-learn, and
decodes images and outputs with the code the estimator uses
(:mod:`sk_multitask.images`, :class:`sk_multitask.tasks.OutputDecoder`), so that
both return the same DataFrames.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .document import parse_document
from .images import array_pixels, is_pixel_array, read_image, resolve_images
from .onnx_export import INPUT, METADATA_KEY, OUTPUT, export_onnx, missing_extra
from .tasks import OutputDecoder, check_targets, prediction_frame, probability_frames

__all__ = ["OnnxPredictor", "export_onnx"]


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
        Task name to :class:`~sk_multitask.tasks.OutputDecoder` (kind, classes...),
        in the order of the estimator's ``tasks_``.
    params : dict
        The estimator's parameters, as saved.
    history_ : list of dict
        The training history, one dict per epoch.
    image_size_ : (int, int)
    data_sizes_ : DataFrame
        Rows and labelled cells per task in training and validation (None for a file
        exported before sk-multitask recorded them).
    skipped_images_ : list of str
        The images left out of training.
    best_epoch_ : int
        The epoch whose weights were kept by early stopping (when it ran).
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
            raise missing_extra("OnnxPredictor", exc) from exc
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
        try:
            document = json.loads(metadata[METADATA_KEY])
        except ValueError as exc:
            raise ValueError(f"{path!r}: the model document is not valid JSON: {exc}") from exc
        model = parse_document(document, path)
        self.document = document
        self.params = model.params
        self.tasks_ = model.tasks(OutputDecoder.from_dict)
        self.history_ = model.history
        for name, value in model.fitted_attributes().items():
            setattr(self, name, value)
        self.image_col = self.params["image_col"]
        self.image_root = self.params["image_root"] if image_root is None else image_root
        self.image_size = self.image_size_
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

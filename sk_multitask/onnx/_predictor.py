"""A predictor that runs a model exported to ONNX without torch.

:class:`OnnxPredictor` reads a file written by :func:`sk_multitask.onnx.export_onnx` and
predicts with ONNX Runtime. It imports numpy, pandas, scipy, PIL and onnxruntime (and
pyarrow for a model whose labels pandas stores in Arrow), not torch, skorch or
scikit-learn, and decodes images and outputs with the code the
estimator uses (:mod:`sk_multitask.inputs._decoding`,
:class:`sk_multitask.targets._outputs.OutputDecoder`),
with the estimator's rule for images that cannot be read, so that both return the same
DataFrames.
"""

from __future__ import annotations

import os

import numpy as np

from ..inputs._bad_images import (
    BAD_IMAGE_OPTIONS,
    BadImageRecords,
    decode_or_record,
    mark_unreadable,
)
from ..inputs._decoding import tta_views
from ..inputs._sources import resolve_images
from ..inputs._tabular import encoded_table
from ..persistence._document import parse_document, read_document
from ..predicting._calibration import read_calibration
from ..predicting._protocol import MultiTaskPredictor
from ..predicting._thresholds import read_thresholds
from ..targets._outputs import OutputDecoder
from ..training._parameters import check_secret_params

__all__ = ["METADATA_KEY", "OnnxPredictor", "check_batch_size", "missing_onnx_extra"]

#: The metadata key of the ONNX file that holds the model's JSON document.
METADATA_KEY = "sk_multitask"
#: The names of the ONNX graph's input (uint8 images) and output (every head's outputs).
INPUT, OUTPUT = "images", "outputs"
#: The name of the graph's second input, of a model with table columns: float32
#: ``(N, n_encoded)``.
TABLE_INPUT = "table"


def check_batch_size(value, where="batch_size"):
    """``value`` if it is a positive int (not a bool), else a ValueError naming ``where``.

    Examples
    --------
    >>> check_batch_size(32)
    32
    >>> check_batch_size(-1)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive int; got -1
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where} must be a positive int; got {value!r}")
    return int(value)


def missing_onnx_extra(what, exc):
    """The ImportError for ``what`` when a package of the ``onnx`` extra is missing."""
    return ImportError(
        f"{what} needs the onnx extra ({exc.name} is not installed): "
        "pip install 'sk-multitask[onnx]'"
    )


def _check_options(image_root, providers, storage_options, on_bad_image):
    """A TypeError or ValueError naming the first of :class:`OnnxPredictor`'s options
    that is of the wrong type or value, before the file is opened."""
    if image_root is not None and not isinstance(image_root, (str, os.PathLike)):
        raise TypeError(f"image_root must be a folder path or None; got {image_root!r}")
    if providers is not None and (
        isinstance(providers, str) or not isinstance(providers, (list, tuple))
    ):
        raise TypeError(f"providers must be a list of ONNX Runtime providers: {providers!r}")
    check_secret_params({"storage_options": storage_options})
    if on_bad_image not in (None, *BAD_IMAGE_OPTIONS):
        raise ValueError(
            f"on_bad_image must be one of {list(BAD_IMAGE_OPTIONS)} or None; "
            f"got {on_bad_image!r}"
        )


def _open_session(path, session_options, providers):
    """The ONNX Runtime session of the file at ``path`` and its model document (a
    :class:`~sk_multitask.persistence._document.ModelDocument`), or an error naming the file."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise missing_onnx_extra("OnnxPredictor", exc) from exc
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file not found: {path!r}")
    try:
        session = onnxruntime.InferenceSession(
            path, session_options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ValueError(f"{path!r} is not an ONNX model ONNX Runtime can run: {exc}") from exc
    metadata = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in metadata:
        raise ValueError(
            f"{path!r} is an ONNX model but not one exported by sk-multitask "
            f"(its metadata has no {METADATA_KEY!r} entry)"
        )
    return session, read_document(metadata[METADATA_KEY], path)


def _check_graph(session, tasks, model, path):
    """A ValueError unless the document's parameters, tasks and table fit the ONNX graph."""
    missing = [name for name in ("image_col", "batch_size") if name not in model.params]
    if missing:
        raise ValueError(f"{path!r}: the model document has no parameters {missing}")
    inputs = [node.name for node in session.get_inputs()]
    expected = [INPUT, TABLE_INPUT] if model.tabular is not None else [INPUT]
    if inputs != expected:
        raise ValueError(
            f"{path!r}: the ONNX graph's inputs are {inputs}, the model document's {expected}"
        )
    width = session.get_outputs()[0].shape[-1]
    outputs = sum(decoder.n_outputs for decoder in tasks.values())
    if isinstance(width, int) and width != outputs:  # a named dimension: not known here
        raise ValueError(
            f"{path!r}: the model document's tasks have {outputs} outputs in all, "
            f"the ONNX graph {width}"
        )


class OnnxPredictor(MultiTaskPredictor):
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
    on_bad_image : str or None, default=None
        What an image that cannot be read does, as the estimator's parameter:
        ``"raise"``, an error naming the file; ``"skip"``, its row of predictions is
        missing and one :class:`~sk_multitask.exceptions.BadImageWarning` counts such
        rows. None: the estimator's.
    storage_options : dict, default=None
        Passed to fsspec to read image paths (or an ``image_root``) that are URLs,
        as the estimator's parameter (never saved in the file).

    Attributes
    ----------
    tasks_ : dict
        Task name to :class:`~sk_multitask.targets._outputs.OutputDecoder` (kind, classes...),
        in the order of the estimator's ``tasks_``.
    calibration_ : Calibration or None
        The estimator's calibration (:mod:`sk_multitask.predicting._calibration`).
    decision_thresholds_ : dict or None
        The estimator's decision thresholds (:mod:`sk_multitask.predicting._thresholds`).
    quantization_ : dict or None
        For an int8 file (``export_onnx(quantize="int8")``): how it was quantized and
        calibrated (``calibration``: method and image count) and its per-task check
        against the float model (``check``: ``[task, metric, float, int8]`` rows, or
        None); None for a float file.
    params : dict
        The estimator's parameters, as saved.
    table_encoder_ : TableEncoder or None
        The estimator's encoding of its table columns (``tabular_cols``), applied to
        ``X`` in numpy, the same code as the estimator's; None for images only.
    image_col, image_root, image_size, batch_size, on_bad_image, storage_options, tta
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
        self,
        path,
        image_root=None,
        batch_size=None,
        providers=None,
        session_options=None,
        on_bad_image=None,
        storage_options=None,
    ):
        if batch_size is not None:
            batch_size = check_batch_size(batch_size)
        _check_options(image_root, providers, storage_options, on_bad_image)
        path = os.fspath(path)
        self.session, model = _open_session(path, session_options, providers)
        self.document = model.document
        self.params = model.params
        self.tasks_ = model.tasks(OutputDecoder.from_dict)
        _check_graph(self.session, self.tasks_, model, path)
        try:
            self.table_encoder_ = model.table_encoder()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path!r}: {exc}") from exc
        self.history_ = model.history
        self.quantization_ = model.quantization
        try:
            self.calibration_ = read_calibration(model.calibration, self.tasks_)
            self.decision_thresholds_ = read_thresholds(model.decision_thresholds, self.tasks_)
        except ValueError as exc:
            raise ValueError(f"{path!r}: {exc}") from exc
        for name, value in model.fitted_attributes().items():
            setattr(self, name, value)
        self.image_col = self.params["image_col"]
        self.image_root = self.params["image_root"] if image_root is None else image_root
        self.image_size = self.image_size_
        if batch_size is None:
            saved = self.params.get("batch_size")
            batch_size = check_batch_size(saved, f"{path!r}: the saved batch_size")
        self.batch_size = batch_size
        saved = self.params.get("on_bad_image", "raise")
        self.on_bad_image = saved if on_bad_image is None else on_bad_image
        self.storage_options = storage_options
        # The estimator's test-time augmentation, which its predictions average over.
        self.tta = int(self.params.get("tta", 0))
        tta_views(self.image_size, self.tta)  # a bad count in the file: refused here
        self.path = path

    def input_batches(self, X, bad=None):
        """``X`` as the graph's inputs, batch by batch: what :meth:`predict_raw` runs and
        what int8 calibration (:mod:`sk_multitask.onnx._quantize`) feeds the graph.

        Parameters
        ----------
        X : image input
            As for :meth:`predict_raw`.
        bad : BadImageRecords, default=None
            Where an image that cannot be read is recorded (and left out of its batch);
            None: such an image raises, naming the file.

        Returns
        -------
        n_rows : int
        index : pandas Index
            ``X``'s index.
        batches : iterator of (list, dict)
            The positions of the rows read in a batch, and the graph's inputs for them
            by name (``images``: uint8 ``(n, 3, H, W)``; with table columns, ``table``:
            float32 ``(n, n_encoded)``, encoded as the estimator encodes them).
        """
        images, index = resolve_images(
            X, self.image_col, self.image_root, check_files=False,
            storage_options=self.storage_options,
        )
        table = encoded_table(X, self.table_encoder_, self.image_col)

        size = self.image_size

        def batches():
            for start in range(0, len(images), self.batch_size):
                positions = range(start, min(start + self.batch_size, len(images)))
                pixels = {i: decode_or_record(images[i], size, i, bad) for i in positions}
                read = [i for i, image in pixels.items() if image is not None]
                if read:
                    batch = np.stack([pixels[i] for i in read]).transpose(0, 3, 1, 2)
                    feeds = {INPUT: np.ascontiguousarray(batch)}
                    if table is not None:
                        feeds[TABLE_INPUT] = table[read]
                    yield read, feeds

        return len(images), index, batches()

    def _raw_outputs(self, X):
        """The heads' concatenated outputs (a float32 array) for ``X``, and ``X``'s index;
        the row of an image that cannot be read is NaN with ``on_bad_image="skip"``
        (:func:`sk_multitask.inputs._bad_images.mark_unreadable`, the estimator's rule)."""
        bad = BadImageRecords() if self.on_bad_image == "skip" else None
        n_rows, index, batches = self.input_batches(X, bad)
        width = sum(decoder.n_outputs for decoder in self.tasks_.values())
        outputs = np.empty((n_rows, width), dtype=np.float32)
        views = tta_views(self.image_size, self.tta)
        for rows, feeds in batches:
            outputs[rows] = self._averaged_outputs(feeds, views)
        mark_unreadable(outputs, {} if bad is None else bad.collect())
        return outputs, index

    def _averaged_outputs(self, feeds, views):
        """The outputs of a batch (the graph's inputs by name), averaged over it and its
        test-time augmentation ``views`` of the images (logits averaged, as the estimator
        does)."""
        outputs = self.session.run([OUTPUT], feeds)[0]
        batch = feeds[INPUT]
        for rows, cols in views:
            view = np.ascontiguousarray(batch[..., rows[:, None], cols[None, :]])
            outputs = outputs + self.session.run([OUTPUT], {**feeds, INPUT: view})[0]
        return outputs / (1 + len(views))

    def _cell_loss(self):
        """Each cell's loss as the network was trained, from the model document."""
        return parse_document(self.document, self.path).cell_loss()

    def __repr__(self):
        if self.quantization_ is None:
            return f"OnnxPredictor({self.path!r})"
        images = self.quantization_["calibration"]["n_images"]
        return f"OnnxPredictor({self.path!r}, int8 calibrated on {images} images)"

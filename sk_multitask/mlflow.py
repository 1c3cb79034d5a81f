"""An MLflow flavor: a fitted estimator logged as its safe file, served without pickle.

:func:`log_model` (and :func:`save_model`) write an MLflow model that holds the safe file
(``data/model.skmt``, :mod:`sk_multitask.persistence._safe_file`), the signature, an input example
and two flavors: ``sk_multitask`` (:func:`load_model` gives the estimator back) and
``python_function``, whose loader is this module. Nothing in the model is a pickle:
loading it imports this module and reads the safe file, which runs no code. The folder
is written beside its place and renamed into it when complete
(:func:`sk_multitask.inputs._files.atomic_folder`): a failed save leaves nothing in the
way of the next.

The pyfunc model (``mlflow.pyfunc.load_model(uri)``, ``mlflow models serve``) takes a
DataFrame with the estimator's image column (paths, as ``predict`` takes them) or the
column :data:`BASE64_COLUMN` of base64-encoded image files, or both (a row's encoded
image is used where it has one), so that a client of a served model sends the images
themselves and needs no disk shared with the server. It returns what ``est.predict``
does; with ``params={"method": "predict_proba"}``, the class probabilities, one column
``{task}_proba_{label}`` per task and label
(:func:`sk_multitask.targets._outputs.probability_table`).

Needs the ``mlflow`` extra (``pip install "sk-multitask[mlflow]"``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib.metadata
import io
import os
import sys
import tempfile
import warnings

import pandas as pd

from sk_multitask import __version__
from sk_multitask.estimator import load
from sk_multitask.inputs._files import atomic_folder
from sk_multitask.targets._outputs import probability_table
from sk_multitask.training._parameters import redacted_params

__all__ = [
    "BASE64_COLUMN",
    "FLAVOR_NAME",
    "METHODS",
    "MultiTaskPyfuncModel",
    "load_model",
    "log_model",
    "save_model",
]

#: The flavor's name in the MLmodel file.
FLAVOR_NAME = "sk_multitask"
#: The input column of base64-encoded image files (the bytes of a JPEG, PNG... file).
BASE64_COLUMN = "image_base64"
#: The values of the pyfunc's ``method`` parameter.
METHODS = ("predict", "predict_proba")
#: The safe file's name in the model's ``data`` folder.
_MODEL_FILE = "model.skmt"
#: The distributions a logged model needs, pinned to the versions installed.
_REQUIREMENTS = (
    "torch", "torchvision", "skorch", "scikit-learn", "pandas", "pillow", "safetensors",
)  # fmt: skip


#: Warnings of MLflow's own making that its users cannot act on: importing
#: ``mlflow.pyfunc`` warns about MLflow's type hints, and saving an input example uses
#: an operation pandas 3 deprecates.
_MLFLOW_NOISE = ("Any type hint is inferred as AnyType", "Operation with range is deprecated")


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        for message in _MLFLOW_NOISE:
            warnings.filterwarnings("ignore", message=f".*{message}")
        yield


def _mlflow():
    try:
        import mlflow

        with _quiet():
            import mlflow.pyfunc  # noqa: F401 -- the pyfunc flavor, imported quietly
    except ImportError as exc:
        raise ImportError(
            'sk_multitask.mlflow needs MLflow: pip install "sk-multitask[mlflow]"'
        ) from exc
    return mlflow


def _example_image(estimator):
    """One grey PNG of the model's image size, base64-encoded: an input example that
    any machine can send."""
    from PIL import Image

    height, width = estimator.image_size_
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, format="PNG")
    return pd.DataFrame({BASE64_COLUMN: [base64.b64encode(buffer.getvalue()).decode("ascii")]})


def _signature(estimator, example):
    """Inputs: the image column and :data:`BASE64_COLUMN`, each optional (strings);
    outputs: as ``predict`` gives them for ``example``; the ``method`` parameter."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    outputs = MultiTaskPyfuncModel(estimator).predict(example)
    inferred = infer_signature(example, outputs, params={"method": "predict"})
    inputs = Schema(
        [
            ColSpec("string", estimator.image_col, required=False),
            ColSpec("string", BASE64_COLUMN, required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=inferred.outputs, params=inferred.params)


def _default_requirements():
    pins = [f"sk-multitask=={__version__}"]
    for name in _REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def save_model(
    estimator, path, mlflow_model=None, signature=None, input_example=None, **kwargs
):
    """Write a fitted estimator to the folder ``path`` as an MLflow model, without pickle.

    The folder is written beside ``path`` and renamed to it when complete: a failure (a
    full disk) leaves no folder behind.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
        Saved as its safe file (its parameters must be storable: see
        :meth:`MultiTaskImageEstimator.save`).
    path : str or path
        A folder that does not exist yet (or is empty).
    mlflow_model : mlflow.models.Model, optional
        The model this flavor is added to (:func:`log_model` passes it).
    signature : mlflow.models.ModelSignature, optional
        Default: the image column and :data:`BASE64_COLUMN` as optional string inputs,
        the predictions of ``input_example`` as outputs, and the ``method`` parameter.
    input_example : DataFrame, optional
        Rows of the input; default: one grey image of the model's image size, encoded
        in :data:`BASE64_COLUMN`, which any machine can send.
    **kwargs
        Passed to :func:`mlflow.pyfunc.save_model` (``pip_requirements``,
        ``extra_pip_requirements``, ``metadata``...).

    Raises
    ------
    FileExistsError
        If ``path`` exists and is not an empty folder, before anything is written.
    """
    mlflow = _mlflow()
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    if input_example is None:
        input_example = _example_image(estimator)
    if signature is None:
        signature = _signature(estimator, input_example)
    if mlflow_model is None:
        mlflow_model = mlflow.models.Model()
    mlflow_model.add_flavor(
        FLAVOR_NAME, data=f"data/{_MODEL_FILE}", sk_multitask_version=__version__
    )
    kwargs.setdefault("pip_requirements", _default_requirements())
    with tempfile.TemporaryDirectory() as folder, atomic_folder(path) as written:
        safe_file = estimator.save(os.path.join(folder, _MODEL_FILE))
        with _quiet():
            mlflow.pyfunc.save_model(
                written,
                loader_module=__name__,
                data_path=safe_file,
                mlflow_model=mlflow_model,
                signature=signature,
                input_example=input_example,
                **kwargs,
            )


def log_model(estimator, name, **kwargs):
    """Log a fitted estimator to the active MLflow run as an MLflow model, without pickle.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    name : str
        The model's name in the run.
    **kwargs
        :func:`save_model`'s keywords (``signature``, ``input_example``,
        ``pip_requirements``...) and :meth:`mlflow.models.Model.log`'s
        (``registered_model_name``, ``params``, ``tags``...). ``params``
        (``est.get_params()``, say) are logged with their credentials redacted
        (:func:`~sk_multitask.training._parameters.redacted_params`).

    Returns
    -------
    mlflow.models.model.ModelInfo
        Its ``model_uri`` loads with :func:`load_model` or ``mlflow.pyfunc.load_model``.

    Examples
    --------
    See ``docs/integrations.md``.
    """
    mlflow = _mlflow()
    if kwargs.get("params") is not None:
        kwargs["params"] = redacted_params(kwargs["params"])
    return mlflow.models.Model.log(
        artifact_path=None, name=name, flavor=sys.modules[__name__], estimator=estimator, **kwargs
    )


def _safe_file(local_path):
    mlflow = _mlflow()
    model = mlflow.models.Model.load(os.path.join(local_path, "MLmodel"))
    if FLAVOR_NAME not in model.flavors:
        raise ValueError(f"the MLflow model at {local_path!r} has no {FLAVOR_NAME!r} flavor")
    return os.path.join(local_path, model.flavors[FLAVOR_NAME]["data"])


def load_model(model_uri, dst_path=None, **settings):
    """Load a model logged by :func:`log_model` as a fitted estimator.

    Parameters
    ----------
    model_uri : str
        ``runs:/<run_id>/<name>``, ``models:/<id or name>/...``, a folder...
    dst_path : str, optional
        Where to download the model to (default: a temporary folder).
    **settings
        Run-time parameters (``device``, ``cache_dir``...), as for
        :func:`sk_multitask.load`.

    Returns
    -------
    MultiTaskImageEstimator
    """
    mlflow = _mlflow()
    local_path = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst_path)
    return load(_safe_file(local_path), **settings)


def _load_pyfunc(data_path, model_config=None):
    """MLflow's entry point for the ``python_function`` flavor: the safe file's pyfunc."""
    return MultiTaskPyfuncModel(load(data_path))


class MultiTaskPyfuncModel:
    """The ``python_function`` flavor of a logged estimator: what MLflow serves.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def get_raw_model(self):
        """The estimator."""
        return self.estimator

    def predict(self, model_input, params=None):
        """Predict the images of ``model_input``.

        Parameters
        ----------
        model_input : DataFrame
            The estimator's image column (paths) and/or :data:`BASE64_COLUMN` (base64
            image files), one image per row.
        params : dict, optional
            ``{"method": "predict"}`` (default) or ``{"method": "predict_proba"}``.

        Returns
        -------
        DataFrame
            ``predict``'s, or the class probabilities (``{task}_proba_{label}``).
        """
        method = (params or {}).get("method", "predict")
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        X = self._images(model_input)
        if method == "predict":
            return self.estimator.predict(X)
        return probability_table(self.estimator.predict_proba(X), X.index)

    def _images(self, model_input):
        """``model_input`` as the estimator's image column: a path, or a row's decoded
        image bytes (the estimator reads encoded bytes as it reads files)."""
        column = self.estimator.image_col
        if column not in model_input and BASE64_COLUMN not in model_input:
            raise ValueError(
                f"the input has neither the image column {column!r} (paths) nor "
                f"{BASE64_COLUMN!r} (base64-encoded images); its columns are "
                f"{list(model_input.columns)[:10]}"
            )
        paths = model_input.get(column, pd.Series(None, index=model_input.index, dtype=object))
        paths = paths.astype(object)
        encoded = model_input.get(BASE64_COLUMN, pd.Series(dtype=object))
        for position, text in enumerate(encoded):
            if not isinstance(text, str):
                continue  # this row's image is its path
            try:
                data = base64.b64decode(text, validate=True)
            except binascii.Error as exc:
                raise ValueError(
                    f"row {position} of {BASE64_COLUMN!r} is not base64-encoded: {exc}"
                ) from exc
            paths.iloc[position] = data
        return pd.DataFrame({column: paths}, index=model_input.index)

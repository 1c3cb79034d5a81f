"""An MLflow flavor: a fitted estimator logged as its safe file, served without pickle.

:func:`log_model` (and :func:`save_model`) write an MLflow model that holds the safe file
(``data/model.skmt``, :mod:`sk_multitask.persistence._safe_file`), the signature, an input example
and two flavors: ``sk_multitask`` (:func:`load_model` gives the estimator back) and
``python_function``, whose loader is this module. Nothing in the model is a pickle:
loading it imports this module and reads the safe file, which runs no code. The folder
is written beside its place and renamed into it when complete
(:func:`sk_multitask.inputs._files.atomic_folder`): a failed save leaves nothing in the
way of the next.

The pyfunc model (``mlflow.pyfunc.load_model(uri)``, ``mlflow models serve``) reads only
what it is given: the column :data:`BASE64_COLUMN` of base64-encoded image files, so
that a client sends the images themselves. A path or URL in the estimator's image column
is read only under the folders and URL prefixes the model was saved with
(``allowed_image_folders=``, ``allowed_image_urls=``, recorded in the MLmodel file's
``python_function`` config); none by default. Any other is refused with one message,
whatever the path (an existing file, a missing one, a folder), without reading it. A row
may have both columns: its encoded image is used. It returns what ``est.predict`` does;
with ``params={"method": "predict_proba"}``, the class probabilities, one column
``{task}_proba_{label}`` per task and label
(:func:`sk_multitask.targets._outputs.probability_table`). A request the model refuses,
or whose images do not decode, is answered by MLflow's scoring server with HTTP 400 and
one JSON line, ``{"error_code": "INVALID_PARAMETER_VALUE", "message": ...}``, without a
traceback (see docs/deployment.md, "Serving safely").

Needs the ``mlflow`` extra (``pip install "sk-multitask[mlflow]"``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import importlib.metadata
import io
import logging
import os
import re
import sys
import tempfile
import urllib.parse
import warnings

import numpy as np
import pandas as pd

from sk_multitask import __version__
from sk_multitask.estimator import load
from sk_multitask.inputs._files import atomic_folder
from sk_multitask.inputs._storage import is_url, join_url
from sk_multitask.inputs._tabular import fitted_table_encoder
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
#: The keywords of :func:`save_model` saying which paths and URLs a request may name,
#: recorded in the ``python_function`` flavor's config.
_SERVING_OPTIONS = ("allowed_image_folders", "allowed_image_urls")
#: ``protocol://host/`` (or a chain, ``simplecache::s3://bucket/``) at the start of a URL.
_URL_ROOT = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://[^/?#\s]+/")
#: Where a served model's unexpected failures are logged (with their traceback), on the
#: server: the client gets one line.
_logger = logging.getLogger(__name__)
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
    example = {BASE64_COLUMN: [base64.b64encode(buffer.getvalue()).decode("ascii")]}
    # Table columns (tabular_cols) missing: the encoder imputes them.
    numeric, columns = _table_columns(estimator)
    example.update({c: [np.nan if c in numeric else None] for c in columns})
    return pd.DataFrame(example)


def _table_columns(estimator):
    """The numeric table columns (as a set) and all the table columns of ``estimator``'s
    ``tabular_cols`` (none for a model of images only)."""
    encoder = fitted_table_encoder(estimator)
    if encoder is None:
        return set(), []
    numeric = set(getattr(encoder, "numeric", {}).get("columns", []))
    return numeric, list(encoder.columns)


def _signature(estimator, example):
    """Inputs: the image column and :data:`BASE64_COLUMN`, each optional (strings), and
    the table columns (``tabular_cols``: numbers or strings);
    outputs: as ``predict`` gives them for ``example``; the ``method`` parameter."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    outputs = MultiTaskPyfuncModel(estimator).predict(example)
    inferred = infer_signature(example, outputs, params={"method": "predict"})
    numeric, columns = _table_columns(estimator)
    inputs = Schema(
        [
            ColSpec("string", estimator.image_col, required=False),
            ColSpec("string", BASE64_COLUMN, required=False),
            *(ColSpec("double" if c in numeric else "string", c, required=False)
              for c in columns),
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
    estimator,
    path,
    mlflow_model=None,
    signature=None,
    input_example=None,
    *,
    allowed_image_folders=None,
    allowed_image_urls=None,
    **kwargs,
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
    allowed_image_folders : list of str, optional
        Absolute folders under which the served model reads the image files a request
        names in the image column (symbolic links resolved: a link out of them is
        outside). Default: none; the served model reads only the images a request
        holds (:data:`BASE64_COLUMN`).
    allowed_image_urls : list of str, optional
        URL prefixes, each ``protocol://host/`` and a folder
        (``https://bucket.example/images/``), under which the served model reads the
        URLs a request names (read with the machine's credentials: no
        ``storage_options`` is saved). Default: none.
    **kwargs
        Passed to :func:`mlflow.pyfunc.save_model` (``pip_requirements``,
        ``extra_pip_requirements``, ``metadata``, ``model_config``...).

    Raises
    ------
    FileExistsError
        If ``path`` exists and is not an empty folder, before anything is written.
    """
    mlflow = _mlflow()
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    serving = _serving_options(allowed_image_folders, allowed_image_urls)
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
    config = kwargs.get("model_config") or {}
    if not isinstance(config, dict):
        raise TypeError(f"model_config must be a dict; got {type(config).__name__}")
    kwargs["model_config"] = {**config, **serving}
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
        ``allowed_image_folders``, ``allowed_image_urls``, ``pip_requirements``...) and
        :meth:`mlflow.models.Model.log`'s (``registered_model_name``, ``params``,
        ``tags``...). ``params`` (``est.get_params()``, say) are logged with their
        credentials redacted
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
    """MLflow's entry point for the ``python_function`` flavor: the safe file's pyfunc,
    reading what its config allows."""
    config = model_config or {}
    allowed = {name: config[name] for name in _SERVING_OPTIONS if name in config}
    return MultiTaskPyfuncModel(load(data_path), **allowed)


def _serving_options(allowed_image_folders, allowed_image_urls):
    """The paths and URLs a served model may read, checked: ``{option: list}``."""
    folders = _strings(allowed_image_folders, "allowed_image_folders")
    for folder in folders:
        if not os.path.isabs(folder):
            raise ValueError(
                f"allowed_image_folders: {folder!r} is not an absolute path (a relative one "
                "would depend on the server's working folder)"
            )
    urls = _strings(allowed_image_urls, "allowed_image_urls")
    for url in urls:
        if not _URL_ROOT.match(url) or "?" in url or "#" in url:
            raise ValueError(
                f"allowed_image_urls: {url!r} is not a URL prefix protocol://host/[folder/] "
                "(without a query)"
            )
    return {
        "allowed_image_folders": [os.path.normpath(folder) for folder in folders],
        # A prefix is a folder: "https://host/images" does not allow "https://host/images2".
        "allowed_image_urls": [url if url.endswith("/") else url + "/" for url in urls],
    }


def _strings(values, name):
    if values is None:
        return []
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(value, (str, os.PathLike)) for value in values
    ):
        raise TypeError(f"{name} must be a list of strings; got {values!r}")
    return [os.fspath(value) for value in values]


@functools.cache
def _request_error():
    """The class of the errors a served model answers a request with (HTTP 400 for a bad
    request), made when MLflow is first needed.

    MLflow's scoring server answers an ``MlflowException`` raised by ``predict`` with its
    message in one JSON line and no traceback (any other exception: a generic message
    and the traceback), after prefixing the message with the whole request; this class
    keeps its own message, so that the answer does not repeat the request and is one and
    the same for every path refused. A ``ValueError`` too, for the pyfunc called in
    Python.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class RequestError(MlflowException, ValueError):
        def __init__(self, message, error_code=INVALID_PARAMETER_VALUE):
            self._message = message
            super().__init__(message, error_code=error_code)

        @property
        def message(self):
            return self._message

        @message.setter
        def message(self, value):
            """Kept as made: the scoring server's prefix repeats the request."""

    RequestError.__module__ = __name__
    RequestError.__qualname__ = "RequestError"
    return RequestError


def _refused(message):
    return _request_error()(message)


def _one_line(exc):
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(exc).__name__


class MultiTaskPyfuncModel:
    """The ``python_function`` flavor of a logged estimator: what MLflow serves.

    Parameters
    ----------
    estimator : fitted MultiTaskImageEstimator
    allowed_image_folders : list of str, optional
        The folders under which a request may name image files (see
        :func:`save_model`); default: none.
    allowed_image_urls : list of str, optional
        The URL prefixes under which a request may name images; default: none.
    """

    def __init__(self, estimator, allowed_image_folders=None, allowed_image_urls=None):
        self.estimator = estimator
        options = _serving_options(allowed_image_folders, allowed_image_urls)
        # Links resolved now, on the machine that serves: a path is compared resolved.
        self.allowed_image_folders = [
            os.path.realpath(folder) for folder in options["allowed_image_folders"]
        ]
        self.allowed_image_urls = options["allowed_image_urls"]

    def get_raw_model(self):
        """The estimator."""
        return self.estimator

    def predict(self, model_input, params=None):
        """Predict the images of ``model_input``.

        Parameters
        ----------
        model_input : DataFrame
            :data:`BASE64_COLUMN` (base64 image files) and/or the estimator's image
            column (paths or URLs, read only where the model allows), one image per row.
        params : dict, optional
            ``{"method": "predict"}`` (default) or ``{"method": "predict_proba"}``.

        Returns
        -------
        DataFrame
            ``predict``'s, or the class probabilities (``{task}_proba_{label}``).

        Raises
        ------
        mlflow.exceptions.MlflowException
            A ``ValueError`` too, with a one-line message (INVALID_PARAMETER_VALUE): a
            bad request, a path or URL the model may not read, an image that does not
            decode. Any other failure: INTERNAL_ERROR, its traceback logged.
        """
        method = (params or {}).get("method", "predict")
        if method not in METHODS:
            raise _refused(f"method must be one of {list(METHODS)}, got {method!r}")
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        X = self._images(model_input)
        try:
            if method == "predict":
                return self.estimator.predict(X)
            return probability_table(self.estimator.predict_proba(X), X.index)
        except (ValueError, TypeError, OSError) as exc:  # an image that does not decode...
            raise _refused(_one_line(exc)) from exc
        except Exception as exc:
            _logger.exception("sk-multitask: the model failed on a request")
            from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

            raise _request_error()(
                f"the model failed on this request ({type(exc).__name__}): the server's "
                "log has the details",
                error_code=INTERNAL_ERROR,
            ) from exc

    def _images(self, model_input):
        """``model_input`` as the estimator's image column: a row's decoded image bytes
        (the estimator reads encoded bytes as it reads files), or its path or URL
        resolved, where the model may read it."""
        column = self.estimator.image_col
        if column not in model_input and BASE64_COLUMN not in model_input:
            raise _refused(
                f"the input has neither {BASE64_COLUMN!r} (base64-encoded images) nor the "
                f"image column {column!r}; its columns are {list(model_input.columns)[:10]}"
            )
        missing = pd.Series(None, index=model_input.index, dtype=object)
        named = model_input.get(column, missing)
        encoded = model_input.get(BASE64_COLUMN, missing)
        images = [
            self._image(position, text, name)
            for position, (text, name) in enumerate(zip(encoded, named, strict=True))
        ]
        X = pd.DataFrame({column: pd.Series(images, model_input.index, dtype=object)})
        _, table = _table_columns(self.estimator)
        for name in table:  # a column missing is named by the estimator's check
            if name in model_input:
                X[name] = model_input[name]
        return X

    def _image(self, position, text, name):
        """Row ``position``'s image: the bytes of ``text`` (base64), else what ``name``
        names, resolved, if the model may read it."""
        if isinstance(text, str):
            try:
                return base64.b64decode(text, validate=True)
            except binascii.Error as exc:
                raise _refused(
                    f"row {position} of {BASE64_COLUMN!r} is not base64-encoded: {exc}"
                ) from exc
        if not _missing(text):
            raise _refused(f"row {position} of {BASE64_COLUMN!r} is not base64 text")
        if _missing(name):
            raise _refused(f"row {position} has no image: send it in {BASE64_COLUMN!r}")
        if not (self.allowed_image_folders or self.allowed_image_urls):
            raise _refused(
                f"row {position}: this model reads only the images a request holds, in "
                f"{BASE64_COLUMN!r}; it reads no path or URL (save it with "
                "allowed_image_folders= or allowed_image_urls= to allow some)"
            )
        source = self._allowed(name)
        if source is None:  # one message, whether or not the path exists
            raise _refused(
                f"row {position}: the model may not read that path or URL; send the image "
                f"in {BASE64_COLUMN!r}, or name one under the folders or URL prefixes the "
                "model was saved with"
            )
        return source

    def _allowed(self, name):
        """The path or URL ``name`` resolved (against the estimator's ``image_root``), if
        it lies under an allowed folder or URL prefix; else None. Reads no file."""
        if not isinstance(name, str) or not name.strip():
            return None
        root = self.estimator.image_root
        root = "" if root is None else os.fspath(root)
        if is_url(root) or is_url(name):
            url = join_url(root, name)
            return url if any(_under_url(url, p) for p in self.allowed_image_urls) else None
        try:
            path = os.path.realpath(os.path.join(root, name))
        except (ValueError, OSError):  # a NUL byte, a loop of links
            return None
        return path if any(_under_folder(path, f) for f in self.allowed_image_folders) else None


def _missing(value):
    return pd.api.types.is_scalar(value) and pd.isna(value)


def _under_folder(path, folder):
    return os.path.commonpath([path, folder]) == folder


def _under_url(url, prefix):
    """Whether ``url`` lies under the URL prefix ``prefix`` (which ends with ``/``): no
    ``..`` in the rest, percent-encoded or not, climbs out of it."""
    if not url.startswith(prefix):
        return False
    rest = urllib.parse.unquote(url[len(prefix) :]).split("?")[0].split("#")[0]
    return ".." not in re.split(r"[/\\]", rest)

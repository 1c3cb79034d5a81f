"""Pickles of the estimator: lean, versioned, rebuilt as a safe file is loaded.

A fitted estimator pickles its parameters and its plain fitted attributes, the bytes of
its safe file (:func:`sk_multitask.persistence._safe_file.model_bytes`: the model document and the
weights, the one description of a fitted model) and, with ``warm_start=True``, the
optimizer's state, which a later ``fit`` continues from. The skorch net itself (its
callbacks, its optimizer) is not pickled: unpickling rebuilds it with
:func:`restore_fitted`, the function that gives a loaded safe file its net, on the CUDA
device its ``device`` parameter names when there is one, else on the CPU. An unfitted
estimator pickles its parameters alone. Beside the parameters, the state holds only
bytes and plain Python values, so that ``skops.io`` persists it too, trusting no type
but the estimator's class. A pickle never holds secrets: the parameters of
:data:`~sk_multitask.training._parameters.SECRET_PARAMS` (``storage_options``) are pickled as None.

Each pickle records the versions of the packages that wrote it
(:func:`sk_multitask.persistence._document.package_versions`); loading it under another sk-multitask
version warns with :class:`~sk_multitask.exceptions.InconsistentVersionWarning`.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from .. import __version__
from ..inputs._tabular import TableEncoder
from ..network._backbones import has_pretrained_weights
from ..predicting._calibration import read_calibration
from ..predicting._thresholds import read_thresholds
from ..targets._outputs import decoders
from ..training._build import rebuild_saved_net
from ..training._config import TrainingConfig, resolve_device
from ..training._parameters import NETWORK_PARAMS, RUNTIME_PARAMS, SECRET_PARAMS
from ._document import package_versions
from ._safe_file import model_bytes, read_model
from ._versions import InconsistentVersionWarning

#: The key of the pickled state that holds the versions record.
VERSIONS_KEY = "_sk_multitask_versions"
#: The key of the pickled state that holds the safe file's bytes (fitted estimators).
MODEL_KEY = "_sk_multitask_model"
#: The key of the pickled state that holds the optimizer's state (``warm_start=True``).
OPTIMIZER_KEY = "_sk_multitask_optimizer"
#: The fitted attributes the safe file's bytes carry: never pickled themselves.
SAVED_ATTRIBUTES = (
    "net_", "history_", "tasks_", "image_size_", "data_sizes_", "skipped_images_", "best_epoch_",
    "calibration_", "decision_thresholds_", "network_params_",
)  # fmt: skip
# ``table_encoder_`` too when it is the default preprocessing (data in the document); a
# transformer of the user's (code) is pickled as it is.
#: The key pickles of sk-multitask 0.1.0 recorded the package version under.
_OLD_VERSION_KEY = "_sk_multitask_version"


def restore_fitted(estimator, saved):
    """Give ``estimator`` (its parameters set) the fitted state of a read safe file.

    The net is rebuilt from the estimator's parameters
    (:func:`~sk_multitask.training._build.rebuild_saved_net`) on the ``device`` parameter's
    device, or on the CPU where it names CUDA and there is none, and the saved weights
    and history are loaded into it. :meth:`MultiTaskImageEstimator.load` and unpickling
    both use it.

    Parameters
    ----------
    estimator : MultiTaskImageEstimator
    saved : SavedModel
        As :func:`sk_multitask.persistence._safe_file.read_model` returns it.

    Returns
    -------
    estimator
        With ``net_``, ``tasks_``, ``history_``, the fitted attributes the model
        document gives, and ``network_params_``: the parameters that built the network
        are the estimator's, since a model with any of them changed after ``fit`` is
        never written (:func:`~sk_multitask.persistence._document.model_document`).
    """
    cuda = torch.cuda.is_available() or not estimator.device.startswith("cuda")
    device = resolve_device(estimator.device) if cuda else "cpu"  # a GPU model loads on a CPU
    config = TrainingConfig.from_estimator(estimator)
    encoder = _table_encoder(estimator, saved)
    estimator.net_ = saved.restore(rebuild_saved_net(config, saved, device, encoder))
    estimator.table_encoder_ = encoder
    estimator.tasks_, estimator.history_ = saved.tasks, estimator.net_.history
    for name, value in saved.model.fitted_attributes().items():
        setattr(estimator, name, value)
    estimator.calibration_ = read_calibration(saved.model.calibration, decoders(estimator.tasks_))
    estimator.decision_thresholds_ = read_thresholds(
        saved.model.decision_thresholds, estimator.tasks_
    )
    estimator.network_params_ = {name: getattr(estimator, name) for name in NETWORK_PARAMS}
    return estimator


def _table_encoder(estimator, saved):
    """The encoding of a saved model's table columns: the document's default
    preprocessing, or the user's transformer a pickle holds (None: images only)."""
    tabular = saved.model.tabular
    if tabular is None:
        return None
    if tabular["encoder"] is not None:
        return saved.model.table_encoder()
    encoder = getattr(estimator, "table_encoder_", None)
    if encoder is None or encoder.n_features != tabular["n_encoded"]:
        raise ValueError(
            f"{saved.path!r}: the model's table columns are encoded by a tabular_transformer "
            "of the user's, which only a pickle of the model holds"
        )
    return encoder


def load_fitted(cls, path, backbone, settings):
    """An estimator of class ``cls`` fitted as the safe file at ``path`` says, with the
    run-time parameters ``settings`` (never the file's): ``MultiTaskImageEstimator.load``.

    Raises
    ------
    TypeError
        A setting that is not a run-time parameter.
    ValueError
        The file's document holds a parameter ``cls`` does not have.
    """
    unknown = sorted(settings.keys() - set(RUNTIME_PARAMS))
    if unknown:
        raise TypeError(
            f"load() got unexpected keyword arguments {unknown}; it takes backbone "
            f"and the run-time parameters {list(RUNTIME_PARAMS)}"
        )
    saved = read_model(path, backbone)
    unknown = sorted(map(str, saved.params.keys() - set(cls._get_param_names())))
    if unknown:
        raise ValueError(f"{saved.path!r}: the model document has unknown parameters {unknown[:5]}")
    est = restore_fitted(cls(**saved.params, **settings), saved)
    est.pretrained_ = has_pretrained_weights(est.backbone, est.weights)
    return est


def _optimizer_bytes(net):
    buffer = io.BytesIO()
    torch.save(net.optimizer_.state_dict(), buffer)
    return buffer.getvalue()


def _load_optimizer(net, data):
    # weights_only: tensors and plain containers, nothing that runs code.
    state = torch.load(io.BytesIO(data), map_location=net.device, weights_only=True)
    net.optimizer_.load_state_dict(state)


class VersionedPickleMixin:
    """Lean pickles (see the module's description) that record the package versions, and
    warn on load when sk-multitask's differs.

    The secret parameters are pickled as None (set them again after loading).
    """

    def __getstate__(self):
        secrets = {name: None for name in SECRET_PARAMS if name in self.__dict__}
        state = {**super().__getstate__(), **secrets}
        if "net_" in state:
            state = {k: v for k, v in state.items() if k not in SAVED_ATTRIBUTES}
            if isinstance(state.get("table_encoder_"), TableEncoder):  # in the document
                del state["table_encoder_"]
            state[MODEL_KEY] = model_bytes(self, with_params=False)
            if self.warm_start:
                state[OPTIMIZER_KEY] = _optimizer_bytes(self.net_)
        return {**state, VERSIONS_KEY: package_versions()}

    def __setstate__(self, state):
        state = dict(state)
        versions = state.pop(VERSIONS_KEY, None) or {}
        original = versions.get("sk_multitask") or state.pop(
            _OLD_VERSION_KEY, "unknown (before 0.1.0)"
        )
        state.pop(_OLD_VERSION_KEY, None)
        if original != __version__:
            warnings.warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    current_version=__version__,
                    original_version=original,
                ),
                stacklevel=2,
            )
        model, optimizer = state.pop(MODEL_KEY, None), state.pop(OPTIMIZER_KEY, None)
        super().__setstate__(state)
        if model is None:  # unfitted, or an older pickle that holds the net itself
            return
        own = self.backbone if isinstance(self.backbone, nn.Module) else None
        restore_fitted(self, read_model(model, backbone=own))
        if optimizer is not None:
            _load_optimizer(self.net_, optimizer)

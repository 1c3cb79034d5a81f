"""The estimator's parameters, each declared once: :data:`PARAMETERS`.

One row per parameter of :class:`~sk_multitask.MultiTaskImageEstimator`, in the order
of its signature: the default, the values it may take (scikit-learn's
``_parameter_constraints``), whether it is a run-time setting, whether a checkpoint's
fingerprint counts it, whether it builds the network, the command-line option that
sets it, and a one-line description (the command line's help). From the table come the
estimator's ``_parameter_constraints`` (:func:`parameter_constraints`), the fields and
defaults of :class:`~sk_multitask.training._config.TrainingConfig`, the command line's
options (:mod:`sk_multitask.cli._options`: flag, default, choices, help), the
parameters never saved (:data:`RUNTIME_PARAMS`, :data:`SECRET_PARAMS`), those a
checkpoint's fingerprint counts (:data:`FINGERPRINT_PARAMS`) and those ``fit`` fixes
(:data:`NETWORK_PARAMS`). The estimator's ``__init__`` spells its keyword arguments
out (scikit-learn's ``get_params`` reads the signature), and so does its docstring:
tests/test_parameters.py checks both, names and defaults, against the table.

**Run-time settings** say how this machine runs a model, not what the model is or
predicts: the model document never records them, and a file that holds them has them
ignored (a loaded model takes its loader's, :meth:`MultiTaskImageEstimator.load`), so
that a file cannot choose where predictions write (``cache_dir``,
``checkpoint_dir``), how many processes they fork (``num_workers``), which device
they take (``device``), what they print (``verbose``) or what code runs
(``callbacks``), and credentials (``storage_options``, also secret: None in a pickle)
never leave the machine in a model file. ``tta`` changes predictions, so it is saved
with the model, though it changes nothing a fit learns (the fingerprint leaves it
out); ``callbacks`` may change what a fit learns, so the fingerprint counts them.

**Network parameters** decide the network and the loss a fit builds (the backbone,
its starting weights, the input size, the tasks' kinds, the loss's weights and
forms): once fitted, the network is theirs. Setting one of them after ``fit`` changes
nothing fitted, as in scikit-learn (``predict`` and the other methods use the fitted
network), but whatever would build on the fitted network with the new value, or
describe it by that value, refuses in one line naming the parameter, both values and
that a new ``fit`` is needed (:func:`check_network_unchanged`): ``partial_fit``, a
``warm_start`` fit, ``save``, the pickle and ``export_onnx``. A full ``fit`` builds
anew.

This module imports neither torch nor scikit-learn: the model document (which the
torch-free ONNX predictor reads) and the command line import it. Its constraints are
written with stand-ins of scikit-learn's (:class:`Interval`, :class:`StrOptions`,
:class:`InstanceOf`), which :func:`parameter_constraints` makes into scikit-learn's.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from collections.abc import Hashable
from numbers import Integral, Real
from typing import Any

import numpy as np

from ..inputs._decoding import MAX_TTA, as_size
from ..targets._cell_loss import REGRESSION_LOSS_NAMES


@dataclasses.dataclass(frozen=True)
class Interval:
    """scikit-learn's ``Interval`` constraint (the same arguments), made by
    :func:`parameter_constraints`."""

    type: type
    left: Real | None
    right: Real | None
    closed: str = dataclasses.field(kw_only=True)


@dataclasses.dataclass(frozen=True)
class StrOptions:
    """scikit-learn's ``StrOptions`` constraint: one of the strings ``options``."""

    options: frozenset

    def __post_init__(self):
        object.__setattr__(self, "options", frozenset(self.options))


@dataclasses.dataclass(frozen=True)
class InstanceOf:
    """An instance of the class that ``path`` names (``"torch.nn.Module"``), imported
    only when the constraints are made."""

    path: str


@dataclasses.dataclass(frozen=True)
class HasMethods:
    """scikit-learn's ``HasMethods`` constraint: an object with the ``methods``."""

    methods: tuple


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One parameter of the estimator.

    Parameters
    ----------
    name : str
    default : object
    constraints : tuple
        scikit-learn's constraints, with :class:`Interval`, :class:`StrOptions` and
        :class:`InstanceOf` for its classes.
    doc : str
        One line: the command line's help of its option.
    option : str or None
        The command line's option that sets it (``--epochs``); None: set from Python only.
    runtime : bool
        A run-time setting: never saved in a model file nor read from one (see the
        module's description).
    secret : bool
        A run-time setting that may hold credentials: None in a pickle too.
    fingerprint : bool or None
        Whether a checkpoint's fingerprint counts it, so that a fit with another value
        starts anew rather than resuming; None: unless it is a run-time setting.
    network : bool
        Whether it decides the network (or the loss) a fit builds: fixed by ``fit``
        (see the module's description).
    """

    name: str
    default: Any
    constraints: tuple
    doc: str
    option: str | None = None
    runtime: bool = False
    secret: bool = False
    fingerprint: bool | None = None
    network: bool = False

    def __post_init__(self):
        object.__setattr__(self, "constraints", tuple(self.constraints))
        if self.fingerprint is None:
            object.__setattr__(self, "fingerprint", not self.runtime)

    @property
    def choices(self):
        """The strings it accepts (its :class:`StrOptions`), sorted."""
        return sorted(
            option
            for constraint in self.constraints
            if isinstance(constraint, StrOptions)
            for option in constraint.options
        )


_FOLDER = (str, os.PathLike, None)
_AUTO = StrOptions({"auto"})

_TABLE = (
    Parameter(
        "image_col", "filename", [Hashable],
        "column with the images (or their paths)", "--image-col",
    ),
    Parameter(
        "image_root", None, _FOLDER, "folder the image paths are relative to", "--images"
    ),
    Parameter(
        "tabular_cols", None, [list, None],
        "table columns of X read beside the images (comma-separated)", "--tabular",
        network=True,
    ),
    Parameter(
        "tabular_transformer", None, [HasMethods(("fit", "transform")), None],
        "scikit-learn transformer of the table columns (None: impute, scale, one-hot)",
        network=True,
    ),
    Parameter(
        "fusion_width", 256, [Interval(Integral, 1, None, closed="left")],
        "width of the MLP fusing image features and table columns", "--fusion-width",
        network=True,
    ),
    Parameter(
        "fusion_depth", 1, [Interval(Integral, 1, None, closed="left")],
        "hidden layers of the MLP fusing image features and table columns", "--fusion-depth",
        network=True,
    ),
    Parameter(
        "backbone", "resnet18", [str, InstanceOf("torch.nn.Module")],
        "torchvision model name, timm/<name>, simple_cnn, or a torch module", "--backbone",
        network=True,
    ),
    Parameter(
        "weights", "DEFAULT", _FOLDER,
        "pretrained weights: DEFAULT, a weights name or file, or None", "--weights",
        network=True,
    ),
    Parameter(
        "image_size", 224,
        [Interval(Integral, 1, None, closed="left"), tuple, list, np.ndarray, _AUTO],
        "side (or height, width) images are resized to (auto: the backbone's input size)",
        "--image-size", network=True,
    ),
    Parameter(
        "on_bad_image", "raise", [StrOptions({"raise", "skip"})],
        "what an unreadable image does: raise, or skip its row",
    ),
    Parameter(
        "check_images", False, ["boolean"], "open every image file's header before training"
    ),
    Parameter(
        "tasks", None, [dict, None], "task kinds overriding inference", "--tasks", network=True
    ),
    Parameter(
        "loss_weights", None, [dict, StrOptions({"uncertainty", "dwa"}), None],
        "weights of the task losses: a dict, or learned (uncertainty, dwa)", network=True,
    ),
    Parameter(
        "class_weight", None, [dict, StrOptions({"balanced"}), None],
        "class weights of the classification and ordinal losses: balanced, or a dict per task",
        network=True,
    ),
    Parameter(
        "regression_loss", "mse", [dict, StrOptions(REGRESSION_LOSS_NAMES)],
        "loss of the regression tasks, or a dict per task", network=True,
    ),
    Parameter(
        "max_epochs", 10, [Interval(Integral, 1, None, closed="left")],
        "training epochs, frozen ones included", "--epochs",
    ),
    Parameter(
        "lr", 1e-3, [Interval(Real, 0, None, closed="neither")],
        "(peak) learning rate of the heads", "--lr",
    ),
    Parameter(
        "lr_schedule", "onecycle", [StrOptions({"onecycle", "cosine", "constant"})],
        "learning rate over the fit, stepped per batch", "--lr-schedule",
    ),
    Parameter(
        "freeze_epochs", "auto", [Interval(Integral, 0, None, closed="left"), _AUTO],
        "first epochs training the heads only (auto: 1 with pretrained weights)",
        "--freeze-epochs",
    ),
    Parameter(
        "backbone_lr_scale", "auto", [Interval(Real, 0, None, closed="left"), _AUTO],
        "backbone rate / heads' rate (auto: 0.1 with pretrained weights)",
        "--backbone-lr-scale",
    ),
    Parameter(
        "early_stopping", False, ["boolean"],
        "stop when the monitored key stalls for patience epochs", "--early-stopping",
    ),
    Parameter(
        "patience", 5, [Interval(Integral, 1, None, closed="left")],
        "epochs without improvement", "--patience",
    ),
    Parameter("monitor", "valid_loss", [str], "history key early stopping watches", "--monitor"),
    Parameter(
        "warm_start", False, ["boolean"], "a new fit continues the fitted network"
    ),
    Parameter(
        "checkpoint_dir", None, _FOLDER, "checkpoint every epoch there; resume from it",
        "--checkpoint-dir", runtime=True,
    ),
    Parameter(
        "batch_size", 64, [Interval(Integral, 1, None, closed="left")],
        "images per batch", "--batch-size",
    ),
    Parameter(
        "optimizer", "adamw", [StrOptions({"adam", "adamw", "sgd"}), callable],
        "optimizer name, or a callable returning a torch optimizer",
    ),
    Parameter(
        "valid_split", 0.2, [Interval(Real, 0, 1, closed="neither"), str, None],
        "validation fraction, boolean column marking validation rows, or None",
        "--valid-split",
    ),
    Parameter("augment", False, ["boolean"], "augment training images", "--augment"),
    Parameter(
        "num_workers", "auto", [Interval(Integral, 0, None, closed="left"), _AUTO],
        "image decoding processes, or auto", "--num-workers", runtime=True,
    ),
    Parameter(
        "cache", "auto", ["boolean", _AUTO],
        "keep decoded images in memory (auto: when they fit cache_max_bytes)",
    ),
    Parameter(
        "cache_max_bytes", None, [Interval(Integral, 0, None, closed="left"), None],
        "memory budget of the automatic cache (None: a quarter of the free memory)",
    ),
    Parameter(
        "cache_dir", None, _FOLDER, "folder of a disk cache of decoded images (reused)",
        "--cache-dir", runtime=True,
    ),
    Parameter(
        "precision", "fp32", [StrOptions({"fp32", "bf16", "fp16"})],
        "precision of the forward pass (bf16, fp16: mixed)",
    ),
    Parameter(
        "device", "auto", [str], "auto, cpu, cuda or a torch device", "--device", runtime=True
    ),
    Parameter(
        "accelerator", "auto", [_AUTO, None],
        "auto: data-parallel when launched on several processes",
    ),
    # Code of the user's (never from a file), which may change what a fit learns.
    Parameter(
        "callbacks", None, [list, None], "extra skorch callbacks", runtime=True,
        fingerprint=True,
    ),
    Parameter("random_state", None, ["random_state"], "random seed", "--seed"),
    Parameter(
        "verbose", 0, ["verbose"], "0: silent; 1: progress bars and epoch table",
        runtime=True,
    ),
    Parameter(
        "storage_options", None, [dict, None], "fsspec options of URL image paths",
        "--storage-options", runtime=True, secret=True,
    ),
    # What a model predicts (saved), not what a fit learns (no fingerprint).
    Parameter(
        "tta", 0, [Interval(Integral, 0, MAX_TTA, closed="both")],
        f"augmented views averaged when predicting (0 to {MAX_TTA})", "--tta",
        fingerprint=False,
    ),
    Parameter(
        "decision_thresholds", None, [None, StrOptions({"tuned"}), dict],
        "thresholds of binary tasks and labels: none (0.5), tuned, or a JSON object",
        "--decision-thresholds", fingerprint=False,
    ),
    Parameter(
        "threshold_metric", "f1",
        [StrOptions({"f1", "balanced_accuracy", "accuracy", "jaccard", "matthews_corrcoef"})],
        "the metric decision_thresholds='tuned' maximises", "--threshold-metric",
        fingerprint=False,
    ),
)

#: Each parameter's row, by name, in the order of the estimator's signature.
PARAMETERS = {parameter.name: parameter for parameter in _TABLE}
#: Each parameter's default.
DEFAULTS = {name: parameter.default for name, parameter in PARAMETERS.items()}
#: The run-time settings: never written to a model file nor read from one; ``load``
#: takes them.
RUNTIME_PARAMS = tuple(name for name, p in PARAMETERS.items() if p.runtime)
#: The run-time settings that may hold secrets: a pickle of the estimator has them None.
SECRET_PARAMS = tuple(name for name, p in PARAMETERS.items() if p.secret)
#: The parameters a checkpoint's fingerprint counts: what a fit learns depends on them.
FINGERPRINT_PARAMS = tuple(name for name, p in PARAMETERS.items() if p.fingerprint)
#: The parameters that decide the network a fit builds: fixed by ``fit`` (a fitted
#: estimator's ``network_params_``), checked by :func:`check_network_unchanged`.
NETWORK_PARAMS = tuple(name for name, p in PARAMETERS.items() if p.network)


def check_network_unchanged(fitted, params, image_size, action):
    """Refuse ``action`` on a fitted network when a parameter that built it has changed.

    Parameters
    ----------
    fitted : dict
        The values of :data:`NETWORK_PARAMS` the network was built with
        (``network_params_``).
    params : dict
        The estimator's parameters now (``get_params(deep=False)``).
    image_size : (int, int)
        The fitted size (``image_size_``): the ``image_size`` values compared are the
        sizes they stand for, ``"auto"`` the fitted one (as a continued fit reads it).
    action : str
        What would use the network with the new value (``"save"``, ``"partial_fit"``...).

    Raises
    ------
    ValueError
        One line naming ``action``, the parameter, its fitted and its new value.

    Examples
    --------
    >>> fitted = {name: DEFAULTS[name] for name in NETWORK_PARAMS}
    >>> params = {**fitted, "image_size": (224, 224), "lr": 0.1}
    >>> check_network_unchanged(fitted, params, (224, 224), "save")
    >>> check_network_unchanged(fitted, {**params, "backbone": "resnet34"}, (224, 224), "save")
    Traceback (most recent call last):
    ...
    ValueError: save: backbone was changed after fit from 'resnet18' to 'resnet34', ...
    """
    for name in NETWORK_PARAMS:
        old, new = fitted[name], params[name]
        if name == "image_size":
            same = _size(old, image_size) == _size(new, image_size)
        else:
            same = _equal(old, new)
        if not same:
            shown_old, shown_new = _shown(old), _shown(new)
            if shown_new == shown_old:  # two modules of one class
                shown_new = "another " + shown_new.removeprefix("a ")
            raise ValueError(
                f"{action}: {name} was changed after fit from {shown_old} to {shown_new}, "
                "but the fitted network was built with the former; fit again (a full fit, "
                f"not warm_start) to build one with the new value, or set {name} back"
            )


def _size(value, fitted):
    """The (height, width) an ``image_size`` value stands for once fitted."""
    if isinstance(value, str) and value == "auto":
        return tuple(fitted)
    try:
        return as_size(value)
    except ValueError:
        return value


def _equal(a, b):
    if a is b:
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # an array's ambiguous truth: not the same value
        return False


def _shown(value):
    """A short repr: a module or any long value by its type."""
    text = repr(value)
    return text if len(text) <= 60 and "\n" not in text else f"a {type(value).__name__}"

#: What a value that may be a credential reads as wherever the package writes it.
REDACTED = "<redacted>"
#: The words of a dict key (or a URL's query parameter) that name a credential, in any
#: parameter: ``aws_secret_access_key``, ``AccountKey``, ``sas_token``, ``X-Amz-Signature``.
_CREDENTIAL_WORDS = frozenset({
    "key", "apikey", "secret", "token", "password", "passwd", "pwd", "passphrase",
    "credential", "credentials", "sas", "sig", "signature", "auth", "authorization",
    "cookie", "connection",
})  # fmt: skip
#: A URL's ``user:password@``.
_URL_PASSWORD = re.compile(r"(?P<start>[A-Za-z][A-Za-z0-9+.\-]*://[^/@:\s]*:)[^/@\s]*@")
#: A query parameter of a URL: ``?name=value`` or ``&name=value``.
_QUERY_PARAMETER = re.compile(r"(?P<start>[?&](?P<name>[^=&#\s]+)=)[^&#\s]*")


def is_credential_name(name):
    """Whether the key ``name`` names a credential (one of its words does).

    Examples
    --------
    >>> [is_credential_name(k) for k in ("aws_secret_access_key", "AccountKey", "anon")]
    [True, True, False]
    """
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower()
    return not _CREDENTIAL_WORDS.isdisjoint(re.findall(r"[a-z0-9]+", words))


def redacted_params(params):
    """``params`` (name to value) as the package writes them anywhere: every value that
    may be a credential replaced by :data:`REDACTED`.

    The one redaction of the package: the report's parameter table, the MLflow params
    :func:`sk_multitask.mlflow.log_model` logs, and the errors that would show a value.
    Redacted: each value of a secret parameter (:data:`SECRET_PARAMS`: its keys are
    kept, so that one sees which options were set; a value that is not a dict, whole),
    and in every other value, whatever the nesting, the values of dict keys that name a
    credential (:func:`is_credential_name`) and the passwords and credential query
    parameters of URLs in strings.

    Examples
    --------
    >>> redacted_params({"storage_options": {"key": "AKIA...", "anon": False},
    ...                  "image_root": "https://user:pw@host/images?sig=abc&sv=1",
    ...                  "tasks": {"age": "regression"}})
    {'storage_options': {'key': '<redacted>', 'anon': '<redacted>'},
     'image_root': 'https://user:<redacted>@host/images?sig=<redacted>&sv=1',
     'tasks': {'age': 'regression'}}
    """
    return {
        name: _secret(value) if name in SECRET_PARAMS else _redacted(value)
        for name, value in params.items()
    }


def check_secret_params(params):
    """A TypeError for a secret parameter of ``params`` (name to value) that is not of
    its row's types, which says the type it got but not the value (a credential, maybe
    given as a string by mistake).

    scikit-learn's own check of a parameter shows its value, so it leaves the secret ones
    to this (:func:`parameter_constraints`); ``fit`` and the ONNX predictor call it.

    Examples
    --------
    >>> check_secret_params({"storage_options": "AKIA-0123"})
    Traceback (most recent call last):
    ...
    TypeError: storage_options must be a dict or None; got a str (not shown: it may hold ...)
    """
    for name in SECRET_PARAMS:
        if name not in params:
            continue
        types = PARAMETERS[name].constraints  # plain types and None: a secret's are
        value = params[name]
        if not any(value is None if t is None else isinstance(value, t) for t in types):
            wanted = " or ".join("None" if t is None else f"a {t.__name__}" for t in types)
            raise TypeError(
                f"{name} must be {wanted}; got a {type(value).__name__} "
                "(not shown: it may hold credentials)"
            )


def _secret(value):
    if value is None:
        return None
    if isinstance(value, dict):
        return dict.fromkeys(value, REDACTED)
    return REDACTED


def _redacted(value):
    if isinstance(value, dict):
        return {
            key: REDACTED if is_credential_name(key) else _redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_redacted(item) for item in value)
    if isinstance(value, str):
        value = _URL_PASSWORD.sub(rf"\g<start>{REDACTED}@", value)
        return _QUERY_PARAMETER.sub(_redacted_query, value)
    return value


def _redacted_query(match):
    if is_credential_name(match["name"]):
        return match["start"] + REDACTED
    return match[0]


def parameter_constraints():
    """The estimator's ``_parameter_constraints``: scikit-learn's, from the table.

    Imports scikit-learn (and torch, for the backbone's class). A number's interval
    refuses booleans, which scikit-learn's takes for the ints they are
    (``max_epochs=True`` is no number of epochs).

    Examples
    --------
    >>> for constraint in parameter_constraints()["freeze_epochs"]:
    ...     print(constraint)
    an int in the range [0, inf)
    a str among {'auto'}
    >>> [c.is_satisfied_by(True) for c in parameter_constraints()["max_epochs"]]
    [False]
    """
    from sklearn.utils import _param_validation as sklearn

    class NumberInterval(sklearn.Interval):
        def is_satisfied_by(self, val):
            return not isinstance(val, bool) and super().is_satisfied_by(val)

    def made(constraint):
        if isinstance(constraint, Interval):
            return NumberInterval(
                constraint.type, constraint.left, constraint.right, closed=constraint.closed
            )
        if isinstance(constraint, StrOptions):
            return sklearn.StrOptions(set(constraint.options))
        if isinstance(constraint, HasMethods):
            return sklearn.HasMethods(list(constraint.methods))
        if isinstance(constraint, InstanceOf):
            module, _, name = constraint.path.rpartition(".")
            return getattr(importlib.import_module(module), name)
        return constraint

    # A secret parameter is checked by check_secret_params: scikit-learn's message would
    # show its value.
    return {
        name: "no_validation" if p.secret else [made(c) for c in p.constraints]
        for name, p in PARAMETERS.items()
    }

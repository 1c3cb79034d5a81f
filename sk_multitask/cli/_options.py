"""The command line's options, each written once.

One table per command says, for every option, its flag, the estimator parameter it sets
(if any), how its text is parsed and its help. From it come the argparse options, the
estimator's keyword arguments and the rewriting of library messages into the command
line's words (``lr_schedule='x'`` → ``--lr-schedule x``). The options that set
estimator parameters are the rows of the parameter table
(:data:`sk_multitask.training._parameters.PARAMETERS`) that name one: each takes its
flag, default, choices (where the parameter has a fixed set of strings) and help (the
parameter's one-line doc) from there, so the command line cannot drift from the code;
here is only how its text is parsed (:data:`PARSING`). This module imports neither
torch nor scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..inputs._storage import is_url
from ..predicting._sets import SET_METHODS
from ..targets import TASK_KINDS
from ..training._parameters import PARAMETERS, StrOptions


class CommandError(Exception):
    """An error the command line reports in one line."""


@dataclass(frozen=True)
class Option:
    """One command-line option (or positional argument, for a flag without ``--``).

    Parameters
    ----------
    flag : str
        ``--lr-schedule``, or ``data`` for a positional argument.
    help : str
    parameter : str, optional
        The estimator parameter the option sets.
    type : callable, optional
        Parses the text (argparse's ``type``: a bad value exits with status 2).
    convert : callable, optional
        Turns the parsed value into the parameter's value; raises :class:`CommandError`.
    default : object
    alternative : bool
        Sets ``parameter`` only when given, over the option listed before it that sets
        the same parameter (``--valid-col`` over ``--valid-split``); no default.
    choices : tuple of str
        The values it takes, where they are a fixed set.
    flag_only : bool
        An on/off switch (``--augment``).
    required : bool
    """

    flag: str
    help: str
    parameter: str | None = None
    type: Callable[[str], Any] | None = None
    convert: Callable[[Any], Any] | None = None
    default: Any = None
    alternative: bool = False
    choices: tuple = ()
    flag_only: bool = False
    required: bool = False

    @property
    def dest(self):
        """The attribute of the parsed arguments that holds the option's value."""
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser):
        """Add the option to an argparse ``parser``."""
        kwargs = {"help": self.help}
        if self.flag_only:
            kwargs["action"] = "store_true"
        elif self.default is not None:
            kwargs["default"] = self.default
        if self.type is not None:
            kwargs["type"] = self.type
        if self.choices:
            kwargs["choices"] = self.choices
        if self.required:
            kwargs["required"] = True
        parser.add_argument(self.flag, **kwargs)


def auto_or(kind, what):
    """An argparse type: ``auto``, or a value of ``kind`` (``what`` names it in errors)."""

    def parse(value):
        if value == "auto":
            return value
        try:
            return kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or auto, got {value!r}") from None

    return parse


def none_or_str(value):
    """``none`` (any case) → None, else the text."""
    return None if value.lower() == "none" else value


def valid_split(value):
    """A validation fraction, ``none``, or the name of a column."""
    try:
        return float(value)
    except ValueError:
        return none_or_str(value)


def absolute(path):
    """An absolute path (a URL as given): the saved model finds its images from any
    working folder."""
    return path if path is None or is_url(path) else os.path.abspath(path)


def json_object(text):
    """A dict from JSON text (``--storage-options '{"anon": true}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):  # the text not shown: it may hold credentials
        raise argparse.ArgumentTypeError(
            f"expected a JSON object {{...}}, got a JSON {_JSON_KINDS[type(value)]}"
        )
    return value


#: What JSON calls the values :func:`json.loads` gives.
_JSON_KINDS = {
    list: "array", str: "string", int: "number", float: "number", bool: "boolean",
    type(None): "null",
}  # fmt: skip


def coverage(text):
    """A coverage strictly between 0 and 1 (``--interval 0.9``), checked as the command
    line is read: a bad one ends before any model or image is read."""
    from ..predicting._calibration import check_coverage

    try:
        return check_coverage(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a coverage strictly between 0 and 1 (e.g. 0.9), got {text!r}"
        ) from None


def decision_thresholds(text):
    """``none``, ``tuned``, or a JSON object of thresholds by task
    (``--decision-thresholds '{"smoker": 0.3}'``)."""
    if text in ("none", "tuned"):
        return None if text == "none" else text
    return json_object(text)


_STORAGE = "fsspec options of URL image paths, as a JSON object (credentials: environment)"


def task_kinds(spec):
    """``"age=regression,grade=classification"`` → dict; None for no text."""
    if not spec:
        return None
    kinds = {}
    for item in spec.split(","):
        name, _, kind = item.partition("=")
        if kind not in TASK_KINDS:
            raise CommandError(
                f"--tasks wants NAME=KIND with KIND in {list(TASK_KINDS)}; got {item!r}"
            )
        kinds[name.strip()] = kind
    return kinds


def column_list(spec):
    """``"z,group"`` → ``["z", "group"]``; None for no text (``--tabular``)."""
    if not spec:
        return None
    columns = [name.strip() for name in spec.split(",") if name.strip()]
    if not columns:
        raise CommandError(f"--tabular {spec!r} names no column: give NAME[,NAME...]")
    return columns


@dataclass(frozen=True)
class Parsing:
    """How the text of a parameter's option becomes the parameter's value.

    ``type`` and ``convert`` as for :class:`Option`; ``help`` replaces the parameter's
    one-line doc where the command line's words differ (``none`` for None, a syntax).
    """

    type: Callable[[str], Any] | None = None
    convert: Callable[[Any], Any] | None = None
    help: str | None = None


_INTEGER, _AUTO_INTEGER = Parsing(int), Parsing(auto_or(int, "an integer"))

#: How each option that sets a parameter parses its text; one not here takes the text
#: as is, or is a switch (a boolean parameter).
PARSING = {
    "image_root": Parsing(convert=absolute),
    "tabular_cols": Parsing(
        convert=column_list, help="table columns read beside the images: z,group,..."
    ),
    "backbone": Parsing(help="torchvision model name, timm/<name> or simple_cnn"),
    "weights": Parsing(none_or_str, help="DEFAULT, a weights name or file, or none"),
    "image_size": _AUTO_INTEGER,
    "tasks": Parsing(
        convert=task_kinds, help="task kinds overriding inference: age=regression,..."
    ),
    "fusion_width": _INTEGER,
    "fusion_depth": _INTEGER,
    "max_epochs": _INTEGER,
    "lr": Parsing(float),
    "freeze_epochs": _AUTO_INTEGER,
    "backbone_lr_scale": Parsing(auto_or(float, "a number")),
    "patience": _INTEGER,
    "batch_size": _INTEGER,
    "valid_split": Parsing(valid_split, help="validation fraction, or none"),
    "num_workers": _AUTO_INTEGER,
    "random_state": _INTEGER,
    "storage_options": Parsing(json_object, help=_STORAGE),
    "tta": _INTEGER,
    "decision_thresholds": Parsing(
        decision_thresholds,
        help="thresholds of binary tasks and labels: none (0.5), tuned, or a JSON object "
        '{"task": 0.3, "multilabel task": {"label": 0.2}}',
    ),
}


def parameter_option(parameter):
    """The option that sets ``parameter``, from its row of the parameter table."""
    row, parsing = PARAMETERS[parameter], PARSING.get(parameter, Parsing())
    fixed = all(isinstance(constraint, StrOptions) for constraint in row.constraints)
    return Option(
        row.option,
        parsing.help or row.doc,
        parameter,
        parsing.type,
        parsing.convert,
        default=row.default,
        choices=tuple(row.choices) if fixed else (),  # argparse checks them, --help lists them
        flag_only=row.constraints == ("boolean",),
    )


#: The options of ``fit`` and ``lr-find`` (the data, the targets, the estimator).
TRAINING_OPTIONS = (
    Option("data", "CSV or parquet file with an image column and target columns"),
    Option("--targets", "comma-separated target columns", required=True),
    *(parameter_option(name) for name, row in PARAMETERS.items() if row.option is not None),
    Option(
        "--valid-col", "boolean column marking validation rows", "valid_split", alternative=True
    ),
)

_MODEL = (
    "a model file: .skmt (safe file), .onnx (ONNX) or .joblib/.pkl/.pickle (a pickle, "
    "which can run code: only from a source you trust); no other name is read"
)
_MODEL_OUT = "the model file to write: .joblib/.pkl/.pickle (pickle), .skmt (safe file) or .onnx"
_INTERVAL = "coverage (e.g. 0.9) of calibrated prediction intervals and sets"
_IMAGES = "folder the image paths are relative to (default: the model's)"

#: Every command's options, by command.
COMMAND_OPTIONS = {
    "fit": (
        *TRAINING_OPTIONS,
        Option("--model", _MODEL_OUT, required=True),
    ),
    "lr-find": (
        *TRAINING_OPTIONS,
        Option("--start-lr", "first learning rate", type=float, default=1e-7),
        Option("--end-lr", "last learning rate", type=float, default=10.0),
        Option("--num-it", "training batches", type=int, default=100),
        Option("--plot", "write the loss-against-rate figure there (.png, .pdf, .svg)"),
    ),
    "predict": (
        Option("data", "CSV or parquet file with the image column, an image file, or a folder"),
        Option("--model", _MODEL, required=True),
        Option("--images", _IMAGES),
        Option("--storage-options", _STORAGE, type=json_object),
        Option("--proba", "add class probability columns", flag_only=True),
        Option(
            "--interval", _INTERVAL + " columns: TASK_lower, TASK_upper, TASK_set", type=coverage
        ),
        Option(
            "--set-method", "how --interval's class sets are made: lac_top (never empty: the "
            "LAC set and the most probable class) or lac (may be empty)",
            choices=SET_METHODS, default="lac_top",
        ),
        Option("--out", "output .csv, .parquet or .json file; - for CSV on stdout", required=True),
    ),
    "evaluate": (
        Option("data", "CSV or parquet file with the image column and targets"),
        Option("--model", _MODEL, required=True),
        Option("--images", _IMAGES),
        Option("--storage-options", _STORAGE, type=json_object),
        Option("--out", "folder for metrics.csv, metrics.json, report.html", required=True),
        Option("--interval", _INTERVAL + ": add ECE, coverage and mean width", type=coverage),
    ),
    "explain": (
        Option("data", "an image file, a folder of images, or a CSV or parquet table of them"),
        Option("--model", _MODEL + "; not .onnx: explain needs torch", required=True),
        Option("--task", "the task whose heatmaps to draw", required=True),
        Option("--label", "a class (or label) of the task to explain on every image "
               "(default: each image's prediction)"),
        Option("--images", _IMAGES),
        Option("--storage-options", _STORAGE, type=json_object),
        Option("--n", "how many images: the first N of the data", type=int, default=9),
        Option("--target-layer", "the backbone's layer to weigh, by name (default: its "
               "last spatial feature map)"),
        Option("--out", "the figure to write: .png, .pdf or .svg", required=True),
    ),
    "export": (
        Option("--model", _MODEL, required=True),
        Option("--out", _MODEL_OUT, required=True),
        Option("--quantize", "write int8 ONNX (static quantization)", choices=("int8",)),
        Option(
            "--calibration",
            "with --quantize: CSV or parquet file (or folder) of images to calibrate on; its "
            "target columns, if any, check each task's metric in int8 against float",
        ),
        Option("--images", _IMAGES),
        Option(
            "--max-metric-drop",
            "with --calibration labels: refuse if a task's metric drops more in int8",
            type=float,
        ),
    ),
    "audit": (
        *TRAINING_OPTIONS,
        Option("--cv", "folds: a model fitted per fold judges the rows it held out",
               type=int, default=5),
        Option("--n-jobs", "folds fitted at once", type=int, default=1),
        Option("--out", "the judged cells: .csv, .parquet or .json; - for CSV on stdout",
               required=True),
    ),
    "suggest": (
        Option("data", "CSV or parquet file with the image column (targets: the labels known)"),
        Option("--model", _MODEL, required=True),
        Option("--images", _IMAGES),
        Option("--storage-options", _STORAGE, type=json_object),
        Option("--task", "this task's cells only (default: every task's, in turn)"),
        Option("--n", "the first N cells only", type=int),
        Option("--out", "the cells to label: .csv, .parquet or .json; - for CSV on stdout",
               required=True),
    ),
    "demo": (
        Option("--out", "folder for images, data, model, report", default="demo-output"),
        Option("--n-samples", "synthetic images", type=int, default=1000),
        Option("--image-size", "their side in pixels", type=int, default=32),
        Option("--epochs", "training epochs", type=int, default=12),
        Option("--seed", "random seed", type=int, default=0),
    ),
}


def add_options(parser, command):
    """Add ``command``'s options to ``parser``."""
    for option in COMMAND_OPTIONS[command]:
        option.add_to(parser)


def estimator_params(args, options=TRAINING_OPTIONS):
    """The estimator's keyword arguments that the parsed ``args`` set."""
    params = {}
    for option in options:
        if option.parameter is None:
            continue
        value = getattr(args, option.dest)
        if option.alternative and not value:
            continue
        params[option.parameter] = value if option.convert is None else option.convert(value)
    return params


#: The option that sets each estimator parameter (the first, where two do).
PARAMETER_OPTIONS = {}
for _option in TRAINING_OPTIONS:
    if _option.parameter is not None:
        PARAMETER_OPTIONS.setdefault(_option.parameter, _option.flag)
del _option

_ASSIGNMENT = re.compile(
    r"\b(" + "|".join(PARAMETER_OPTIONS) + r")=(\{[^}]*\}|'[^']*'|\"[^\"]*\"|[^\s,;:)]+)"
)
_UNDERSCORED = re.compile(r"\b(" + "|".join(p for p in PARAMETER_OPTIONS if "_" in p) + r")\b")


def as_options(message):
    """A library message in the command line's words: ``weights=None`` → ``--weights none``.

    Examples
    --------
    >>> as_options("pass weights=None or set image_root to the folder")
    'pass --weights none or set --images to the folder'
    >>> as_options("lr_schedule='step' is not one of ...")
    '--lr-schedule step is not one of ...'
    """

    def option(match):
        name, value = match.groups()
        if name == "tasks" and value.startswith("{"):
            value = "NAME=KIND"
        value = "none" if value == "None" else value.strip("'\"")
        return f"{PARAMETER_OPTIONS[name]} {value}"

    message = _ASSIGNMENT.sub(option, message)
    # A bare parameter name with an underscore is no English word: name its option.
    return _UNDERSCORED.sub(lambda m: PARAMETER_OPTIONS[m.group(1)], message)

"""The ``sk-multitask`` command line: fit, lr-find, predict, evaluate, explain, export, demo,
and audit and suggest (:mod:`sk_multitask.cli._labels`).

Every command ends a bad path, column or value with a one-line error on stderr and exit
status 1, without a traceback, naming command-line options rather than Python
parameters; ``--help`` works everywhere and shows the defaults. ``predict`` and
``evaluate`` with an ONNX model import neither torch nor scikit-learn nor joblib (what
``evaluate`` needs of scikit-learn and matplotlib is checked first, in one line); a closed
pipe on standard output ends a command quietly. Every command's options are in
:mod:`sk_multitask.cli._options`; ``--model`` takes a pickle, a safe file or an ONNX file
(:func:`sk_multitask.cli._io.load_model`), and ``predict`` and ``evaluate`` read their data
the same way for every kind of model (:func:`sk_multitask.cli._io.images_input`).

Every file a command writes is written atomically (:mod:`sk_multitask.inputs._files`), never over
one of its inputs, and a model file is read by its name's format only: a pickle must be
named ``.joblib``, ``.pkl`` or ``.pickle``. Any error, whatever its class, ends in one
line; ``--debug`` shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
import traceback
import warnings

import pandas as pd

from .. import __version__
from ..inputs._files import atomic_path
from ..inputs._sources import image_references
from ..predicting._protocol import interval_calibration
from ..targets import LABEL_KINDS, REGRESSION
from ..targets._outputs import probability_table
from ._io import (
    check_output,
    check_writable,
    images_input,
    integer_classes,
    interval_columns,
    is_image_file,
    known_model_format,
    load_model,
    model_targets,
    read_table,
    refuse_overwriting,
    require_columns,
    save_model,
    write_table,
)
from ._labels import audit, suggest
from ._options import CommandError, add_options, as_options, estimator_params

#: The figure formats ``explain`` and ``lr-find --plot`` write.
FIGURE_FORMATS = (".png", ".pdf", ".svg")


def data_and_estimator(args):
    """The table, the targets and the estimator that the fit options describe."""
    data = read_table(args.data)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets:
        raise CommandError(f"--targets {args.targets!r} names no column: give NAME[,NAME...]")
    y = require_columns(data, targets, "targets")
    require_columns(data, [args.image_col], "image column")
    if args.valid_col:
        require_columns(data, [args.valid_col], "validation column")
    from ..estimator import MultiTaskImageEstimator

    est = MultiTaskImageEstimator(**estimator_params(args), verbose=1)
    # Class codes read as floats (an empty cell) train as integer labels: 3, not 3.0.
    classes = [name for name, kind in (est.tasks or {}).items() if kind in LABEL_KINDS]
    return data, integer_classes(y, classes), est


def fit(args):
    """Fit a model on a table of image paths and targets and save it with joblib."""
    refuse_overwriting({"data": args.data}, [args.model])
    known_model_format(args.model)
    check_writable(args.model, "the model")
    data, y, est = data_and_estimator(args)
    start = time.perf_counter()
    est.fit(data, y)
    from ..training._distributed import is_main_process

    if not is_main_process():  # under accelerate launch / torchrun: the first one writes
        return 0
    save_model(est, args.model)
    kinds = ", ".join(f"{n} ({t.kind})" for n, t in est.tasks_.items())
    print(f"fitted {kinds} in {time.perf_counter() - start:.1f} s; model saved to {args.model}")
    return 0


def lr_find(args):
    """Run the learning-rate range test of the fit the options describe; suggest a rate."""
    if args.plot and not args.plot.lower().endswith(FIGURE_FORMATS):
        raise CommandError(f"--plot {args.plot}: name a .png, .pdf or .svg file")
    refuse_overwriting({"data": args.data}, [args.plot] if args.plot else [])
    data, y, est = data_and_estimator(args)
    result = est.lr_find(data, y, start_lr=args.start_lr, end_lr=args.end_lr, num_it=args.num_it)
    history, suggested = result
    with pd.option_context("display.width", 120):
        print(history.iloc[:: max(1, len(history) // 12)].to_string(index=False))
    if args.plot:
        from ..plotting import plot_lr_find  # matplotlib only when plotting

        with atomic_path(args.plot) as temporary:
            plot_lr_find(result).savefig(temporary, dpi=100, format=args.plot[-3:].lower())
        print(f"plot written to {args.plot}")
    print(f"suggested learning rate: {suggested:.3g} (fit with --lr {suggested:.3g})")
    return 0


def predict(args):
    """Write predictions (and class probabilities) for every row of a table."""
    check_output(args.out)
    refuse_overwriting({"data": args.data, "--model": args.model}, [args.out])
    if args.out != "-":
        check_writable(args.out, "the predictions")
    model = load_model(args.model, verbose=1, storage_options=args.storage_options)
    if args.interval is not None:  # an uncalibrated model fails now, not after predicting
        interval_calibration(model, args.interval)
    data, X = images_input(args.data, model, args.images)
    # The image column as people name the images (not the bytes of an image column).
    names = pd.DataFrame({model.image_col: image_references(data, model.image_col)}, data.index)
    out = pd.concat([names, model.predict(X)], axis=1)
    if args.proba:
        out = out.join(probability_table(model.predict_proba(X), out.index))
    if args.interval is not None:
        out = out.join(interval_columns(model.predict_interval(X, args.interval, args.set_method)))
    write_table(out, args.out)
    # With --out -, standard output holds the table only.
    sink = sys.stderr if args.out == "-" else sys.stdout
    print(f"{len(out)} predictions written to {args.out}", file=sink)
    return 0


def _evaluate_to(model, data, y, out, coverage=None):
    """Print the metrics table and write metrics.csv, metrics.json and report.html."""
    os.makedirs(out, exist_ok=True)
    table = model.evaluate(data, y, coverage=coverage)
    with pd.option_context("display.width", 160, "display.max_columns", None):
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    with atomic_path(os.path.join(out, "metrics.csv")) as temporary:
        table.to_csv(temporary, index_label="task")
    records = json.loads(table.to_json(orient="index"))
    with atomic_path(os.path.join(out, "metrics.json")) as temporary, open(temporary, "w") as f:
        json.dump(records, f, indent=2)
    from ..report import write_report  # matplotlib is imported only when reporting

    report = write_report(model, data, y, os.path.join(out, "report.html"), coverage=coverage)
    print(f"metrics and report written to {out} ({os.path.basename(report)})")


#: The files ``evaluate`` writes in its ``--out`` folder.
EVALUATION_FILES = ("metrics.csv", "metrics.json", "report.html")
#: What ``evaluate`` needs beyond what ``predict`` needs, which a torch-free install for
#: ONNX models may lack (docs/deployment.md): module name to the name pip installs.
EVALUATION_PACKAGES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def _check_evaluation_packages():
    """A one-line CommandError, before any work, naming what to install for the metrics
    (scikit-learn) and the report's figures (matplotlib) where they cannot be imported."""
    missing = []
    for module, package in EVALUATION_PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise CommandError(
            f"evaluate needs {' and '.join(missing)}: pip install {' '.join(missing)}"
        )


def evaluate(args):
    """Per-task metrics on a labelled table, as a table, CSV, JSON and an HTML report."""
    _check_evaluation_packages()
    if os.path.isdir(args.data) or is_image_file(args.data):
        raise CommandError(
            f"evaluate needs a CSV or parquet table with target columns, not images ({args.data})"
        )
    written = [os.path.join(args.out, name) for name in EVALUATION_FILES]
    refuse_overwriting({"data": args.data, "--model": args.model}, written)
    model = load_model(args.model, verbose=1, storage_options=args.storage_options)
    data, X = images_input(args.data, model, args.images)
    # Class codes read as floats (an empty cell): the model's integer labels in the report.
    y = model_targets(model, data)
    if y is None:
        raise CommandError(
            f"none of the model's targets {list(model.tasks_)} is a column of the data"
        )
    if args.interval is not None:
        interval_calibration(model, args.interval, list(y.columns))
    _evaluate_to(model, X, y, args.out, coverage=args.interval)
    return 0


def explain(args):
    """Draw one task's heatmaps (where the network looked) over the first images."""
    if not args.out.lower().endswith(FIGURE_FORMATS):
        raise CommandError(f"--out {args.out}: name a .png, .pdf or .svg file")
    if args.n < 1:
        raise CommandError(f"--n must be a positive number of images; got {args.n}")
    if known_model_format(args.model) == "onnx":
        raise CommandError(
            f"{args.model} is an ONNX model: explain needs torch and the network's layers "
            "(Grad-CAM takes gradients inside it); pass the model's .skmt or pickle as --model"
        )
    refuse_overwriting({"data": args.data, "--model": args.model}, [args.out])
    check_writable(args.out, "the figure")
    model = load_model(args.model, verbose=1, storage_options=args.storage_options)
    task = _model_task(model, args.task)
    label = None if args.label is None else _task_label(model.tasks_[task], args.label)
    data, X = images_input(args.data, model, args.images)
    from ..plotting import plot_explain  # matplotlib only when plotting

    figure = plot_explain(model, X, task, label, n=args.n, target_layer=args.target_layer)
    with atomic_path(args.out) as temporary:
        figure.savefig(temporary, dpi=100, format=args.out[-3:].lower())
    count = min(args.n, len(data))
    print(f"heatmaps of {task} for {count} image{'s' * (count > 1)} written to {args.out}")
    return 0


def _model_task(model, name):
    """The model's task called ``name`` (the command line's text: an integer name too)."""
    tasks = {str(task): task for task in model.tasks_}
    if name not in tasks:
        raise CommandError(f"--task {name}: the model's tasks are {list(tasks)}")
    return tasks[name]


def _task_label(task, text):
    """The class (or label) of ``task`` whose text is ``text``."""
    if task.kind == REGRESSION:
        raise CommandError(f"--label: task {task.name} is a regression, it has no labels")
    labels = {str(label): label for label in task.classes_}
    if text not in labels:
        raise CommandError(f"--label {text}: task {task.name}'s labels are {list(labels)}")
    return labels[text]


def export(args):
    """Write a saved model as a safe file (.skmt), as ONNX (.onnx) or as a pickle; with
    ``--quantize int8``, as int8 ONNX calibrated (and checked per task) on a table."""
    kind = known_model_format(args.out)
    _check_quantize_options(args, kind)
    refuse_overwriting({"--model": args.model, "--calibration": args.calibration}, [args.out])
    model = load_model(args.model)
    if not hasattr(model, "save"):
        raise CommandError(f"{args.model} is already an ONNX model; export a .joblib or .skmt")
    if args.quantize is None:
        save_model(model, args.out)
        print(f"model written to {args.out}")
        return 0
    data, X = images_input(args.calibration, model, args.images)
    y = model_targets(model, data)
    if args.max_metric_drop is not None and y is None:
        raise CommandError(
            f"--max-metric-drop needs labels: none of the model's targets {list(model.tasks_)} "
            f"is a column of {args.calibration}"
        )
    check_writable(args.out, "the model")
    result = model.export_onnx(args.out, args.quantize, X, y, args.max_metric_drop)
    if result.check is not None:
        print(result.check.to_string(float_format=lambda v: f"{v:.4f}"))
    images = load_model(args.out).quantization_["calibration"]["n_images"]  # read ones
    print(f"int8 model written to {args.out} (calibrated on {images} images)")
    return 0


def _check_quantize_options(args, kind):
    """A CommandError unless ``--quantize``, ``--calibration`` and ``--max-metric-drop``
    fit together and with the output's format."""
    if args.quantize is None:
        for flag in ("calibration", "max_metric_drop"):
            if getattr(args, flag) is not None:
                option = "--" + flag.replace("_", "-")
                raise CommandError(f"{option} is for --quantize int8, which was not given")
        return
    if kind != "onnx":
        raise CommandError(f"--quantize {args.quantize} writes ONNX: name --out NAME.onnx")
    if args.calibration is None:
        raise CommandError(
            f"--quantize {args.quantize} needs --calibration: a table (or folder) of images "
            "like those the model will predict on"
        )


def demo(args):
    """Generate the synthetic set, fit, evaluate on the validation rows, write the report."""
    from ..datasets import make_multitask_images
    from ..datasets._synthetic import TARGETS

    os.makedirs(args.out, exist_ok=True)
    df = make_multitask_images(
        args.n_samples,
        image_size=args.image_size,
        path=os.path.abspath(os.path.join(args.out, "images")),
        random_state=args.seed,
    )
    data = os.path.join(args.out, "data.csv")
    write_table(df, data)
    y = df[list(TARGETS)]
    print(
        f"{len(df)} synthetic images in {df.attrs['image_root']}; targets {list(TARGETS)}, "
        f"{int(y.isna().sum().sum())} cells missing"
    )
    from ..estimator import MultiTaskImageEstimator

    est = MultiTaskImageEstimator(
        image_root=df.attrs["image_root"],
        backbone="simple_cnn",
        weights=None,
        image_size=args.image_size,
        max_epochs=args.epochs,
        batch_size=32,
        valid_split="is_valid",
        random_state=args.seed,
        verbose=1,
    )
    start = time.perf_counter()
    est.fit(df, y)
    print(f"fitted in {time.perf_counter() - start:.1f} s")
    model = os.path.join(args.out, "model.joblib")
    save_model(est, model)
    print(f"model saved to {model}")
    valid = df["is_valid"].to_numpy()
    print("validation metrics (labelled cells only):")
    _evaluate_to(est, df[valid], y[valid], args.out)
    print(f"the data is in {data}; try: {invoked_as()} predict {data} --model {model} --out -")
    return 0


def invoked_as():
    """This command as the user can type it again.

    Its path as run (``.venv/bin/sk-multitask`` under ``make demo``) when that is not what
    ``sk-multitask`` finds on the PATH (an environment not activated), else its name.
    """
    script = sys.argv[0]
    if os.path.basename(script) == "sk-multitask" and shutil.which("sk-multitask") != (
        os.path.abspath(script)
    ):
        return os.path.relpath(script)
    return "sk-multitask"


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show an option's default, where it has one worth showing."""

    def _get_help_string(self, action):
        if action.required or action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


class _OneLineParser(argparse.ArgumentParser):
    """A parser whose usage errors are one line too (exit status 2, as argparse's)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _CommandParser(_OneLineParser):
    """A command's parser, which adds the command's options when it parses: only the
    command that runs builds its options."""

    def __init__(self, *args, command=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending = command

    def parse_known_args(self, args=None, namespace=None):
        if self._pending is not None:
            command, self._pending = self._pending, None
            add_options(self, command)
        return super().parse_known_args(args, namespace)


_DEBUG = "on an error, show its traceback as well"


def build_parser():
    """The ``sk-multitask`` parser: one sub-command per entry of :data:`COMMANDS`."""
    parser = _OneLineParser(
        prog="sk-multitask",
        description="Train one network that predicts several targets from images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )
    for name, (run, help) in COMMANDS.items():
        command = commands.add_parser(
            name, help=help, description=help, formatter_class=_DefaultsFormatter, command=name
        )
        command.set_defaults(run=run)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"sk-multitask {args.command}: warning: {as_options(str(message))}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            status = args.run(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe must end here too
        return status
    except BrokenPipeError:
        # The reader of standard output left (`| head`): end quietly with 141 (128 +
        # SIGPIPE), the status of a shell's tools there. Python's recipe: standard
        # output to devnull, so that its flush at exit fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"sk-multitask {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # whatever its class (KeyError, EOFError, PIL's, onnxruntime's)
        if args.debug:
            traceback.print_exc()
        print(f"sk-multitask {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 1


def error_line(exc):
    """``exc`` as one line of the command line's words, naming its class unless it is
    a :class:`CommandError` (whose message says all)."""
    message = as_options(_one_line(exc))
    if isinstance(exc, CommandError):
        return message
    name = type(exc).__name__
    if not message or message.startswith(f"{name}:"):  # a worker's error names its class
        return message or name
    return f"{name}: {message}"


def _one_line(exc):
    """The message on one line; for an error re-raised from a DataLoader worker, its cause."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if "Original Traceback" in str(exc):
        return lines[-1]
    return " ".join(lines)


#: Each command's function and help; its options are in ``_options.COMMAND_OPTIONS``.
COMMANDS = {
    "fit": (fit, "fit a model on a CSV/parquet of image paths and targets"),
    "lr-find": (lr_find, "the learning-rate range test: loss against rate, a suggested rate"),
    "predict": (predict, "predict every target for a table, an image file or a folder"),
    "evaluate": (evaluate, "per-task metrics and an HTML report"),
    "explain": (explain, "heatmaps of where the network looked for a task, as a figure"),
    "export": (export, "write a model as a safe file (.skmt) or as ONNX"),
    "demo": (demo, "generate a synthetic set, fit, evaluate, report"),
    "audit": (audit, "which labels look wrong: each judged against out-of-fold predictions"),
    "suggest": (suggest, "which missing cells to label next, the most uncertain first"),
}

"""The ``sk-multitask`` command line: fit, lr-find, predict, evaluate, export, demo.

Every command ends a bad path, column or value with a one-line error on stderr and exit
status 1, without a traceback, naming command-line options rather than Python
parameters; ``--help`` works everywhere and shows the defaults. ``predict`` and
``evaluate`` with an ONNX model do not import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
import zipfile

import joblib
import pandas as pd
from PIL import Image

from . import __version__
from .datasets import make_multitask_images
from .datasets._synthetic import TARGETS
from .images import resolve_images
from .tasks import TASK_KINDS


class CommandError(Exception):
    """An error the command line reports in one line."""


_PARQUET = (".parquet", ".pq")
#: Output formats by file extension; "-" (standard output) is CSV.
OUTPUT_FORMATS = (".csv", *_PARQUET, ".json")


def read_table(path):
    """A DataFrame from a CSV or parquet file."""
    if not os.path.isfile(path):
        raise CommandError(f"data file not found: {path}")
    try:
        if path.lower().endswith(_PARQUET):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CommandError(f"cannot read {path} as a CSV or parquet table: {exc}") from exc


def is_image_file(path):
    """Whether ``path``'s extension is one PIL reads (``.jpg``, ``.png``, ``.webp``...)."""
    return os.path.splitext(path)[1].lower() in Image.registered_extensions()


def read_images_input(path, image_col):
    """The table to predict on: a CSV/parquet table, one image file, or a folder of images.

    Returns
    -------
    data : DataFrame
        A table as read; for an image or a folder, ``image_col`` holds the paths
        (relative to the folder, or as given for one file).
    root : str or None
        The folder the paths are relative to (a folder input), else None.
    """
    if os.path.isdir(path):
        names = sorted(
            os.path.relpath(os.path.join(folder, name), path)
            for folder, _, files in os.walk(path)
            for name in files
            if is_image_file(name)
        )
        if not names:
            raise CommandError(f"no image file in the folder {path}")
        return pd.DataFrame({image_col: names}), os.path.abspath(path)
    if is_image_file(path):
        if not os.path.isfile(path):
            raise CommandError(f"image file not found: {path}")
        return pd.DataFrame({image_col: [os.path.abspath(path)]}), None
    return read_table(path), None


def check_output(path):
    """Refuse an output file whose format is unknown, before any work is done."""
    if path != "-" and not path.lower().endswith(OUTPUT_FORMATS):
        raise CommandError(
            f"--out {path}: unknown output format; name a {', '.join(OUTPUT_FORMATS)} "
            "file, or - for CSV on standard output"
        )


def write_table(frame, path):
    """Write ``frame`` as CSV, parquet or JSON (records) by ``path``'s extension; ``-``: stdout."""
    if path == "-":
        frame.to_csv(sys.stdout, index=False)
        return
    check_output(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if path.lower().endswith(_PARQUET):
        frame.to_parquet(path, index=False)
    elif path.lower().endswith(".json"):
        frame.to_json(path, orient="records", indent=2)
    else:
        frame.to_csv(path, index=False)


def _columns(data, names, what):
    missing = [n for n in names if n not in data.columns]
    if missing:
        raise CommandError(
            f"{what} {missing} not in the data; its columns are {list(data.columns)}"
        )
    return data[names]


def _task_kinds(spec):
    """``"age=regression,grade=classification"`` → dict."""
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


def _load_model(path, images=None, verbose=None):
    """A saved model: a safe file (zip), an ONNX file (run without torch), or joblib."""
    if not os.path.isfile(path):
        raise CommandError(f"model file not found: {path}")
    if path.endswith(".onnx"):
        from .onnx import OnnxPredictor

        return OnnxPredictor(path, image_root=images)
    from .estimator import MultiTaskImageEstimator

    if path.endswith(".skmt") or zipfile.is_zipfile(path):
        model = MultiTaskImageEstimator.load(path)
    else:
        try:  # a pickle: only for files from a source you trust
            model = joblib.load(path)
        except Exception as exc:  # unpickling arbitrary bytes fails in many ways
            raise CommandError(
                f"{path} is not a model file saved by 'sk-multitask fit' "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    if not isinstance(model, MultiTaskImageEstimator):
        raise CommandError(f"{path} holds a {type(model).__name__}, not a MultiTaskImageEstimator")
    if verbose is not None:
        model.set_params(verbose=verbose)
    if images is not None:
        model.set_params(image_root=os.path.abspath(images))
    return model


def _read_images_table(path, model):
    """The data (table, image or folder), with every image file checked before any work."""
    data, root = read_images_input(path, model.image_col)
    if root is not None:
        model.set_params(image_root=root)
    elif is_image_file(path):
        model.set_params(image_root=None)
    _columns(data, [model.image_col], "image column")
    resolve_images(data, model.image_col, model.image_root)  # raises naming a missing file
    return data


def _check_writable(path):
    """Fail now, not after hours of training, if the model file cannot be written."""
    existed = os.path.exists(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise CommandError(f"cannot write the model to {path}: {exc.strerror or exc}") from exc
    if not existed:
        os.remove(path)


def _save(est, path):
    """Save a model quiet (``verbose=0``): a later ``predict`` in Python shows no bars."""
    est.set_params(verbose=0)
    joblib.dump(est, path)


def _valid_split(value):
    try:
        return float(value)
    except ValueError:
        return None if value.lower() == "none" else value


def _data_and_estimator(args):
    """The table, the targets and the estimator that the fit options describe."""
    data = read_table(args.data)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    y = _columns(data, targets, "targets")
    _columns(data, [args.image_col], "image column")
    from .estimator import MultiTaskImageEstimator

    valid_split = args.valid_col if args.valid_col else _valid_split(args.valid_split)
    if args.valid_col:
        _columns(data, [args.valid_col], "validation column")
    est = MultiTaskImageEstimator(
        image_col=args.image_col,
        # Absolute: the saved model predicts from any working folder.
        image_root=None if args.images is None else os.path.abspath(args.images),
        backbone=args.backbone,
        weights=None if args.weights.lower() == "none" else args.weights,
        image_size=args.image_size,
        tasks=_task_kinds(args.tasks),
        max_epochs=args.epochs,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        freeze_epochs=args.freeze_epochs,
        backbone_lr_scale=args.backbone_lr_scale,
        early_stopping=args.early_stopping,
        patience=args.patience,
        monitor=args.monitor,
        checkpoint_dir=args.checkpoint_dir,
        batch_size=args.batch_size,
        valid_split=valid_split,
        augment=args.augment,
        num_workers=args.num_workers,
        cache_dir=args.cache_dir,
        device=args.device,
        random_state=args.seed,
        verbose=1,
    )
    return data, y, est


def fit(args):
    """Fit a model on a table of image paths and targets and save it with joblib."""
    data, y, est = _data_and_estimator(args)
    _check_writable(args.model)
    start = time.perf_counter()
    est.fit(data, y)
    from .distributed import is_main_process

    if not is_main_process():  # under accelerate launch / torchrun: the first one writes
        return 0
    _save(est, args.model)
    kinds = ", ".join(f"{n} ({t.kind})" for n, t in est.tasks_.items())
    print(f"fitted {kinds} in {time.perf_counter() - start:.1f} s; model saved to {args.model}")
    return 0


def lr_find(args):
    """Run the learning-rate range test of the fit the options describe; suggest a rate."""
    data, y, est = _data_and_estimator(args)
    if args.plot and not args.plot.lower().endswith((".png", ".pdf", ".svg")):
        raise CommandError(f"--plot {args.plot}: name a .png, .pdf or .svg file")
    result = est.lr_find(data, y, start_lr=args.start_lr, end_lr=args.end_lr, num_it=args.num_it)
    history, suggested = result
    with pd.option_context("display.width", 120):
        print(history.iloc[:: max(1, len(history) // 12)].to_string(index=False))
    if args.plot:
        from .plotting import plot_lr_find  # matplotlib only when plotting

        plot_lr_find(result).savefig(args.plot, dpi=100)
        print(f"plot written to {args.plot}")
    print(f"suggested learning rate: {suggested:.3g} (fit with --lr {suggested:.3g})")
    return 0


def predict(args):
    """Write predictions (and class probabilities) for every row of a table."""
    check_output(args.out)
    model = _load_model(args.model, args.images, verbose=1)
    data = _read_images_table(args.data, model)
    out = pd.concat([data[[model.image_col]], model.predict(data)], axis=1)
    if args.proba:
        for task, proba in model.predict_proba(data).items():
            out = out.join(proba.add_prefix(f"{task}_proba_"))
    write_table(out, args.out)
    # With --out -, standard output holds the table only.
    sink = sys.stderr if args.out == "-" else sys.stdout
    print(f"{len(out)} predictions written to {args.out}", file=sink)
    return 0


def _evaluate_to(model, data, y, out):
    """Print the metrics table and write metrics.csv, metrics.json and report.html."""
    os.makedirs(out, exist_ok=True)
    table = model.evaluate(data, y)
    with pd.option_context("display.width", 160, "display.max_columns", None):
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    table.to_csv(os.path.join(out, "metrics.csv"), index_label="task")
    records = json.loads(table.to_json(orient="index"))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(records, f, indent=2)
    if not hasattr(model, "net_"):  # an ONNX model has no network to compute losses
        print(f"metrics written to {out} (no report.html: it needs the model, not ONNX)")
        return
    from .report import write_report  # matplotlib is imported only when reporting

    report = write_report(model, data, y, os.path.join(out, "report.html"))
    print(f"metrics and report written to {out} ({os.path.basename(report)})")


def evaluate(args):
    """Per-task metrics on a labelled table, as a table, CSV, JSON and an HTML report."""
    if os.path.isdir(args.data) or is_image_file(args.data):
        raise CommandError(
            f"evaluate needs a CSV or parquet table with target columns, not images ({args.data})"
        )
    model = _load_model(args.model, args.images, verbose=1)
    data = _read_images_table(args.data, model)
    present = [t for t in model.tasks_ if t in data.columns]
    if not present:
        raise CommandError(
            f"none of the model's targets {list(model.tasks_)} is a column of the data"
        )
    _evaluate_to(model, data, data[present], args.out)
    return 0


def export(args):
    """Write a saved model as a safe file (.skmt, or any other name) or as ONNX (.onnx)."""
    model = _load_model(args.model)
    if not hasattr(model, "save"):
        raise CommandError(f"{args.model} is already an ONNX model; export a .joblib or .skmt")
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    if args.out.endswith(".onnx"):
        model.export_onnx(args.out)
    else:
        model.save(args.out)
    print(f"model written to {args.out}")
    return 0


def demo(args):
    """Generate the synthetic set, fit, evaluate on the validation rows, write the report."""
    os.makedirs(args.out, exist_ok=True)
    df = make_multitask_images(
        args.n_samples,
        image_size=args.image_size,
        path=os.path.abspath(os.path.join(args.out, "images")),
        random_state=args.seed,
    )
    data = os.path.join(args.out, "data.csv")
    df.to_csv(data, index=False)
    y = df[list(TARGETS)]
    print(
        f"{len(df)} synthetic images in {df.attrs['image_root']}; targets {list(TARGETS)}, "
        f"{int(y.isna().sum().sum())} cells missing"
    )
    from .estimator import MultiTaskImageEstimator

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
    _save(est, model)
    print(f"model saved to {model}")
    valid = df["is_valid"].to_numpy()
    print("validation metrics (labelled cells only):")
    _evaluate_to(est, df[valid], y[valid], args.out)
    print(f"the data is in {data}; try: sk-multitask predict {data} --model {model} --out -")
    return 0


def _num_workers(value):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or auto, got {value!r}") from None


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show an option's default, where it has one worth showing."""

    def _get_help_string(self, action):
        if action.required or action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def _auto_or(kind):
    """An argparse type: ``auto``, or a value of ``kind``."""

    def parse(value):
        return "auto" if value == "auto" else kind(value)

    parse.__name__ = kind.__name__
    return parse


def _training_options(p):
    """The data and training options that ``fit`` and ``lr-find`` share."""
    p.add_argument("data", help="CSV or parquet file with an image column and target columns")
    p.add_argument("--images", help="folder the image paths are relative to")
    p.add_argument("--targets", required=True, help="comma-separated target columns")
    p.add_argument("--image-col", default="filename", help="column with image paths")
    p.add_argument("--valid-col", help="boolean column marking validation rows")
    p.add_argument("--valid-split", default="0.2", help="validation fraction, or none")
    p.add_argument("--tasks", help="task kinds overriding inference: age=regression,...")
    p.add_argument("--backbone", default="resnet18", help="torchvision model name or simple_cnn")
    p.add_argument("--weights", default="DEFAULT", help="torchvision weights, a .pth file, or none")
    p.add_argument("--image-size", type=int, default=224, help="side images are resized to")
    p.add_argument("--epochs", type=int, default=10, help="training epochs, frozen ones included")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("--lr", type=float, default=1e-3, help="(peak) learning rate of the heads")
    p.add_argument(
        "--lr-schedule", default="onecycle", choices=["onecycle", "cosine", "constant"],
        help="learning rate over the fit, stepped per batch",
    )
    p.add_argument(
        "--freeze-epochs", type=_auto_or(int), default="auto",
        help="first epochs training the heads only (auto: 1 with pretrained weights)",
    )
    p.add_argument(
        "--backbone-lr-scale", type=_auto_or(float), default="auto",
        help="backbone rate / heads' rate (auto: 0.1 with pretrained weights)",
    )
    p.add_argument("--early-stopping", action="store_true", help="stop when --monitor stalls")
    p.add_argument("--patience", type=int, default=5, help="epochs without improvement")
    p.add_argument("--monitor", default="valid_loss", help="history key early stopping watches")
    p.add_argument("--checkpoint-dir", help="checkpoint every epoch there; resume from it")
    p.add_argument("--cache-dir", help="folder of a disk cache of decoded images (reused)")
    p.add_argument("--augment", action="store_true", help="augment training images")
    p.add_argument(
        "--num-workers", type=_num_workers, default="auto", help="image decoding processes, or auto"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or a torch device")
    p.add_argument("--seed", type=int, default=None, help="random seed (none: not seeded)")


_MODEL_HELP = "a model saved by 'fit' (.joblib), by 'export' (.skmt) or an ONNX file (.onnx)"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sk-multitask",
        description="Train one network that predicts several targets from images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help):
        return commands.add_parser(
            name, help=help, description=help, formatter_class=_DefaultsFormatter
        )

    p = command("fit", "fit a model on a CSV/parquet of image paths and targets")
    _training_options(p)
    p.add_argument("--model", required=True, help="where to save the fitted model (joblib)")
    p.set_defaults(run=fit)

    p = command("lr-find", "the learning-rate range test: loss against rate, a suggested rate")
    _training_options(p)
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate")
    p.add_argument("--num-it", type=int, default=100, help="training batches")
    p.add_argument("--plot", help="write the loss-against-rate figure there (.png, .pdf, .svg)")
    p.set_defaults(run=lr_find)

    p = command("predict", "predict every target for a table, an image file or a folder")
    p.add_argument(
        "data", help="CSV or parquet file with the image column, an image file, or a folder"
    )
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--images", help="folder the image paths are relative to (default: the model's)")
    p.add_argument("--proba", action="store_true", help="add class probability columns")
    p.add_argument(
        "--out", required=True, help="output .csv, .parquet or .json file; - for CSV on stdout"
    )
    p.set_defaults(run=predict)

    p = command("evaluate", "per-task metrics and an HTML report")
    p.add_argument("data", help="CSV or parquet file with the image column and targets")
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--images", help="folder the image paths are relative to (default: the model's)")
    p.add_argument("--out", required=True, help="folder for metrics.csv, metrics.json, report.html")
    p.set_defaults(run=evaluate)

    p = command("export", "write a model as a safe file (.skmt) or as ONNX")
    p.add_argument("--model", required=True, help="a model saved by 'fit' (.joblib) or .skmt")
    p.add_argument("--out", required=True, help="the file to write: NAME.onnx for ONNX, else .skmt")
    p.set_defaults(run=export)

    p = command("demo", "generate a synthetic set, fit, evaluate, report")
    p.add_argument("--out", default="demo-output", help="folder for images, data, model, report")
    p.add_argument("--n-samples", type=int, default=1000, help="synthetic images")
    p.add_argument("--image-size", type=int, default=32, help="their side in pixels")
    p.add_argument("--epochs", type=int, default=12, help="training epochs")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(run=demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"sk-multitask {args.command}: warning: {as_options(str(message))}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return args.run(args)
    except KeyboardInterrupt:
        print(f"sk-multitask {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, TypeError, OSError, RuntimeError, ArithmeticError) as exc:
        message = as_options(_one_line(exc))
        print(f"sk-multitask {args.command}: error: {message}", file=sys.stderr)
        return 1


#: The estimator's parameters that are command-line options, by option.
OPTIONS = {
    "image_root": "--images",
    "image_col": "--image-col",
    "image_size": "--image-size",
    "valid_split": "--valid-split",
    "batch_size": "--batch-size",
    "max_epochs": "--epochs",
    "num_workers": "--num-workers",
    "random_state": "--seed",
    "backbone": "--backbone",
    "weights": "--weights",
    "tasks": "--tasks",
    "device": "--device",
    "lr": "--lr",
    "lr_schedule": "--lr-schedule",
    "freeze_epochs": "--freeze-epochs",
    "backbone_lr_scale": "--backbone-lr-scale",
    "early_stopping": "--early-stopping",
    "patience": "--patience",
    "monitor": "--monitor",
    "checkpoint_dir": "--checkpoint-dir",
}
_ASSIGNMENT = re.compile(
    r"\b(" + "|".join(OPTIONS) + r")=(\{[^}]*\}|'[^']*'|\"[^\"]*\"|[^\s,;:)]+)"
)


def as_options(message):
    """A library message in the command line's words: ``weights=None`` → ``--weights none``.

    Examples
    --------
    >>> as_options("pass weights=None or set image_root to the folder")
    'pass --weights none or set --images to the folder'
    """

    def option(match):
        name, value = match.groups()
        if name == "tasks" and value.startswith("{"):
            value = "NAME=KIND"
        value = "none" if value == "None" else value.strip("'\"")
        return f"{OPTIONS[name]} {value}"

    message = _ASSIGNMENT.sub(option, message)
    # A bare parameter name with an underscore is no English word: name its option.
    return re.sub(
        r"\b(" + "|".join(n for n in OPTIONS if "_" in n) + r")\b",
        lambda m: OPTIONS[m.group(1)],
        message,
    )


def _one_line(exc):
    """The message on one line; for an error re-raised from a DataLoader worker, its cause."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if "Original Traceback" in str(exc):
        return lines[-1]
    return " ".join(lines) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())

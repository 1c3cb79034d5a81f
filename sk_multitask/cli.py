"""The ``sk-multitask`` command line: fit, predict, evaluate, demo.

Every command ends a bad path, column or value with a one-line error on stderr and exit
status 1, without a traceback; ``--help`` works everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import joblib
import pandas as pd

from . import __version__
from .data import resolve_images
from .datasets import make_multitask_images
from .datasets._synthetic import TARGETS
from .distributed import is_main_process
from .estimator import MultiTaskImageEstimator
from .tasks import TASK_KINDS


class CommandError(Exception):
    """An error the command line reports in one line."""


def read_table(path):
    """A DataFrame from a CSV or parquet file."""
    if not os.path.isfile(path):
        raise CommandError(f"data file not found: {path}")
    if path.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def write_table(frame, path):
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if path.endswith((".parquet", ".pq")):
        frame.to_parquet(path)
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


def _load_model(path, images):
    if not os.path.isfile(path):
        raise CommandError(f"model file not found: {path}")
    model = joblib.load(path)
    if not isinstance(model, MultiTaskImageEstimator):
        raise CommandError(f"{path} holds a {type(model).__name__}, not a MultiTaskImageEstimator")
    if images is not None:
        model.set_params(image_root=images)
    return model


def _read_images_table(path, model):
    """The data table, with every image file checked before any work starts."""
    data = read_table(path)
    _columns(data, [model.image_col], "image column")
    resolve_images(data, model.image_col, model.image_root)  # raises naming a missing file
    return data


def _valid_split(value):
    try:
        return float(value)
    except ValueError:
        return None if value.lower() == "none" else value


def fit(args):
    """Fit a model on a table of image paths and targets and save it with joblib."""
    data = read_table(args.data)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    y = _columns(data, targets, "targets")
    _columns(data, [args.image_col], "image column")
    valid_split = args.valid_col if args.valid_col else _valid_split(args.valid_split)
    if args.valid_col:
        _columns(data, [args.valid_col], "validation column")
    est = MultiTaskImageEstimator(
        image_col=args.image_col,
        image_root=args.images,
        backbone=args.backbone,
        weights=None if args.weights.lower() == "none" else args.weights,
        image_size=args.image_size,
        tasks=_task_kinds(args.tasks),
        max_epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        valid_split=valid_split,
        augment=args.augment,
        num_workers=args.num_workers,
        cache_dir=args.cache_dir,
        device=args.device,
        random_state=args.seed,
        verbose=1,
    )
    start = time.perf_counter()
    est.fit(data, y)
    if not is_main_process():  # under accelerate launch / torchrun: the first one writes
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.model)), exist_ok=True)
    joblib.dump(est, args.model)
    kinds = ", ".join(f"{n} ({t.kind})" for n, t in est.tasks_.items())
    print(f"fitted {kinds} in {time.perf_counter() - start:.1f} s; model saved to {args.model}")
    return 0


def predict(args):
    """Write predictions (and class probabilities) for every row of a table."""
    model = _load_model(args.model, args.images)
    model.set_params(verbose=1)
    data = _read_images_table(args.data, model)
    out = pd.concat([data[[model.image_col]], model.predict(data)], axis=1)
    if args.proba:
        for task, proba in model.predict_proba(data).items():
            out = out.join(proba.add_prefix(f"{task}_proba_"))
    write_table(out, args.out)
    print(f"{len(out)} predictions written to {args.out}")
    return 0


def _evaluate_to(model, data, y, out):
    """Print the metrics table and write metrics.csv, metrics.json and report.html."""
    from .report import write_report  # matplotlib is imported only when reporting

    os.makedirs(out, exist_ok=True)
    table = model.evaluate(data, y)
    with pd.option_context("display.width", 160, "display.max_columns", None):
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    table.to_csv(os.path.join(out, "metrics.csv"), index_label="task")
    records = json.loads(table.to_json(orient="index"))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(records, f, indent=2)
    report = write_report(model, data, y, os.path.join(out, "report.html"))
    print(f"metrics and report written to {out} ({os.path.basename(report)})")


def evaluate(args):
    """Per-task metrics on a labelled table, as a table, CSV, JSON and an HTML report."""
    model = _load_model(args.model, args.images)
    model.set_params(verbose=1)
    data = _read_images_table(args.data, model)
    present = [t for t in model.tasks_ if t in data.columns]
    if not present:
        raise CommandError(
            f"none of the model's targets {list(model.tasks_)} is a column of the data"
        )
    _evaluate_to(model, data, data[present], args.out)
    return 0


def demo(args):
    """Generate the synthetic set, fit, evaluate on the validation rows, write the report."""
    os.makedirs(args.out, exist_ok=True)
    df = make_multitask_images(
        args.n_samples,
        image_size=args.image_size,
        path=os.path.join(args.out, "images"),
        random_state=args.seed,
    )
    y = df[list(TARGETS)]
    print(
        f"{len(df)} synthetic images in {df.attrs['image_root']}; targets {list(TARGETS)}, "
        f"{int(y.isna().sum().sum())} cells missing"
    )
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
    joblib.dump(est, model)
    print(f"model saved to {model}")
    valid = df["is_valid"].to_numpy()
    print("validation metrics (labelled cells only):")
    _evaluate_to(est, df[valid], y[valid], args.out)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sk-multitask",
        description="Train one network that predicts several targets from images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("fit", help="fit a model on a CSV/parquet of image paths and targets")
    p.add_argument("data", help="CSV or parquet file with an image column and target columns")
    p.add_argument("--images", help="folder the image paths are relative to")
    p.add_argument("--targets", required=True, help="comma-separated target columns")
    p.add_argument("--model", required=True, help="where to save the fitted model (joblib)")
    p.add_argument("--image-col", default="filename", help="column with image paths")
    p.add_argument("--valid-col", help="boolean column marking validation rows")
    p.add_argument("--valid-split", default="0.2", help="validation fraction, or none")
    p.add_argument("--tasks", help="task kinds overriding inference: age=regression,...")
    p.add_argument("--backbone", default="resnet18", help="torchvision model name or simple_cnn")
    p.add_argument("--weights", default="DEFAULT", help="torchvision weights, a .pth file, or none")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--augment", action="store_true", help="augment training images")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--cache-dir", help="folder of a disk cache of decoded images (reused)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(run=fit)

    p = commands.add_parser("predict", help="predict every target for a table of images")
    p.add_argument("data", help="CSV or parquet file with the image column")
    p.add_argument("--model", required=True, help="a model saved by 'fit'")
    p.add_argument("--images", help="folder the image paths are relative to (default: the model's)")
    p.add_argument("--proba", action="store_true", help="add class probability columns")
    p.add_argument("--out", required=True, help="output CSV or parquet file")
    p.set_defaults(run=predict)

    p = commands.add_parser("evaluate", help="per-task metrics and an HTML report")
    p.add_argument("data", help="CSV or parquet file with the image column and targets")
    p.add_argument("--model", required=True, help="a model saved by 'fit'")
    p.add_argument("--images", help="folder the image paths are relative to (default: the model's)")
    p.add_argument("--out", required=True, help="folder for metrics.csv, metrics.json, report.html")
    p.set_defaults(run=evaluate)

    p = commands.add_parser("demo", help="generate a synthetic set, fit, evaluate, report")
    p.add_argument("--out", default="demo-output", help="folder for images, model and report")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"sk-multitask {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc):
    """The message on one line; for an error re-raised from a DataLoader worker, its cause."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if "Original Traceback" in str(exc):
        return lines[-1]
    return " ".join(lines) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())

"""The ``sk-multitask`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time

import joblib
import numpy as np

from . import __version__
from .datasets import make_multitask_images
from .datasets._synthetic import TARGETS
from .estimator import MultiTaskImageEstimator


def demo(args):
    """Generate the synthetic set, fit, print per-task validation metrics, save the model."""
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
    last = est.history_[-1]
    print("validation metrics (last epoch, labelled cells only):")
    for name, task in est.tasks_.items():
        metrics = ["acc"] if task.kind == "classification" else ["mae", "rmse"]
        shown = ", ".join(f"{m} {last[f'valid_{name}_{m}']:.3f}" for m in metrics)
        print(f"  {name:<6} {task.kind:<14} {shown}")
    valid = df["is_valid"].to_numpy()
    scores = {n: est.score(df[valid], y.loc[valid, [n]]) for n in est.tasks_}
    print(
        "validation scores (accuracy / R²): "
        + ", ".join(f"{n} {s:.3f}" for n, s in scores.items())
        + f"; mean {np.mean(list(scores.values())):.3f}"
    )
    model = os.path.join(args.out, "model.joblib")
    joblib.dump(est, model)
    print(f"model saved to {model}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sk-multitask",
        description="Train one network that predicts several targets from images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="fit on a generated image set and print metrics")
    p.add_argument("--out", default="demo-output", help="folder for images and model")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

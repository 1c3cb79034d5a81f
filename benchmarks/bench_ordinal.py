"""Ordinal against plain classes, and the ordinal conformal ranges (docs/task_kinds.md).

Real images, offline: scikit-learn's handwritten digits (``load_digits``: 1,797 8x8
scans, written as PNG files and read back by the estimator at ``--image-size`` px). The
target is measured from each image: its ink, the count of dark pixels (above 8 of 16),
cut into six quantile levels ``L1 < ... < L6``. For each seed the rows are shuffled into
60% training, 20% calibration and 20% test rows, and the same network (``simple_cnn``,
same epochs, rate and seed) is fitted twice on the training rows:

- ``ordinal``: the target as an ordered ``Categorical`` (CORN's head, K - 1 outputs);
- ``classes``: the same levels as plain classes (an unordered ``Categorical``: softmax).

Each is calibrated on the calibration rows and measured on the test rows: accuracy and
the mean absolute error in levels (0 the right level, 1 a neighbour...); for the ordinal
model, the coverage and mean size of its conformal ranges at 0.9, and whether every range
is contiguous: the levels whose tail score is at most the conformal threshold, with the
predicted level, recomputed from ``predict_proba`` and compared with the returned
``(lower, upper)``. The classes model's LAC sets are shown beside it.

    python benchmarks/bench_ordinal.py                        # 5 seeds, ~8 min on 2 busy cores
    python benchmarks/bench_ordinal.py --seeds 0 --epochs 2   # a smoke test
    python benchmarks/bench_ordinal.py --out benchmarks/results_ordinal_2026-12-07.txt

The ``*_s`` columns are each fit's seconds, measured on cores shared with other jobs: not
a speed comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.datasets import load_digits

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.targets._ordinal import tail_scores

LEVELS = [f"L{i}" for i in range(1, 7)]
COVERAGE = 0.9


def ink_frame(folder):
    """The digits as PNG files, with ``ink``: six quantile levels of their dark pixels."""
    digits = load_digits()
    names = []
    for i, image in enumerate(digits.images):
        pixels = (255 - image * 255 / 16).astype(np.uint8)  # dark ink on white paper
        names.append(f"digit_{i:04d}.png")
        Image.fromarray(pixels).save(os.path.join(folder, names[-1]))
    dark = (digits.images > 8).sum(axis=(1, 2))
    df = pd.DataFrame({"filename": names, "dark_pixels": dark})
    df["ink"] = pd.qcut(dark, 6, labels=LEVELS)  # ordered: L1 < ... < L6
    df.attrs["image_root"] = folder
    return df


def fit(df, train, calibration, target, seed, args):
    est = MultiTaskImageEstimator(
        image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
        image_size=args.image_size, max_epochs=args.epochs, batch_size=32, lr=args.lr,
        valid_split=None, random_state=seed,
    )  # fmt: skip
    est.fit(train, target.loc[train.index].to_frame("ink"))
    return est.calibrate(calibration, target.loc[calibration.index].to_frame("ink"))


def positions(values):
    return pd.Index(LEVELS).get_indexer(np.asarray(values, dtype=object))


def one_seed(df, seed, args):
    order = np.random.default_rng(seed).permutation(len(df))
    n_train, n_cal = int(0.6 * len(df)), int(0.2 * len(df))
    train = df.iloc[order[:n_train]]
    calibration = df.iloc[order[n_train : n_train + n_cal]]
    test = df.iloc[order[n_train + n_cal :]]
    truth = positions(test["ink"])
    plain = df["ink"].cat.as_unordered()
    row = {"seed": seed}
    for name, target in (("ordinal", df["ink"]), ("classes", plain)):
        start = time.perf_counter()
        est = fit(df, train, calibration, target, seed, args)
        predicted = positions(est.predict(test)["ink"])
        row[f"{name}_mae"] = float(np.abs(predicted - truth).mean())
        row[f"{name}_acc"] = float((predicted == truth).mean())
        frame = est.predict_interval(test, COVERAGE)
        if name == "ordinal":
            lower, upper = positions(frame["ink", "lower"]), positions(frame["ink", "upper"])
            row["range_coverage"] = float(((lower <= truth) & (truth <= upper)).mean())
            row["range_size"] = float((upper - lower + 1).mean())
            q = est.calibration_.quantile("ink", COVERAGE)
            inside = tail_scores(est.predict_proba(test)["ink"].to_numpy()) <= q
            inside[np.arange(len(test)), predicted] = True
            # Contiguous: the levels inside are exactly lower..upper, no gap.
            span = np.arange(len(LEVELS))[None, :]
            row["contiguous"] = bool(
                (inside == ((lower[:, None] <= span) & (span <= upper[:, None]))).all()
            )
        else:
            sets = frame["ink", "set"]
            labels = test["ink"].astype(str).to_numpy()
            covered = [label in s for label, s in zip(labels, sets, strict=True)]
            row["set_coverage"] = float(np.mean(covered))
            row["set_size"] = float(np.mean([len(s) for s in sets]))
        row[f"{name}_s"] = round(time.perf_counter() - start, 1)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--out", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        df = ink_frame(folder)
        rows = [one_seed(df, seed, args) for seed in args.seeds]
    table = pd.DataFrame(rows).set_index("seed")
    means = table.mean(numeric_only=True)
    lines = [
        f"# bench_ordinal.py {vars(args)}",
        f"# {platform.platform()}, torch {torch.__version__}, {len(df)} digits, "
        f"levels {df['ink'].value_counts(sort=False).to_dict()}",
        "",
        table.to_string(float_format=lambda v: f"{v:.3f}"),
        "",
        f"mean over {len(rows)} seeds:",
        means.to_string(float_format=lambda v: f"{v:.3f}"),
        f"ordinal MAE no worse than classes: {means['ordinal_mae'] <= means['classes_mae']}; "
        f"every range contiguous: {bool(table['contiguous'].all())}; "
        f"range coverage within 0.9 +- 0.04: {abs(means['range_coverage'] - COVERAGE) <= 0.04}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

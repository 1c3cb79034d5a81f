"""Images and table columns in one X (``tabular_cols``, docs/tabular.md): quality and cost.

1. Quality, on real images available offline: scikit-learn's handwritten digits
   (``load_digits``: 1,797 8x8 scans written as PNG files, read at 16 px), with two
   added table columns that carry what the image cannot: a number ``z`` (standard
   normal) and a category ``group`` (``"a"`` or ``"b"``). Targets:

   - ``ink_plus_z`` (regression): the scan's standardised ink (its mean darkness, an
     image measure) plus ``z``;
   - ``even_xor_b`` (classification): whether the digit is even XOR ``group == "b"``.

   The same fit (``simple_cnn`` from scratch, same epochs and seed) with and without
   ``tabular_cols=["z", "group"]``; R² and accuracy on held-out rows (a quarter of the
   digits, never seen by the fit). Images alone cannot know ``z`` nor ``group``: their
   R² is about that of the ink alone, their accuracy about a coin's.

2. Cost per epoch (images cached in memory, so an epoch costs what the network costs):
   images only, a handful of table columns (5) and 200 columns, measured interleaved
   (round-robin over the variants, ``--repeats`` rounds, median of each variant's
   epochs after the first), so that the load of other processes falls on all alike.

    OMP_NUM_THREADS=1 python benchmarks/bench_tabular.py   # 5 minutes on a busy 2-core machine
    python benchmarks/bench_tabular.py --quick          # fewer epochs and rounds: a smoke test
    python benchmarks/bench_tabular.py --part cost      # only the cost part
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.datasets import load_digits

from sk_multitask import MultiTaskImageEstimator

TARGETS = ["ink_plus_z", "even_xor_b"]


def digits_with_table(folder, seed=0):
    """The digits as PNG files, the table columns ``z`` and ``group``, the targets and a
    ``held_out`` quarter of the rows."""
    digits = load_digits()
    rng = np.random.RandomState(seed)
    rows = []
    for i, image in enumerate(digits.images):
        pixels = (255 - image * 255 / 16).astype(np.uint8)  # dark ink on white paper
        name = f"digit_{i:04d}.png"
        Image.fromarray(pixels).save(os.path.join(folder, name))
        rows.append((name, int(digits.target[i]), float(image.mean() / 16)))
    df = pd.DataFrame(rows, columns=["filename", "digit", "ink"])
    df["z"] = rng.standard_normal(len(df))
    df["group"] = rng.choice(["a", "b"], len(df))
    ink = (df["ink"] - df["ink"].mean()) / df["ink"].std()
    df["ink_plus_z"] = ink + df["z"]
    df["even_xor_b"] = (df["digit"] % 2 == 0) ^ (df["group"] == "b")
    df["held_out"] = rng.random_sample(len(df)) < 0.25
    df.attrs["image_root"] = folder
    return df


def quality(df, epochs, seed):
    """Held-out R² (``ink_plus_z``) and accuracy (``even_xor_b``), with and without the
    table columns."""
    train, test = df[~df["held_out"]], df[df["held_out"]]
    table = {}
    for name, cols in (("images only", None), ("images + table", ["z", "group"])):
        est = MultiTaskImageEstimator(
            image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
            image_size=16, batch_size=32, max_epochs=epochs, lr=3e-3, valid_split=None,
            tabular_cols=cols, random_state=seed,
        )
        start = time.perf_counter()
        est.fit(train, train[TARGETS])
        metrics = est.evaluate(test, test[TARGETS])
        table[name] = {
            "R2 ink_plus_z": metrics.loc["ink_plus_z", "r2"],
            "accuracy even_xor_b": metrics.loc["even_xor_b", "accuracy"],
            "fit seconds": time.perf_counter() - start,
        }
        if cols is not None:
            print("\nPermutation importance (metric drop), held-out rows:")
            print(est.table_importance(test, test[TARGETS], n_repeats=3, random_state=0)
                  .round(3).to_string())
    return pd.DataFrame(table).T


def cost(df, epochs, repeats, backbone, image_size, n_rows):
    """Median seconds per epoch of each variant, and its ratio to images only."""
    rng = np.random.RandomState(1)
    wide = [f"x{i}" for i in range(200)]
    extra = pd.DataFrame(rng.standard_normal((n_rows, len(wide))), columns=wide)
    extra["c"] = rng.choice(list("pqrs"), n_rows)
    root = df.attrs["image_root"]
    df = pd.concat([df.iloc[:n_rows].reset_index(drop=True), extra], axis=1)
    df.attrs["image_root"] = root
    variants = {
        "images only": None,
        "5 columns": ["z", "group", "x0", "x1", "c"],
        "200 columns": wide,
    }
    seconds = {name: [] for name in variants}
    for _ in range(repeats):
        for name, cols in variants.items():
            est = MultiTaskImageEstimator(
                image_root=df.attrs["image_root"], backbone=backbone, weights=None,
                image_size=image_size, batch_size=32, max_epochs=epochs, valid_split=None,
                cache=True, tabular_cols=cols, random_state=0,
            )
            est.fit(df, df[TARGETS])
            seconds[name] += list(est.history_[1:, "dur"])  # the first epoch warms up
    base = np.median(seconds["images only"])
    return pd.DataFrame({
        name: {"s/epoch (median)": np.median(s), "ratio to images only": np.median(s) / base,
               "epochs measured": len(s)}
        for name, s in seconds.items()
    }).T


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    parser.add_argument("--part", choices=["quality", "cost", "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="simple_cnn", help="the cost part's backbone")
    parser.add_argument("--image-size", type=int, default=32, help="the cost part's size")
    parser.add_argument("--rows", type=int, default=512, help="the cost part's rows")
    parser.add_argument("--repeats", type=int, default=6, help="the cost part's rounds")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        df = digits_with_table(folder, args.seed)
        if args.part in ("quality", "all"):
            epochs = 3 if args.quick else 20
            print(f"\n== Quality: digits + z + group, {epochs} epochs, "
                  f"{(~df['held_out']).sum()} training rows, {df['held_out'].sum()} held out")
            print(quality(df, epochs, args.seed).round(3).to_string())
        if args.part in ("cost", "all"):
            repeats, epochs = (1, 2) if args.quick else (args.repeats, 4)
            size, rows = args.image_size, args.rows
            print(f"\n== Cost per epoch: {args.backbone} (from scratch) at {size} px, "
                  f"{rows} rows, batches of 32, cache=True, {repeats} interleaved rounds of "
                  f"{epochs} epochs")
            print(cost(df, epochs, repeats, args.backbone, size, rows).round(3).to_string())


if __name__ == "__main__":
    main()

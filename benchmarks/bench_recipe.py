"""The training recipe measured: validation quality, not speed (docs/training.md).

Two studies, each averaged over 3 seeds, on the embedded synthetic set and on real images
available offline (scikit-learn's handwritten digits, ``load_digits``: 1,797 8x8 scans,
written to PNG files and read back by the estimator at 32 px):

1. Schedule: the default recipe (``lr_schedule="onecycle"``) against
   ``lr_schedule="constant"``, same epochs, same peak rate, backbone from scratch.
2. Transfer: a backbone pretrained *with the estimator* on the digits 0-4 (its state dict
   saved with ``torch.save``), then fine-tuned on the digits 5-9 with few labels
   (``--per-class`` labelled images a class, batches of 16; the rest of 5-9 for
   validation): the default
   fine-tuning (``weights=<file>``: one frozen epoch, backbone at a tenth of the rate,
   one-cycle) against the same weights trained naively (``freeze_epochs=0,
   backbone_lr_scale=1, lr_schedule="constant"``) and against training from scratch.

Tasks on the digits: ``digit`` (10 classes), ``even`` (bool) and ``ink`` (the
mean darkness of the scan, a regression), 10% of the cells missing. The pretraining and
the transfer see disjoint images (and disjoint classes).

    python benchmarks/bench_recipe.py            # about 10 minutes on 2 CPU cores
    python benchmarks/bench_recipe.py --quick    # one seed, fewer epochs: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.datasets import load_digits

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.datasets import make_multitask_images

SYNTHETIC_TARGETS = ["color", "shape", "area"]
DIGIT_TARGETS = ["digit", "even", "ink"]


def digits_frame(folder, missing_rate=0.1, seed=0):
    """scikit-learn's digits as PNG files and a frame of targets (``digit``, ``even``, ``ink``)."""
    digits = load_digits()
    rng = np.random.RandomState(seed)
    rows = []
    for i, (image, digit) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = (255 - image * 255 / 16).astype(np.uint8)  # dark ink on white paper
        name = f"digit_{i:04d}.png"
        Image.fromarray(pixels).save(os.path.join(folder, name))
        rows.append((name, int(digit), float(image.mean() / 16)))
    df = pd.DataFrame(rows, columns=["filename", "digit_value", "ink"])
    df["digit"] = df["digit_value"].astype(str)
    df["even"] = df["digit_value"] % 2 == 0
    for target in DIGIT_TARGETS:
        missing = rng.random_sample(len(df)) < missing_rate
        df[target] = df[target].astype(object).mask(missing) if target != "ink" else (
            df[target].mask(missing)
        )
    df["is_valid"] = rng.random_sample(len(df)) < 0.2
    df.attrs["image_root"] = folder
    return df


def scores(est, df, targets):
    """Per task on the validation rows: accuracy, or R² for a regression."""
    valid = df[df["is_valid"]]
    return {name: est.score(valid, valid[[name]]) for name in targets}


def estimator(df, seed, **params):
    defaults = dict(
        image_root=df.attrs["image_root"], backbone="simple_cnn", image_size=32,
        batch_size=32, valid_split="is_valid", random_state=seed,
    )
    return MultiTaskImageEstimator(**{**defaults, **params})


def schedule_study(df, targets, seeds, epochs, lr):
    rows = []
    for seed in seeds:
        for schedule in ("onecycle", "constant"):
            start = time.perf_counter()
            est = estimator(df, seed, max_epochs=epochs, lr=lr, lr_schedule=schedule)
            est.fit(df, df[targets])
            rows.append({"seed": seed, "variant": schedule, **scores(est, df, targets)})
            print(f"  seed {seed} {schedule:9s} {rows[-1]} ({time.perf_counter() - start:.0f} s)")
    return pd.DataFrame(rows)


def transfer_study(df, seeds, per_class, pretrain_epochs, epochs, lr, folder):
    value = df["digit_value"]
    source = df[value < 5].copy()
    source["is_valid"] = False
    target = df[value >= 5].copy()
    rows = []
    for seed in seeds:
        pre = estimator(source, seed, max_epochs=pretrain_epochs, lr=lr, valid_split=None)
        pre.fit(source, source[["digit", "ink"]])
        weights = os.path.join(folder, f"pretrained_{seed}.pt")
        torch.save(pre.net_.module_.backbone.state_dict(), weights)
        # Few labels: `per_class` labelled training rows per digit, validated on the rest.
        rng = np.random.RandomState(seed)
        train = target.groupby("digit_value").sample(per_class, random_state=rng).index
        split = target.assign(is_valid=~target.index.isin(train))
        variants = {
            "fine-tune (default)": dict(weights=weights),
            "same weights, naive": dict(
                weights=weights, freeze_epochs=0, backbone_lr_scale=1.0, lr_schedule="constant"
            ),
            "from scratch": dict(weights=None),
        }
        for name, params in variants.items():
            est = estimator(split, seed, max_epochs=epochs, lr=lr, batch_size=16, **params)
            est.fit(split, split[DIGIT_TARGETS])
            rows.append({"seed": seed, "variant": name, **scores(est, split, DIGIT_TARGETS)})
            print(f"  seed {seed} {name:20s} {rows[-1]}")
    return pd.DataFrame(rows)


def summary(frame, targets):
    table = frame.groupby("variant", sort=False)[targets].agg(["mean", "std"])
    return table.round(3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, few epochs")
    parser.add_argument("--out", default=None, help="write the tables as JSON there")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--only", choices=["schedule", "transfer"], help="run one study")
    args = parser.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    epochs = 3 if args.quick else 12
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        synthetic = make_multitask_images(
            1000, image_size=32, missing_rate=0.1, path=os.path.join(folder, "synthetic"),
            random_state=0,
        )
        os.makedirs(os.path.join(folder, "digits"))
        digits = digits_frame(os.path.join(folder, "digits"))

        if args.only != "transfer":
            for name, df, targets in [
                ("synthetic", synthetic, SYNTHETIC_TARGETS),
                ("digits", digits, DIGIT_TARGETS),
            ]:
                print(f"1. schedule, {name} ({len(df)} images), {epochs} epochs")
                table = summary(schedule_study(df, targets, seeds, epochs, 3e-3), targets)
                print(table.to_string())
                results[f"schedule_{name}"] = table
        if args.only != "schedule":
            print(f"2. transfer, digits 0-4 -> 5-9, {args.per_class} labelled images a class")
            table = summary(
                transfer_study(digits, seeds, args.per_class, epochs, epochs, 3e-3, folder),
                DIGIT_TARGETS,
            )
            print(table.to_string())
            results["transfer_digits"] = table
    if args.out:
        with open(args.out, "w") as f:
            json.dump({k: json.loads(v.to_json(orient="split")) for k, v in results.items()}, f,
                      indent=1)


if __name__ == "__main__":
    main()

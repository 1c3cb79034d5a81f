"""How sure is it: conformal coverage, temperature scaling and test-time augmentation.

On generated images (``make_multitask_images``, offline) with a regression target of
known noise (``noisy_area``: the shape's area plus Gaussian noise of standard deviation
``--noise``), for three seeds: fit ``simple_cnn`` on the training rows (no validation
split), calibrate on one half of the held-out rows and measure on the other half:

- coverage and mean width of the regression intervals, coverage and mean size of the
  classification sets, at coverages 0.8, 0.9 and 0.95;
- ECE and log-loss of the classification tasks before and after temperature scaling;
- accuracy (classification) and MAE (regression) without and with test-time augmentation.

Prints one table per measure (means over the seeds, and each seed's figures) in
Markdown, as docs/how_sure.md shows them. Run (about 140 s of CPU time, two cores):

    python benchmarks/calibration.py
    python benchmarks/calibration.py --n 2000 --epochs 15 --seeds 0 1 2 3 4
"""

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.datasets import make_multitask_images
from sk_multitask.evaluation._calibration_metrics import (
    expected_calibration_error,
    interval_scores,
    set_scores,
)
from sk_multitask.targets._outputs import decoders

TASKS = ["color", "shape", "noisy_area"]
COVERAGES = (0.8, 0.9, 0.95)


def one_seed(seed, args):
    """Every measure of one seed, as a list of (table, row, column, value)."""
    df = make_multitask_images(args.n, image_size=args.image_size, random_state=seed)
    df["noisy_area"] = df["area"] + np.random.default_rng(seed).normal(0, args.noise, len(df))
    train, held_out = df.iloc[: args.n_train], df.iloc[args.n_train :]
    calibration, measure = held_out.iloc[::2], held_out.iloc[1::2]
    est = MultiTaskImageEstimator(
        image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
        image_size=args.image_size, max_epochs=args.epochs, batch_size=32, lr=3e-3,
        valid_split=None, random_state=seed,
    )  # fmt: skip
    est.fit(train, train[TASKS]).calibrate(calibration, calibration[TASKS])
    rows = []
    for coverage in COVERAGES:
        frame = est.predict_interval(measure, coverage)
        for task in TASKS:
            labelled = measure[task].notna()
            truth = measure[task][labelled]
            if task == "noisy_area":
                bounds = (frame[task, bound][labelled] for bound in ("lower", "upper"))
                got = interval_scores(truth, *bounds)
                names = ("coverage", "mean width")
            else:
                got = set_scores(truth, frame[task, "set"][labelled])
                names = ("coverage", "mean set size")
            for name, value in zip(names, got, strict=True):
                rows.append(("conformal intervals and sets", f"{task} {name}", coverage, value))
    outputs = est.predict_raw(measure)[0]
    scaled = est.calibration_.scale(outputs)
    for name, decoder in decoders(est.tasks_).items():
        if decoder.kind != "classification":
            continue
        labelled = measure[name].notna().to_numpy()
        codes = decoder.class_codes(measure[name].to_numpy()[labelled])
        classes = np.arange(len(decoder.classes))
        for when, logits in (("before", outputs[name]), ("after", scaled[name])):
            p = decoder.probabilities(np.asarray(logits)[labelled])
            ece, loss = expected_calibration_error(p, codes), log_loss(codes, p, labels=classes)
            rows.append(("temperature scaling", f"{name} ECE", when, ece))
            rows.append(("temperature scaling", f"{name} log-loss", when, loss))
        temperature = est.calibration_.tasks[name].temperature
        rows.append(("fitted temperature", name, "T", temperature))
    for tta in (0, args.tta):
        est.set_params(tta=tta)
        table = est.evaluate(measure, measure[TASKS])
        for task in TASKS:
            metric = "mae" if task == "noisy_area" else "accuracy"
            rows.append(("test-time augmentation", f"{task} {metric}", f"tta={tta}",
                         table.loc[task, metric]))  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=800, help="images per seed")
    parser.add_argument("--n-train", type=int, default=400, help="training rows")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--noise", type=float, default=0.03, help="sd of noisy_area's noise")
    parser.add_argument("--tta", type=int, default=4, help="views of the TTA run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    start = time.perf_counter()
    records = []
    for seed in args.seeds:
        records += [(seed, *row) for row in one_seed(seed, args)]
    frame = pd.DataFrame(records, columns=["seed", "table", "measure", "column", "value"])
    print(
        f"{args.n} images of {args.image_size} px per seed, {args.n_train} training, "
        f"the rest halved (calibrate / measure); simple_cnn, {args.epochs} epochs; "
        f"noisy_area noise sd {args.noise}; seeds {args.seeds}; "
        f"{time.perf_counter() - start:.0f} s in all\n"
    )
    print_tables(frame)


def print_tables(frame):
    """Each table of ``frame`` (columns seed, table, measure, column, value) in Markdown:
    the means over the seeds, then each seed's figures."""
    for table, part in frame.groupby("table", sort=False):
        wide = part.pivot_table(index="measure", columns="column", values="value", sort=False)
        seeds = part.pivot_table(
            index="measure", columns=["column", "seed"], values="value", sort=False
        )
        print(f"## {table}: mean over the seeds\n\n{wide.to_markdown(floatfmt='.3f')}\n")
        print(f"## {table}: per seed\n\n{seeds.to_markdown(floatfmt='.3f')}\n")


if __name__ == "__main__":
    main()

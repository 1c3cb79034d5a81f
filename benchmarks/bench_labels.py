"""Know your labels, measured on real images (docs/labels.md).

scikit-learn's handwritten digits (``load_digits``: 1,797 real 8x8 scans, offline), written
as 32 px PNG files (``bench_recipe.digits_frame``, then resized), with two tasks: ``digit``
(10 classes) and ``ink`` (the scan's mean darkness, a regression). 15% of the cells are
missing; then, among the labelled cells, 6% of the digits are flipped to another digit and
5% of the ink values moved by a large offset (plus or minus 4 standard deviations of ink).

1. ``find_label_issues(cv=5)``: recall and precision of the flagged cells against the
   corrupted ones, per task; that no missing cell is judged.
2. ``suggest_labels``: a model fitted on the noisy table (calibrated on its validation
   rows) ranks the missing cells; against the labels hidden there, the AUROC of its score
   for "the model predicts this cell wrongly" (a digit: the predicted class is not the
   hidden one; ink: the hidden value is outside the model's 90% conformal interval).
3. Cost: one fit on every row, then ``find_label_issues`` with ``cv=5`` and ``n_jobs=1``,
   then ``n_jobs=2`` (two folds at once, one torch thread each), interleaved and repeated;
   the ratios are what to read on a shared machine.

    python benchmarks/bench_labels.py --out benchmarks/results_labels_<date>.txt
    python benchmarks/bench_labels.py --quick     # few epochs, one repeat: a smoke test
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread a process, workers too

import numpy as np
import pandas as pd
import torch
from bench_recipe import digits_frame
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.labels import find_label_issues, suggest_labels

TARGETS = ["digit", "ink"]


def corrupt(y, flip=0.06, offset=0.05, seed=0):
    """``y`` with ``flip`` of the labelled digits flipped to another digit and ``offset``
    of the labelled ink values moved by 4 standard deviations; the corrupted cells."""
    rng = np.random.RandomState(seed)
    noisy = y.copy()
    corrupted = pd.DataFrame(False, index=y.index, columns=y.columns)
    labelled = np.flatnonzero(y["digit"].notna())
    for position in rng.choice(labelled, round(flip * len(labelled)), replace=False):
        given = noisy["digit"].iloc[position]
        noisy.iloc[position, 0] = str(rng.choice([d for d in range(10) if str(d) != given]))
        corrupted.iloc[position, 0] = True
    labelled = np.flatnonzero(y["ink"].notna())
    shift = 4 * y["ink"].std()
    for position in rng.choice(labelled, round(offset * len(labelled)), replace=False):
        noisy.iloc[position, 1] += shift * rng.choice([-1, 1])
        corrupted.iloc[position, 1] = True
    return noisy, corrupted


def estimator(df, epochs):
    return MultiTaskImageEstimator(
        image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
        image_size=32, max_epochs=epochs, lr=3e-3, batch_size=32, valid_split="is_valid",
        random_state=0,
    )


def detection(issues, corrupted, y):
    """Recall and precision of the flags per task; cells judged that are missing in y."""
    rows = []
    for task in TARGETS:
        judged = issues[issues["task"] == task]
        flagged = set(judged.loc[judged["is_label_issue"], "row"])
        truth = set(corrupted.index[corrupted[task]])
        hit = len(flagged & truth)
        rows.append({
            "task": task,
            "labelled": int(y[task].notna().sum()),
            "judged": len(judged),
            "judged but missing": int(y[task].reindex(judged["row"]).isna().sum()),
            "corrupted": len(truth),
            "flagged": len(flagged),
            "recall": hit / len(truth),
            "precision": hit / max(len(flagged), 1),
        })
    return pd.DataFrame(rows).set_index("task")


def suggestion_auroc(est, df, noisy, truth):
    """AUROC of suggest_labels' score for the missing cells the model gets wrong."""
    table = suggest_labels(est, df, noisy)
    intervals = est.predict_interval(df, 0.9)["ink"]
    wrong = []
    for row in table.itertuples():
        hidden = truth.at[row.row, row.task]
        if row.task == "digit":
            wrong.append(row.predicted != hidden)
        else:
            lower, upper = intervals.at[row.row, "lower"], intervals.at[row.row, "upper"]
            wrong.append(not lower <= hidden <= upper)
    table["wrong"] = wrong
    rows = []
    for task, part in [*table.groupby("task"), ("both, across tasks", table)]:
        rows.append({
            "task": task, "missing cells": len(part), "predicted wrongly": int(part.wrong.sum()),
            "AUROC of score": roc_auc_score(part["wrong"], part["score"]),
            "AUROC of uncertainty": roc_auc_score(part["wrong"], part["uncertainty"]),
        })
    return pd.DataFrame(rows).set_index("task")


def timed(function):
    """``function()``, its wall-clock seconds and this process's CPU seconds (the work
    of a fit run here, whatever else the machine runs: torch has one thread)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few epochs, one repeat")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the results (Markdown) there")
    args = parser.parse_args()
    epochs = args.epochs or (3 if args.quick else 10)
    repeats = 1 if args.quick else 2
    torch.set_num_threads(1)
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        df = digits_frame(folder, missing_rate=0.15)
        for name in df["filename"]:  # the scans as 32 px image files, read at their size
            path = os.path.join(folder, name)
            Image.open(path).resize((32, 32), Image.Resampling.BILINEAR).save(path)
        clean = df[TARGETS]
        noisy, corrupted = corrupt(clean)
        # The true labels, missing cells' included: what suggest_labels is measured on.
        truth = pd.DataFrame(
            {"digit": df["digit_value"].astype(str),
             "ink": load_digits().images.mean(axis=(1, 2)) / 16}, index=df.index)
        lines.append(
            f"{len(df)} digits at 32 px; simple_cnn, {epochs} epochs; "
            f"{clean.isna().mean().mean():.0%} of cells missing; "
            f"{int(corrupted['digit'].sum())} digits flipped, "
            f"{int(corrupted['ink'].sum())} ink values offset; torch threads 1 per process; "
            f"{os.cpu_count()} CPU cores shared with other sessions"
        )
        print(lines[-1])
        times = {"fit": [], "find_label_issues cv=5 n_jobs=1": [],
                 "find_label_issues cv=5 n_jobs=2": []}
        cpu = {name: [] for name in times}
        for repeat in range(repeats):
            est, seconds, work = timed(lambda: estimator(df, epochs).fit(df, noisy))
            times["fit"].append(seconds)
            cpu["fit"].append(work)
            for n_jobs in (1, 2):
                name = f"find_label_issues cv=5 n_jobs={n_jobs}"
                issues, seconds, work = timed(lambda n_jobs=n_jobs: find_label_issues(
                    estimator(df, epochs), df, noisy, cv=5, n_jobs=n_jobs, random_state=0))
                times[name].append(seconds)
                cpu[name].append(work if n_jobs == 1 else np.nan)  # workers: not this process
                if repeat == 0 and n_jobs == 1:
                    first = issues
                elif repeat == 0:
                    same = first.equals(issues)
            print({k: [round(v, 1) for v in t] for k, t in times.items()})
        found = detection(first, corrupted, noisy)
        lines += ["", "## find_label_issues, cv=5", "", found.to_markdown(floatfmt=".3f")]
        lines.append(f"\nn_jobs=2 gives the same table as n_jobs=1: {same}")
        lines += ["", "## suggest_labels: the missing cells", "",
                  suggestion_auroc(est, df, noisy, truth).to_markdown(floatfmt=".3f")]
        fit, fit_cpu = np.mean(times["fit"]), np.mean(cpu["fit"])
        cost = pd.DataFrame(
            {"wall s (mean)": {k: np.mean(v) for k, v in times.items()},
             "wall s (runs)": {k: ", ".join(f"{s:.1f}" for s in v) for k, v in times.items()},
             "wall, in fits": {k: np.mean(v) / fit for k, v in times.items()},
             "CPU s (mean)": {k: np.mean(v) for k, v in cpu.items()},
             "CPU, in fits": {k: np.mean(v) / fit_cpu for k, v in cpu.items()}}
        )
        lines += ["", "## cost (interleaved runs)", "", cost.to_markdown(floatfmt=".2f")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

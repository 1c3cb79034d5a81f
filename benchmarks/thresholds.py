"""Each task at its best, on real images: tuned thresholds, the temperature rule, sets.

On scikit-learn's handwritten digits (1,797 real 8x8 scans, offline; as
``bench_recipe.py`` writes them), for several seeds: ``digit`` (10 classes) and ``nine``
("yes" for a 9, about 10% of rows: an imbalanced binary task). ``simple_cnn`` is fitted
on 60% of the rows with ``decision_thresholds="tuned"`` (F1), calibrated and tuned on a
validation 20% (``valid_split``), and measured on the last 20%:

- ``nine``'s held-out F1 at 0.5 and at the tuned threshold, and how many of its labels
  differ after the safe file and after ONNX (``OnnxPredictor``);
- ``digit``'s prediction sets at coverage 0.9: coverage, mean size and the share of
  empty sets, with ``set_method="lac"`` (the sets before) and ``"lac_top"`` (the default);
- the temperatures: fitted by the NLL alone (as before) and under the rule (not below 1
  without ten misses), with the held-out log-loss of each.

Prints Markdown tables (means over the seeds, then each seed). Run (about 20 s for five
seeds on two idle cores; results_thresholds_2026-12-07.txt holds both runs):

    python benchmarks/thresholds.py --seeds 0 1 2 3 4 --epochs 5
    python benchmarks/thresholds.py --seeds 0 1 2 3 4 --epochs 2
"""

import argparse
import copy
import os
import tempfile
import time

import numpy as np
import pandas as pd
from bench_recipe import digits_frame
from calibration import print_tables
from sklearn.metrics import f1_score, log_loss

from sk_multitask import MultiTaskImageEstimator, load
from sk_multitask.evaluation._calibration_metrics import set_scores
from sk_multitask.onnx import OnnxPredictor
from sk_multitask.predicting._calibration import evidenced_temperature, fit_temperature
from sk_multitask.targets._outputs import decoders

TASKS = ["digit", "nine"]


def one_seed(folder, seed, args):
    """Every measure of one seed, as a list of (table, measure, column, value)."""
    df = digits_frame(folder, missing_rate=0.0, seed=seed)
    df["nine"] = np.where(df["digit_value"] == 9, "yes", "no")
    part = np.random.default_rng(seed).random(len(df))
    df["is_valid"] = (part >= 0.6) & (part < 0.8)
    fit_rows, test = df[part < 0.8], df[part >= 0.8]
    est = MultiTaskImageEstimator(
        image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
        image_size=args.image_size, max_epochs=args.epochs, batch_size=32, lr=3e-3,
        valid_split="is_valid", random_state=seed, decision_thresholds="tuned",
    )  # fmt: skip
    est.fit(fit_rows, fit_rows[TASKS])
    rows = []
    truth = test["nine"] == "yes"
    tuned = est.predict(test)
    threshold = est.decision_thresholds_["nine"]
    at_half = copy.copy(est)  # the same network, decided at 0.5
    at_half.decision_thresholds_ = None
    half = at_half.predict(test)
    f1_half = f1_score(truth, half["nine"] == "yes")
    rows.append(("nine: held-out F1", "threshold 0.5", "F1", f1_half))
    rows.append(("nine: held-out F1", "tuned", "F1",
                 f1_score(truth, tuned["nine"] == "yes")))  # fmt: skip
    rows.append(("nine: held-out F1", "tuned", "threshold", threshold))
    safe = load(est.save(os.path.join(folder, f"model{seed}.skmt")))
    onnx = OnnxPredictor(est.export_onnx(os.path.join(folder, f"model{seed}.onnx")))
    for how, model in (("safe file", safe), ("ONNX", onnx)):
        other = model.predict(test)
        for task in TASKS:
            rows.append(("labels that differ from the fitted model's", how, task,
                         int((other[task] != tuned[task]).sum())))  # fmt: skip
    labelled = test["digit"]
    for method in ("lac", "lac_top"):
        sets = est.predict_interval(test, 0.9, set_method=method)["digit", "set"]
        covered, size = set_scores(labelled, sets)
        rows.append(("digit: sets at coverage 0.9", method, "coverage", covered))
        rows.append(("digit: sets at coverage 0.9", method, "mean set size", size))
        empty = sets.map(len).eq(0).mean()
        rows.append(("digit: sets at coverage 0.9", method, "empty sets", empty))
    valid = df[df["is_valid"]]
    valid_outputs, test_outputs = est.predict_raw(valid)[0], est.predict_raw(test)[0]
    for task, decoder in decoders(est.tasks_).items():
        codes = decoder.class_codes(valid[task].to_numpy())
        test_codes = decoder.class_codes(test[task].to_numpy())
        rule, misses, held_back = evidenced_temperature(valid_outputs[task], codes)
        assert rule == est.calibration_.tasks[task].temperature
        for name, temperature in (("NLL alone", fit_temperature(valid_outputs[task], codes)),
                                  ("the rule", rule)):  # fmt: skip
            p = decoder.probabilities(test_outputs[task] / temperature)
            loss = log_loss(test_codes, p, labels=np.arange(decoder.n_outputs))
            rows.append((f"temperature of {task}", name, "T", temperature))
            rows.append((f"temperature of {task}", name, "held-out log-loss", loss))
        rows.append((f"temperature of {task}", "the rule", "validation misses", misses))
        rows.append((f"temperature of {task}", "the rule", "held back", float(held_back)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    start = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            records += [(seed, *row) for row in one_seed(folder, seed, args)]
    frame = pd.DataFrame(records, columns=["seed", "table", "measure", "column", "value"])
    print(
        f"digits (load_digits) at {args.image_size} px; 60% fit, 20% validation (calibrate, "
        f"tune), 20% held out; simple_cnn, {args.epochs} epochs; seeds {args.seeds}; "
        f"{time.perf_counter() - start:.0f} s in all\n"
    )
    print_tables(frame)


if __name__ == "__main__":
    main()

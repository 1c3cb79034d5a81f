"""Do the heatmaps point where each task's answer is? (``explain``, docs/interpretation.md)

Real images built so that we know the answer: two of scikit-learn's handwritten digits
(``load_digits``, 8x8 scans, offline) side by side in one PNG file; the task ``left`` is
the left digit, ``right`` the right one, drawn independently, so that each task is decided
by its half of the image alone. The small CNN is fitted on both tasks at once (80% of the
pairs), then, on the held-out 20%, each task's Grad-CAM heatmap (``est.explain``, of the
predicted digit) is measured: the share of its mass on the task's own half, averaged over
the rows (a map that is all 0 counts 0.5), and the rows whose map puts more than half of
its mass there. The time of ``explain`` per image is measured against ``predict``'s
(interleaved, on the same rows), as a ratio.

    python benchmarks/bench_explain.py            # 3 seeds, two sizes: about 6 minutes
    python benchmarks/bench_explain.py --quick    # one seed, the small size

tests/test_explain.py runs the small size with one seed (600 pairs) as a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from test_explain import digit_pairs, own_half_mass  # noqa: E402

from sk_multitask import MultiTaskImageEstimator  # noqa: E402


def run(n, size, seed, epochs):
    """One fit on ``n`` pairs at ``size``; the held-out rows' measurements."""
    with tempfile.TemporaryDirectory() as folder:
        data = digit_pairs(folder, n, size, seed=seed)
        est = MultiTaskImageEstimator(
            image_root=folder, backbone="simple_cnn", image_size=size, max_epochs=epochs,
            batch_size=32, valid_split="is_valid", random_state=seed,
        )
        start = time.perf_counter()
        est.fit(data, data[["left", "right"]])
        fit_s = time.perf_counter() - start
        valid = data[data["is_valid"]]
        row = {"pairs": n, "size": f"{size[0]}x{size[1]}", "seed": seed, "fit_s": fit_s}
        for task in ("left", "right"):
            row[f"{task}_acc"] = est.score(valid, valid[[task]])
            mass = own_half_mass(est.explain(valid, task), task)
            row[f"{task}_mass"] = mass.mean()
            row[f"{task}_rows_over_half"] = (mass > 0.5).mean()
        explain_s, predict_s = [], []
        for _ in range(3):  # interleaved: the machine's load hits both alike
            start = time.perf_counter()
            est.predict(valid)
            predict_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            est.explain(valid, "left")
            explain_s.append(time.perf_counter() - start)
        row["explain_ms_per_image"] = 1000 * min(explain_s) / len(valid)
        row["explain_over_predict"] = min(explain_s) / min(predict_s)
        return row


def main():
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    settings = [(600, (24, 48), 8)] if args.quick else [(600, (24, 48), 8), (1500, (32, 64), 8)]
    seeds = [0] if args.quick else [0, 1, 2]
    rows = []
    for n, size, epochs in settings:
        for seed in seeds:
            rows.append(run(n, size, seed, epochs))
            print(pd.Series(rows[-1]).to_string(), "\n", flush=True)
    table = pd.DataFrame(rows)
    means = table.groupby(["pairs", "size"]).mean(numeric_only=True).drop(columns="seed")
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.round(3).to_string(index=False))
        print("\nmean over seeds:\n" + means.round(3).to_string())


if __name__ == "__main__":
    main()

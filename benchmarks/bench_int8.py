"""int8 against float ONNX: the predictor's speed, the files' sizes, each task's quality.

Two parts, in one run:

1. **Speed** (``--speed``): the small CNN and resnet18 at 224 px (``weights=None``: the
   speed does not depend on the weights' values), each fitted one epoch on generated
   images, exported in float and in int8 (calibrated on ``--calibration`` generated
   images). ``OnnxPredictor.predict`` on one uint8 array (the images decoded once: the
   network and the predictor's own work are timed, not the JPEG decoder), at batch 32 and
   batch 1, float and int8 **interleaved** (their order swapped every round) over
   ``--rounds`` rounds, so that a slow spell of a shared machine hits both alike. Prints
   images/s per round, the medians, the int8/float speed-up of the medians, and the sizes
   of the files.
2. **Quality** (``--quality``): real images, scikit-learn's handwritten digits
   (``load_digits``: 1,797 8x8 scans written to PNG files, read at 32 px) with the tasks of
   ``bench_recipe.py``: ``digit`` (10 classes), ``even`` (bool) and ``ink`` (a
   regression). The small CNN and resnet18 trained from scratch on 70% of the scans,
   exported in int8 calibrated on 256 training images (with the export's per-task check on
   them), then both files scored per task (accuracy, R²) on the 30% held out.

Run (from the repository root; about 15 minutes on 2 busy CPU cores):

    python benchmarks/bench_int8.py --threads 1 --out benchmarks/results_int8_<date>.txt
    python benchmarks/bench_int8.py --quick       # a smoke test: few rounds, few epochs
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import onnxruntime
import pandas as pd
import torch

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.datasets import make_multitask_images
from sk_multitask.inputs._decoding import read_image
from sk_multitask.onnx import OnnxPredictor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_recipe import DIGIT_TARGETS, digits_frame  # noqa: E402

SYNTHETIC_TARGETS = ["color", "shape", "area"]


def images_array(df, size):
    root = df.attrs["image_root"]
    return np.stack([read_image(os.path.join(root, name), size) for name in df["filename"]])


def quiet_fit(est, X, y):
    with warnings.catch_warnings():  # small images upsampled: on purpose
        warnings.simplefilter("ignore", UserWarning)
        return est.fit(X, y)


def speed(args, folder, options, out):
    size = 224
    df = make_multitask_images(
        max(args.calibration, 64), image_size=64, path=os.path.join(folder, "gen"), random_state=0
    )
    array = images_array(df, size)
    calibration = df.iloc[: args.calibration]
    models, sizes = {}, {}
    for backbone in ("simple_cnn", "resnet18"):
        est = MultiTaskImageEstimator(
            image_root=df.attrs["image_root"], backbone=backbone, weights=None,
            image_size=size, max_epochs=1, batch_size=32, valid_split=None, random_state=0,
        )  # fmt: skip
        quiet_fit(est, df.iloc[:32], df[SYNTHETIC_TARGETS].iloc[:32])
        paths = {
            "float": est.export_onnx(os.path.join(folder, f"{backbone}.onnx")),
            "int8": est.export_onnx(
                os.path.join(folder, f"{backbone}_int8.onnx"), "int8", calibration_X=calibration
            ).path,
        }
        for kind, path in paths.items():
            sizes[backbone, kind] = os.path.getsize(path)
            for batch in (32, 1):
                predictor = OnnxPredictor(path, batch_size=batch, session_options=options)
                predictor.predict(array[:batch])  # warm up
                models[backbone, batch, kind] = predictor
    counts = {32: 64, 1: args.single}  # images per timing: two batches of 32; single images
    seconds = {key: [] for key in models}
    for round_ in range(1, args.rounds + 1):
        line = []
        for backbone in ("simple_cnn", "resnet18"):
            for batch in (32, 1):
                kinds = ("float", "int8") if round_ % 2 else ("int8", "float")
                for kind in kinds:
                    X = array[: counts[batch]]
                    start = time.perf_counter()
                    models[backbone, batch, kind].predict(X)
                    seconds[backbone, batch, kind].append(time.perf_counter() - start)
                    rate = counts[batch] / seconds[backbone, batch, kind][-1]
                    line.append(f"{backbone} b{batch} {kind} {rate:7.1f}")
        out(f"round {round_}: " + " | ".join(line))
    out("")
    out("medians, images/s (ONNX predictor, uint8 arrays of 224 px):")
    out(f"{'model':<12}{'batch':>6}{'float':>10}{'int8':>10}{'int8/float':>12}")
    for backbone in ("simple_cnn", "resnet18"):
        for batch in (32, 1):
            rates = {
                kind: counts[batch] / statistics.median(seconds[backbone, batch, kind])
                for kind in ("float", "int8")
            }
            ratio = rates["int8"] / rates["float"]
            row = f"{rates['float']:>10.1f}{rates['int8']:>10.1f}{ratio:>12.2f}"
            out(f"{backbone:<12}{batch:>6}{row}")
    out("")
    out("file sizes:")
    for backbone in ("simple_cnn", "resnet18"):
        small, large = sizes[backbone, "int8"], sizes[backbone, "float"]
        out(f"{backbone:<12} float {large / 2**20:7.2f} MiB  int8 {small / 2**20:7.2f} MiB  "
            f"int8/float {small / large:.2f}")  # fmt: skip


def quality(args, folder, out):
    images = os.path.join(folder, "digits")
    os.makedirs(images)
    df = digits_frame(images, missing_rate=0.0)
    rng = np.random.RandomState(0)
    test = rng.random_sample(len(df)) < 0.3
    train, held_out = df[~test].assign(is_valid=False), df[test]
    out(f"digits: {len(train)} training scans, {len(held_out)} held out; tasks {DIGIT_TARGETS}")
    epochs = 3 if args.quick else args.epochs
    for backbone in ("simple_cnn", "resnet18"):
        start = time.perf_counter()
        est = MultiTaskImageEstimator(
            image_root=images, backbone=backbone, weights=None, image_size=32,
            max_epochs=epochs, batch_size=32, valid_split=None, random_state=0,
        )  # fmt: skip
        quiet_fit(est, train, train[DIGIT_TARGETS])  # 8 px scans read at 32: on purpose
        fitted = time.perf_counter() - start
        calibration = train.sample(256, random_state=0)
        float_path = est.export_onnx(os.path.join(folder, f"digits_{backbone}.onnx"))
        result = est.export_onnx(
            os.path.join(folder, f"digits_{backbone}_int8.onnx"), "int8",
            calibration_X=calibration, calibration_y=calibration[DIGIT_TARGETS],
        )  # fmt: skip
        y = held_out[DIGIT_TARGETS]
        scores = {}
        for kind, path in (("float", float_path), ("int8", result.path)):
            table = OnnxPredictor(path).evaluate(held_out, y)
            scores[kind] = {
                name: table.loc[name, "r2" if name == "ink" else "accuracy"]
                for name in DIGIT_TARGETS
            }
        frame = pd.DataFrame(scores)
        frame.insert(0, "metric", ["r2" if name == "ink" else "accuracy" for name in frame.index])
        frame["drop"] = frame["float"] - frame["int8"]
        out("")
        out(f"{backbone}, {epochs} epochs from scratch at 32 px ({fitted:.0f} s to fit)")
        out("  the export's check, on its 256 calibration rows (training rows):")
        out(indent(result.check.to_string(float_format=lambda v: f"{v:.4f}")))
        out(f"  held out ({len(held_out)} scans):")
        out(indent(frame.to_string(float_format=lambda v: f"{v:.4f}")))
        out(f"  largest drop on held-out rows: {frame['drop'].max():.4f}")


def indent(text):
    return "\n".join("    " + line for line in text.splitlines())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--single", type=int, default=16, help="images timed at batch 1")
    parser.add_argument("--calibration", type=int, default=128, help="images (speed part)")
    parser.add_argument("--epochs", type=int, default=10, help="of the quality part")
    parser.add_argument("--threads", type=int, default=None, help="of ONNX Runtime and torch")
    parser.add_argument("--speed", action="store_true", help="only the speed part")
    parser.add_argument("--quality", action="store_true", help="only the quality part")
    parser.add_argument("--quick", action="store_true", help="3 rounds, 3 epochs")
    parser.add_argument("--out", help="also write what is printed there")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.single, args.calibration = 3, 4, 32
    options = onnxruntime.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
        torch.set_num_threads(args.threads)
    log = io.StringIO()

    def out(line):
        print(line, flush=True)
        log.write(line + "\n")

    out(f"python benchmarks/bench_int8.py {' '.join(sys.argv[1:])}")
    out(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; onnxruntime "
        f"{onnxruntime.__version__} ({args.threads or 'default'} threads), torch "
        f"{torch.__version__}; {os.cpu_count()} CPUs; load average at start "
        f"{os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as folder:
        if not args.quality:
            speed(args, folder, options, out)
        if not args.speed:
            quality(args, folder, out)
    out(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            file.write(log.getvalue())


if __name__ == "__main__":
    main()

"""ONNX Runtime (OnnxPredictor) against the estimator's own predict, on the CPU.

Fits one estimator (1 epoch) on generated JPEGs, exports it to ONNX, then times
``predict`` of both on the same files (a DataFrame of paths: decoding included) and on
the same uint8 array, in interleaved rounds so that a slow spell of the machine hits
both alike. Prints images/s per round, the medians, and the ratio of the median times
(ONNX / estimator: below 1 means ONNX is faster). Both use the estimator's batch size.
Run:

    python benchmarks/bench_onnx.py                                  # simple_cnn, 32 px
    python benchmarks/bench_onnx.py --backbone resnet18 --image-size 64 --n 1000
"""

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import onnxruntime
import torch

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.datasets import make_multitask_images
from sk_multitask.inputs._decoding import read_image
from sk_multitask.onnx import OnnxPredictor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--backbone", default="simple_cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="of torch and ONNX Runtime (default: theirs)"
    )
    args = parser.parse_args()
    options = onnxruntime.SessionOptions()
    if args.threads:
        torch.set_num_threads(args.threads)
        options.intra_op_num_threads = args.threads
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
        f"{onnxruntime.__version__} ({args.threads or 'default'} threads), {os.cpu_count()} "
        f"CPUs, load average {os.getloadavg()[0]:.1f}; {args.n} images of "
        f"{args.image_size} px, {args.backbone}, batch {args.batch_size}"
    )
    with tempfile.TemporaryDirectory() as folder:
        df = make_multitask_images(
            args.n, image_size=args.image_size, path=os.path.join(folder, "images"), random_state=0
        )
        est = MultiTaskImageEstimator(
            image_root=df.attrs["image_root"],
            backbone=args.backbone,
            weights=None,
            image_size=args.image_size,
            max_epochs=1,
            batch_size=args.batch_size,
            valid_split=None,
            random_state=0,
        ).fit(df, df[["color", "shape", "area"]])
        path = est.export_onnx(os.path.join(folder, "model.onnx"))
        predictor = OnnxPredictor(path, session_options=options)
        root = df.attrs["image_root"]
        array = np.stack([read_image(os.path.join(root, f), args.image_size) for f in df.filename])
        inputs = {"files": df, "array": array}
        for X in inputs.values():  # warm up, and check that both agree
            assert predictor.predict(X)["shape"].equals(est.predict(X)["shape"])
        models = {"estimator": est, "onnx": predictor}
        seconds = {(i, m): [] for i in inputs for m in models}
        for round_ in range(1, args.rounds + 1):
            line = []
            for input_name, X in inputs.items():
                for model_name, model in models.items():
                    start = time.perf_counter()
                    model.predict(X)
                    elapsed = time.perf_counter() - start
                    seconds[input_name, model_name].append(elapsed)
                    line.append(f"{input_name}/{model_name} {args.n / elapsed:7.0f} img/s")
            print(f"round {round_}: " + ", ".join(line))
    print(f"\n{'input':<8}{'model':<11}{'median s':>10}{'img/s':>9}{'onnx/estimator':>16}")
    for input_name in inputs:
        medians = {m: statistics.median(seconds[input_name, m]) for m in models}
        for model_name, median in medians.items():
            ratio = f"{medians['onnx'] / medians['estimator']:.3f}" if model_name == "onnx" else ""
            speed = args.n / median
            print(f"{input_name:<8}{model_name:<11}{median:>10.3f}{speed:>9.0f}{ratio:>16}")


if __name__ == "__main__":
    main()

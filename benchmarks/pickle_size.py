"""The size of a fitted model's pickle against its safe file, and the pickle's round trip.

Fits a resnet18 (random weights, so nothing is downloaded) for one epoch on a few
generated 32 px images, then writes the safe file (``est.save``), the joblib pickle with
``warm_start=False`` (parameters and the safe file's bytes: no second copy of the
network) and with ``warm_start=True`` (the optimizer's state too: AdamW keeps two
moments per weight), and the skops file. Prints each size, its ratio to the safe file,
and the seconds ``joblib.load`` takes; checks that the loaded pickle predicts as the
fitted model. Issue 19 asks for a pickle of at most 1.3x the safe file with
``warm_start=False`` (before lean pickles: 179 MB against 45 MB). Run:

    python benchmarks/pickle_size.py                       # resnet18
    python benchmarks/pickle_size.py --backbone resnet50
"""

import argparse
import os
import tempfile
import time

import joblib

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.datasets import make_multitask_images


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--n", type=int, default=32, help="images")
    args = parser.parse_args()
    folder = tempfile.mkdtemp()
    df = make_multitask_images(
        args.n, image_size=32, path=os.path.join(folder, "images"), random_state=0
    )
    y = df[["color", "shape", "area"]]
    est = MultiTaskImageEstimator(
        image_root=df.attrs["image_root"], backbone=args.backbone, weights=None,
        image_size=32, max_epochs=1, batch_size=16, valid_split=None, random_state=0,
        device="cpu",
    ).fit(df, y)  # fmt: skip
    safe = os.path.getsize(est.save(os.path.join(folder, "model.skmt")))
    print(f"{args.backbone}, 1 epoch on {args.n} images of 32 px")
    print(f"{'file':<34}{'MB':>9}{'x safe':>9}{'load s':>9}")
    print(f"{'safe file (est.save)':<34}{safe / 1e6:>9.2f}{1:>9.2f}")
    for warm_start in (False, True):
        est.set_params(warm_start=warm_start)
        path = os.path.join(folder, f"model-{warm_start}.joblib")
        joblib.dump(est, path)
        start = time.perf_counter()
        loaded = joblib.load(path)
        seconds = time.perf_counter() - start
        assert loaded.predict(df).equals(est.predict(df)), "the pickle predicts otherwise"
        size = os.path.getsize(path)
        name = f"joblib pickle, warm_start={warm_start}"
        print(f"{name:<34}{size / 1e6:>9.2f}{size / safe:>9.2f}{seconds:>9.2f}")
    try:
        import skops.io
    except ImportError:
        return
    est.set_params(warm_start=False)
    path = os.path.join(folder, "model.skops")
    skops.io.dump(est, path)
    size = os.path.getsize(path)
    print(f"{'skops file':<34}{size / 1e6:>9.2f}{size / safe:>9.2f}")


if __name__ == "__main__":
    main()

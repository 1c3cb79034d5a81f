"""The disk cache (``cache_dir``) in a hyperparameter search, and its memory.

Two measurements, each run in fresh processes, interleaved round by round (each round in a
rotated order) so that a slow spell of the machine hits every variant alike:

- ``--search`` (default): wall time of a 3-fold x 2-candidate ``GridSearchCV`` (and its
  refit) of the small CNN on generated JPEG files stored larger than the training size
  (decoding includes a resize), with ``cache=False`` (every fit streams every image every
  epoch), the default ``cache="auto"`` (every fit decodes its images once into memory)
  and ``cache_dir`` (a fresh folder per run: the images are decoded once for the whole
  search, then read from the cache by every fit);
- ``--memory``: peak resident memory of ``fit`` and ``predict`` with ``cache_dir`` on
  2,000 against 20,000 files, with ``cache_max_bytes`` set below the decoded size of the
  larger set (a set larger than the in-memory budget).

    python benchmarks/bench_scaling.py --search     # docs/scaling.md
    python benchmarks/bench_scaling.py --memory

The per-epoch cost of the default fit against ``cache=True`` and the compute-only loop is
measured by ``python benchmarks/bench_training.py --variants est-default,est-cache,loop-memory``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

TARGETS = ["color", "shape", "area"]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def estimator(args, df, **params):
    from sk_multitask import MultiTaskImageEstimator

    return MultiTaskImageEstimator(
        image_root=df.attrs["image_root"], backbone="simple_cnn", weights=None,
        image_size=args.image_size, max_epochs=args.epochs, batch_size=64,
        valid_split=None, random_state=0, **params,
    )


def child_search(args):
    from sklearn.model_selection import GridSearchCV, KFold

    df = read_set(args.data)
    params = {"cache_dir": args.cache_dir} if args.variant == "cache_dir" else {}
    if args.variant == "stream":
        params["cache"] = False
    search = GridSearchCV(estimator(args, df, **params), {"lr": [1e-3, 3e-3]}, cv=KFold(3))
    start = time.perf_counter()
    search.fit(df, df[TARGETS])
    return {"seconds": time.perf_counter() - start, "best": search.best_score_}


def child_memory(args):
    df = read_set(args.data)
    est = estimator(args, df, cache_dir=args.cache_dir, cache_max_bytes=args.budget)
    est.fit(df, df[TARGETS])
    fit_peak = peak_rss_mb()
    est.predict(df)
    return {"fit_peak_mb": fit_peak, "peak_mb": peak_rss_mb()}


def read_set(folder):
    import pandas as pd

    df = pd.read_csv(os.path.join(folder, "index.csv"))
    df.attrs["image_root"] = folder
    return df


def make_set(n, stored_size, folder):
    from sk_multitask.datasets import make_multitask_images

    df = make_multitask_images(n, image_size=stored_size, path=folder, random_state=0)
    df.to_csv(os.path.join(folder, "index.csv"), index=False)
    return folder


def spawn(args, mode, variant, data, cache_dir):
    command = [sys.executable, __file__, "--child", mode, "--variant", variant, "--data", data,
               "--cache-dir", cache_dir, "--image-size", str(args.image_size),
               "--epochs", str(args.epochs), "--budget", str(args.budget)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def search(args, tmp):
    data = make_set(args.n, args.stored_size, os.path.join(tmp, "set"))
    variants = ["stream", "auto", "cache_dir"]
    runs = {v: [] for v in variants}
    for round_ in range(args.rounds):
        shift = round_ % len(variants)  # each round in a rotated order
        for variant in variants[shift:] + variants[:shift]:
            cache_dir = os.path.join(tmp, f"cache-{variant}-{round_}")  # cold for every run
            runs[variant].append(spawn(args, "search", variant, data, cache_dir))
            print(f"round {round_ + 1} {variant:<10} {runs[variant][-1]['seconds']:7.1f} s",
                  flush=True)
    medians = {v: statistics.median(r["seconds"] for r in runs[v]) for v in variants}
    print(f"\n3-fold x 2-candidate GridSearchCV (+ refit), {args.n} JPEGs of "
          f"{args.stored_size} px trained at {args.image_size} px, {args.epochs} epochs, "
          f"median of {args.rounds} rounds:")
    for variant in variants:
        print(f"  {variant:<10} {medians[variant]:7.1f} s   "
              f"ratio to cache=False {medians[variant] / medians['stream']:.3f}")
    print(f"  cache_dir / default (auto): {medians['cache_dir'] / medians['auto']:.3f}")


def memory(args, tmp):
    small_n, large_n = args.sizes
    small, large = f"{small_n:,}", f"{large_n:,}"
    sets = {small: make_set(small_n, args.image_size, os.path.join(tmp, "small")),
            large: make_set(large_n, args.image_size, os.path.join(tmp, "large"))}
    decoded_mb = large_n * 3 * args.image_size**2 / 2**20
    print(f"budget (cache_max_bytes) {args.budget / 2**20:.1f} MB; the {large} images decoded: "
          f"{decoded_mb:.1f} MB")
    results = {}
    for round_ in range(args.rounds):
        for name, data in sets.items():
            cache_dir = os.path.join(tmp, f"cache-{round_}-{name}")  # built within the fit
            r = spawn(args, "memory", "cache_dir", data, cache_dir)
            results.setdefault(name, []).append(r)
            print(f"round {round_ + 1} {name:>6} files: peak RSS {r['fit_peak_mb']:.0f} MB by "
                  f"the end of fit, {r['peak_mb']:.0f} MB after predicting them all", flush=True)
    for key, label in (("fit_peak_mb", "fit"), ("peak_mb", "fit + predict")):
        low = max(r[key] for r in results[small])
        high = max(r[key] for r in results[large])
        print(f"{label:<14} peak RSS (max over rounds): {small} files {low:.0f} MB, "
              f"{large} files {high:.0f} MB, growth {high - low:+.0f} MB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", action="store_true", help="the search timing (default)")
    parser.add_argument("--memory", action="store_true", help="instead: peak RSS, cache_dir")
    parser.add_argument("--n", type=int, default=1000, help="images of the search")
    parser.add_argument("--stored-size", type=int, default=128, help="px of the JPEG files")
    parser.add_argument("--image-size", type=int, default=32, help="px of training")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000],
                        help="the two set sizes of --memory")
    parser.add_argument("--budget", type=int, default=16 * 2**20,
                        help="cache_max_bytes of --memory (bytes)")
    parser.add_argument("--child", choices=["search", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = child_search if args.child == "search" else child_memory
        print(json.dumps(run(args)))
        return 0
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores; simple_cnn, "
          f"{args.rounds} interleaved rounds")
    with tempfile.TemporaryDirectory() as tmp:
        (memory if args.memory else search)(args, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())

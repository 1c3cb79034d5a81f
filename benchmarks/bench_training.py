"""MultiTaskImageEstimator against a hand-written PyTorch loop, on the same JPEG files.

Variants, each trained on the same generated images (``make_multitask_images``) with the
same model (``MultiTaskModule`` + ``MaskedMultiTaskLoss``), optimizer, batch size and epochs:

- ``est-files``:  (a) the estimator, from the JPEG files;
- ``loop-files``: (b) a plain PyTorch loop, with a DataLoader decoding the same files;
- ``est-array``:  (a) the estimator, from an in-memory uint8 array of the images;
- ``loop-array``: (b) the loop, with a DataLoader over the same array;
- ``est-cache``:  the estimator with ``cache=True`` (files decoded once, kept in memory);
- ``est-default``: the estimator with its default ``cache="auto"`` and ``num_workers="auto"``
  (no argument for either);
- ``loop-memory``: (c) the loop on pre-decoded tensors in memory, batches by indexing:
  the compute-only limit;
- ``loop-files-sync``: (b) with ``loss.item()`` after every batch, as skorch records each
  batch's loss: on a GPU it waits for the batch to finish before the next is fetched
  (a diagnosis: how much of (a)/(b) that wait explains).

Each variant runs in a fresh process (so that its peak memory is its own), and the variants
are interleaved round by round, each round in a rotated order (A B C, B C A, ...), so that a
slow spell of the machine, or a warm-up, hits them alike. Per variant it prints the median
seconds per epoch (epoch 1 apart, it holds start-up costs), images/s, the median time of a
prediction over all images (several per run), and the peak resident memory (the process and
its DataLoader workers). Then the ratios: of the medians, and paired (the median over rounds
of the ratio within a round).

    python benchmarks/bench_training.py                  # 2-core CPU figures (docs/performance.md)
    python benchmarks/bench_training.py --backbone resnet18 --image-size 128 --device cuda
    python benchmarks/bench_training.py --memory         # peak RSS, 2,000 vs 20,000 files
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

import numpy as np
import torch
from PIL import Image

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.datasets import make_multitask_images
from sk_multitask.network._backbones import build_backbone
from sk_multitask.network._loss import MaskedMultiTaskLoss
from sk_multitask.network._model import MultiTaskModule
from sk_multitask.targets import encode_targets, fit_tasks
from sk_multitask.training._config import TrainingConfig, resolve_num_workers

TARGETS = ["color", "shape", "area"]
PEAKS = {}  # peak RSS at the end of fit, before predicting
VARIANTS = ["est-files", "loop-files", "est-array", "loop-array", "est-cache", "loop-memory",
            "est-default"]  # and loop-files-sync, on a GPU: --variants


# -- the hand-written loop (b, c) -------------------------------------------------------


class FileDataset(torch.utils.data.Dataset):
    """What a user writes: decode with PIL, resize, to a uint8 tensor."""

    def __init__(self, paths, targets, size):
        self.paths, self.targets, self.size = paths, torch.as_tensor(targets), size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            img = img.convert("RGB")
            if img.size != (self.size, self.size):
                img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
            image = torch.from_numpy(np.array(img)).permute(2, 0, 1)
        return image, self.targets[i]


class ArrayDataset(torch.utils.data.Dataset):
    def __init__(self, images, targets):
        self.images, self.targets = images, torch.as_tensor(targets)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]).permute(2, 0, 1), self.targets[i]


def build_model(args, tasks):
    backbone, n_features, (mean, std) = build_backbone(
        args.backbone, None, (args.image_size, args.image_size))
    module = MultiTaskModule(backbone, n_features, {n: t.n_outputs for n, t in tasks.items()},
                             mean, std)
    criterion = MaskedMultiTaskLoss([(n, t.kind, t.n_outputs) for n, t in tasks.items()])
    return module, criterion


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_loop(args, df, variant):
    fit_start = time.perf_counter()
    y = df[TARGETS]
    tasks = fit_tasks(y)
    targets = encode_targets(y, tasks)
    module, criterion = build_model(args, tasks)
    device = args.device
    # The same compute as the estimator's: channels-last input (and weights on CUDA).
    module.channels_last = args.channels_last
    if device.startswith("cuda") and args.channels_last:
        module.to(memory_format=torch.channels_last)
    module.to(device)
    criterion.to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    paths = [os.path.join(df.attrs["image_root"], f) for f in df["filename"]]
    workers = args.num_workers
    loader_args = dict(num_workers=workers, persistent_workers=workers > 0,
                       pin_memory=device.startswith("cuda"))
    if variant == "loop-memory":
        decoded = FileDataset(paths, targets, args.image_size)
        images = torch.stack([decoded[i][0] for i in range(len(decoded))]).to(device)
        y_all = torch.as_tensor(targets).to(device)
        loader = None
    else:
        dataset = (FileDataset(paths, targets, args.image_size) if variant != "loop-array"
                   else ArrayDataset(load_array(paths), targets))
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                             drop_last=True, **loader_args)
    epochs = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        module.train()
        if loader is None:
            order = torch.randperm(len(images), device=device)
            n_batches = len(images) // args.batch_size
            batches = ((images[idx], y_all[idx]) for idx in
                       order[: n_batches * args.batch_size].view(n_batches, -1))
        else:
            batches = loader
        for x, yb in batches:
            x = x.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(module(x), yb)
            loss.backward()
            optimizer.step()
            if variant == "loop-files-sync":
                loss.item()
        sync(device)
        epochs.append(time.perf_counter() - start)
    fit_total = time.perf_counter() - fit_start

    array = load_array(paths) if variant == "loop-array" else None

    def predict():
        module.eval()
        dataset = (FileDataset(paths, targets, args.image_size) if array is None
                   else ArrayDataset(array, targets))
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, **loader_args)
        with torch.no_grad():
            return torch.cat([module(x.to(device, non_blocking=True)).cpu() for x, _ in loader])

    return epochs, statistics.median(timed(predict) for _ in range(args.predict_repeats)), fit_total


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


# -- the estimator (a) ------------------------------------------------------------------


def run_estimator(args, df, variant):
    # est-default: the estimator's defaults for the cache and the DataLoader workers.
    settings = ({} if variant == "est-default"
                else {"cache": variant == "est-cache", "num_workers": args.num_workers})
    est = MultiTaskImageEstimator(
        image_root=df.attrs["image_root"], backbone=args.backbone, weights=None,
        image_size=args.image_size, max_epochs=args.epochs, batch_size=args.batch_size,
        valid_split=None, device=args.device, random_state=0, **settings,
    )
    X = df
    if variant == "est-array":
        X = load_array([os.path.join(df.attrs["image_root"], f) for f in df["filename"]])
    start = time.perf_counter()
    est.fit(X, df[TARGETS])
    fit_total = time.perf_counter() - start
    PEAKS["fit"] = peak_rss_mb()
    epochs = list(est.history_[:, "dur"])
    predict = statistics.median(timed(lambda: est.predict(X)) for _ in range(args.predict_repeats))
    return epochs, predict, fit_total


def load_array(paths):
    return np.stack([np.array(Image.open(p).convert("RGB")) for p in paths])


# -- driver -----------------------------------------------------------------------------


def peak_rss_mb():
    """Peak resident memory of this process and of its finished children (workers), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def child(args):
    """Run one variant in this process and print its figures as JSON."""
    df = read_set(args.data)
    torch.manual_seed(0)
    run = run_estimator if args.variant.startswith("est") else run_loop
    epochs, predict, fit_total = run(args, df, args.variant)
    print(json.dumps({"variant": args.variant, "epochs": epochs, "predict": predict,
                      "fit_total": fit_total, "peak_rss_mb": peak_rss_mb(),
                      "peak_rss_fit_mb": PEAKS.get("fit"), "n": len(df)}))


def read_set(folder):
    import pandas as pd

    df = pd.read_csv(os.path.join(folder, "index.csv"))
    df.attrs["image_root"] = folder
    return df


def spawn(args, variant, data, n=None):
    command = [sys.executable, __file__, "--child", "--variant", variant, "--data", data]
    for name in ("image_size", "backbone", "epochs", "batch_size", "num_workers", "device",
                 "predict_repeats"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if not args.channels_last:
        command.append("--nchw-loops")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def make_set(n, image_size, folder):
    df = make_multitask_images(n, image_size=image_size, path=folder, random_state=0)
    df.to_csv(os.path.join(folder, "index.csv"), index=False)
    return folder


def summarise(runs, batch_size):
    rows = {}
    for variant, results in runs.items():
        steady = [e for r in results for e in r["epochs"][1:]]
        per_epoch = statistics.median(steady)
        n = results[0]["n"]
        rows[variant] = {
            "epoch1_s": statistics.median(r["epochs"][0] for r in results),
            "epoch_s": per_epoch,
            "train_img_s": (n // batch_size) * batch_size / per_epoch,
            "fit_total_s": statistics.median(r["fit_total"] for r in results),
            "predict_s": statistics.median(r["predict"] for r in results),
            "predict_img_s": n / statistics.median(r["predict"] for r in results),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        }
    return rows


def print_table(rows):
    print(f"\n{'variant':<16}{'epoch 1 s':>10}{'epoch s':>9}{'train img/s':>12}"
          f"{'fit s':>8}{'predict s':>10}{'pred img/s':>11}{'peak RSS MB':>12}")
    for variant, r in rows.items():
        print(f"{variant:<16}{r['epoch1_s']:>10.2f}{r['epoch_s']:>9.3f}{r['train_img_s']:>12.0f}"
              f"{r['fit_total_s']:>8.2f}{r['predict_s']:>10.3f}{r['predict_img_s']:>11.0f}"
              f"{r['peak_rss_mb']:>12.0f}")


def print_ratios(rows, runs):
    def ratio(a, b, key):
        return rows[a][key] / rows[b][key]

    def paired(a, b, key):
        if key != "epoch_s":
            return ""
        within = [statistics.median(x["epochs"][1:]) / statistics.median(y["epochs"][1:])
                  for x, y in zip(runs[a], runs[b], strict=True)]
        return (f"  paired {statistics.median(within):.3f} "
                f"(rounds {min(within):.2f}-{max(within):.2f})")

    print("\nratios (seconds, lower is better for (a)): of the medians; paired by round")
    lines = [
        ("fit, files:  (a)/(b) per epoch", "est-files", "loop-files", "epoch_s"),
        ("fit, files:  (a)/(b) whole fit", "est-files", "loop-files", "fit_total_s"),
        ("fit, array:  (a)/(b) per epoch", "est-array", "loop-array", "epoch_s"),
        ("fit, array:  (a)/(b) whole fit", "est-array", "loop-array", "fit_total_s"),
        ("predict, files: (a)/(b)", "est-files", "loop-files", "predict_s"),
        ("predict, array: (a)/(b)", "est-array", "loop-array", "predict_s"),
        ("fit, files:  (a)/(c) per epoch", "est-files", "loop-memory", "epoch_s"),
        ("fit, files:  (a)/(b with a wait per batch)", "est-files", "loop-files-sync",
         "epoch_s"),
        ("loop, files: wait per batch / none", "loop-files-sync", "loop-files", "epoch_s"),
        ("cache=True, epochs after the first: (a)/(c)", "est-cache", "loop-memory", "epoch_s"),
        ("default fit, epochs after the first: /cache=True", "est-default", "est-cache",
         "epoch_s"),
        ("default fit, epochs after the first: /(c)", "est-default", "loop-memory", "epoch_s"),
    ]
    for label, a, b, key in lines:
        if a in rows and b in rows:
            print(f"  {label:<50}{ratio(a, b, key):6.3f}{paired(a, b, key)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--backbone", default="simple_cnn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", default="auto",
                        help="DataLoader workers for every variant; auto: the estimator's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--predict-repeats", type=int, default=5,
                        help="predictions per run (the median is kept)")
    parser.add_argument("--nchw-loops", dest="channels_last", action="store_false",
                        help="the loops feed NCHW tensors (the estimator: channels-last)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated; also loop-files-sync (a diagnosis for GPUs)")
    parser.add_argument("--memory", action="store_true",
                        help="instead: peak RSS of est-files with 2,000 and 20,000 files")
    parser.add_argument("--json", help="also write the summary here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.num_workers == "auto":
        args.num_workers = resolve_num_workers(TrainingConfig(device=args.device), False)
    args.num_workers = int(args.num_workers)
    if args.child:
        return child(args)

    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, device {args.device}; "
          f"{args.backbone} at {args.image_size} px, batch {args.batch_size}, "
          f"{args.epochs} epochs, num_workers {args.num_workers}, {args.rounds} rounds; "
          f"loops {'channels-last' if args.channels_last else 'NCHW'}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory:
            return memory(args, tmp)
        data = make_set(args.n, args.image_size, os.path.join(tmp, "set"))
        variants = args.variants.split(",")
        runs = {v: [] for v in variants}
        for round_ in range(args.rounds):
            shift = round_ % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                runs[variant].append(spawn(args, variant, data))
                r = runs[variant][-1]
                print(f"round {round_ + 1} {variant:<16} epochs "
                      + " ".join(f"{e:.2f}" for e in r["epochs"])
                      + f"  predict {r['predict']:.2f}", flush=True)
        rows = summarise(runs, args.batch_size)
        print_table(rows)
        print_ratios(rows, runs)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "rows": rows, "runs": runs}, f, indent=2)


def memory(args, tmp):
    """Peak RSS of fitting from files: 2,000 against 20,000 images on disk."""
    args.epochs, args.predict_repeats = 1, 1
    small = make_set(2000, args.image_size, os.path.join(tmp, "small"))
    large = make_set(20000, args.image_size, os.path.join(tmp, "large"))
    results = {}
    for round_ in range(args.rounds):
        for name, data in (("2,000", small), ("20,000", large)):
            r = spawn(args, "est-files", data)
            results.setdefault(name, []).append((r["peak_rss_fit_mb"], r["peak_rss_mb"]))
            print(f"round {round_ + 1} {name:>6} files: peak RSS {r['peak_rss_fit_mb']:.0f} MB "
                  f"by the end of fit, {r['peak_rss_mb']:.0f} MB after predicting them all",
                  flush=True)
    for phase, label in ((0, "fit"), (1, "fit + predict")):
        small_peak = max(r[phase] for r in results["2,000"])
        large_peak = max(r[phase] for r in results["20,000"])
        print(f"{label:<14} peak RSS (max over rounds): 2,000 files {small_peak:.0f} MB, "
              f"20,000 files {large_peak:.0f} MB, growth {large_peak - small_peak:+.0f} MB")


if __name__ == "__main__":
    sys.exit(main())

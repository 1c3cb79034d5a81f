"""How fast can one image file become a uint8 (3, H, W) tensor of the training size?

Compares, on the same JPEG files: PIL decode + resize, PIL with JPEG draft mode (decoding at a
reduced DCT scale) + resize (what sk_multitask.data.load_image does), and
torchvision.io.decode_jpeg + resize (deprecated since torchvision 0.29, for reference), for
small images (32 px) and larger ones (200 px → 128 px, as UTKFace). Run:

    python benchmarks/bench_decode.py
"""

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as F

from sk_multitask.data import load_image


def pil_plain(path, size):
    with Image.open(path) as img:
        img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def tv_decode(path, size):
    warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
    image = decode_jpeg(read_file(path), mode=ImageReadMode.RGB)
    return F.resize(image, [size, size], antialias=True)


def make_files(folder, n, side, rng):
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((side, side), Image.Resampling.BICUBIC)
        path = os.path.join(folder, f"{i}.jpg")
        img.save(path, quality=90)
        paths.append(path)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one decoding process, as in a DataLoader worker
    rng = np.random.default_rng(0)
    readers = {"pil": pil_plain, "pil+draft (load_image)": load_image, "torchvision.io": tv_decode}
    print(f"{'files':<22}{'reader':<26}{'µs/image':>10}")
    for side, size in [(32, 32), (200, 128), (200, 64), (512, 128)]:
        with tempfile.TemporaryDirectory() as folder:
            paths = make_files(folder, args.n, side, rng)
            for name, read in readers.items():
                best = float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    for path in paths:
                        read(path, size)
                    best = min(best, time.perf_counter() - start)
                label = f"{side}px -> {size}px"
                print(f"{label:<22}{name:<26}{best / args.n * 1e6:>10.0f}")


if __name__ == "__main__":
    main()

"""How fast can one image file become a uint8 (3, H, W) tensor of the training size?

Compares, on the same JPEG files: PIL decode + resize, PIL with JPEG draft mode (decoding at a
reduced DCT scale) + PIL's resize (what sk_multitask.inputs._dataset.load_image does, through the
torch-free sk_multitask.inputs._decoding.read_image that the ONNX predictor shares), the same draft
decode with torch's antialiased resize (what load_image did before the ONNX predictor), and
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

from sk_multitask.inputs._dataset import load_image


def pil_plain(path, size):
    with Image.open(path) as img:
        img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def draft_torch_resize(path, size):
    with Image.open(path) as img:
        if min(img.size) >= 2 * size:
            img.draft("RGB", (size, size))
        img = img.convert("RGB")
    image = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    if tuple(image.shape[1:]) == (size, size):
        return image
    return F.resize(image, [size, size], antialias=True)


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
    readers = {
        "pil": pil_plain,
        "pil+draft (load_image)": load_image,
        "pil+draft, torch resize": draft_torch_resize,
        "torchvision.io": tv_decode,
    }
    print(f"{'files':<22}{'reader':<26}{'µs/image':>10}")
    for side, size in [(32, 32), (200, 128), (200, 64), (512, 128)]:
        with tempfile.TemporaryDirectory() as folder:
            paths = make_files(folder, args.n, side, rng)
            best = dict.fromkeys(readers, float("inf"))
            for _ in range(args.repeats):  # interleaved: a slow spell hits every reader
                for name, read in readers.items():
                    start = time.perf_counter()
                    for path in paths:
                        read(path, size)
                    best[name] = min(best[name], time.perf_counter() - start)
            label = f"{side}px -> {size}px"
            for name in readers:
                print(f"{label:<22}{name:<26}{best[name] / args.n * 1e6:>10.0f}")


if __name__ == "__main__":
    main()

"""The torch Dataset that decodes images, and the training-time transforms.

Turning ``X`` into image sources, decoding and resizing are torch-free, in
:mod:`sk_multitask.images` (shared with the ONNX predictor). Images stay uint8
``(3, H, W)`` tensors from decoding to the device; the network normalises them there
(:class:`sk_multitask.module.MultiTaskModule`). Files are decoded lazily, one item at a
time, so a dataset on disk is streamed, never loaded whole.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

# The torch-free part (sources, decoding, resizing) is shared with the ONNX predictor.
from .images import (
    array_pixels,
    as_size,
    image_references,
    is_pixel_array,
    read_image,
    resolve_images,
)

__all__ = [
    "ImageDataset",
    "as_size",
    "decode_images",
    "image_references",
    "is_pixel_array",
    "load_image",
    "resolve_images",
    "train_transform",
]

_NO_TARGET = torch.empty(0)  # skorch wants (X, y) pairs even when there is no y


def load_image(path, image_size):
    """Decode one image file to a uint8 tensor ``(3, H, W)`` of ``image_size``.

    The pixels are :func:`sk_multitask.images.read_image`'s (EXIF orientation, any
    mode to RGB, PIL's bilinear resize), so that the ONNX predictor sees the same.

    Raises
    ------
    ValueError
        Naming the file, if it cannot be decoded.
    """
    return torch.from_numpy(read_image(path, image_size)).permute(2, 0, 1)


def _array_image(image, image_size):
    """A uint8 tensor ``(3, H, W)`` of ``image_size`` from one ``(H, W[, C])`` array."""
    pixels = array_pixels(image, image_size)
    # torch wants writable memory: copy a read-only (memmap) image, share any other.
    return torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy()).permute(2, 0, 1)


def _decoded_image(image, image_size):
    return image


def decode_images(images, image_size, num_workers=0, batch_size=256):
    """Decode and resize every image once: a uint8 tensor ``(N, 3, H, W)`` in memory.

    ``images`` are file paths or a uint8 array; decoding runs in ``num_workers``
    DataLoader processes.
    """
    loader = torch.utils.data.DataLoader(
        ImageDataset(images, image_size=image_size),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    return torch.cat([batch for batch, _ in loader])


def train_transform(augment):
    """The training-time augmentation (on uint8 tensors), or None."""
    if not augment:
        return None
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ]
    )


class ImageDataset(torch.utils.data.Dataset):
    """Images (file paths or a uint8 array) and their encoded targets.

    Items are ``(image, target)``: ``image`` a uint8 tensor ``(3, H, W)``, ``target``
    a float32 tensor with one entry per task, NaN where missing (empty without
    targets, so that skorch always sees an ``(X, y)`` pair).

    Parameters
    ----------
    images : sequence of str, ndarray (N, H, W[, C]) or tensor (N, 3, H, W)
        Resolved file paths, uint8 images, or images already decoded to the size
        (:func:`decode_images`).
    targets : ndarray of shape (N, n_tasks), optional
    image_size : int or (int, int)
    transform : callable, optional
        Applied to each uint8 image tensor (training augmentation).
    """

    def __init__(self, images, targets=None, *, image_size, transform=None):
        self.images = images
        self.targets = None if targets is None else torch.as_tensor(targets)
        self.image_size = image_size
        self.transform = transform
        if isinstance(images, torch.Tensor):
            self._decode = _decoded_image
        elif isinstance(images, np.ndarray) and images.dtype == np.uint8:
            self._decode = _array_image
        else:
            self._decode = load_image

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self._decode(self.images[i], self.image_size)
        if self.transform is not None:
            image = self.transform(image)
        return image, _NO_TARGET if self.targets is None else self.targets[i]

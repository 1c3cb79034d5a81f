"""The torch Dataset of images (and targets), and the log of images it could not read.

Images stay uint8 ``(3, H, W)`` tensors from decoding to the device; the network
normalises them there (:class:`sk_multitask.network._model.MultiTaskModule`). Files are
decoded lazily, one item at a time (:mod:`sk_multitask.inputs._decoding`), so a dataset on
disk is streamed, never loaded whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import weakref

import numpy as np
import torch
from torchvision.transforms import v2

from ._bad_images import decode_or_record
from ._decoding import as_size, decode_image

_NO_TARGET = torch.empty(0)  # skorch wants (X, y) pairs even when there is no y


def load_image(source, image_size):
    """Decode one image to a uint8 tensor ``(3, H, W)`` of ``image_size``.

    ``source`` is a file path (or binary file object) or an ``(H, W[, C])`` array; the
    pixels are :func:`sk_multitask.inputs._decoding.decode_image`'s (EXIF orientation, any mode
    to RGB, PIL's bilinear resize), so that the ONNX predictor sees the same.

    Raises
    ------
    ImageNotFoundError
        Naming the file, if it does not exist (a ``FileNotFoundError``).
    BadImageError
        Naming the file, if it cannot be decoded (a ``ValueError``).
    """
    return as_tensor(decode_image(source, image_size))


def as_tensor(pixels):
    """A uint8 tensor ``(3, H, W)`` from uint8 pixels ``(H, W, 3)``, sharing their memory.

    torch wants writable memory: a read-only (memmap) array is copied.
    """
    return torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy()).permute(2, 0, 1)


def decoded_batches(images, image_size, num_workers=0, batch_size=256, bad_images=None):
    """Decode and resize images in order, yielding uint8 tensors ``(n, 3, H, W)``.

    ``images`` are file paths or a uint8 array; decoding runs in ``num_workers``
    DataLoader processes. With a :class:`BadImageLog`, an image that cannot be
    decoded is recorded there and comes out black.
    """
    loader = torch.utils.data.DataLoader(
        ImageDataset(images, image_size=image_size, bad_images=bad_images),
        batch_size=batch_size,
        num_workers=num_workers,
        generator=torch.Generator(),  # its seed draw must not move torch's global RNG
    )
    for batch, _ in loader:
        yield batch


def decode_images(images, image_size, num_workers=0, batch_size=256, bad_images=None):
    """Decode and resize every image once: a uint8 tensor ``(N, 3, H, W)`` in memory.

    With a ``bad_images`` log, an unreadable file is recorded there (its image is
    black) instead of raising.
    """
    batches = decoded_batches(images, image_size, num_workers, batch_size, bad_images)
    return torch.cat(list(batches))


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

    Items are ``(image, target)``: ``image`` a uint8 tensor ``(3, H, W)`` (with a
    ``table``, ``{"images": image, "table": row}``), ``target``
    a float32 tensor with one entry per task, NaN where missing, then the row's weight
    with ``sample_weight`` (empty without targets, so that skorch always sees an
    ``(X, y)`` pair). The loss reads the weight from there
    (:meth:`~sk_multitask.network._loss.MaskedMultiTaskLoss.row_weights`).

    Parameters
    ----------
    images : sequence of str, ndarray (N, H, W[, C]) or tensor (N, 3, H, W)
        Resolved file paths, uint8 images, or images already decoded to the size: a
        tensor (:func:`decode_images`) or any sequence of uint8 tensors ``(3, H, W)``
        (:class:`sk_multitask.inputs._disk_cache.DiskCachedImages`).
    targets : ndarray of shape (N, n_tasks), optional
    sample_weight : ndarray of shape (N,), optional
        Row weights (with ``targets``), appended to each target.
    table : ndarray of shape (N, n_table), optional
        The encoded table columns (:mod:`sk_multitask.inputs._tabular`): each item's
        image is then ``{"images": image, "table": row}``.
    image_size : int or (int, int)
    transform : callable, optional
        Applied to each uint8 image tensor (training augmentation).
    bad_images : BadImageLog, optional
        Where a file that cannot be read is recorded; its item is then a black image
        with an all-missing target, so that it adds nothing to the loss. None: the
        :class:`~sk_multitask.exceptions.BadImageError` propagates.
    """

    def __init__(
        self,
        images,
        targets=None,
        sample_weight=None,
        *,
        table=None,
        image_size,
        transform=None,
        bad_images=None,
    ):
        self.images = images
        self.table = None if table is None else torch.as_tensor(table, dtype=torch.float32)
        self.targets = None if targets is None else torch.as_tensor(targets)
        self.weighted = sample_weight is not None
        if self.weighted:
            weights = torch.as_tensor(sample_weight, dtype=self.targets.dtype)
            self.targets = torch.cat([self.targets, weights[:, None]], dim=1)
        self.image_size = image_size
        self.transform = transform
        self.bad_images = bad_images

    def __len__(self):
        return len(self.images)

    def unlabelled_rows(self):
        """A boolean ndarray: the rows without any target (none labelled, or an image found
        unreadable while decoding for a cache, whose targets were masked)."""
        targets = self.targets[:, :-1] if self.weighted else self.targets
        return torch.isnan(targets).all(dim=1).numpy()

    def __getitem__(self, i):
        i, seed = i if isinstance(i, tuple) else (i, None)  # an EpochShuffler's (i, seed)
        target = _NO_TARGET if self.targets is None else self.targets[i]
        image = self.images[i]
        if not isinstance(image, torch.Tensor):  # a tensor is decoded already
            pixels = decode_or_record(image, self.image_size, i, self.bad_images)
            if pixels is None:  # unreadable, and recorded: adds nothing to the loss
                blank = torch.zeros((3, *as_size(self.image_size)), dtype=torch.uint8)
                missing = torch.full_like(target, float("nan"))
                if self.weighted:  # weight 0: a NaN weight would make NaN gradients
                    missing[-1] = 0.0
                return self._inputs(blank, i), missing
            image = as_tensor(pixels)
        if self.transform is not None:
            image = _transformed(self.transform, image, seed)
        return self._inputs(image, i), target

    def _inputs(self, image, i):
        """What the network's ``forward`` takes of row ``i``: the image, or with a table
        ``{"images": image, "table": row}`` (skorch passes its keys as arguments)."""
        if self.table is None:
            return image
        return {"images": image, "table": self.table[i]}


def _transformed(transform, image, seed):
    """``transform(image)``, its random draws seeded by ``seed`` (None: torch's own)."""
    if seed is None:
        return transform(image)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


class EpochShuffler(torch.utils.data.Sampler):
    """The training order, and each row's augmentation seed, from a seed and the epoch.

    Each epoch yields ``(position, seed)`` for every row: a permutation drawn from
    ``(seed, epoch)``, and the seed :class:`ImageDataset` augments the row's image with.
    Nothing depends on the process that loads a row, so the DataLoader's worker count
    is a speed setting only: 0, 1 or 2 workers train the same model.

    Parameters
    ----------
    n : int
        Rows.
    seed : int
    epoch : int, default=0
        The first epoch (a warm start continues the count).

    Examples
    --------
    >>> first, second = list(EpochShuffler(4, seed=0)), list(EpochShuffler(4, seed=0))
    >>> first == second, sorted(i for i, _ in first)
    (True, [0, 1, 2, 3])
    """

    def __init__(self, n, seed, epoch=0):
        self.n, self.seed, self.epoch = int(n), int(seed), int(epoch)

    def __len__(self):
        return self.n

    def __iter__(self):
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)
        generator = torch.Generator().manual_seed(int(state[0]))
        self.epoch += 1
        order = torch.randperm(self.n, generator=generator).tolist()
        seeds = torch.randint(2**62, (self.n,), generator=generator).tolist()
        return zip(order, seeds, strict=True)


class BadImageLog:
    """The images that could not be decoded, recorded from any process.

    A DataLoader worker holds its own copy of the dataset, so the records go to a
    temporary file (one JSON line per image, appended) that every process can write
    and the main process reads. :meth:`collect` removes the file (so does garbage
    collection, after an error).
    """

    def __init__(self):
        handle, self.path = tempfile.mkstemp(prefix="sk-multitask-bad-images-", suffix=".jsonl")
        os.close(handle)
        # A forked worker's copy of this object must not remove the file: hence the pid.
        self._remove = weakref.finalize(self, _remove_file, self.path, os.getpid())

    def record(self, position, error):
        """Note that the image at ``position`` could not be read (a
        :class:`~sk_multitask.exceptions.BadImageError`)."""
        line = json.dumps([int(position), error.path, str(error.reason)])
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def read(self):
        """``{position: (path, reason)}`` of the images recorded, by position."""
        with open(self.path, encoding="utf-8") as log:
            records = {position: (path, reason) for position, path, reason in map(json.loads, log)}
        return dict(sorted(records.items()))

    def collect(self):
        """What :meth:`read` returns, and the file removed."""
        records = self.read()
        self._remove()
        return records

    def __getstate__(self):
        return {"path": self.path}  # a worker's copy records into the same file

    def __setstate__(self, state):
        self.path = state["path"]  # and leaves the file to the main process's object


def _remove_file(path, owner_pid):
    if os.getpid() == owner_pid:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def bad_image_log(on_bad_image):
    """A :class:`BadImageLog` for ``on_bad_image="skip"``; None for ``"raise"``."""
    return BadImageLog() if on_bad_image == "skip" else None

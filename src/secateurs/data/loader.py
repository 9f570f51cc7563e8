"""Batches from in-memory uint8 tensors: seeded shuffles, whole-batch augmentation, normalisation.

There is no per-sample ``Dataset.__getitem__``: a batch is one ``index_select`` on the uint8 tensor
(`TensorData.take`; on a memory-mapped dataset, a gather from the mapped file),
converted to float and normalised in one vectorised operation. The shuffle of epoch ``e`` depends only
on ``(seed, e)``, so a run resumed at epoch ``e`` sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from secateurs.data.types import TensorData
from secateurs.errors import UsageError

_EPOCH_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x / 255 - mean) / std``; recorded in run.json as the run's preprocessing."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Return float32 normalised images for a uint8 batch (N×C×H×W)."""
        channels = images.shape[1]
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, channels, 1, 1)
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], dtype=torch.float32).view(1, channels, 1, 1)
        return images.to(torch.float32).mul_(scale).sub_(mean * 255.0 * scale)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that drives shuffling and augmentation of one epoch."""
    generator = torch.Generator()
    generator.manual_seed(seed * _EPOCH_SEED_STRIDE + epoch)
    return generator


def crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``padding`` pixels, and random horizontal flip, per image.

    Vectorised over the batch: one padded copy, one gather with per-image offsets.
    Returns a new uint8 tensor of the input's shape.
    """
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
    cropped = padded.gather(2, rows)
    columns = torch.arange(w).view(1, w).expand(n, w)
    columns = torch.where(flip.view(n, 1), w - 1 - columns, columns) + dx.view(n, 1)
    return cropped.gather(3, columns.view(n, 1, 1, w).expand(n, c, h, w))


AUGMENTATIONS = ("none", "crop-flip")


class BatchLoader:
    """Iterate over (float images, int64 labels) batches of a `TensorData`.

    ``shuffle`` draws a permutation from `epoch_generator(seed, epoch)`; call `set_epoch` before each
    epoch (the `Trainer` does). ``augment`` is applied to whole batches. ``shard`` = (rank, world)
    restricts each epoch to every ``world``-th example of the permutation (distributed training).
    """

    def __init__(
        self,
        data: TensorData,
        batch_size: int,
        normalization: Normalization,
        *,
        shuffle: bool = False,
        seed: int = 0,
        augment: str = "none",
        drop_last: bool = False,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        if augment not in AUGMENTATIONS:
            raise UsageError(f"unknown augmentation {augment!r}; accepted: {', '.join(AUGMENTATIONS)}")
        rank, world = shard
        if not 0 <= rank < world:
            raise UsageError(f"shard rank {rank} outside [0, {world})")
        self.data = data
        self.batch_size = batch_size
        self.normalization = normalization
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.shard = shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.data)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        rank, world = self.shard
        if world > 1:
            usable = (n // world) * world
            order = order[rank:usable:world]
        return order

    def __len__(self) -> int:
        _, world = self.shard
        n = len(self.data) // world if world > 1 else len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = epoch_generator(self.seed, self.epoch)
        order = self._order(generator)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            if index.numel() == 0:
                break
            images, labels = self.data.take(index)
            if self.augment == "crop-flip":
                images = crop_flip(images, generator)
            batch = self.normalization.apply(images)
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            yield batch, labels

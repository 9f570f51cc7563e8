"""In-memory datasets: uint8 images and int64 labels, split into train / validation / test."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from secateurs.errors import DataError

VALIDATION_FRACTION_DENOMINATOR = 12
"""The validation split is the last 1/12 of the training set (5,000 of Fashion-MNIST's 60,000)."""


@dataclass(frozen=True)
class TensorData:
    """Images ``x`` (uint8, N×C×H×W) and labels ``y`` (int64, N), held in memory."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise DataError(f"images must be a uint8 N×C×H×W tensor, got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise DataError(f"labels must be an int64 vector, got {self.y.dtype} {tuple(self.y.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"{self.x.shape[0]} images but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: torch.Tensor | slice) -> TensorData:
        """Return the rows at ``indices`` (a view for slices, a copy for index tensors)."""
        return TensorData(self.x[indices], self.y[indices])


@dataclass(frozen=True)
class Dataset:
    """A named dataset with its training and test sets and its normalisation constants.

    ``mean``/``std`` are per-channel statistics of pixel values scaled to [0, 1]; `normalize` in the
    loader applies ``(x / 255 - mean) / std``.
    """

    name: str
    train: TensorData
    test: TensorData
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"  # "none" or "crop-flip" (CIFAR style), applied to training batches only

    def __post_init__(self) -> None:
        if self.train.x.shape[1:] != self.test.x.shape[1:]:
            raise DataError(
                f"{self.name}: train images {tuple(self.train.x.shape[1:])} and test images "
                f"{tuple(self.test.x.shape[1:])} differ in shape"
            )
        channels = self.train.x.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(f"{self.name}: mean/std need {channels} entries, got {len(self.mean)}/{len(self.std)}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)


@dataclass(frozen=True)
class Splits:
    """The three splits every run uses: selection on ``val``, the final report on ``test``."""

    train: TensorData
    val: TensorData
    test: TensorData
    dataset: Dataset


def split_validation(dataset: Dataset) -> Splits:
    """Carve the fixed validation split: the last ``len(train) // 12`` training examples.

    Returns views, no copies. The split never depends on a seed, so every run and every method
    selects on the same 5,000 Fashion-MNIST images.
    """
    n = len(dataset.train)
    n_val = n // VALIDATION_FRACTION_DENOMINATOR
    if n_val == 0 or n_val == n:
        raise DataError(f"{dataset.name}: {n} training examples are too few to carve a validation split")
    cut = n - n_val
    return Splits(
        train=dataset.train.subset(slice(0, cut)),
        val=dataset.train.subset(slice(cut, n)),
        test=dataset.test,
        dataset=dataset,
    )

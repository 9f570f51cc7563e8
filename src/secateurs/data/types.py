"""In-memory datasets: uint8 images and int64 labels, split into train / validation / test.

The validation split (`split_validation`) is carved from the training set, ``len(train) // 12``
examples (5,000 of Fashion-MNIST's 60,000), in one of two ways:

- ``stratified`` (the default): every class contributes its share, drawn with a seeded generator
  (`secateurs.data.splitting`); the seed is the *split seed* (``data.split_seed``, default 0), not the
  run's seed, so runs of every seed select on the same examples, and a model pruned from a run (with
  any seed) is validated on examples its parent never trained on;
- ``tail``: the last 1/12 of the training set as stored (the only split before stratification; a
  dataset stored sorted by class gets a validation split of one class). Every committed suite and
  recipe pins it, and a run.json that does not record its split was trained with it.

A dataset with its own validation set (an image folder with ``val/`` and ``test/``) uses that one
instead (kind ``folder``). Either way a validation split whose class histogram is badly skewed
(`secateurs.data.splitting.skewed_classes`) is logged as a warning naming the counts, and `SplitInfo`
records the kind, the seed, the sizes and both class histograms for run.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from secateurs.data.splitting import class_histogram, skew_message, skewed_classes, stratified_validation_indices
from secateurs.errors import DataError, UsageError

log = logging.getLogger(__name__)

VALIDATION_FRACTION_DENOMINATOR = 12
"""The validation split holds 1/12 of the training set (5,000 of Fashion-MNIST's 60,000)."""

SPLIT_KINDS = ("stratified", "tail")
"""The ways `split_validation` carves a validation split from the training set."""

SplitKind = Literal["stratified", "tail"]


class TensorData:
    """Images ``x`` (uint8, N×C×H×W) and labels ``y`` (int64, N).

    Held in memory, or over a memory-mapped file (``mapped=True``: the image-folder cache of a
    dataset larger than its memory budget). An index `subset` of in-memory data copies the rows; of
    mapped data it keeps the file mapped and records which rows it holds, so a stratified split of a
    dataset larger than memory stays on disk. `take` gathers a batch either way (the loader uses it);
    ``x`` of a mapped index subset is gathered on every access (a copy of all its rows).
    Immutable: a subset is a new object.
    """

    __slots__ = ("_images", "_labels", "_rows", "mapped")

    _images: torch.Tensor
    _labels: torch.Tensor
    _rows: torch.Tensor | None
    mapped: bool

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, *, mapped: bool = False, rows: torch.Tensor | None = None
    ) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise DataError(f"images must be a uint8 N×C×H×W tensor, got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.dim() != 1:
            raise DataError(f"labels must be an int64 vector, got {y.dtype} {tuple(y.shape)}")
        count = x.shape[0] if rows is None else rows.shape[0]
        if count != y.shape[0]:
            raise DataError(f"{count} images but {y.shape[0]} labels")
        object.__setattr__(self, "_images", x)
        object.__setattr__(self, "_labels", y)
        object.__setattr__(self, "_rows", rows)
        object.__setattr__(self, "mapped", mapped)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"TensorData is immutable; cannot set {name!r}")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _rebuild_tensor_data, (self._images, self._labels, self.mapped, self._rows)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        where = ", mapped" if self.mapped else ""
        return f"TensorData({len(self)}×{c}×{h}×{w} uint8{where})"

    @property
    def x(self) -> torch.Tensor:
        """The images, N×C×H×W uint8 (for a mapped index subset: a gathered copy)."""
        return self._images if self._rows is None else self._images.index_select(0, self._rows)

    @property
    def y(self) -> torch.Tensor:
        return self._labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """C, H, W of one image."""
        c, h, w = self._images.shape[1:]
        return int(c), int(h), int(w)

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of the rows at ``index`` (int64): one gather, a copy."""
        rows = index if self._rows is None else self._rows.index_select(0, index)
        return self._images.index_select(0, rows), self._labels.index_select(0, index)

    def subset(self, indices: torch.Tensor | slice) -> TensorData:
        """Return the rows at ``indices``: a view for slices; for index tensors a copy, or (mapped) a row list."""
        if self._rows is not None:
            return TensorData(self._images, self._labels[indices], mapped=self.mapped, rows=self._rows[indices])
        if self.mapped and isinstance(indices, torch.Tensor):
            return TensorData(self._images, self._labels[indices], mapped=True, rows=indices)
        return TensorData(self._images[indices], self._labels[indices], mapped=self.mapped)


def _rebuild_tensor_data(x: torch.Tensor, y: torch.Tensor, mapped: bool, rows: torch.Tensor | None) -> TensorData:
    return TensorData(x, y, mapped=mapped, rows=rows)


@dataclass(frozen=True)
class Dataset:
    """A named dataset with its training and test sets and its normalisation constants.

    ``mean``/``std`` are per-channel statistics of pixel values scaled to [0, 1]; `normalize` in the
    loader applies ``(x / 255 - mean) / std``. ``val`` is a validation set given with the data (an
    image folder's ``val/`` next to its ``test/``); without one, `split_validation` carves it from
    ``train``. ``classes`` names the labels when the data does; ``preprocessing`` is what the loader
    did to the images beyond decoding (recorded in run.json).
    """

    name: str
    train: TensorData
    test: TensorData
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"  # "none" or "crop-flip" (CIFAR style), applied to training batches only
    val: TensorData | None = None
    classes: tuple[str, ...] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for other, split in ((self.test, "test"), (self.val, "validation")):
            if other is not None and self.train.image_shape != other.image_shape:
                raise DataError(
                    f"{self.name}: train images {self.train.image_shape} and {split} images "
                    f"{other.image_shape} differ in shape"
                )
        channels = self.train.image_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(f"{self.name}: mean/std need {channels} entries, got {len(self.mean)}/{len(self.std)}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape


@dataclass(frozen=True)
class SplitInfo:
    """How the validation split was made, for run.json (`to_dict`)."""

    kind: str
    """``stratified``, ``tail`` or ``folder`` (the dataset's own validation set)."""
    seed: int | None
    """The split seed (stratified only)."""
    sizes: dict[str, int]
    train_classes: list[int]
    """Examples per class in the training split (index = label)."""
    val_classes: list[int]
    warning: str | None = None
    """The skew warning, when the validation histogram is badly skewed."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "seed": self.seed,
            "sizes": dict(self.sizes),
            "train_classes": list(self.train_classes),
            "val_classes": list(self.val_classes),
            **({"warning": self.warning} if self.warning is not None else {}),
        }


@dataclass(frozen=True)
class Splits:
    """The three splits every run uses: selection on ``val``, the final report on ``test``."""

    train: TensorData
    val: TensorData
    test: TensorData
    dataset: Dataset
    info: SplitInfo | None = None


def split_validation(dataset: Dataset, kind: str = "stratified", seed: int = 0) -> Splits:
    """Carve the validation split (see the module docstring); ``seed`` is the split seed.

    ``tail`` returns views (no copies); ``stratified`` copies the rows of in-memory data, and keeps
    memory-mapped data mapped. A dataset with its own ``val`` set uses it whatever ``kind`` says. Logs a
    warning when the validation split's class histogram is badly skewed. Raises `UsageError` for an
    unknown kind, `DataError` when the training set is too small to split.
    """
    if kind not in SPLIT_KINDS:
        raise UsageError(f"unknown validation split {kind!r}; accepted: {', '.join(SPLIT_KINDS)}")
    n = len(dataset.train)
    if dataset.val is not None:
        train, val, used, used_seed = dataset.train, dataset.val, "folder", None
    else:
        n_val = n // VALIDATION_FRACTION_DENOMINATOR
        if n_val == 0 or n_val == n:
            raise DataError(f"{dataset.name}: {n} training examples are too few to carve a validation split")
        if kind == "tail":
            cut = n - n_val
            train, val = dataset.train.subset(slice(0, cut)), dataset.train.subset(slice(cut, n))
            used, used_seed = "tail", None
        else:
            chosen = stratified_validation_indices(dataset.train.y, n_val, seed)
            keep = torch.ones(n, dtype=torch.bool)
            keep[chosen] = False
            train, val = dataset.train.subset(keep.nonzero().squeeze(1)), dataset.train.subset(chosen)
            used, used_seed = "stratified", seed
    train_classes = class_histogram(train.y, dataset.num_classes)
    val_classes = class_histogram(val.y, dataset.num_classes)
    reference = train_classes if used == "folder" else class_histogram(dataset.train.y, dataset.num_classes)
    skewed = skewed_classes(reference, val_classes)
    warning = skew_message(used, skewed, len(val), dataset.classes) if skewed else None
    if warning is not None:
        log.warning("%s: %s", dataset.name, warning)
    info = SplitInfo(
        kind=used,
        seed=used_seed,
        sizes={"train": len(train), "val": len(val), "test": len(dataset.test)},
        train_classes=train_classes,
        val_classes=val_classes,
        warning=warning,
    )
    return Splits(train=train, val=val, test=dataset.test, dataset=dataset, info=info)

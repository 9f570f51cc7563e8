"""The dataset registry: a name → how to load it, and where its files are looked for.

Data directories are resolved at this edge only, in this order: the explicit ``data_dir`` argument
(``--data-dir``), the ``SECATEURS_DATA`` environment variable, then the dataset's default location.
Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from secateurs.data.cifar import load_cifar
from secateurs.data.idx import load_idx_dataset
from secateurs.data.npz import load_npz
from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import Dataset
from secateurs.errors import DataError
from secateurs.registry import Registry

DATA_ENV_VAR = "SECATEURS_DATA"


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    load: Callable[[Path | None], Dataset]
    description: str
    needs_files: bool = True


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def resolve_data_dir(name: str, data_dir: str | Path | None, default: Path | None) -> Path:
    """The directory (or file) to read ``name`` from; a clear DataError when none is known."""
    if data_dir is not None:
        return Path(data_dir)
    from_env = os.environ.get(DATA_ENV_VAR)
    if from_env:
        return Path(from_env)
    if default is not None:
        return default
    raise DataError(f"dataset {name!r} has no default location; pass --data-dir or set {DATA_ENV_VAR}")


def _idx(name: str, default: Path | None, mean: float, std: float) -> Callable[[Path | None], Dataset]:
    def load(data_dir: Path | None) -> Dataset:
        root = resolve_data_dir(name, data_dir, default)
        return load_idx_dataset(root, name=name, mean=(mean,), std=(std,))

    return load


def _cifar(name: str, num_classes: int) -> Callable[[Path | None], Dataset]:
    def load(data_dir: Path | None) -> Dataset:
        return load_cifar(resolve_data_dir(name, data_dir, None), num_classes=num_classes)

    return load


def _npz(data_dir: Path | None) -> Dataset:
    return load_npz(resolve_data_dir("npz", data_dir, None))


def _synthetic(data_dir: Path | None) -> Dataset:
    return make_synthetic()


DATASETS.add(
    "fashion-mnist",
    DatasetEntry(
        "fashion-mnist",
        _idx("fashion-mnist", Path("/usr/share/datasets/fashion-mnist"), 0.2860, 0.3530),
        "Fashion-MNIST, gzip IDX files (Debian package dataset-fashion-mnist)",
    ),
)
DATASETS.add(
    "mnist",
    DatasetEntry(
        "mnist",
        _idx("mnist", Path("/usr/share/datasets/mnist"), 0.1307, 0.3081),
        "MNIST (or any MNIST-format IDX directory), --data-dir",
    ),
)
DATASETS.add("cifar10", DatasetEntry("cifar10", _cifar("cifar10", 10), "CIFAR-10 binary format, --data-dir"))
DATASETS.add("cifar100", DatasetEntry("cifar100", _cifar("cifar100", 100), "CIFAR-100 binary format, --data-dir"))
DATASETS.add("npz", DatasetEntry("npz", _npz, "a .npz file with x_train/y_train/x_test/y_test, --data-dir FILE"))
DATASETS.add(
    "synthetic",
    DatasetEntry("synthetic", _synthetic, "small learnable synthetic images for tests", needs_files=False),
)


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load the dataset registered as ``name`` (UsageError listing the accepted names otherwise)."""
    entry = DATASETS.get(name)
    return entry.load(Path(data_dir) if data_dir is not None else None)

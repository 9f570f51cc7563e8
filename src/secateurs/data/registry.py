"""The dataset registry: a name → how to load it, and where its files are looked for.

Data directories are resolved at this edge only, in this order: the explicit ``data_dir`` argument
(``--data-dir``), the ``SECATEURS_DATA`` environment variable, then the dataset's default location.
The image folder's fallback cache directory is resolved here too: ``data.cache_dir``, else
``$XDG_CACHE_HOME/secateurs`` (``~/.cache/secateurs``). Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from secateurs.config import IMAGE_FOLDER_FIELDS, DataConfig
from secateurs.data.cifar import load_cifar
from secateurs.data.idx import load_idx_dataset
from secateurs.data.imagefolder import DEFAULT_CHANNELS, DEFAULT_IMAGE_SIZE, ImageFolderOptions, load_image_folder
from secateurs.data.npz import load_npz
from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import Dataset
from secateurs.errors import ConfigError, DataError
from secateurs.registry import Registry

DATA_ENV_VAR = "SECATEURS_DATA"
CACHE_ENV_VAR = "XDG_CACHE_HOME"


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    load: Callable[[DataConfig], Dataset]
    description: str
    needs_files: bool = True
    options: tuple[str, ...] = ()
    """The `DataConfig` fields of `IMAGE_FOLDER_FIELDS` this dataset reads (the others must stay unset)."""


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


def _idx(name: str, default: Path | None, mean: float, std: float) -> Callable[[DataConfig], Dataset]:
    def load(config: DataConfig) -> Dataset:
        root = resolve_data_dir(name, config.dir, default)
        return load_idx_dataset(root, name=name, mean=(mean,), std=(std,))

    return load


def _cifar(name: str, num_classes: int) -> Callable[[DataConfig], Dataset]:
    def load(config: DataConfig) -> Dataset:
        return load_cifar(resolve_data_dir(name, config.dir, None), num_classes=num_classes)

    return load


def _npz(config: DataConfig) -> Dataset:
    return load_npz(resolve_data_dir("npz", config.dir, None))


def _synthetic(config: DataConfig) -> Dataset:
    return make_synthetic()


def default_cache_dir() -> Path:
    """Where an image folder that cannot be written keeps its cache: ``$XDG_CACHE_HOME/secateurs``."""
    base = os.environ.get(CACHE_ENV_VAR)
    return (Path(base) if base else Path.home() / ".cache") / "secateurs"


def image_folder_options(config: DataConfig) -> ImageFolderOptions:
    """The image folder options of ``config``, defaults filled in."""
    budget = config.memory_budget_mb
    return ImageFolderOptions(
        image_size=config.image_size if config.image_size is not None else DEFAULT_IMAGE_SIZE,
        channels=config.channels if config.channels is not None else DEFAULT_CHANNELS,
        strict=config.strict,
        memory_budget=round(budget * 2**20) if budget is not None else None,
        cache_dir=Path(config.cache_dir) if config.cache_dir is not None else default_cache_dir(),
    )


def _image_folder(config: DataConfig) -> Dataset:
    return load_image_folder(resolve_data_dir("imagefolder", config.dir, None), image_folder_options(config))


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
    "imagefolder",
    DatasetEntry(
        "imagefolder",
        _image_folder,
        "images in DIR/train/CLASS/ with DIR/val/ and/or DIR/test/ (jpg, png, bmp, webp), --data-dir DIR",
        options=IMAGE_FOLDER_FIELDS,
    ),
)
DATASETS.add(
    "synthetic",
    DatasetEntry("synthetic", _synthetic, "small learnable synthetic images for tests", needs_files=False),
)


def load_data(config: DataConfig) -> Dataset:
    """Load the dataset ``config`` names (`UsageError` listing the accepted names otherwise).

    A field of `IMAGE_FOLDER_FIELDS` set for a dataset that does not read it is a `ConfigError`.
    """
    entry = DATASETS.get(config.name)
    for key in IMAGE_FOLDER_FIELDS:
        if key not in entry.options and getattr(config, key) != DataConfig.model_fields[key].default:
            takers = ", ".join(name for name, other in DATASETS.items() if key in other.options)
            raise ConfigError(f"data.{key} applies to {takers} only, not to dataset {config.name!r}")
    return entry.load(config)


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load the dataset registered as ``name`` from ``data_dir`` with every other option at its default."""
    return load_data(DataConfig(name=name, dir=str(data_dir) if data_dir is not None else None))

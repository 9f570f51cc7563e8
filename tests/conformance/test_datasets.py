"""Invariants every registered dataset must satisfy, each loaded from files written in its own format.

Parametrized over `DATASETS`: a dataset added later must add its writer to `WRITERS` (the first test
fails until it does), and then gets every check here: uint8 images of one shape, integer labels in
range, normalisation constants of the right length, a deterministic validation split of the
documented size, and loader batches that are float, normalised and of the requested size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from secateurs.config import DataConfig
from secateurs.data.files import write_cifar_binary, write_idx
from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.registry import DATASETS, load_data
from secateurs.data.types import Dataset, split_validation

GENERATOR = np.random.default_rng(0)


def _idx(folder: Path) -> DataConfig:
    images = GENERATOR.integers(0, 256, size=(240, 28, 28), dtype=np.uint8)
    labels = (np.arange(240) % 10).astype(np.uint8)
    folder.mkdir()
    for prefix, rows in (("train", slice(0, 200)), ("t10k", slice(200, 240))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images[rows], gzip=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels[rows], gzip=True)
    return DataConfig(name="mnist", dir=str(folder))


def _fashion(folder: Path) -> DataConfig:
    return _idx(folder).model_copy(update={"name": "fashion-mnist"})


def _cifar(classes: int) -> Callable[[Path], DataConfig]:
    def write(folder: Path) -> DataConfig:
        images = GENERATOR.integers(0, 256, size=(240, 3, 32, 32), dtype=np.uint8)
        write_cifar_binary(folder, images, np.arange(240) % classes, num_classes=classes)
        return DataConfig(name="cifar10" if classes == 10 else "cifar100", dir=str(folder))

    return write


def _npz(folder: Path) -> DataConfig:
    folder.mkdir()
    path = folder / "data.npz"
    images = GENERATOR.integers(0, 256, size=(240, 28, 28), dtype=np.uint8)
    labels = np.arange(240) % 4
    np.savez(path, x_train=images[:200], y_train=labels[:200], x_test=images[200:], y_test=labels[200:])
    return DataConfig(name="npz", dir=str(path))


def _image_folder(folder: Path) -> DataConfig:
    from PIL import Image

    for split, count in (("train", 24), ("test", 6)):
        for label in ("ant", "bee", "wasp"):
            (folder / split / label).mkdir(parents=True)
            for index in range(count):
                pixels = GENERATOR.integers(0, 256, size=(20, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / split / label / f"{index}.png")
    return DataConfig(name="imagefolder", dir=str(folder), image_size=12)


def _synthetic(folder: Path) -> DataConfig:
    return DataConfig(name="synthetic")


WRITERS: dict[str, Callable[[Path], DataConfig]] = {
    "mnist": _idx,
    "fashion-mnist": _fashion,
    "cifar10": _cifar(10),
    "cifar100": _cifar(100),
    "npz": _npz,
    "imagefolder": _image_folder,
    "synthetic": _synthetic,
}


def test_every_registered_dataset_has_a_writer_here() -> None:
    assert set(DATASETS.names()) == set(WRITERS), "add the new dataset's file writer to WRITERS"


@pytest.fixture(params=DATASETS.names())
def dataset(request: pytest.FixtureRequest, tmp_path: Path) -> Dataset:
    return load_data(WRITERS[request.param](tmp_path / "data"))


def test_images_labels_and_constants_are_consistent(dataset: Dataset) -> None:
    for part in (dataset.train, dataset.test):
        assert part.x.dtype == torch.uint8 and part.x.dim() == 4
        assert part.x.shape[1:] == dataset.train.x.shape[1:]
        assert part.y.dtype == torch.long and len(part.y) == len(part.x) > 0
        assert int(part.y.min()) >= 0 and int(part.y.max()) < dataset.num_classes
    channels = dataset.train.x.shape[1]
    assert len(dataset.mean) == len(dataset.std) == channels
    assert all(0.0 <= m <= 1.0 for m in dataset.mean) and all(s > 0 for s in dataset.std)


@pytest.mark.parametrize("kind", ["tail", "stratified"])
def test_the_validation_split_is_deterministic_and_disjoint(dataset: Dataset, kind: str) -> None:
    if dataset.val is not None:
        pytest.skip("the data brings its own validation split")
    first, again = split_validation(dataset, kind, 3), split_validation(dataset, kind, 3)
    assert len(first.val) == len(dataset.train) // 12
    assert len(first.train) + len(first.val) == len(dataset.train)
    assert torch.equal(first.val.x, again.val.x) and torch.equal(first.train.y, again.train.y)


def test_loader_batches_are_normalised_floats(dataset: Dataset) -> None:
    splits = split_validation(dataset, "tail", 0)
    normalization = Normalization(dataset.mean, dataset.std)
    batches = list(BatchLoader(splits.test, 16, normalization))
    assert sum(len(targets) for _, targets in batches) == len(splits.test)
    inputs, targets = batches[0]
    assert inputs.dtype == torch.float32 and inputs.shape[1:] == dataset.train.x.shape[1:]
    expected = (splits.test.x[:16].float() / 255 - torch.tensor(dataset.mean).view(1, -1, 1, 1)) / torch.tensor(
        dataset.std
    ).view(1, -1, 1, 1)
    torch.testing.assert_close(inputs, expected)
    assert torch.equal(targets, splits.test.y[:16])

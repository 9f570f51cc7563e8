"""The real Fashion-MNIST (Debian package dataset-fashion-mnist), read by the IDX loader.

Never skipped: a machine without the data fails with a message saying how to install it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from secateurs.data.idx import IDX_FILE_NAMES, load_idx_dataset
from secateurs.data.types import Dataset

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530


@pytest.fixture(scope="module")
def loaded() -> Dataset:
    missing = [stem for stem in IDX_FILE_NAMES.values() if not (FASHION_MNIST / f"{stem}.gz").is_file()]
    if missing:
        pytest.fail(
            f"Fashion-MNIST is missing from {FASHION_MNIST} ({', '.join(missing)}): install it with "
            "`apt-get update && apt-get install -y dataset-fashion-mnist`",
            pytrace=False,
        )
    return load_idx_dataset(FASHION_MNIST, name="fashion-mnist", mean=(MEAN,), std=(STD,))


def test_sizes_and_dtypes(loaded: Dataset) -> None:
    dataset = loaded
    assert dataset.train.x.shape == (60_000, 1, 28, 28) and dataset.test.x.shape == (10_000, 1, 28, 28)
    assert dataset.train.x.dtype == torch.uint8 and dataset.train.y.dtype == torch.int64
    assert dataset.num_classes == 10 and dataset.input_shape == (1, 28, 28)


def test_classes_are_exactly_balanced(loaded: Dataset) -> None:
    dataset = loaded
    assert torch.bincount(dataset.train.y).tolist() == [6_000] * 10
    assert torch.bincount(dataset.test.y).tolist() == [1_000] * 10


def test_pixel_statistics_match_the_constants(loaded: Dataset) -> None:
    dataset = loaded
    pixels = dataset.train.x.double() / 255
    assert float(pixels.mean()) == pytest.approx(MEAN, abs=5e-4)
    assert float(pixels.std(unbiased=False)) == pytest.approx(STD, abs=5e-4)

"""CIFAR binary format: round trips through `write_cifar_binary` and the malformed-file errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from secateurs.data.cifar import load_cifar
from secateurs.data.files import write_cifar_binary
from secateurs.errors import DataError


def _random_cifar(count: int, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, num_classes, count).astype(np.int64)
    return images, labels


def test_cifar10_round_trip_from_parent_folder(tmp_path: Path) -> None:
    images, labels = _random_cifar(24, 10)
    folder = write_cifar_binary(tmp_path, images, labels, num_classes=10)
    assert folder == tmp_path / "cifar-10-batches-bin"
    assert sorted(p.name for p in folder.iterdir()) == [
        *(f"data_batch_{i}.bin" for i in range(1, 6)),
        "test_batch.bin",
    ]
    assert (folder / "test_batch.bin").stat().st_size == 4 * 3073  # the last 24 // 6 examples
    dataset = load_cifar(tmp_path, num_classes=10)
    assert dataset.name == "cifar10" and dataset.num_classes == 10 and dataset.augment == "crop-flip"
    assert dataset.mean == (0.4914, 0.4822, 0.4465) and dataset.std == (0.2470, 0.2435, 0.2616)
    assert dataset.train.x.shape == (20, 3, 32, 32) and dataset.test.x.shape == (4, 3, 32, 32)
    assert dataset.train.x.dtype == torch.uint8 and dataset.train.y.dtype == torch.int64
    np.testing.assert_array_equal(dataset.train.x.numpy(), images[:20])
    np.testing.assert_array_equal(dataset.test.x.numpy(), images[20:])
    np.testing.assert_array_equal(dataset.train.y.numpy(), labels[:20])
    np.testing.assert_array_equal(dataset.test.y.numpy(), labels[20:])


def test_cifar100_round_trip_from_the_folder_itself(tmp_path: Path) -> None:
    images, labels = _random_cifar(18, 100, seed=1)
    labels[0] = 99
    folder = write_cifar_binary(tmp_path, images, labels, num_classes=100)
    assert folder == tmp_path / "cifar-100-binary"
    assert sorted(p.name for p in folder.iterdir()) == ["test.bin", "train.bin"]
    dataset = load_cifar(folder, num_classes=100)
    assert dataset.name == "cifar100" and dataset.num_classes == 100 and dataset.augment == "crop-flip"
    assert dataset.mean == (0.5071, 0.4865, 0.4409) and dataset.std == (0.2673, 0.2564, 0.2762)
    np.testing.assert_array_equal(dataset.train.x.numpy(), images[:15])
    np.testing.assert_array_equal(dataset.test.x.numpy(), images[15:])
    np.testing.assert_array_equal(dataset.train.y.numpy(), labels[:15])
    np.testing.assert_array_equal(dataset.test.y.numpy(), labels[15:])


def test_pixel_layout_is_channel_planes(tmp_path: Path) -> None:
    """A hand-made record: label, then the red, green and blue 32×32 planes."""
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    planes = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.arange(1024) % 256]).astype(np.uint8)
    record = bytes([7]) + planes.tobytes()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(record)
    (folder / "test_batch.bin").write_bytes(record * 2)
    dataset = load_cifar(tmp_path, num_classes=10)
    assert len(dataset.train) == 5 and len(dataset.test) == 2
    image = dataset.train.x[0]
    assert image[0].eq(10).all() and image[1].eq(20).all()
    assert image[2, 1, 0].item() == 32 and image[2, 0, 5].item() == 5
    assert dataset.train.y.tolist() == [7] * 5


def test_cifar100_uses_the_fine_label(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    record = bytes([19, 83]) + bytes(3072)
    (folder / "train.bin").write_bytes(record * 3)
    (folder / "test.bin").write_bytes(record)
    dataset = load_cifar(tmp_path, num_classes=100)
    assert dataset.train.y.tolist() == [83, 83, 83] and dataset.test.y.tolist() == [83]


def test_record_size_mismatch(tmp_path: Path) -> None:
    images, labels = _random_cifar(12, 10)
    folder = write_cifar_binary(tmp_path, images, labels, num_classes=10)
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as info:
        load_cifar(tmp_path, num_classes=10)
    message = str(info.value)
    assert "data_batch_3.bin" in message
    assert f"{2 * 3073 - 100} bytes is not a multiple of the cifar10 record size 3073" in message


def test_cifar100_files_read_as_cifar10_are_rejected(tmp_path: Path) -> None:
    images, labels = _random_cifar(6, 100)
    folder = write_cifar_binary(tmp_path, images, labels, num_classes=100)
    (folder.parent / "cifar-10-batches-bin").mkdir()
    for i in range(1, 6):
        (folder.parent / "cifar-10-batches-bin" / f"data_batch_{i}.bin").write_bytes(
            (folder / "train.bin").read_bytes()
        )
    (folder.parent / "cifar-10-batches-bin" / "test_batch.bin").write_bytes((folder / "test.bin").read_bytes())
    with pytest.raises(DataError, match=r"data_batch_1\.bin: 15370 bytes is not a multiple of .* 3073"):
        load_cifar(tmp_path, num_classes=10)


@pytest.mark.parametrize(
    ("num_classes", "file_name", "label_offset"), [(10, "test_batch.bin", 0), (100, "train.bin", 1)]
)
def test_label_out_of_range(tmp_path: Path, num_classes: int, file_name: str, label_offset: int) -> None:
    images, labels = _random_cifar(12, num_classes)
    folder = write_cifar_binary(tmp_path, images, labels, num_classes=num_classes)
    path = folder / file_name
    data = bytearray(path.read_bytes())
    record = 3072 + (1 if num_classes == 10 else 2)
    data[record + label_offset] = num_classes  # the second record's label
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        load_cifar(tmp_path, num_classes=num_classes)
    message = str(info.value)
    assert file_name in message
    assert f"record 1 has label {num_classes}" in message
    assert f"[0, {num_classes})" in message


def test_missing_files_name_the_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_cifar(tmp_path, num_classes=10)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-bin") in message
    assert "data_batch_1.bin" in message and "test_batch.bin" in message


def test_one_missing_batch_is_named(tmp_path: Path) -> None:
    images, labels = _random_cifar(12, 10)
    folder = write_cifar_binary(tmp_path, images, labels, num_classes=10)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match=r"cifar-10-batches-bin lacks data_batch_4\.bin;"):
        load_cifar(tmp_path, num_classes=10)


def test_unsupported_class_count(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="10 or 100 classes, got num_classes=20"):
        load_cifar(tmp_path, num_classes=20)


def test_writer_rejects_bad_inputs(tmp_path: Path) -> None:
    images, labels = _random_cifar(6, 10)
    with pytest.raises(DataError, match="uint8 N×3×32×32"):
        write_cifar_binary(tmp_path, images[:, :, :16], labels, num_classes=10)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\)"):
        write_cifar_binary(tmp_path, images, labels + 10, num_classes=10)

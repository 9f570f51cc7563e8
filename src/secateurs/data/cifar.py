"""CIFAR-10 and CIFAR-100 in their binary ("bin") distribution format.

https://www.cs.toronto.edu/~kriz/cifar.html describes the files:

- CIFAR-10, ``cifar-10-batches-bin/``: ``data_batch_1.bin`` … ``data_batch_5.bin`` (training) and
  ``test_batch.bin``; each record is 1 label byte followed by 3072 pixel bytes (1024 red, 1024 green,
  1024 blue, each plane 32×32 row-major).
- CIFAR-100, ``cifar-100-binary/``: ``train.bin`` and ``test.bin``; each record is a coarse label
  byte, a fine label byte and 3072 pixel bytes. The fine label (100 classes) is used.

Files are read whole and cut into records with one numpy reshape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from secateurs.data.types import Dataset, TensorData
from secateurs.errors import DataError

IMAGE_SHAPE = (3, 32, 32)
IMAGE_BYTES = 3 * 32 * 32
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR100_FOLDER = "cifar-100-binary"


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its files and how its records look."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int  # label bytes before the pixels of each record
    label_offset: int  # which of those bytes is the label used
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + IMAGE_BYTES

    @property
    def files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files


LAYOUTS: dict[int, CifarLayout] = {
    10: CifarLayout(
        name="cifar10",
        folder=CIFAR10_FOLDER,
        train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        test_files=("test_batch.bin",),
        label_bytes=1,
        label_offset=0,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    100: CifarLayout(
        name="cifar100",
        folder=CIFAR100_FOLDER,
        train_files=("train.bin",),
        test_files=("test.bin",),
        label_bytes=2,
        label_offset=1,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


def _resolve_folder(root: Path, layout: CifarLayout) -> Path:
    """Return ``root/<upstream folder>`` or ``root`` itself, whichever holds all the files."""
    for candidate in (root / layout.folder, root):
        if all((candidate / name).is_file() for name in layout.files):
            return candidate
    names = ", ".join(layout.files)
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "no such directory"
    else:
        problem = "no CIFAR files found"
        for candidate in (root / layout.folder, root):
            missing = [name for name in layout.files if not (candidate / name).is_file()]
            if len(missing) < len(layout.files):
                problem = f"{candidate} lacks {', '.join(missing)}"
                break
    raise DataError(
        f"{root}: {problem}; {layout.name} expects the binary files {names} in {root / layout.folder} "
        f"or in {root} itself (point --data-dir or SECATEURS_DATA at the extracted folder or its parent)"
    )


def _read_records(path: Path, layout: CifarLayout, num_classes: int) -> TensorData:
    """Decode one binary batch file into N×3×32×32 uint8 images and int64 labels."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DataError(f"{path}: cannot read CIFAR file ({error})") from error
    record = layout.record_bytes
    if data.size % record != 0:
        raise DataError(
            f"{path}: {data.size} bytes is not a multiple of the {layout.name} record size {record} "
            f"({layout.label_bytes} label byte(s) + {IMAGE_BYTES} pixel bytes); the file is truncated or "
            "of another format"
        )
    if data.size == 0:
        raise DataError(f"{path}: empty file; expected {layout.name} records of {record} bytes")
    records = data.reshape(-1, record)
    labels = records[:, layout.label_offset]
    if int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{path}: record {bad} has label {int(labels[bad])}; {layout.name} labels must lie in [0, {num_classes})"
        )
    images = np.ascontiguousarray(records[:, layout.label_bytes :]).reshape(-1, *IMAGE_SHAPE)
    return TensorData(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def _concatenate(parts: list[TensorData]) -> TensorData:
    if len(parts) == 1:
        return parts[0]
    return TensorData(torch.cat([part.x for part in parts]), torch.cat([part.y for part in parts]))


def load_cifar(root: Path, *, num_classes: int) -> Dataset:
    """Load CIFAR-10 (``num_classes=10``) or CIFAR-100 (``num_classes=100``) from its binary files.

    ``root`` may be the extracted folder (``cifar-10-batches-bin`` / ``cifar-100-binary``) or the
    folder that contains it. Returns a `Dataset` named ``"cifar10"``/``"cifar100"`` with uint8
    N×3×32×32 images, int64 labels (CIFAR-100: the fine labels), the usual per-channel mean/std and
    ``augment="crop-flip"``. Raises `DataError` for missing files, a file whose size is not a
    multiple of the record size, or a label ≥ ``num_classes``.
    """
    if num_classes not in LAYOUTS:
        raise DataError(f"CIFAR has 10 or 100 classes, got num_classes={num_classes}")
    layout = LAYOUTS[num_classes]
    folder = _resolve_folder(Path(root), layout)
    train = _concatenate([_read_records(folder / name, layout, num_classes) for name in layout.train_files])
    test = _concatenate([_read_records(folder / name, layout, num_classes) for name in layout.test_files])
    return Dataset(
        name=layout.name,
        train=train,
        test=test,
        num_classes=num_classes,
        mean=layout.mean,
        std=layout.std,
        augment="crop-flip",
    )

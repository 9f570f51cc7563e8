"""Writers for the on-disk dataset formats that `idx` and `cifar` read.

Used by the tests (which write tiny files in the real formats) and by users converting their own data.
"""

from __future__ import annotations

import gzip as gzip_module
from pathlib import Path

import numpy as np

from secateurs.data.cifar import CIFAR10_FOLDER, CIFAR100_FOLDER, IMAGE_SHAPE
from secateurs.data.idx import IDX_DTYPES
from secateurs.errors import DataError

_TYPE_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}


def write_idx(path: Path, array: np.ndarray, *, gzip: bool) -> None:
    """Write ``array`` to ``path`` as one IDX file, gzip-compressed when ``gzip`` is true.

    The file name is used as given (no ``.gz`` suffix is added). Accepted dtypes: uint8, int8,
    int16, int32, float32, float64; 1 to 16 dimensions, each below 2**32. Compression is
    deterministic (no timestamp in the gzip header). Mutates nothing but the file.
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _TYPE_CODES:
        accepted = ", ".join(dtype.name for dtype in IDX_DTYPES.values())
        raise DataError(f"{path}: cannot write {array.dtype} as IDX; accepted dtypes: {accepted}")
    if not 1 <= array.ndim <= 16 or any(size >= 2**32 for size in array.shape):
        raise DataError(f"{path}: cannot write shape {array.shape} as IDX; expected 1 to 16 dimensions < 2**32")
    code = _TYPE_CODES[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    data = header + payload
    if gzip:
        data = gzip_module.compress(data, compresslevel=6, mtime=0)
    Path(path).write_bytes(data)


def write_cifar_binary(folder: Path, images: np.ndarray, labels: np.ndarray, *, num_classes: int) -> Path:
    """Write images and labels in the CIFAR binary format under ``folder``; return the data folder.

    ``images`` are uint8 N×3×32×32 (the record's R, G, B planes), ``labels`` integers in
    [0, num_classes). The last ``N // 6`` examples become the test set (CIFAR's own 50,000 / 10,000
    ratio), the rest the training set. For ``num_classes == 10`` this writes
    ``folder/cifar-10-batches-bin/data_batch_1..5.bin`` (the training set cut into five near-equal
    batches) and ``test_batch.bin``, records of 1 label byte + 3072 pixel bytes. Otherwise it writes
    the CIFAR-100 layout ``folder/cifar-100-binary/train.bin`` and ``test.bin``, records of a coarse
    label byte (written as 0: the coarse classes are not known here), the fine label byte and
    3072 pixel bytes. Creates the folders it needs.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"CIFAR images must be uint8 N×3×32×32, got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
        raise DataError(
            f"CIFAR labels must be an integer vector of {images.shape[0]} entries, got {labels.dtype} {labels.shape}"
        )
    if not 2 <= num_classes <= 256:
        raise DataError(f"num_classes must lie in 2..256 for the CIFAR binary format, got {num_classes}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"CIFAR labels must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}")
    count = images.shape[0]
    cut = count - count // 6
    label_columns = [labels.astype(np.uint8)[:, None]]
    if num_classes != 10:
        label_columns.insert(0, np.zeros((count, 1), dtype=np.uint8))
    records = np.concatenate([*label_columns, images.reshape(count, -1)], axis=1)
    if num_classes == 10:
        target = Path(folder) / CIFAR10_FOLDER
        parts = {f"data_batch_{i + 1}.bin": part for i, part in enumerate(np.array_split(records[:cut], 5))}
        parts["test_batch.bin"] = records[cut:]
    else:
        target = Path(folder) / CIFAR100_FOLDER
        parts = {"train.bin": records[:cut], "test.bin": records[cut:]}
    target.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        (target / name).write_bytes(np.ascontiguousarray(part).tobytes())
    return target

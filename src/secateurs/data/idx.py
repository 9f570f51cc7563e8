"""The IDX format of MNIST and Fashion-MNIST: a reader and the four-file dataset loader.

An IDX file (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT") is a header followed by a
payload, all integers big-endian:

- bytes 0-1: zero; byte 2: the element type code (`IDX_DTYPES`); byte 3: the number of dimensions ``d``;
- ``d`` unsigned 32-bit dimension sizes;
- ``prod(dims) * itemsize`` bytes of data in C order.

Files are read whole (gzip or raw, recognised by their first two bytes rather than their suffix) and
decoded with `numpy.frombuffer`, so the four Fashion-MNIST files load in well under a second.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from secateurs.data.types import Dataset, TensorData
from secateurs.errors import DataError

logger = logging.getLogger(__name__)

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),  # unsigned byte
    0x09: np.dtype(">i1"),  # signed byte
    0x0B: np.dtype(">i2"),  # short
    0x0C: np.dtype(">i4"),  # int
    0x0D: np.dtype(">f4"),  # float
    0x0E: np.dtype(">f8"),  # double
}
"""IDX type code → big-endian numpy dtype, as listed by the IDX specification."""

MAX_IDX_DIMENSIONS = 16
"""The largest dimension count accepted (real files use 1 to 4; this guards against garbage headers)."""

GZIP_MAGIC = b"\x1f\x8b"

IDX_FILE_NAMES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""The upstream (LeCun / Zalando) file names; each may also carry a ``.gz`` suffix."""

DEFAULT_MIN_CLASSES = 10


def _accepted_type_codes() -> str:
    return ", ".join(f"0x{code:02X} ({dtype.name})" for code, dtype in IDX_DTYPES.items())


def _read_bytes(path: Path) -> bytes:
    """Return the file's bytes, gunzipped when it starts with the gzip magic number."""
    if not path.exists():
        raise DataError(f"{path}: no such IDX file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an IDX file (raw or .gz)")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read IDX file ({error.strerror or error})") from error
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except EOFError as error:
        raise DataError(
            f"{path}: truncated gzip stream ({len(data)} compressed bytes end before the end-of-stream "
            "marker); re-download or re-extract the file"
        ) from error
    except (OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt gzip stream ({error}); expected a gzip-compressed IDX file") from error


def read_idx(path: Path) -> torch.Tensor:
    """Read one IDX file (gzip-compressed or raw) and return its contents as a tensor.

    Returns a tensor shaped like the header's dimensions, of the IDX element type in native byte
    order (uint8 for MNIST-style images and labels; int8/int16/int32/float32/float64 for the other
    type codes). The tensor owns its memory. Raises `DataError`, naming the file, when the file is
    missing, the gzip stream is truncated or corrupt, the magic number or type code is unknown, the
    header is cut short, or the payload is shorter (truncated) or longer (trailing bytes) than the
    header promises.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes are too few for an IDX header (at least 4 expected)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: bad IDX magic number 0x{data[:4].hex().upper()}; expected 0x0000TTDD "
            "(two zero bytes, a type code, a dimension count)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{type_code:02X}; accepted codes: {_accepted_type_codes()}")
    if not 1 <= ndim <= MAX_IDX_DIMENSIONS:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions; expected 1 to {MAX_IDX_DIMENSIONS}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header_size} header bytes, found {len(data)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    numel = math.prod(dims)
    expected = numel * dtype.itemsize
    found = len(data) - header_size
    shape_text = "×".join(str(d) for d in dims)
    if found < expected:
        raise DataError(
            f"{path}: truncated IDX payload: the header ({shape_text} {dtype.name}) promises {expected} "
            f"bytes, found {found}"
        )
    if found > expected:
        raise DataError(
            f"{path}: {found - expected} trailing bytes after the IDX payload: the header ({shape_text} "
            f"{dtype.name}) promises {expected} bytes, found {found}"
        )
    try:
        array = np.frombuffer(data, dtype=dtype, count=numel, offset=header_size).reshape(dims)
    except ValueError as error:  # e.g. 0×4294967295×4294967295: empty, but too big a shape for numpy
        raise DataError(f"{path}: the IDX header's shape {shape_text} cannot be represented ({error})") from None
    # One copy: makes the array writable (torch requires it) and native-endian.
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def _find_idx_file(root: Path, stem: str) -> Path | None:
    """Return ``root/stem`` or ``root/stem.gz`` (the raw file first), or None when neither exists."""
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_files_message(root: Path, problem: str) -> str:
    names = ", ".join(f"{stem}[.gz]" for stem in IDX_FILE_NAMES.values())
    return (
        f"{root}: {problem}; an IDX dataset directory must hold the four files {names} "
        "(point --data-dir or SECATEURS_DATA at such a directory)"
    )


def _split(images_path: Path, labels_path: Path) -> TensorData:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise DataError(
            f"{images_path}: images must be a uint8 N×H×W array, found {images.dtype} {tuple(images.shape)}"
        )
    if labels.dim() != 1 or labels.dtype.is_floating_point:
        raise DataError(
            f"{labels_path}: labels must be a 1-D integer array, found {labels.dtype} {tuple(labels.shape)}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels; "
            "the counts must be equal"
        )
    labels = labels.long()
    if labels.numel() and int(labels.min()) < 0:
        raise DataError(f"{labels_path}: negative label {int(labels.min())}; labels must be 0 or more")
    return TensorData(images.unsqueeze(1), labels)


def load_idx_dataset(root: Path, *, name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> Dataset:
    """Load an MNIST-style dataset from the four upstream IDX files in ``root``.

    Each file may be raw or gzip-compressed (``.gz``); when both exist the raw one is read. Returns a
    `Dataset` with images shaped N×1×H×W (uint8), labels int64, ``augment="none"`` and the given
    ``mean``/``std``. ``num_classes`` is the largest label + 1, but at least 10 (so a subset whose
    labels all lie in 0..9 still has the ten classes of MNIST/Fashion-MNIST).
    Raises `DataError` for a missing directory or file, a malformed file, images that are not
    N×H×W, labels that are not 1-D, or image and label counts that differ.
    """
    root = Path(root)
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "no such directory"
        raise DataError(_missing_files_message(root, problem))
    found = {key: _find_idx_file(root, stem) for key, stem in IDX_FILE_NAMES.items()}
    missing = [f"{IDX_FILE_NAMES[key]}[.gz]" for key, path in found.items() if path is None]
    if missing:
        raise DataError(_missing_files_message(root, f"missing {', '.join(missing)}"))
    paths = {key: path for key, path in found.items() if path is not None}
    train = _split(paths["train_images"], paths["train_labels"])
    test = _split(paths["test_images"], paths["test_labels"])
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DataError(
            f"{paths['train_images']} holds {tuple(train.x.shape[2:])} images but {paths['test_images']} "
            f"holds {tuple(test.x.shape[2:])} images; train and test images must have the same size"
        )
    largest = max((int(split.y.max()) for split in (train, test) if len(split)), default=-1)
    num_classes = max(largest + 1, DEFAULT_MIN_CLASSES)
    logger.debug("loaded %s from %s: %d train, %d test", name, root, len(train), len(test))
    return Dataset(name=name, train=train, test=test, num_classes=num_classes, mean=mean, std=std)

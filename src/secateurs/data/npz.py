"""Datasets stored as a numpy ``.npz`` archive (read without pickle).

Accepted contents:

- ``x_train``, ``y_train``, ``x_test``, ``y_test``; or
- a single ``x``, ``y`` pair, of which the **last** ``N // 6`` examples become the test set and the
  rest the training set (no shuffling: shuffle before saving if the file is ordered by class).

Other arrays in the archive are ignored. Images are uint8 in one of three layouts: N×H×W (one
channel), N×H×W×C (channels-last, transposed on load) or N×C×H×W, with C in 1, 3 or 4. A 4-D array
is read as channels-last when its last axis has 1, 3 or 4 entries and axis 1 does not, or when both
do and only axes 1 and 2 are equal (N×4×4×3 is channels-last); otherwise it is read as N×C×H×W.
Labels are a 1-D integer array of non-negative class indices; ``num_classes`` is the largest + 1.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from secateurs.data.statistics import pixel_mean_std
from secateurs.data.types import Dataset, TensorData
from secateurs.errors import DataError

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
PAIR_KEYS = ("x", "y")
TEST_FRACTION_DENOMINATOR = 6
"""With a single ``x``/``y`` pair, the last ``N // 6`` examples are the test set."""

CHANNEL_COUNTS = (1, 3, 4)


def _to_nchw(path: Path, key: str, images: np.ndarray) -> np.ndarray:
    """Return ``images`` as a contiguous uint8 N×C×H×W array (see the module docstring)."""
    if images.dtype != np.uint8:
        raise DataError(
            f"{path}: '{key}' has dtype {images.dtype}; images must be uint8 (0..255), "
            "convert them with (x * 255).round().astype(np.uint8) if they are floats in [0, 1]"
        )
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        channels_first = images.shape[1] in CHANNEL_COUNTS
        channels_last = images.shape[3] in CHANNEL_COUNTS
        if channels_first and channels_last:
            channels_last = images.shape[1] == images.shape[2] and images.shape[2] != images.shape[3]
            channels_first = not channels_last
        if channels_last:
            return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        if channels_first:
            return images
    raise DataError(
        f"{path}: '{key}' has shape {images.shape}; accepted image layouts: N×H×W, N×H×W×C or N×C×H×W "
        f"with C in {', '.join(map(str, CHANNEL_COUNTS))}"
    )


def _labels(path: Path, key: str, labels: np.ndarray, count: int, images_key: str) -> np.ndarray:
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(
            f"{path}: '{key}' has dtype {labels.dtype} and shape {labels.shape}; labels must be a 1-D integer array"
        )
    if labels.shape[0] != count:
        raise DataError(
            f"{path}: '{images_key}' holds {count} images but '{key}' holds {labels.shape[0]} labels; "
            "the counts must be equal"
        )
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: '{key}' contains the negative label {labels.min()}; labels must be ≥ 0")
    return labels.astype(np.int64)


def _split(path: Path, arrays: dict[str, np.ndarray], x_key: str, y_key: str) -> TensorData:
    images = _to_nchw(path, x_key, arrays[x_key])
    labels = _labels(path, y_key, arrays[y_key], images.shape[0], x_key)
    return TensorData(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Open the archive without pickle and return the arrays this loader needs."""
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "no such file"
        raise DataError(f"{path}: {problem}; expected a .npz archive with {', '.join(SPLIT_KEYS)} (or x, y)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz archive ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path}: holds a single array, not a .npz archive; expected arrays {', '.join(SPLIT_KEYS)} (or x, y)"
        )
    with archive:
        found = list(archive.files)
        if all(key in found for key in SPLIT_KEYS):
            wanted: tuple[str, ...] = SPLIT_KEYS
        elif all(key in found for key in PAIR_KEYS):
            wanted = PAIR_KEYS
        else:
            raise DataError(
                f"{path}: found arrays [{', '.join(found)}]; expected {', '.join(SPLIT_KEYS)} or the pair x, y"
            )
        arrays: dict[str, np.ndarray] = {}
        for key in wanted:
            try:
                arrays[key] = archive[key]
            except ValueError as error:
                if "allow_pickle" in str(error):  # object arrays need pickle, which is never allowed
                    raise DataError(
                        f"{path}: '{key}' is an object array (it needs pickle, which is not allowed); "
                        "store plain uint8 images and integer labels"
                    ) from error
                raise DataError(f"{path}: cannot read '{key}' ({error})") from error
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
                raise DataError(f"{path}: cannot read '{key}' ({error})") from error
    return arrays


def load_npz(path: Path) -> Dataset:
    """Load a dataset from a ``.npz`` archive with ``numpy.load(path, allow_pickle=False)``.

    Returns a `Dataset` named ``"npz"`` with uint8 N×C×H×W images, int64 labels, ``num_classes`` =
    largest label + 1, mean/std computed per channel from the training images and ``augment="none"``.
    Raises `DataError` (naming the file) for missing keys (listing those found), object arrays,
    non-uint8 images, non-integer or negative labels, unknown layouts and mismatched counts or shapes.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    if "x_train" in arrays:
        train = _split(path, arrays, "x_train", "y_train")
        test = _split(path, arrays, "x_test", "y_test")
    else:
        full = _split(path, arrays, "x", "y")
        count = len(full)
        num_test = count // TEST_FRACTION_DENOMINATOR
        if num_test == 0:
            raise DataError(
                f"{path}: {count} examples in 'x' are too few to hold out the last 1/6 as a test set "
                f"(at least {TEST_FRACTION_DENOMINATOR} needed)"
            )
        train = full.subset(slice(0, count - num_test))
        test = full.subset(slice(count - num_test, count))
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DataError(
            f"{path}: training images are C×H×W {tuple(train.x.shape[1:])} but test images are "
            f"{tuple(test.x.shape[1:])}; they must match"
        )
    if len(train) == 0:
        raise DataError(f"{path}: the training set is empty")
    largest = max(int(split.y.max()) for split in (train, test) if len(split))
    mean, std = pixel_mean_std(train.x)
    return Dataset(name="npz", train=train, test=test, num_classes=largest + 1, mean=mean, std=std)

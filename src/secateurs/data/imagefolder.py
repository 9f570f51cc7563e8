"""Image folders: ``DIR/train/CLASS/*.jpg`` (and .jpeg, .png, .bmp, .webp) with ``DIR/val/`` and/or ``DIR/test/``.

Layout. ``DIR/train/`` holds one folder per class (searched recursively; hidden files and folders,
names starting with ``.``, are ignored). ``val/`` and ``test/`` hold the same class folders. Labels are
the class names' indices in sorted order. Which folder plays which part:

- ``train/`` + ``val/`` + ``test/``: ``val/`` is the validation split, ``test/`` the test split;
- ``train/`` + ``test/``: the validation split is carved from ``train/`` (``data.split``);
- ``train/`` + ``val/`` only: ``val/`` is the **test** split (the ImageNet convention: its "val" is
  what papers report), and the validation split is carved from ``train/``.

Images are decoded with Pillow (`secateurs.data.image_decode`: RGB or grayscale, short side resized
to ``image_size``, centre-cropped to a square) into uint8 tensors. The mean and std used for
normalisation are computed per channel on the ``train/`` images. Files that are not images (another
suffix) or that do not decode are skipped, with one log line per split counting them; ``strict``
refuses them instead, naming the first. Errors (`DataError`, one line): no such folder, no ``train/``,
neither ``val/`` nor ``test/``, no class folders, a split whose classes differ from ``train/``'s, a
split without images, a class without (readable) images.

Memory. The decoded size, N × C × S × S bytes, is logged. When it exceeds the memory budget (default
half of the available memory) the images are decoded once into a memory-mapped cache
(`secateurs.data.image_cache`, beside the data in ``DIR/.secateurs-cache/``, or in ``cache_dir`` when
``DIR`` is read-only) and read from it on every later load; the tensors are the same either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secateurs.data.image_cache import (
    EntryWriter,
    available_memory,
    cache_key,
    cache_root,
    entry_dir,
    read_entry,
    remove_stale,
)
from secateurs.data.image_decode import IMAGE_SUFFIXES, BadImage, decode_image, is_image_name
from secateurs.data.statistics import channel_histograms, mean_std_from_histograms
from secateurs.data.types import Dataset, TensorData
from secateurs.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 64
DEFAULT_CHANNELS = 3
SPLIT_FOLDERS = ("train", "val", "test")
MAX_NAMED = 5
DECODE_THREADS = 8
"""At most this many threads decode images (fewer on machines with fewer cores)."""
DECODE_CHUNK = 256
"""Images handed to the decoding threads at a time (a bounded number of decoded images in flight)."""
LAYOUT = "DIR/train/CLASS/IMAGE with DIR/val/ and/or DIR/test/ holding the same class folders"


@dataclass(frozen=True)
class ImageFolderOptions:
    """How an image folder is decoded and held (the ``imagefolder`` fields of `DataConfig`)."""

    image_size: int = DEFAULT_IMAGE_SIZE
    channels: int = DEFAULT_CHANNELS
    strict: bool = False
    memory_budget: int | None = None
    """Bytes; None: half of `available_memory`."""
    cache_dir: Path | None = None
    """Where the cache goes when the image folder is read-only."""


@dataclass
class FolderSplit:
    """One split folder after scanning: its classes, image files and the files it skips."""

    name: str
    root: Path
    classes: tuple[str, ...]
    files: list[tuple[Path, int]] = field(default_factory=list)
    """(image path, label), classes in order, files in sorted order within each."""
    not_images: list[Path] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)
    every_file: list[Path] = field(default_factory=list)
    """Every file seen (images, others, skipped): what the cache key hashes."""

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for _, label in self.files:
            counts[label] += 1
        return counts


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _walk(folder: Path) -> Iterator[Path]:
    """Every visible file below ``folder``, in sorted order (symbolic links followed)."""
    for current, directories, files in os.walk(folder, followlinks=True):
        directories[:] = sorted(d for d in directories if _visible(d))
        for name in sorted(files):
            if _visible(name):
                yield Path(current) / name


def _class_names(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and _visible(entry.name)))


def _named(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def scan_split(root: Path, name: str, classes: tuple[str, ...] | None) -> FolderSplit:
    """List ``root``'s class folders and files; ``classes`` (train's) must match when given.

    Raises `DataError` for no class folders, classes other than ``classes``, no image at all, or a
    class folder without an image file.
    """
    found = _class_names(root)
    if not found:
        raise DataError(f"{root}: no class folders; an image folder is laid out as {LAYOUT}")
    if classes is not None and found != classes:
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        parts = ([f"missing {_named(missing)}"] if missing else []) + ([f"extra {_named(extra)}"] if extra else [])
        raise DataError(f"{root}: its classes differ from those of {root.parent / 'train'}: {'; '.join(parts)}")
    split = FolderSplit(name=name, root=root, classes=found)
    split.every_file.extend(path for path in sorted(root.iterdir()) if path.is_file() and _visible(path.name))
    split.not_images.extend(split.every_file)  # loose files outside the class folders are not used
    for label, class_name in enumerate(found):
        for path in _walk(root / class_name):
            split.every_file.append(path)
            if is_image_name(path):
                split.files.append((path, label))
            else:
                split.not_images.append(path)
    if not split.files:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        raise DataError(f"{root}: no images ({suffixes}) in its {len(found)} class folders")
    empty = [found[label] for label, count in enumerate(split.class_counts()) if count == 0]
    if empty:
        raise DataError(f"{root}: class folder(s) {_named(empty)} hold no image files; every class needs images")
    return split


def scan_folder(root: Path) -> dict[str, FolderSplit]:
    """The split folders of the image folder ``root`` (``train`` and ``val`` and/or ``test``), scanned."""
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "no such directory"
        raise DataError(f"{root}: {problem}; an image folder is laid out as {LAYOUT}")
    present = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    if "train" not in present:
        raise DataError(f"{root}: no train/ folder; an image folder is laid out as {LAYOUT}")
    if len(present) == 1:
        raise DataError(f"{root}: has train/ but neither val/ nor test/; an image folder is laid out as {LAYOUT}")
    splits = {"train": scan_split(root / "train", "train", None)}
    for name in present[1:]:
        splits[name] = scan_split(root / name, name, splits["train"].classes)
    return splits


def _refuse_strict(split: FolderSplit) -> None:
    if split.not_images:
        raise DataError(
            f"{split.not_images[0]}: not an image file (accepted: {', '.join(IMAGE_SUFFIXES)}); "
            f"refused because of strict (without it, such files are skipped)"
        )


def _log_split(split: FolderSplit, count: int) -> None:
    skipped = len(split.not_images) + len(split.corrupt)
    line = f"imagefolder {split.root}: {count:,} images in {len(split.classes)} classes"
    if skipped == 0:
        log.info("%s", line)
        return
    first = split.corrupt[0][0] if split.corrupt else split.not_images[0]
    log.warning(
        "%s; skipped %d file(s): %d corrupt, %d not images (first: %s)",
        line,
        skipped,
        len(split.corrupt),
        len(split.not_images),
        first,
    )


def _decode_or_error(path: Path, options: ImageFolderOptions) -> np.ndarray | BadImage:
    try:
        return decode_image(path, options.image_size, options.channels)
    except BadImage as error:
        return error


def _decoded(files: list[tuple[Path, int]], options: ImageFolderOptions) -> Iterator[np.ndarray | BadImage]:
    """Each file decoded (or its `BadImage`), in order; `DECODE_THREADS` threads decode a chunk at a time.

    Pillow releases the GIL while it decodes and resizes, so threads decode in parallel; every image is
    decoded on its own, so the result does not depend on the thread count.
    """
    threads = max(1, min(DECODE_THREADS, os.cpu_count() or 1))
    if threads == 1 or len(files) < 2 * DECODE_CHUNK:
        for path, _ in files:
            yield _decode_or_error(path, options)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="imagefolder") as pool:
        for start in range(0, len(files), DECODE_CHUNK):
            chunk = [path for path, _ in files[start : start + DECODE_CHUNK]]
            yield from pool.map(lambda path: _decode_or_error(path, options), chunk)


def _decode_into(split: FolderSplit, out: np.ndarray, options: ImageFolderOptions) -> tuple[np.ndarray, torch.Tensor]:
    """Decode ``split``'s images into the rows of ``out`` (in order, skipping bad ones).

    Returns the labels of the rows written and the C×256 pixel histograms of those images. Records
    skipped files in ``split.corrupt``; under ``strict`` the first bad file is a `DataError`.
    """
    labels: list[int] = []
    histograms = torch.zeros(options.channels, 256, dtype=torch.int64)
    for (path, label), pixels in zip(split.files, _decoded(split.files, options), strict=True):
        if isinstance(pixels, BadImage):
            if options.strict:
                raise DataError(f"{path}: not a readable image ({pixels}); refused because of strict") from None
            split.corrupt.append((path, str(pixels)))
            continue
        out[len(labels)] = pixels
        histograms += channel_histograms(torch.from_numpy(pixels))
        labels.append(label)
    counts = [0] * len(split.classes)
    for label in labels:
        counts[label] += 1
    unreadable = [split.classes[label] for label, count in enumerate(counts) if count == 0]
    if unreadable:
        raise DataError(
            f"{split.root}: class folder(s) {_named(unreadable)} hold no readable image "
            f"({len(split.corrupt)} file(s) of this split did not decode); every class needs images"
        )
    return np.asarray(labels, dtype=np.int64), histograms


def _relative_files(root: Path, splits: dict[str, FolderSplit]) -> Iterator[tuple[str, int, int]]:
    for split in splits.values():
        for path in split.every_file:
            status = path.stat()
            yield str(path.relative_to(root)), status.st_size, status.st_mtime_ns


def _decode_in_memory(
    splits: dict[str, FolderSplit], options: ImageFolderOptions
) -> tuple[dict[str, TensorData], torch.Tensor]:
    shape = (options.channels, options.image_size, options.image_size)
    data: dict[str, TensorData] = {}
    histograms = torch.zeros(0)
    for name, split in splits.items():
        images = np.empty((len(split.files), *shape), dtype=np.uint8)
        labels, counted = _decode_into(split, images, options)
        if name == "train":
            histograms = counted
        data[name] = TensorData(torch.from_numpy(images[: len(labels)]), torch.from_numpy(labels))
        _log_split(split, len(labels))
    return data, histograms


def _decode_to_cache(
    root: Path, splits: dict[str, FolderSplit], options: ImageFolderOptions, key: str
) -> tuple[dict[str, TensorData], torch.Tensor]:
    """Read the mapped cache entry of ``key`` (building it first when missing or unusable)."""
    fallback = options.cache_dir if options.cache_dir is not None else Path.home() / ".cache" / "secateurs"
    cache = cache_root(root, fallback)
    entry = entry_dir(cache, key)
    found = read_entry(entry, key, list(splits))
    if found is None:
        log.info("imagefolder %s: decoding once into the memory-mapped cache %s", root, entry)
        shape = (options.channels, options.image_size, options.image_size)
        labels: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {
            "key": key,
            "folder": str(root.resolve()),
            "image_size": options.image_size,
            "channels": options.channels,
            "classes": list(splits["train"].classes),
            "counts": {},
            "skipped": {},
        }
        with EntryWriter(entry) as writer:
            for name, split in splits.items():
                images = writer.create(name, len(split.files), shape)
                labels[name], counted = _decode_into(split, images, options)
                images.flush()
                del images
                if name == "train":
                    meta["histograms"] = counted.tolist()
                meta["counts"][name] = len(labels[name])
                meta["skipped"][name] = {
                    "corrupt": [str(path) for path, _ in split.corrupt],
                    "not_images": [str(path) for path in split.not_images],
                }
            writer.commit(labels, meta)
        remove_stale(cache, entry, folder=meta["folder"], image_size=options.image_size, channels=options.channels)
        found = read_entry(entry, key, list(splits))
        if found is None:
            raise DataError(f"{entry}: the image cache just written cannot be read back")
    mapped, meta = found
    data: dict[str, TensorData] = {}
    for name, split in splits.items():
        skipped = meta["skipped"][name]
        split.corrupt = [(Path(path), "did not decode when the cache was built") for path in skipped["corrupt"]]
        if options.strict and split.corrupt:
            raise DataError(f"{split.corrupt[0][0]}: not a readable image; refused because of strict")
        arrays = mapped[name]
        data[name] = TensorData(torch.from_numpy(arrays.images), torch.from_numpy(arrays.labels), mapped=True)
        _log_split(split, len(arrays.labels))
    return data, torch.tensor(meta["histograms"], dtype=torch.int64)


def estimated_bytes(splits: dict[str, FolderSplit], options: ImageFolderOptions) -> int:
    """The decoded size of every image file: N × C × S × S bytes of images plus 8 bytes of label each."""
    count = sum(len(split.files) for split in splits.values())
    return count * (options.channels * options.image_size**2 + 8)


def _megabytes(count: int) -> str:
    return f"{count / 2**20:,.1f} MB"


def load_image_folder(root: Path, options: ImageFolderOptions | None = None) -> Dataset:
    """Load the image folder ``root`` (see the module docstring) as a `Dataset` named ``"imagefolder"``.

    ``val`` is set when ``val/`` and ``test/`` both exist. ``preprocessing`` records the image size,
    channels, resize rule and where the images are held. Raises `DataError` (one line) for the layout
    errors listed in the module docstring, and under ``strict`` for the first file that is not an image.
    """
    options = options or ImageFolderOptions()
    root = Path(root)
    splits = scan_folder(root)
    if options.strict:
        for split in splits.values():
            _refuse_strict(split)
    needed = estimated_bytes(splits, options)
    budget = options.memory_budget if options.memory_budget is not None else available_memory() // 2
    fits = needed <= budget
    count = sum(len(split.files) for split in splits.values())
    shape_text = f"{options.channels}×{options.image_size}×{options.image_size}"
    log.info(
        "imagefolder %s: %s images at %s need %s as uint8 (memory budget %s): %s",
        root,
        f"{count:,}",
        shape_text,
        _megabytes(needed),
        _megabytes(budget),
        "held in memory" if fits else "memory-mapped from a cache file",
    )
    if fits:
        data, histograms = _decode_in_memory(splits, options)
    else:
        key = cache_key(_relative_files(root, splits), options.image_size, options.channels)
        data, histograms = _decode_to_cache(root, splits, options, key)
    mean, std = mean_std_from_histograms(histograms)
    has_both = "val" in data and "test" in data
    test = data["test"] if "test" in data else data["val"]
    classes = splits["train"].classes
    return Dataset(
        name="imagefolder",
        train=data["train"],
        test=test,
        val=data["val"] if has_both else None,
        num_classes=len(classes),
        mean=mean,
        std=std,
        classes=classes,
        preprocessing={
            "image_size": options.image_size,
            "channels": options.channels,
            "resize": f"short side to {options.image_size} (bilinear), centre crop {options.image_size}×"
            f"{options.image_size}",
            "color": "RGB" if options.channels == 3 else "L (grayscale)",
            "folders": {
                "validation": "val/" if has_both else "carved from train/",
                "test": "test/" if "test" in data else "val/",
            },
            "held": "memory" if fits else "memory-mapped cache",
        },
    )

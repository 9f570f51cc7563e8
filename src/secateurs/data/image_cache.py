"""The memory-mapped cache of a decoded image folder: written once, read without pickle.

A cache entry is a directory ``imagefolder-KEY/`` holding, per split (``train``, ``val``, ``test``),
``SPLIT.images.npy`` (uint8 N×C×S×S) and ``SPLIT.labels.npy`` (int64 N), plus ``meta.json`` (format
version, key, image size, channels, class names, the folder it was made from, per-split counts, the
files skipped, and the training images' per-channel pixel histograms). The ``.npy`` files are opened
with ``numpy.load(mmap_mode="c", allow_pickle=False)``: copy-on-write pages of the file, never
unpickled, never read whole.

``KEY`` is a SHA-256 of the format version, the image size, the channel count and, for every file
under the split folders, its path relative to the folder, its size and its modification time
(nanoseconds): adding, removing, replacing or touching any file gives a new key, so a stale entry is
never read. An entry is built in a hidden staging directory and renamed into place; entries of the
same folder with the same image size and channels but another key are removed once a new one exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from secateurs.io.files import atomic_write_json, read_json, replace_dir, staging_dir

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_FOLDER = ".secateurs-cache"
"""The cache directory created inside a writable image folder."""
META_FILE = "meta.json"


def cache_key(files: Iterable[tuple[str, int, int]], image_size: int, channels: int) -> str:
    """The hex SHA-256 naming a cache entry: ``files`` are (relative path, size, mtime_ns) triples."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_VERSION, "size": image_size, "channels": channels}).encode())
    for relative, size, mtime in files:
        digest.update(f"\n{relative}\t{size}\t{mtime}".encode())
    return digest.hexdigest()


def writable_dir(path: Path) -> bool:
    """True when a directory can be created in ``path`` (checked by creating the cache folder)."""
    target = path / CACHE_FOLDER
    try:
        target.mkdir(exist_ok=True)
    except OSError:
        return False
    return os.access(target, os.W_OK)


def cache_root(folder: Path, fallback: Path) -> Path:
    """``folder/.secateurs-cache`` when it can be written, else ``fallback`` (created)."""
    if writable_dir(folder):
        return folder / CACHE_FOLDER
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def entry_dir(root: Path, key: str) -> Path:
    return root / f"imagefolder-{key[:32]}"


@dataclass(frozen=True)
class CachedSplit:
    """One split read from a cache entry: mapped images and labels."""

    images: np.ndarray
    labels: np.ndarray


def read_entry(entry: Path, key: str, splits: Sequence[str]) -> tuple[dict[str, CachedSplit], dict[str, Any]] | None:
    """The mapped splits and the meta of the entry ``entry``; None when it is missing or unusable.

    An entry whose meta does not match ``key``, lacks a split, or holds arrays of the wrong dtype or
    shape is unusable (logged); the caller rebuilds it.
    """
    meta_path = entry / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = read_json(meta_path, "image cache meta")
        if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION or meta.get("key") != key:
            raise ValueError("its meta.json belongs to another version or folder")
        shape = (int(meta["channels"]), int(meta["image_size"]), int(meta["image_size"]))
        mapped: dict[str, CachedSplit] = {}
        for split in splits:
            count = int(meta["counts"][split])
            images = np.load(entry / f"{split}.images.npy", mmap_mode="c", allow_pickle=False)
            labels = np.load(entry / f"{split}.labels.npy", mmap_mode="c", allow_pickle=False)
            if images.dtype != np.uint8 or images.shape[1:] != shape or images.shape[0] < count:
                raise ValueError(f"{split}.images.npy is {images.dtype} {images.shape}, expected uint8 N×{shape}")
            if labels.dtype != np.int64 or labels.shape != (count,):
                raise ValueError(f"{split}.labels.npy is {labels.dtype} {labels.shape}, expected int64 ({count},)")
            mapped[split] = CachedSplit(images[:count], labels)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("image cache %s is unusable (%s); rebuilding it", entry, error)
        return None
    return mapped, meta


class EntryWriter:
    """Builds one cache entry: `create` a split's arrays, fill them, then `commit` the meta.

    Use as a context manager; an exception removes the staging directory and leaves no entry.
    """

    def __init__(self, entry: Path) -> None:
        self.entry = entry
        self._context = staging_dir(entry)
        self.staging = Path()

    def __enter__(self) -> EntryWriter:
        self.staging = self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)

    def create(self, split: str, count: int, shape: tuple[int, int, int]) -> np.memmap:
        """A writable, file-backed uint8 ``count × shape`` array for ``split``'s images."""
        return np.lib.format.open_memmap(
            self.staging / f"{split}.images.npy", mode="w+", dtype=np.uint8, shape=(count, *shape)
        )

    def commit(self, labels: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Write the labels and ``meta.json``, then rename the entry into place (replacing a stale one)."""
        for split, values in labels.items():
            np.save(self.staging / f"{split}.labels.npy", np.ascontiguousarray(values, dtype=np.int64))
        atomic_write_json(self.staging / META_FILE, {**meta, "version": CACHE_VERSION})
        replace_dir(self.staging, self.entry)


def remove_stale(root: Path, keep: Path, *, folder: str, image_size: int, channels: int) -> None:
    """Delete the entries under ``root`` made from ``folder`` at this size and channel count, except ``keep``."""
    for other in root.glob("imagefolder-*"):
        if other == keep or not (other / META_FILE).is_file():
            continue
        try:
            meta = json.loads((other / META_FILE).read_text())
        except (OSError, ValueError):
            continue
        same = (meta.get("folder"), meta.get("image_size"), meta.get("channels")) == (folder, image_size, channels)
        if same:
            log.info("removing the stale image cache %s", other)
            shutil.rmtree(other, ignore_errors=True)


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable`` of /proc/meminfo, else physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError):
        return 4 * 2**30

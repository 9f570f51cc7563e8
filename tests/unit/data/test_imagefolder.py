"""Image folders: layout rules, decoding (resize, crop, colour modes), skipped and refused files, the
per-channel statistics, and the memory-mapped cache (identical tensors, invalidation, read-only data)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from image_folders import CLASSES, rgb, write_folder
from PIL import Image

from secateurs.config import DataConfig
from secateurs.data import image_cache
from secateurs.data import imagefolder as imagefolder_module
from secateurs.data.image_decode import decode_image
from secateurs.data.imagefolder import ImageFolderOptions, load_image_folder
from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.registry import load_data
from secateurs.data.statistics import pixel_mean_std
from secateurs.data.types import split_validation
from secateurs.errors import ConfigError, DataError

SMALL = ImageFolderOptions(image_size=8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "images")


# ------------------------------------------------------------------------------------------- decoding
def test_short_side_resize_and_centre_crop(tmp_path: Path) -> None:
    columns = np.tile(np.arange(16, dtype=np.uint8) * 10, (8, 1))  # 16 wide, 8 high: no resize to 8
    Image.fromarray(columns, "L").save(tmp_path / "wide.png")
    pixels = decode_image(tmp_path / "wide.png", 8, 1)
    assert pixels.shape == (1, 8, 8) and pixels.dtype == np.uint8
    assert pixels[0, 0].tolist() == [40, 50, 60, 70, 80, 90, 100, 110]  # columns 4..11: the centre
    tall = rgb((10, 20, 30), seed=0, size=(6, 12))  # short side 6 → 8: 8 × 16, rows 4..11 kept
    tall.save(tmp_path / "tall.png")
    expected = np.asarray(tall.resize((8, 16), Image.Resampling.BILINEAR).crop((0, 4, 8, 12))).transpose(2, 0, 1)
    assert np.array_equal(decode_image(tmp_path / "tall.png", 8, 3), expected)


def test_colour_modes(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 77, dtype=np.uint8), "L").save(tmp_path / "gray.png")
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = (210, 30, 60), 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(decode_image(tmp_path / "gray.png", 8, 3), np.full((3, 8, 8), 77))  # replicated
    assert decode_image(tmp_path / "rgba.png", 8, 3)[:, 0, 0].tolist() == [210, 30, 60]  # alpha dropped
    luma = (210 * 299 + 30 * 587 + 60 * 114 + 500) // 1000  # ITU-R 601-2, Pillow's rounding
    assert int(decode_image(tmp_path / "rgba.png", 8, 1)[0, 0, 0]) == luma


# --------------------------------------------------------------------------------------------- layout
def test_folder_loads_with_sorted_class_labels_and_skips_bad_files(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="secateurs"):
        dataset = load_image_folder(folder, SMALL)
    assert dataset.name == "imagefolder" and dataset.classes == CLASSES and dataset.num_classes == 3
    assert dataset.train.x.shape == (14, 3, 8, 8) and dataset.test.x.shape == (6, 3, 8, 8)
    assert torch.bincount(dataset.train.y).tolist() == [5, 4, 5]  # cat: + alpha; fish: + gray
    assert dataset.val is None  # only test/: the validation split is carved from train/
    # cat's files in order: 00..03, alpha (RGBA, alpha dropped), broken (skipped)
    assert dataset.train.x[4, :, 0, 0].tolist() == [210, 30, 60]
    fish_gray = dataset.train.x[13]
    assert torch.equal(fish_gray, torch.full((3, 8, 8), 90, dtype=torch.uint8))
    mean, std = pixel_mean_std(dataset.train.x)
    assert dataset.mean == mean and dataset.std == std
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"imagefolder {folder}/")]
    assert len(lines) == 2  # one per split
    assert lines[0].startswith(f"imagefolder {folder / 'train'}: 14 images in 3 classes; skipped 2 file(s)")
    assert "1 corrupt, 1 not images" in lines[0]
    assert lines[1] == f"imagefolder {folder / 'test'}: 6 images in 3 classes"
    assert any("need" in r.getMessage() and "held in memory" in r.getMessage() for r in caplog.records)
    assert dataset.preprocessing["image_size"] == 8 and dataset.preprocessing["held"] == "memory"


def test_val_and_test_folders(tmp_path: Path) -> None:
    both = load_image_folder(write_folder(tmp_path / "both", splits=("train", "val", "test"), extras=False), SMALL)
    assert both.val is not None and len(both.val) == 6 and len(both.test) == 6
    splits = split_validation(both, "stratified")
    assert splits.info is not None and splits.info.kind == "folder" and len(splits.train) == 12
    assert both.preprocessing["folders"] == {"validation": "val/", "test": "test/"}
    only_val = load_image_folder(write_folder(tmp_path / "val", splits=("train", "val"), extras=False), SMALL)
    assert only_val.val is None and len(only_val.test) == 6  # val/ alone is the test split
    assert only_val.preprocessing["folders"] == {"validation": "carved from train/", "test": "val/"}


def test_strict_refuses_the_first_bad_file(folder: Path) -> None:
    strict = ImageFolderOptions(image_size=8, strict=True)
    with pytest.raises(DataError, match=r"^.*train/dog/notes\.txt: not an image file .*refused because of strict"):
        load_image_folder(folder, strict)
    (folder / "train" / "dog" / "notes.txt").unlink()
    with pytest.raises(DataError, match=r"train/cat/broken\.png: not a readable image \(.*\); refused"):
        load_image_folder(folder, strict)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: shutil.rmtree(root / "train"), r"no train/ folder"),
        (lambda root: shutil.rmtree(root / "test"), r"has train/ but neither val/ nor test/"),
        (lambda root: [shutil.rmtree(p) for p in (root / "train").iterdir() if p.is_dir()], r"train: no class folders"),
        (lambda root: shutil.rmtree(root / "test" / "fish"), r"test: its classes differ from .*: missing fish"),
        (lambda root: (root / "test" / "bird").mkdir(), r"test: its classes differ .*: extra bird"),
        (
            lambda root: [p.unlink() for p in (root / "train" / "dog").glob("*.png")],
            r"train: class folder\(s\) dog hold no image files",
        ),
        (lambda root: [p.unlink() for p in root.rglob("*.png")], r"train: no images \(\.jpg, \.jpeg"),
        (
            lambda root: [p.write_bytes(b"junk") for p in (root / "train" / "dog").glob("*.png")],
            r"train: class folder\(s\) dog hold no readable image",
        ),
    ],
    ids=["no-train", "no-val-or-test", "no-classes", "missing-class", "extra-class", "empty-class", "no-images",
         "all-corrupt"],
)
def test_layout_errors_are_one_line(folder: Path, damage: Callable[[Path], object], message: str) -> None:
    damage(folder)
    with pytest.raises(DataError, match=message) as raised:
        load_image_folder(folder, SMALL)
    assert "\n" not in str(raised.value)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory; an image folder is laid out as DIR/train/CLASS/IMAGE"):
        load_image_folder(tmp_path / "nowhere")


def test_image_options_belong_to_imagefolder_only() -> None:
    with pytest.raises(ConfigError, match=r"data\.image_size applies to imagefolder only, not to dataset 'synthetic'"):
        load_data(DataConfig(name="synthetic", image_size=32))


# ---------------------------------------------------------------------------------- memory-mapped cache
def mapped_options(**fields: object) -> ImageFolderOptions:
    return ImageFolderOptions(image_size=8, memory_budget=1, **fields)  # type: ignore[arg-type]


def test_memory_mapped_path_gives_identical_tensors(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    in_memory = load_image_folder(folder, SMALL)
    with caplog.at_level(logging.INFO, logger="secateurs"):
        mapped = load_image_folder(folder, mapped_options())
    assert any("memory-mapped from a cache file" in r.getMessage() for r in caplog.records)
    entries = list((folder / ".secateurs-cache").glob("imagefolder-*"))
    assert len(entries) == 1 and (entries[0] / "train.images.npy").is_file()
    assert mapped.train.mapped and not in_memory.train.mapped
    for split in ("train", "test"):
        assert torch.equal(getattr(mapped, split).x, getattr(in_memory, split).x)
        assert torch.equal(getattr(mapped, split).y, getattr(in_memory, split).y)
    assert (mapped.mean, mapped.std) == (in_memory.mean, in_memory.std)
    # the same seeded split and the same batches, while the mapped training split stays mapped
    a, b = split_validation(in_memory), split_validation(mapped)
    assert b.train.mapped and torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    normalization = Normalization(in_memory.mean, in_memory.std)
    for (xa, ya), (xb, yb) in zip(
        BatchLoader(a.train, 4, normalization, shuffle=True, seed=2, augment="crop-flip"),
        BatchLoader(b.train, 4, normalization, shuffle=True, seed=2, augment="crop-flip"),
        strict=True,
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_the_cache_is_read_without_decoding(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "train" / "dog" / "notes.txt").unlink()  # strict would refuse it before reading any cache
    first = load_image_folder(folder, mapped_options())

    def no_decoding(*args: object) -> np.ndarray:
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(imagefolder_module, "decode_image", no_decoding)
    again = load_image_folder(folder, mapped_options())
    assert torch.equal(again.train.x, first.train.x)
    with pytest.raises(DataError, match=r"broken\.png: not a readable image; refused because of strict"):
        load_image_folder(folder, mapped_options(strict=True))  # the cache remembers the corrupt file


def test_a_changed_folder_rebuilds_the_cache(folder: Path) -> None:
    load_image_folder(folder, mapped_options())
    old = next((folder / ".secateurs-cache").glob("imagefolder-*"))
    replaced = folder / "train" / "dog" / "00.png"
    rgb((255, 255, 255), seed=9).save(replaced)
    os.utime(replaced, ns=(1, 1))
    rebuilt = load_image_folder(folder, mapped_options())
    entries = list((folder / ".secateurs-cache").glob("imagefolder-*"))
    assert len(entries) == 1 and entries[0] != old  # the stale entry is gone
    assert torch.equal(rebuilt.train.x, load_image_folder(folder, SMALL).train.x)
    other_size = load_image_folder(folder, ImageFolderOptions(image_size=4, memory_budget=1))
    assert other_size.train.x.shape[2:] == (4, 4)
    assert len(list((folder / ".secateurs-cache").glob("imagefolder-*"))) == 2  # one per image size


def test_a_read_only_folder_caches_in_the_cache_dir(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_cache, "writable_dir", lambda path: False)
    cache = tmp_path / "cache"
    mapped = load_image_folder(folder, mapped_options(cache_dir=cache))
    assert len(list(cache.glob("imagefolder-*"))) == 1 and not (folder / ".secateurs-cache").exists()
    assert torch.equal(mapped.train.x, load_image_folder(folder, SMALL).train.x)


def test_an_unusable_cache_entry_is_rebuilt(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    load_image_folder(folder, mapped_options())
    entry = next((folder / ".secateurs-cache").glob("imagefolder-*"))
    (entry / "train.labels.npy").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="secateurs"):
        again = load_image_folder(folder, mapped_options())
    assert any("is unusable" in r.getMessage() for r in caplog.records)
    assert torch.equal(again.train.y, load_image_folder(folder, SMALL).train.y)


def test_threaded_decoding_gives_the_sequential_result(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagefolder_module, "DECODE_THREADS", 1)
    sequential = load_image_folder(folder, SMALL)
    monkeypatch.setattr(imagefolder_module, "DECODE_THREADS", 4)
    monkeypatch.setattr(imagefolder_module, "DECODE_CHUNK", 3)  # 14 training files: 5 chunks over 4 threads
    monkeypatch.setattr(imagefolder_module.os, "cpu_count", lambda: 4)
    threaded = load_image_folder(folder, SMALL)
    assert torch.equal(threaded.train.x, sequential.train.x) and torch.equal(threaded.train.y, sequential.train.y)
    assert torch.equal(threaded.test.x, sequential.test.x)
    with pytest.raises(DataError, match=r"notes\.txt"):  # strict still names the first bad file
        load_image_folder(folder, ImageFolderOptions(image_size=8, strict=True))

"""Tiny image folders written with Pillow for the imagefolder tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog", "fish")
COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fish": (40, 40, 200)}


def rgb(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (12, 10)) -> Image.Image:
    """A ``size`` (width, height) RGB image of ``colour`` plus seeded noise."""
    noise = np.random.default_rng(seed).integers(0, 40, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8), "RGB")


def write_folder(
    root: Path,
    *,
    per_class: int = 4,
    test_per_class: int = 2,
    splits: tuple[str, ...] = ("train", "test"),
    extras: bool = True,
) -> Path:
    """``root/{train,test,...}/CLASS/NN.png`` for `CLASSES`; with ``extras`` train/ also holds a corrupt
    PNG (cat), a text file (dog), a grayscale image (fish), an RGBA image (cat) and a hidden file."""
    for split in splits:
        count = per_class if split == "train" else test_per_class
        for index, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                rgb(COLOURS[name], seed=1000 * index + number + (0 if split == "train" else 500)).save(
                    folder / f"{number:02d}.png"
                )
    if extras:
        train = root / "train"
        (train / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
        (train / "dog" / "notes.txt").write_text("not an image\n")
        Image.fromarray(np.full((10, 12), 90, dtype=np.uint8), "L").save(train / "fish" / "gray.png")
        rgba = np.zeros((10, 12, 4), dtype=np.uint8)
        rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 210, 30, 60, 128
        Image.fromarray(rgba, "RGBA").save(train / "cat" / "alpha.png")
        (train / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    return root

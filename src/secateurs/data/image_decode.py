"""Decoding one image file into a fixed-size uint8 array (Pillow).

An image is decoded, converted to RGB (``channels=3``) or grayscale (``channels=1``), resized so that
its *short* side is ``size`` pixels (bilinear, antialiased; the long side keeps the aspect ratio,
``round(long · size / short)``), then centre-cropped to ``size × size`` (the crop starts at
``(long − size) // 2``). Conversions follow Pillow's ``Image.convert``: grayscale and palette images
are expanded to RGB, the alpha channel of RGBA (and LA, PA) images is dropped, and RGB is reduced to
L with the ITU-R 601-2 luma transform. JPEG files are decoded at the smallest DCT scale that still
covers ``size`` (``Image.draft``), which is faster and changes nothing but the decoder's downscaling.
Identical files give identical arrays on every call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
"""File name suffixes (case-insensitive) read as images; any other file is not an image."""


class BadImage(Exception):
    """A file with an image suffix that Pillow cannot decode; the message says why."""


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def decode_image(path: Path, size: int, channels: int) -> np.ndarray:
    """Return ``path`` decoded as a ``channels × size × size`` uint8 array (see the module docstring).

    Raises `BadImage` when the file is not a decodable image (unknown format, truncated data, a zero
    size, a decompression bomb). Reads the file; mutates nothing.
    """
    from PIL import Image

    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as opened:
            opened.draft(mode, (size, size))
            image: Image.Image = opened
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")  # Pillow asks for this before dropping palette transparency
            converted = image.convert(mode)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise BadImage(f"{type(error).__name__}: {error}") from None
    width, height = converted.size
    if width == 0 or height == 0:
        raise BadImage(f"the image is {width}×{height} pixels")
    short = min(width, height)
    target = (max(size, round(width * size / short)), max(size, round(height * size / short)))
    if width == short:
        target = (size, target[1])
    if height == short:
        target = (target[0], size)
    resized = converted.resize(target, Image.Resampling.BILINEAR) if target != (width, height) else converted
    left, top = (target[0] - size) // 2, (target[1] - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    pixels = np.asarray(cropped, dtype=np.uint8)
    if channels == 1:
        return pixels[None].copy()
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))

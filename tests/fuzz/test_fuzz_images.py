"""Fuzzing the image-folder reader: one image file of a small folder replaced by arbitrary or cut bytes.

Without ``strict`` the folder loads (the file decoded or skipped) or fails with one line (its class lost
every image); with ``strict`` a file that does not decode is refused, naming it.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from fuzzing import fuzz_settings, loads_or_fails_cleanly
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from secateurs.data.imagefolder import ImageFolderOptions, load_image_folder


def encoded(format_name: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (9, 7, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=format_name)
    return buffer.getvalue()


VALID = {suffix: encoded(name) for suffix, name in ((".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP"))}


@st.composite
def image_bytes(draw: st.DrawFn) -> tuple[str, bytes]:
    """A suffix and a valid encoding of that format, cut short, bit-flipped, or arbitrary bytes."""
    suffix = draw(st.sampled_from(sorted(VALID)))
    data = VALID[suffix]
    kind = draw(st.sampled_from(["cut", "flip", "random"]))
    if kind == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif kind == "flip":
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1 :]
    else:
        data = draw(st.binary(max_size=256))
    return suffix, data


@fuzz_settings(examples=40)
@given(image_bytes(), st.booleans(), st.booleans())
def test_an_image_folder_with_one_damaged_file(case: tuple[str, bytes], strict: bool, alone: bool) -> None:
    suffix, data = case
    root = Path(tempfile.mkdtemp(prefix="fuzz-images-"))
    try:
        for split in ("train", "test"):
            for name in ("a", "b"):
                (root / split / name).mkdir(parents=True)
                (root / split / name / f"good{suffix}").write_bytes(VALID[suffix])
        if alone:  # the damaged file is its class's only image: losing it is an error
            (root / "train" / "b" / f"good{suffix}").unlink()
        (root / "train" / "b" / f"damaged{suffix}").write_bytes(data)
        options = ImageFolderOptions(image_size=4, strict=strict)
        message = loads_or_fails_cleanly(lambda: load_image_folder(root, options))
        if message is not None:
            assert "damaged" in message or "hold no readable image" in message, message
    finally:
        shutil.rmtree(root, ignore_errors=True)

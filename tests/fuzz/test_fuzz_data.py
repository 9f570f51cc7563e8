"""Fuzzing the dataset parsers: IDX (`read_idx`, `load_idx_dataset`) and CIFAR binary (`load_cifar`)."""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
from fuzzing import fuzz_settings, loads_or_fails_cleanly
from hypothesis import example, given
from hypothesis import strategies as st

from secateurs.data.cifar import LAYOUTS, load_cifar
from secateurs.data.files import write_cifar_binary, write_idx
from secateurs.data.idx import IDX_DTYPES, IDX_FILE_NAMES, load_idx_dataset, read_idx

sizes = st.integers(0, 6) | st.sampled_from([0, 1, 28, 255, 256, 65_535, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)


@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    """An IDX header (valid or not) and a payload of about, exactly, or not at all the promised length."""
    magic = draw(st.sampled_from([b"\x00\x00", b"\x00\x01", b"\x1f\x8b", b"\xff\xff"]))
    type_code = draw(st.sampled_from(sorted(IDX_DTYPES)) | st.integers(0, 255))
    dims = draw(st.lists(sizes, max_size=5))
    ndim = draw(st.just(len(dims)) | st.integers(0, 255))
    header = magic + bytes([type_code, ndim]) + struct.pack(f">{len(dims)}I", *dims)
    itemsize = IDX_DTYPES[type_code].itemsize if type_code in IDX_DTYPES else 1
    promised = int(np.prod(dims, dtype=np.float64)) * itemsize if dims else 0
    length = draw(st.sampled_from([promised, promised - 1, promised + 1]) | st.integers(0, 64))
    payload = draw(st.binary(min_size=min(max(length, 0), 4096), max_size=min(max(length, 0), 4096)))
    data = header + payload
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return gzip.compress(data, mtime=0) if draw(st.booleans()) else data


def read(data: bytes) -> str | None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "file-idx"
        path.write_bytes(data)
        return loads_or_fails_cleanly(lambda: read_idx(path))


@fuzz_settings()
@given(st.binary(max_size=300))
def test_idx_from_arbitrary_bytes(data: bytes) -> None:
    read(data)


@fuzz_settings()
@given(idx_files())
@example(b"\x00\x00\x08\x04" + struct.pack(">4I", 0, 2**31, 2**16, 2**16))  # found: empty, too big for numpy
def test_idx_with_arbitrary_headers(data: bytes) -> None:
    read(data)


@fuzz_settings()
@given(st.binary(min_size=2, max_size=200).map(lambda tail: b"\x1f\x8b" + tail))
def test_idx_with_broken_gzip(data: bytes) -> None:
    read(data)


def valid_idx_dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 24), ("t10k", 6)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 8, 8), dtype=np.uint8), gzip=False)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", (np.arange(count) % 10).astype(np.uint8), gzip=False)


@fuzz_settings()
@given(st.sampled_from(sorted(IDX_FILE_NAMES.values())), idx_files())
def test_idx_dataset_with_one_malformed_file(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        valid_idx_dataset(root)
        (root / name).write_bytes(data)
        loads_or_fails_cleanly(lambda: load_idx_dataset(root, name="fuzz", mean=(0.5,), std=(0.25,)))


@st.composite
def cifar_damage(draw: st.DrawFn) -> tuple[int, str, bytes]:
    """A CIFAR variant, one of its files, and new contents: random, truncated/extended, or a label changed."""
    classes = draw(st.sampled_from(sorted(LAYOUTS)))
    layout = LAYOUTS[classes]
    name = draw(st.sampled_from(list(layout.files)))
    record = layout.record_bytes
    kind = draw(st.sampled_from(["random", "resize", "label", "empty"]))
    if kind == "random":
        return classes, name, draw(st.binary(max_size=2 * record + 3))
    base = bytearray(np.random.default_rng(1).integers(0, 10, 2 * record, dtype=np.uint8).tobytes())
    if kind == "resize":
        return classes, name, bytes(base[: draw(st.integers(0, len(base)))]) + draw(st.binary(max_size=5))
    if kind == "label":
        base[draw(st.integers(0, 1)) * record + draw(st.integers(0, layout.label_bytes - 1))] = draw(
            st.integers(0, 255)
        )
        return classes, name, bytes(base)
    return classes, name, b""


@fuzz_settings()
@given(cifar_damage())
def test_cifar_with_one_malformed_file(case: tuple[int, str, bytes]) -> None:
    classes, name, data = case
    with tempfile.TemporaryDirectory() as folder:
        images = np.random.default_rng(0).integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
        target = write_cifar_binary(Path(folder), images, np.arange(12) % classes, num_classes=classes)
        (target / name).write_bytes(data)
        loads_or_fails_cleanly(lambda: load_cifar(Path(folder), num_classes=classes))

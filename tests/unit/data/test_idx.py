"""IDX reader and loader: exact round trips and one DataError per malformed case."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.data.files import write_idx
from secateurs.data.idx import IDX_FILE_NAMES, load_idx_dataset, read_idx
from secateurs.errors import DataError, UsageError

RNG = np.random.default_rng(0)


def _write_dataset(root: Path, *, gzip: bool, train: int = 12, test: int = 6, size: int = 5) -> dict[str, np.ndarray]:
    arrays = {
        "train_images": RNG.integers(0, 256, (train, size, size), dtype=np.uint8),
        "train_labels": (np.arange(train) % 10).astype(np.uint8),
        "test_images": RNG.integers(0, 256, (test, size, size), dtype=np.uint8),
        "test_labels": (np.arange(test) % 10).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        name = IDX_FILE_NAMES[key] + (".gz" if gzip else "")
        write_idx(root / name, array, gzip=gzip)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([0, 9, 255], dtype=np.uint8),
        np.array([[-128, 127]], dtype=np.int8),
        np.array([-30000, 0, 30000], dtype=np.int16),
        np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
        np.array([1.5, -2.25, 1e30], dtype=np.float32),
        np.array([[np.pi, -1e300]], dtype=np.float64),
        np.zeros((0, 28, 28), dtype=np.uint8),
    ],
    ids=lambda a: f"{a.dtype}{a.shape}" if isinstance(a, np.ndarray) else str(a),
)
def test_round_trip_is_exact(tmp_path: Path, array: np.ndarray, compress: bool) -> None:
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    tensor = read_idx(path)
    assert tuple(tensor.shape) == array.shape
    assert tensor.dtype == torch.from_numpy(array).dtype
    np.testing.assert_array_equal(tensor.numpy(), array)


def test_header_layout_matches_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    write_idx(path, np.array([3, 1, 4], dtype=np.uint8), gzip=False)
    assert path.read_bytes() == bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 3, 1, 4])


def test_big_endian_payload_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "shorts"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2]) + struct.pack(">hh", 258, -2))
    assert read_idx(path).tolist() == [258, -2]


def _assert_data_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    _assert_data_error(tmp_path / "nothing-here-idx1-ubyte.gz", "no such")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "train-images-idx3-ubyte"
    folder.mkdir()
    _assert_data_error(folder, "directory")


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, RNG.integers(0, 256, (50, 28, 28), dtype=np.uint8), gzip=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_data_error(path, "truncated gzip")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.gz"
    write_idx(path, np.arange(200, dtype=np.uint8), gzip=True)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # inside the CRC32 / size trailer
    path.write_bytes(bytes(data))
    _assert_data_error(path, "gzip")


def test_wrong_magic_number(tmp_path: Path) -> None:
    path = tmp_path / "magic"
    path.write_bytes(bytes([1, 0, 0x08, 1, 0, 0, 0, 1, 7]))
    _assert_data_error(path, "magic number 0x01000801")


def test_wrong_type_code(tmp_path: Path) -> None:
    path = tmp_path / "type"
    path.write_bytes(bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7]))
    message = _assert_data_error(path, "type code 0x0A")
    assert "0x08 (uint8)" in message and "0x0E (float64)" in message


def test_zero_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "scalar"
    path.write_bytes(bytes([0, 0, 0x08, 0, 7]))
    _assert_data_error(path, "0 dimensions")


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "header"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0]))
    _assert_data_error(path, "16 header bytes, found 10")


def test_payload_too_short(tmp_path: Path) -> None:
    path = tmp_path / "short"
    write_idx(path, np.zeros((4, 3, 3), dtype=np.uint8), gzip=False)
    path.write_bytes(path.read_bytes()[:-5])
    _assert_data_error(path, "truncated", "promises 36 bytes, found 31")


def test_payload_too_short_multibyte(tmp_path: Path) -> None:
    path = tmp_path / "short-int32.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 0x0C, 1, 0, 0, 0, 3]) + bytes(11)))
    _assert_data_error(path, "promises 12 bytes, found 11")


def test_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "long.gz"
    raw = bytes([0, 0, 0x08, 1, 0, 0, 0, 2, 1, 2, 3, 4, 5])
    path.write_bytes(gzip.compress(raw))
    _assert_data_error(path, "3 trailing bytes", "promises 2 bytes, found 5")


def test_data_error_is_a_usage_error() -> None:
    assert issubclass(DataError, UsageError)


@pytest.mark.parametrize("compress", [True, False])
def test_load_dataset_round_trip(tmp_path: Path, compress: bool) -> None:
    arrays = _write_dataset(tmp_path, gzip=compress)
    dataset = load_idx_dataset(tmp_path, name="toy", mean=(0.5,), std=(0.25,))
    assert dataset.name == "toy" and dataset.mean == (0.5,) and dataset.std == (0.25,)
    assert dataset.num_classes == 10 and dataset.augment == "none"
    assert dataset.train.x.shape == (12, 1, 5, 5) and dataset.train.x.dtype == torch.uint8
    assert dataset.test.x.shape == (6, 1, 5, 5)
    assert dataset.train.y.dtype == torch.int64
    np.testing.assert_array_equal(dataset.train.x[:, 0].numpy(), arrays["train_images"])
    np.testing.assert_array_equal(dataset.test.x[:, 0].numpy(), arrays["test_images"])
    np.testing.assert_array_equal(dataset.train.y.numpy(), arrays["train_labels"])
    np.testing.assert_array_equal(dataset.test.y.numpy(), arrays["test_labels"])


def test_num_classes_is_at_least_ten_and_grows_with_labels(tmp_path: Path) -> None:
    _write_dataset(tmp_path, gzip=False)
    write_idx(tmp_path / IDX_FILE_NAMES["train_labels"], np.zeros(12, dtype=np.uint8), gzip=False)
    write_idx(tmp_path / IDX_FILE_NAMES["test_labels"], np.zeros(6, dtype=np.uint8), gzip=False)
    assert load_idx_dataset(tmp_path, name="t", mean=(0.0,), std=(1.0,)).num_classes == 10
    labels = np.zeros(6, dtype=np.uint8)
    labels[3] = 25
    write_idx(tmp_path / IDX_FILE_NAMES["test_labels"], labels, gzip=False)
    assert load_idx_dataset(tmp_path, name="t", mean=(0.0,), std=(1.0,)).num_classes == 26


def test_mixed_compressed_and_raw_files(tmp_path: Path) -> None:
    _write_dataset(tmp_path, gzip=True)
    gz = tmp_path / (IDX_FILE_NAMES["test_labels"] + ".gz")
    (tmp_path / IDX_FILE_NAMES["test_labels"]).write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    assert len(load_idx_dataset(tmp_path, name="t", mean=(0.0,), std=(1.0,)).test) == 6


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    _write_dataset(tmp_path, gzip=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, dtype=np.uint8), gzip=True)
    with pytest.raises(DataError) as info:
        load_idx_dataset(tmp_path, name="t", mean=(0.0,), std=(1.0,))
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz holds 12 images" in message
    assert "train-labels-idx1-ubyte.gz holds 11 labels" in message


def test_images_must_be_three_dimensional(tmp_path: Path) -> None:
    _write_dataset(tmp_path, gzip=False)
    write_idx(tmp_path / IDX_FILE_NAMES["test_images"], np.zeros((6, 25), dtype=np.uint8), gzip=False)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: images must be a uint8 N×H×W array"):
        load_idx_dataset(tmp_path, name="t", mean=(0.0,), std=(1.0,))


def test_labels_must_be_one_dimensional(tmp_path: Path) -> None:
    _write_dataset(tmp_path, gzip=False)
    write_idx(tmp_path / IDX_FILE_NAMES["train_labels"], np.zeros((12, 1), dtype=np.uint8), gzip=False)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: labels must be a 1-D integer array"):
        load_idx_dataset(tmp_path, name="t", mean=(0.0,), std=(1.0,))


def test_directory_without_the_files(tmp_path: Path) -> None:
    (tmp_path / "unrelated.txt").write_text("hello")
    with pytest.raises(DataError) as info:
        load_idx_dataset(tmp_path, name="t", mean=(0.0,), std=(1.0,))
    message = str(info.value)
    assert str(tmp_path) in message
    for stem in IDX_FILE_NAMES.values():
        assert stem in message
    assert "--data-dir" in message and "SECATEURS_DATA" in message


def test_directory_missing_one_file_names_it(tmp_path: Path) -> None:
    _write_dataset(tmp_path, gzip=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\];"):
        load_idx_dataset(tmp_path, name="t", mean=(0.0,), std=(1.0,))


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such directory.*--data-dir or SECATEURS_DATA") as info:
        load_idx_dataset(tmp_path / "absent", name="t", mean=(0.0,), std=(1.0,))
    assert str(tmp_path / "absent") in str(info.value)


def _header_strategy() -> st.SearchStrategy[bytes]:
    """Plausible headers (known and unknown type codes, 1-3 small dims) followed by a payload whose
    length is near the promised one, so that both outcomes occur often."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A, 0x00]))
        dims = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
        itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
        expected = math.prod(dims) * itemsize
        length = draw(st.sampled_from([expected, expected, max(expected - 1, 0), expected + 1]))
        header = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
        return header + draw(st.binary(min_size=length, max_size=length))

    return build()


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=64), _header_strategy()),
    compress=st.booleans(),
    cut=st.integers(0, 3),
)
def test_random_bytes_parse_or_raise_data_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, compress: bool, cut: int
) -> None:
    path = tmp_path_factory.mktemp("random") / "random-idx"
    content = gzip.compress(data, mtime=0) if compress else data
    if compress and cut:
        content = content[: len(content) * cut // 4]
    path.write_bytes(content)
    try:
        tensor = read_idx(path)
    except DataError as error:
        assert path.name in str(error)
        return
    # It parsed: the bytes must form a valid header whose dims give the tensor's shape.
    raw = gzip.decompress(content) if compress else content
    assert raw[0] == 0 and raw[1] == 0
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    assert tuple(tensor.shape) == dims
    assert tensor.numel() == math.prod(dims)
    assert tensor.numel() * tensor.element_size() == len(raw) - 4 - 4 * ndim

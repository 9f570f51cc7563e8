"""The .npz loader: every accepted layout round trips; bad archives raise DataError (never pickle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from secateurs.data.npz import load_npz, pixel_mean_std
from secateurs.errors import DataError

RNG = np.random.default_rng(0)


def _labels(count: int, num_classes: int = 5) -> np.ndarray:
    return (np.arange(count) % num_classes).astype(np.int64)


def test_round_trip_n_h_w(tmp_path: Path) -> None:
    x_train = RNG.integers(0, 256, (10, 6, 7), dtype=np.uint8)
    x_test = RNG.integers(0, 256, (4, 6, 7), dtype=np.uint8)
    path = tmp_path / "gray.npz"
    np.savez(path, x_train=x_train, y_train=_labels(10), x_test=x_test, y_test=_labels(4).astype(np.uint8))
    dataset = load_npz(path)
    assert dataset.name == "npz" and dataset.num_classes == 5 and dataset.augment == "none"
    assert dataset.train.x.shape == (10, 1, 6, 7) and dataset.train.x.dtype == torch.uint8
    assert dataset.test.y.dtype == torch.int64
    np.testing.assert_array_equal(dataset.train.x[:, 0].numpy(), x_train)
    np.testing.assert_array_equal(dataset.test.x[:, 0].numpy(), x_test)
    np.testing.assert_array_equal(dataset.train.y.numpy(), _labels(10))
    np.testing.assert_array_equal(dataset.test.y.numpy(), _labels(4))
    scaled = x_train.astype(np.float64) / 255
    assert dataset.mean == pytest.approx((scaled.mean(),), abs=1e-12)
    assert dataset.std == pytest.approx((scaled.std(),), abs=1e-12)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_round_trip_channels_last(tmp_path: Path, channels: int) -> None:
    nchw_train = RNG.integers(0, 256, (8, channels, 9, 9), dtype=np.uint8)
    nchw_test = RNG.integers(0, 256, (3, channels, 9, 9), dtype=np.uint8)
    path = tmp_path / "hwc.npz"
    np.savez_compressed(
        path,
        x_train=nchw_train.transpose(0, 2, 3, 1),
        y_train=_labels(8),
        x_test=nchw_test.transpose(0, 2, 3, 1),
        y_test=_labels(3),
    )
    dataset = load_npz(path)
    assert dataset.input_shape == (channels, 9, 9)
    np.testing.assert_array_equal(dataset.train.x.numpy(), nchw_train)
    np.testing.assert_array_equal(dataset.test.x.numpy(), nchw_test)
    assert dataset.train.x.is_contiguous()
    scaled = nchw_train.astype(np.float64) / 255
    assert dataset.mean == pytest.approx(tuple(scaled.mean(axis=(0, 2, 3))), abs=1e-12)
    assert dataset.std == pytest.approx(tuple(scaled.std(axis=(0, 2, 3))), abs=1e-12)


def test_round_trip_channels_first(tmp_path: Path) -> None:
    x_train = RNG.integers(0, 256, (8, 3, 12, 10), dtype=np.uint8)
    x_test = RNG.integers(0, 256, (2, 3, 12, 10), dtype=np.uint8)
    path = tmp_path / "chw.npz"
    np.savez(path, x_train=x_train, y_train=_labels(8), x_test=x_test, y_test=_labels(2))
    dataset = load_npz(path)
    assert dataset.input_shape == (3, 12, 10)
    np.testing.assert_array_equal(dataset.train.x.numpy(), x_train)
    np.testing.assert_array_equal(dataset.test.x.numpy(), x_test)


def test_ambiguous_tiny_images_follow_the_documented_rule(tmp_path: Path) -> None:
    hwc = RNG.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)  # axes 1 and 2 equal: channels-last
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=hwc, y_train=_labels(6), x_test=hwc[:2], y_test=_labels(2))
    np.testing.assert_array_equal(load_npz(path).train.x.numpy(), hwc.transpose(0, 3, 1, 2))


def test_single_pair_holds_out_the_last_sixth(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, (13, 5, 5), dtype=np.uint8)
    y = _labels(13, num_classes=3)
    path = tmp_path / "pair.npz"
    np.savez(path, x=x, y=y)
    dataset = load_npz(path)
    assert len(dataset.train) == 11 and len(dataset.test) == 2
    np.testing.assert_array_equal(dataset.train.x[:, 0].numpy(), x[:11])
    np.testing.assert_array_equal(dataset.test.x[:, 0].numpy(), x[11:])
    np.testing.assert_array_equal(dataset.test.y.numpy(), y[11:])
    assert dataset.num_classes == 3


def test_object_array_is_rejected_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    images = np.empty(4, dtype=object)
    images[:] = [np.zeros((2, 2), dtype=np.uint8)] * 4
    np.savez(path, x_train=images, y_train=_labels(4), x_test=images, y_test=_labels(4))
    with pytest.raises(DataError) as info:
        load_npz(path)
    message = str(info.value)
    assert "pickled.npz" in message and "'x_train' is an object array" in message and "pickle" in message


def test_missing_keys_lists_found_and_accepted(tmp_path: Path) -> None:
    path = tmp_path / "keys.npz"
    np.savez(path, images=np.zeros((3, 2, 2), dtype=np.uint8), targets=_labels(3))
    with pytest.raises(DataError) as info:
        load_npz(path)
    message = str(info.value)
    assert "keys.npz" in message
    assert "found arrays [images, targets]" in message
    assert "x_train, y_train, x_test, y_test" in message and "x, y" in message


def test_float_images_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "float.npz"
    np.savez(path, x=np.zeros((12, 3, 3), dtype=np.float32), y=_labels(12))
    with pytest.raises(DataError, match=r"float\.npz: 'x' has dtype float32; images must be uint8"):
        load_npz(path)


def test_float_labels_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((12, 3, 3), dtype=np.uint8), y=_labels(12).astype(np.float64))
    with pytest.raises(DataError, match=r"'y' has dtype float64 .* labels must be a 1-D integer array"):
        load_npz(path)


def test_mismatched_counts(tmp_path: Path) -> None:
    path = tmp_path / "counts.npz"
    np.savez(
        path,
        x_train=np.zeros((5, 3, 3), dtype=np.uint8),
        y_train=_labels(5),
        x_test=np.zeros((3, 3, 3), dtype=np.uint8),
        y_test=_labels(4),
    )
    with pytest.raises(DataError, match=r"'x_test' holds 3 images but 'y_test' holds 4 labels"):
        load_npz(path)


def test_mismatched_train_and_test_shapes(tmp_path: Path) -> None:
    path = tmp_path / "shapes.npz"
    np.savez(
        path,
        x_train=np.zeros((5, 3, 3), dtype=np.uint8),
        y_train=_labels(5),
        x_test=np.zeros((3, 4, 4), dtype=np.uint8),
        y_test=_labels(3),
    )
    with pytest.raises(DataError, match=r"shapes\.npz: training images .*\(1, 3, 3\) but test .*\(1, 4, 4\)"):
        load_npz(path)


def test_unknown_layout(tmp_path: Path) -> None:
    path = tmp_path / "layout.npz"
    np.savez(path, x=np.zeros((12, 5, 5, 5), dtype=np.uint8), y=_labels(12))
    with pytest.raises(DataError, match=r"'x' has shape \(12, 5, 5, 5\); accepted image layouts"):
        load_npz(path)


def test_negative_labels(tmp_path: Path) -> None:
    path = tmp_path / "negative.npz"
    np.savez(path, x=np.zeros((12, 2, 2), dtype=np.uint8), y=_labels(12) - 1)
    with pytest.raises(DataError, match="negative label -1"):
        load_npz(path)


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=r"garbage\.npz: not a readable \.npz archive"):
        load_npz(path)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(DataError, match=r"single\.npy: holds a single array"):
        load_npz(single)
    with pytest.raises(DataError, match=r"absent\.npz: no such file"):
        load_npz(tmp_path / "absent.npz")


def test_pixel_statistics_of_a_constant_channel() -> None:
    images = torch.zeros(2, 2, 3, 3, dtype=torch.uint8)
    images[:, 1] = 255
    images[0, 0] = 51
    mean, std = pixel_mean_std(images)
    assert mean == pytest.approx((0.1, 1.0))
    assert std == pytest.approx((0.1, 1.0))  # channel 1 is constant: std falls back to 1

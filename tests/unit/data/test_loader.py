"""`BatchLoader`: normalisation numbers, seeded shuffles, drop_last, sharding, crop/flip, channels_last."""

from __future__ import annotations

import pytest
import torch

from secateurs.data.loader import BatchLoader, Normalization, crop_flip, epoch_generator
from secateurs.data.types import TensorData
from secateurs.errors import UsageError

IDENTITY = Normalization((0.0,), (1.0 / 255.0,))  # (x/255 − 0)·255 = x: batches hold the raw pixels


def indexed_data(n: int, channels: int = 1, size: int = 2) -> TensorData:
    """Example ``i`` has label ``i`` and every pixel equal to ``i % 256``."""
    x = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, channels, size, size).contiguous()
    return TensorData(x, torch.arange(n))


def epoch_labels(loader: BatchLoader, epoch: int) -> list[list[int]]:
    loader.set_epoch(epoch)
    return [y.tolist() for _, y in loader]


# ------------------------------------------------------------------------------------- normalisation
def test_normalization_hand_computed() -> None:
    images = torch.tensor([0, 255, 51, 102], dtype=torch.uint8).view(1, 1, 2, 2)
    out = Normalization((0.5,), (0.25,)).apply(images)
    assert out.dtype == torch.float32
    # (0 − .5)/.25 = −2; (1 − .5)/.25 = 2; (.2 − .5)/.25 = −1.2; (.4 − .5)/.25 = −0.4
    assert torch.allclose(out.view(-1), torch.tensor([-2.0, 2.0, -1.2, -0.4]), rtol=0, atol=1e-6)
    assert images.tolist() == [[[[0, 255], [51, 102]]]]  # input untouched


def test_normalization_per_channel_matches_the_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8, generator=generator)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 1.0)
    out = Normalization(mean, std).apply(images)
    expected = torch.empty(5, 3, 4, 4, dtype=torch.float64)
    for channel in range(3):
        expected[:, channel] = (images[:, channel].double() / 255 - mean[channel]) / std[channel]
    assert torch.allclose(out.double(), expected, rtol=0, atol=2e-6)
    assert Normalization(mean, std).to_dict() == {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 1.0]}


def test_identity_normalization_returns_the_pixels() -> None:
    data = indexed_data(7)
    (x, y), *_ = list(BatchLoader(data, 7, IDENTITY))
    assert torch.equal(x, data.x.float())
    assert y.tolist() == list(range(7))


# --------------------------------------------------------------------------------------------- order
def test_unshuffled_order_and_batch_sizes() -> None:
    loader = BatchLoader(indexed_data(10), 4, IDENTITY)
    assert len(loader) == 3
    assert epoch_labels(loader, 0) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert epoch_labels(loader, 5) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_drop_last() -> None:
    loader = BatchLoader(indexed_data(10), 4, IDENTITY, drop_last=True)
    assert len(loader) == 2
    assert epoch_labels(loader, 0) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    exact = BatchLoader(indexed_data(8), 4, IDENTITY, drop_last=True)
    assert len(exact) == 2 and sum(len(b) for b in epoch_labels(exact, 0)) == 8


def test_shuffle_is_a_deterministic_permutation_per_seed_and_epoch() -> None:
    n = 50
    first = BatchLoader(indexed_data(n), 8, IDENTITY, shuffle=True, seed=3)
    second = BatchLoader(indexed_data(n), 8, IDENTITY, shuffle=True, seed=3)
    other_seed = BatchLoader(indexed_data(n), 8, IDENTITY, shuffle=True, seed=4)
    orders = []
    for epoch in range(3):
        labels = epoch_labels(first, epoch)
        assert labels == epoch_labels(second, epoch)
        flat = [i for batch in labels for i in batch]
        assert sorted(flat) == list(range(n))  # every index exactly once
        assert [len(b) for b in labels] == [8] * 6 + [2]
        assert flat == torch.randperm(n, generator=epoch_generator(3, epoch)).tolist()
        orders.append(flat)
        assert flat != [i for batch in epoch_labels(other_seed, epoch) for i in batch]
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    assert orders[0] != list(range(n))
    # the order of an epoch depends on (seed, epoch) only, not on what was iterated before
    fresh = BatchLoader(indexed_data(n), 8, IDENTITY, shuffle=True, seed=3)
    assert [i for batch in epoch_labels(fresh, 2) for i in batch] == orders[2]


def test_images_follow_their_labels() -> None:
    loader = BatchLoader(indexed_data(40), 16, IDENTITY, shuffle=True, seed=1)
    for x, y in loader:
        assert torch.equal(x[:, 0, 0, 0], y.float())


def test_shards_are_disjoint_and_cover_world_times_floor() -> None:
    n, world = 23, 3
    seen: list[int] = []
    for rank in range(world):
        loader = BatchLoader(indexed_data(n), 4, IDENTITY, shuffle=True, seed=9, shard=(rank, world))
        labels = [i for batch in epoch_labels(loader, 1) for i in batch]
        assert len(labels) == n // world == 7
        assert len(loader) == 2
        seen += labels
    assert len(seen) == len(set(seen)) == world * (n // world) == 21
    permutation = torch.randperm(n, generator=epoch_generator(9, 1))
    assert sorted(seen) == sorted(permutation[:21].tolist())
    rank0 = BatchLoader(indexed_data(n), 4, IDENTITY, shuffle=True, seed=9, shard=(0, world))
    assert [i for batch in epoch_labels(rank0, 1) for i in batch] == permutation[0:21:3].tolist()


# -------------------------------------------------------------------------------------- augmentation
def slow_crop_flip(images: torch.Tensor, dy: list[int], dx: list[int], flip: list[bool], padding: int) -> torch.Tensor:
    n, c, h, w = images.shape
    out = torch.empty_like(images)
    for i in range(n):
        for channel in range(c):
            for row in range(h):
                for column in range(w):
                    source_column = (w - 1 - column if flip[i] else column) + dx[i] - padding
                    source_row = row + dy[i] - padding
                    inside = 0 <= source_row < h and 0 <= source_column < w
                    out[i, channel, row, column] = images[i, channel, source_row, source_column] if inside else 0
    return out


def test_crop_flip_equals_an_explicit_crop_and_flip() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (16, 2, 3, 5), dtype=torch.uint8, generator=generator)
    padding = 2
    draws = torch.Generator().manual_seed(42)
    dy = torch.randint(0, 2 * padding + 1, (16,), generator=draws).tolist()
    dx = torch.randint(0, 2 * padding + 1, (16,), generator=draws).tolist()
    flip = (torch.rand(16, generator=draws) < 0.5).tolist()
    out = crop_flip(images, torch.Generator().manual_seed(42), padding=padding)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, slow_crop_flip(images, dy, dx, flip, padding))
    assert any(flip) and not all(flip)


def test_crop_flip_hand_built() -> None:
    image = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.uint8).view(1, 1, 2, 3)
    # find generator seeds that give known draws, then compare against hand-written crops
    cases = {}
    for seed in range(200):
        draws = torch.Generator().manual_seed(seed)
        dy = int(torch.randint(0, 3, (1,), generator=draws))
        dx = int(torch.randint(0, 3, (1,), generator=draws))
        flip = bool(torch.rand(1, generator=draws) < 0.5)
        cases.setdefault((dy, dx, flip), seed)
    expected = {
        (1, 1, False): [[1, 2, 3], [4, 5, 6]],  # centred crop: the image
        (1, 1, True): [[3, 2, 1], [6, 5, 4]],  # mirrored
        (0, 0, False): [[0, 0, 0], [0, 1, 2]],  # shifted down-right, zero padding enters top-left
        (2, 2, False): [[5, 6, 0], [0, 0, 0]],  # shifted up-left
        (0, 2, True): [[0, 0, 0], [0, 3, 2]],  # crop [[0,0,0],[2,3,0]] then mirrored
    }
    for (dy, dx, flip), rows in expected.items():
        out = crop_flip(image, torch.Generator().manual_seed(cases[(dy, dx, flip)]), padding=1)
        assert out.view(2, 3).tolist() == rows, (dy, dx, flip)


def test_crop_offsets_cover_the_padding_range() -> None:
    images = torch.zeros(2000, 1, 4, 4, dtype=torch.uint8)
    images[:, :, 0, 0] = 255  # a marker pixel: its position tells the offset
    out = crop_flip(images, torch.Generator().manual_seed(0), padding=1)
    positions = {tuple(torch.nonzero(image[0]).view(-1).tolist()) for image in out}
    # marker row 0 → row 1 − dy ∈ {1, 0, out}; column 0 → 1 − dx or its mirror 3 − (1 − dx)
    assert positions == {(), (0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)}


def test_loader_augments_training_batches_with_the_epoch_generator() -> None:
    data = indexed_data(12, size=4)
    loader = BatchLoader(data, 5, IDENTITY, shuffle=True, seed=2, augment="crop-flip", drop_last=True)
    loader.set_epoch(3)
    batches = list(loader)
    generator = epoch_generator(2, 3)
    order = torch.randperm(12, generator=generator)
    for index, (x, y) in enumerate(batches):
        chosen = order[index * 5 : (index + 1) * 5]
        assert torch.equal(y, chosen)
        assert torch.equal(x, crop_flip(data.x[chosen], generator).float())
    assert len(batches) == 2


def test_channels_last_flag() -> None:
    data = TensorData(torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8), torch.zeros(6, dtype=torch.int64))
    normalization = Normalization((0.5, 0.5, 0.5), (0.2, 0.3, 0.4))
    plain = next(iter(BatchLoader(data, 6, normalization)))[0]
    last = next(iter(BatchLoader(data, 6, normalization, channels_last=True)))[0]
    assert plain.is_contiguous() and not plain.is_contiguous(memory_format=torch.channels_last)
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, last)


def test_loader_rejects_bad_arguments() -> None:
    data = indexed_data(4)
    with pytest.raises(UsageError, match="batch size must be at least 1, got 0"):
        BatchLoader(data, 0, IDENTITY)
    with pytest.raises(UsageError, match="unknown augmentation 'flip'; accepted: none, crop-flip"):
        BatchLoader(data, 2, IDENTITY, augment="flip")
    with pytest.raises(UsageError, match=r"shard rank 2 outside \[0, 2\)"):
        BatchLoader(data, 2, IDENTITY, shard=(2, 2))

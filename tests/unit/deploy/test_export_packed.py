"""The packed export: every encoding round-trips bit for bit, and the byte counts are the hand-computed ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from secateurs.deploy.export_packed import (
    bit_identical,
    csr_bytes,
    pack,
    pack_bits,
    pack_state,
    read_packed,
    storage_report,
    unpack,
    unpack_bits,
)
from secateurs.errors import RunDirError
from secateurs.sparsity.granularity import granularity


def masked_weight(
    shape: tuple[int, ...], name: str, sparsity: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight masked by granularity ``name``; removed entries hold ±0.0 like a MaskStore's originals."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=generator)
    mask = granularity(name).select(weight.abs().double(), sparsity)
    return weight * mask, mask  # negative removed entries become -0.0


def payload(parts: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in parts.values())


@pytest.mark.parametrize(
    ("name", "shape", "sparsity", "encoding"),
    [
        ("window", (4, 6, 3, 3), 2 / 3, "window_kernel"),
        ("window", (4, 6, 3, 3), 8 / 9, "window_kernel"),
        ("kernel", (4, 6, 3, 3), 0.5, "window_kernel"),
        ("window+kernel", (4, 8, 3, 3), 0.75, "window_kernel"),
        ("filter", (8, 6, 3, 3), 0.5, "filter"),
        ("2:4", (6, 16), 0.5, "n_of_m"),
        ("1:3", (4, 6, 3, 3), 2 / 3, "n_of_m"),
        ("element", (5, 7, 3, 3), 0.8, "bitmask"),
    ],
)
def test_every_granularity_round_trips_bit_for_bit(
    name: str, shape: tuple[int, ...], sparsity: float, encoding: str
) -> None:
    weight, mask = masked_weight(shape, name, sparsity)
    assert (weight[~mask].signbit()).any()  # some removed entries are -0.0
    parts, description = pack(weight, mask)
    assert description["encoding"] == encoding
    unpacked, unpacked_mask = unpack(parts, description)
    assert unpacked_mask is not None and torch.equal(unpacked_mask, mask)
    assert bit_identical(weight, unpacked, mask)
    assert payload(parts) <= mask.numel() // 8 + 1 + int(mask.sum()) * 4 + 8  # never worse than a bitmask


def test_window_bytes_are_values_plus_the_cheaper_of_bitmask_and_indices() -> None:
    # 4 × 6 windows of 9 taps, 3 kept: values 72 floats = 288 B; tap bitmask 216 bits = 27 B (< 72 B of indices).
    weight, mask = masked_weight((4, 6, 3, 3), "window", 2 / 3)
    parts, description = pack(weight, mask)
    assert description == {**description, "encoding": "window_kernel", "kernels_kept": 6, "taps_kept": 3}
    assert set(parts) == {"values", "bitmask"} and payload(parts) == 288 + 27
    # 1 tap kept of 9: one uint8 index per window (24 B) beats 27 B of bitmask.
    weight, mask = masked_weight((4, 6, 3, 3), "window", 8 / 9)
    parts, _ = pack(weight, mask)
    assert set(parts) == {"values", "positions"} and parts["positions"].dtype == torch.uint8
    assert payload(parts) == 24 * 4 + 24
    assert csr_bytes(weight, mask) == 24 * (4 + 4) + 5 * 4


def test_kernel_bytes_store_kept_channel_indices() -> None:
    # 4 filters keep 3 of 6 kernels: values 4·3·9 floats = 432 B, uint8 channel indices 12 B, no tap data.
    weight, mask = masked_weight((4, 6, 3, 3), "kernel", 0.5)
    parts, description = pack(weight, mask)
    assert description["kernels_kept"] == 3 and description["taps_kept"] == 9
    assert set(parts) == {"values", "kernels"} and payload(parts) == 432 + 12


def test_n_of_m_bytes() -> None:
    # 6 × 16 at 2:4: 24 groups × 2 values = 192 B; a 96-bit mask (12 B) beats 48 B of positions.
    weight, mask = masked_weight((6, 16), "2:4", 0.5)
    parts, description = pack(weight, mask)
    assert (description["encoding"], description["n"], description["m"]) == ("n_of_m", 2, 4)
    assert payload(parts) == 192 + 12


def test_bits_round_trip() -> None:
    bits = torch.tensor([True, False, True, True, False, False, False, True, True, False, True])
    packed = pack_bits(bits)
    assert packed.tolist() == [0b10110001, 0b10100000]
    assert torch.equal(unpack_bits(packed, bits.numel()), bits)


def test_state_packing_reports_dense_csr_and_packed_totals() -> None:
    weight, mask = masked_weight((4, 6, 3, 3), "window", 2 / 3)
    bias = torch.randn(4)
    state = {"conv.weight": weight, "conv.bias": bias}
    report = storage_report(state, {"conv.weight": mask})
    total = report["total"]
    assert total["dense_bytes"] == 216 * 4 + 16
    assert total["packed_bytes"] == 288 + 27 + 16
    assert total["csr_bytes"] == 72 * 8 + 5 * 4 + 16
    assert report["layers"]["conv.weight"]["encoding"] == "window_kernel"


def test_missing_parts_and_foreign_directories_are_run_dir_errors(tmp_path: Path) -> None:
    weight, mask = masked_weight((2, 2, 3, 3), "window", 2 / 3)
    tensors, header = pack_state({"w": weight}, {"w": mask})
    from secateurs.deploy.export_packed import unpack_state

    del tensors["w/values"]
    with pytest.raises(RunDirError, match="lack the part"):
        unpack_state(tensors, header)
    (tmp_path / "header.json").write_text('{"format": "something else"}')
    with pytest.raises(RunDirError, match="not a secateurs-packed export"):
        read_packed(tmp_path)

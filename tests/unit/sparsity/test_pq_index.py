"""SAP's PQ index and adaptive fraction against hand-computed and closed-form numbers."""

from __future__ import annotations

import math

import pytest
import torch

from secateurs.errors import UsageError
from secateurs.sparsity.pq_index import (
    cap_removals,
    pq_index,
    remove_smallest,
    retained_count,
    sap_fraction,
    sap_masks,
)


def gaussian(count: int = 400_000, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_sap_fraction_on_gaussian_weights_is_one_minus_two_over_pi_for_p1_q2() -> None:
    # m = ‖w‖₁² / ‖w‖₂² → d · (E|w|)² / E w² = d · 2/π for Gaussian weights.
    assert sap_fraction(gaussian(), 1.0, 2.0) == pytest.approx(1 - 2 / math.pi, abs=3e-3)
    assert sap_fraction(gaussian(), 1.0, 2.0) == pytest.approx(0.363, abs=3e-3)


def test_sap_fraction_on_gaussian_weights_for_p_half_q1() -> None:
    # m = (Σ√|w|)² / Σ|w| → d · (E|w|^½)² / E|w|, E|w|^½ = 2^¼ Γ(¾)/√π, E|w| = √(2/π).
    half_moment = 2**0.25 * math.gamma(0.75) / math.sqrt(math.pi)
    expected = 1 - half_moment**2 / math.sqrt(2 / math.pi)
    assert expected == pytest.approx(0.153, abs=1e-3)
    assert sap_fraction(gaussian(), 0.5, 1.0) == pytest.approx(expected, abs=3e-3)


def test_pq_index_and_retained_count_by_hand() -> None:
    weights = torch.tensor([3.0, 4.0, 0.0, 0.0])
    # p=1, q=2: I = 1 − 4^{−1/2} · 7 / 5 = 0.3; m = ⌈‖w‖₁²/‖w‖₂²⌉ = ⌈49/25⌉ = 2.
    assert pq_index(weights, 1.0, 2.0) == pytest.approx(0.3)
    assert retained_count(weights, 1.0, 2.0) == 2
    assert sap_fraction(weights, 1.0, 2.0) == pytest.approx(0.5)
    # Equal magnitudes are not sparse at all: I = 0, m = d, nothing removed.
    assert pq_index(torch.full((10,), -2.0)) == pytest.approx(0.0, abs=1e-12)
    assert retained_count(torch.full((10,), -2.0)) == 10
    assert sap_fraction(torch.full((10,), 2.0)) == 0.0


def test_fraction_is_capped_by_beta() -> None:
    spiky = torch.cat([torch.tensor([1000.0]), torch.full((999,), 1e-6)])
    assert sap_fraction(spiky) == pytest.approx(0.9)
    assert sap_fraction(spiky, beta=0.5) == pytest.approx(0.5)


def test_bad_p_q_is_an_error() -> None:
    with pytest.raises(UsageError, match="0 < p < q"):
        pq_index(torch.ones(3), 2.0, 1.0)


def test_sap_masks_remove_the_smallest_survivors_globally() -> None:
    weights = {"a": torch.tensor([[0.1, -5.0], [0.2, 3.0]]), "b": torch.tensor([[-0.05, 4.0, 0.3]])}
    alive = {"a": torch.ones(2, 2, dtype=torch.bool), "b": torch.tensor([[True, True, False]])}
    # Survivors |w| = 0.1, 5, 0.2, 3, 0.05, 4: ‖w‖₁² / ‖w‖₂² = 12.35² / 50.0525 = 3.047 → m = 4, remove 2.
    survivors = torch.tensor([0.1, -5.0, 0.2, 3.0, -0.05, 4.0])
    assert retained_count(survivors) == 4
    masks, removed = sap_masks(weights, alive)
    assert removed == pytest.approx(2 / 6)
    # The two smallest survivors are -0.05 (b) and 0.1 (a); b's dead 0.3 stays dead.
    assert masks["a"].tolist() == [[False, True], [True, True]]
    assert masks["b"].tolist() == [[False, True, False]]


def test_cap_limits_the_final_sparsity() -> None:
    weights = {"a": gaussian(1000).reshape(10, 100).float()}
    alive = {"a": torch.ones(10, 100, dtype=torch.bool)}
    masks, removed = sap_masks(weights, alive, cap=0.2)
    assert int(masks["a"].sum()) == 800 and removed == pytest.approx(0.2)
    assert cap_removals(500, 600, 1000, 0.5) == 100
    assert cap_removals(50, 600, 1000, 0.5) == 50
    assert cap_removals(50, 400, 1000, 0.5) == 0


def test_min_keep_restores_the_largest_of_a_layer() -> None:
    weights = {"small": torch.tensor([0.01, 0.03, 0.02]), "large": torch.tensor([5.0, 6.0, 7.0])}
    alive = {name: torch.ones(3, dtype=torch.bool) for name in weights}
    masks = remove_smallest(weights, alive, 3, min_keep=1)
    assert masks["small"].tolist() == [False, True, False]
    assert masks["large"].tolist() == [True, True, True]

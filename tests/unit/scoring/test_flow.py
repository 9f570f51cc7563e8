"""Information and gradient flow against known correlations and hand-computed gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from secateurs.data.synthetic import make_synthetic
from secateurs.data.types import split_validation
from secateurs.errors import UsageError
from secateurs.scoring.flow import (
    FlowProbe,
    flow_distance,
    flow_layers,
    flow_vector,
    gradient_flow,
    information_flow,
    pair_flow,
    pearson_cross_correlation,
    validation_probe,
)
from secateurs.sparsity.masks import MaskStore


def correlated(rho: float, count: int = 200_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y = ρ x + √(1−ρ²) ε: Pearson correlation ρ (standard normal x, ε)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, generator=generator, dtype=torch.float64)
    noise = torch.randn(count, generator=generator, dtype=torch.float64)
    return x, rho * x + math.sqrt(1 - rho**2) * noise


def test_pearson_matrix_recovers_known_correlations() -> None:
    x, y = correlated(0.6)
    independent = torch.randn(x.shape[0], generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    first = torch.stack([x, 3 * x + 7], dim=1)  # an affine copy has the same correlations
    second = torch.stack([y, independent, 2 * y - 1], dim=1)
    matrix = pearson_cross_correlation(first, second)
    assert matrix.shape == (2, 3)
    assert matrix[0, 0].item() == pytest.approx(0.6, abs=0.01)
    assert matrix[1, 2].item() == pytest.approx(0.6, abs=0.01)
    assert matrix[0, 1].item() == pytest.approx(0.0, abs=0.01)  # independent of x


def test_pearson_is_exact_on_a_small_hand_example() -> None:
    a = torch.tensor([[1.0], [2.0], [3.0]])
    b = torch.tensor([[2.0, 3.0], [4.0, 1.0], [6.0, 2.0]])
    # Column 0 is 2a (ρ = 1); column 1 = (3, 1, 2): z = (1.2247, −1.2247, 0), z_a = (−1.2247, 0, 1.2247) → ρ = −0.5.
    matrix = pearson_cross_correlation(a, b)
    assert matrix[0, 0].item() == pytest.approx(1.0)
    assert matrix[0, 1].item() == pytest.approx(-0.5)
    assert pair_flow(a, b) == pytest.approx(0.25)
    assert pair_flow(a, b, absolute=True) == pytest.approx(0.75)


def test_constant_unit_contributes_zero_not_nan() -> None:
    a = torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    b = torch.tensor([[1.0], [2.0], [3.0]])
    matrix = pearson_cross_correlation(a, b)
    assert matrix[:, 0].tolist() == pytest.approx([1.0, 0.0])


def test_flow_vector_signed_absolute_and_per_class() -> None:
    x, y = correlated(0.8, count=20_000)
    _, w = correlated(-0.4, count=20_000, seed=3)
    layer_one, layer_two = x.unsqueeze(1), y.unsqueeze(1)
    layer_three = (-0.4 * y + math.sqrt(1 - 0.16) * w).unsqueeze(1)  # corr(y, ·) = −0.4
    vector = flow_vector([layer_one, layer_two, layer_three])
    assert vector.tolist() == pytest.approx([0.8, -0.4], abs=0.02)
    assert flow_vector([layer_one, layer_two, layer_three], absolute=True).tolist() == pytest.approx(
        [0.8, 0.4], abs=0.02
    )
    # Per class: class 0 has correlation +1, class 1 has −1; the pooled sign is mixed.
    a = torch.tensor([[0.0], [1.0], [2.0], [0.0], [1.0], [2.0]])
    b = torch.tensor([[0.0], [1.0], [2.0], [2.0], [1.0], [0.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert flow_vector([a, b], labels=labels, per_class=True).tolist() == pytest.approx([0.0])
    assert flow_vector([a, b], labels=labels, per_class=True, absolute=True).tolist() == pytest.approx([1.0])


def test_flow_distance_absolute_and_relative() -> None:
    reference = torch.tensor([0.3, 0.4])
    current = torch.tensor([0.0, 0.0])
    assert flow_distance(current, reference) == pytest.approx(0.5)
    assert flow_distance(current, reference, relative=True) == pytest.approx(1.0)
    assert math.isnan(flow_distance(torch.tensor([float("nan"), 0.0]), reference))


class TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2, 3)
        self.shortcut = nn.Conv2d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x) + self.shortcut(x))
        return self.head(features.mean(dim=(2, 3)))


def test_information_flow_uses_spatial_means_of_preactivations() -> None:
    torch.manual_seed(0)
    model = TwoConvs()
    x = torch.randn(16, 1, 5, 5)
    y = torch.arange(16) % 3
    probe = FlowProbe(((x[:8], y[:8]), (x[8:], y[8:])))
    layers = flow_layers(model, ["conv.weight", "head.weight", "shortcut.weight"])
    assert layers == ["conv", "head"]  # shortcut convolutions are not flow layers
    measurement = information_flow(model, layers, probe)
    with torch.no_grad():
        conv = model.conv(x).mean(dim=(2, 3))
        head = model(x)
    # float32 activations: batching the probe changes the summation order (~1e-7 relative)
    assert measurement.values.tolist() == pytest.approx([pair_flow(conv, head)], rel=1e-5)
    assert measurement.accuracy == pytest.approx(float((head.argmax(1) == y).double().mean()))


def test_gradient_flow_is_the_hand_computed_masked_gradient_norm() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    masks = MaskStore.attached(model)
    keep = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    masks.set_("0.weight", keep)
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 1, 0, 1])
    probe = FlowProbe(((x, y),))
    # By hand: h = W₁x + b₁ (masked), logits = W₂ relu(h) + b₂; ∂L/∂W = δ xᵀ with softmax δ.
    w1 = model[0].weight.detach()
    w2 = model[2].weight.detach()
    h = x @ w1.T + model[0].bias.detach()
    logits = torch.relu(h) @ w2.T + model[2].bias.detach()
    delta_out = (torch.softmax(logits, 1) - nn.functional.one_hot(y, 2).double().float()) / 5
    grad_w2 = delta_out.T @ torch.relu(h)
    delta_hidden = (delta_out @ w2) * (h > 0).float()
    grad_w1 = delta_hidden.T @ x
    expected = [float((grad_w1 * keep).norm()), float(grad_w2.norm())]
    before = [p.detach().clone() for p in model.parameters()]
    measurement = gradient_flow(model, ["0", "2"], probe)
    assert measurement.values.tolist() == pytest.approx(expected, rel=1e-5)
    assert all(p.grad is None for p in model.parameters())  # no stale .grad left behind
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_gradient_flow_averages_the_norm_over_batches() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    one = gradient_flow(model, ["0", "2"], FlowProbe(((x[:3], y[:3]),))).values
    two = gradient_flow(model, ["0", "2"], FlowProbe(((x[3:], y[3:]),))).values
    both = gradient_flow(model, ["0", "2"], FlowProbe(((x[:3], y[:3]), (x[3:], y[3:])))).values
    assert both.tolist() == pytest.approx(((one + two) / 2).tolist())


def test_fewer_than_two_flow_layers_is_an_error() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(UsageError, match="at least two prunable"):
        flow_layers(model, ["1.weight"])


def test_probe_is_the_head_of_the_validation_split_and_bounded_by_it() -> None:
    splits = split_validation(make_synthetic(num_train=1200, num_test=40))
    probe = validation_probe(splits, 50, batch_size=20)
    assert probe.size == 50 and [len(y) for _, y in probe.batches] == [20, 20, 10]
    assert torch.equal(probe.labels, splits.val.y[:50])
    with pytest.raises(UsageError, match="2 to 100 validation images"):
        validation_probe(splits, 101)

"""Parameter, non-zero and MAC counts against hand-computed numbers and torch's flop counter."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

from secateurs.errors import UsageError
from secateurs.metrics import (
    count_macs,
    count_nonzero_params,
    count_params,
    count_prunable,
    prunable_weights,
    size_report,
)


class Mask(nn.Module):
    """The smallest mask parametrization: ``weight = original * mask``."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


class ConvThenLinear(nn.Module):
    """A custom module holding a Conv2d and a Linear child."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, kernel_size=3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class Implant(nn.Module):
    """A k×k conv and a 1×1 conv side by side, outputs concatenated (like a neural implant)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, kernel_size=3, padding=1)
        self.point = nn.Conv2d(4, 2, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.point(x)], dim=1)


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))


def conv_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1),  # 32×32 -> 16×16
        nn.ReLU(),
        nn.Conv2d(8, 16, kernel_size=3, padding=1, groups=2),  # grouped, 16×16
        nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=5, stride=2, groups=16),  # depthwise, 16 -> 6
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def test_mlp_params_and_macs() -> None:
    model = mlp()
    assert count_params(model) == (784 * 300 + 300) + (300 * 10 + 10)
    assert count_params(model) == 238_510
    assert count_macs(model, (1, 28, 28)) == 784 * 300 + 300 * 10
    assert count_prunable(model) == (784 * 300 + 300 * 10, 784 * 300 + 300 * 10)
    assert [name for name, _ in prunable_weights(model)] == ["1.weight", "3.weight"]


def test_conv_net_strided_grouped_depthwise() -> None:
    model = conv_net()
    h1 = conv_out(32, 3, stride=2, padding=1)
    h2 = conv_out(h1, 3, padding=1)
    h3 = conv_out(h2, 5, stride=2)
    assert (h1, h2, h3) == (16, 16, 6)
    weights = [8 * 3 * 3 * 3, 16 * (8 // 2) * 3 * 3, 16 * 1 * 5 * 5, 10 * 16]
    biases = [8, 16, 16, 10]
    assert count_params(model) == sum(weights) + sum(biases)
    expected_macs = h1 * h1 * weights[0] + h2 * h2 * weights[1] + h3 * h3 * weights[2] + weights[3]
    assert count_macs(model, (3, 32, 32)) == expected_macs
    assert count_prunable(model)[0] == sum(weights)


def test_custom_modules_count_through_their_leaves() -> None:
    model = nn.Sequential(ConvThenLinear())
    assert count_params(model) == (5 * 3 * 9 + 5) + (7 * 5 + 7)
    assert count_macs(model, (3, 10, 10)) == 8 * 8 * 5 * 3 * 9 + 5 * 7
    assert [name for name, _ in prunable_weights(model)] == ["0.conv.weight", "0.fc.weight"]

    implant = nn.Sequential(Implant(), nn.Conv2d(8, 3, kernel_size=1))
    assert count_params(implant) == (6 * 4 * 9 + 6) + 2 * 4 + (3 * 8 + 3)
    assert count_macs(implant, (4, 7, 7)) == 49 * (6 * 4 * 9) + 49 * (2 * 4) + 49 * (3 * 8)


def test_linear_counts_every_row_and_shared_modules_every_call() -> None:
    layer = nn.Linear(6, 4)
    assert count_macs(layer, (5, 6)) == 5 * 6 * 4  # 5 rows per example
    assert prunable_weights(layer)[0][0] == "weight"
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert count_macs(model, (4,)) == 2 * 16
    assert count_params(model) == 20  # the shared weight counts once
    assert count_nonzero_params(model) == 20


def test_macs_match_torch_flop_counter() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 12, kernel_size=3, stride=2, groups=3, bias=False),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12 * 6 * 6, 10),
    ).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    per_op = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    conv_and_linear = sum(flops for op, flops in per_op.items() if "convolution" in op or "mm" in op)
    assert conv_and_linear > 0
    assert conv_and_linear == 2 * count_macs(model, (1, 28, 28))


def test_count_macs_restores_training_flags_and_removes_hooks() -> None:
    model = conv_net()
    model.train()
    model[0].eval()  # a deliberately mixed state must survive
    count_macs(model, (3, 32, 32))
    assert model.training and not model[0].training and model[2].training
    assert all(not m._forward_hooks for m in model.modules())

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.fc(x)
            raise RuntimeError("boom")

    broken = Broken()
    with pytest.raises(RuntimeError, match="boom"):
        count_macs(broken, (3,))
    assert not broken.fc._forward_hooks and broken.training


@pytest.mark.parametrize("shape", [(), (0, 3), (2.0, 3), (True, 3)])
def test_bad_input_shape_is_a_usage_error(shape: tuple) -> None:
    with pytest.raises(UsageError, match="input_shape"):
        count_macs(mlp(), shape)


def masked_conv_model(k: int, zero_original: bool) -> tuple[nn.Sequential, nn.Sequential]:
    """A dense model and a copy whose first conv has exactly `k` weights masked."""
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(2, 4, kernel_size=3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    masked = copy.deepcopy(dense)
    conv = masked[0]
    mask = torch.ones_like(conv.weight)
    mask.view(-1)[torch.randperm(mask.numel(), generator=torch.Generator().manual_seed(1))[:k]] = 0
    if zero_original:
        with torch.no_grad():
            conv.weight.mul_(mask)
    parametrize.register_parametrization(conv, "weight", Mask(mask))
    return dense, masked


@pytest.mark.parametrize("zero_original", [True, False])
def test_masks_reduce_nonzeros_and_effective_macs(zero_original: bool) -> None:
    k = 13
    dense, masked = masked_conv_model(k, zero_original)
    assert count_nonzero_params(dense) == count_params(dense)  # premise: no accidental zeros
    assert count_params(masked) == count_params(dense)
    assert count_nonzero_params(masked) == count_nonzero_params(dense) - k
    assert count_prunable(masked) == (count_prunable(dense)[0], count_prunable(dense)[0] - k)
    assert count_macs(masked, (2, 8, 8)) == count_macs(dense, (2, 8, 8))
    assert count_macs(masked, (2, 8, 8), effective=True) == count_macs(dense, (2, 8, 8)) - k * 6 * 6
    assert [name for name, _ in prunable_weights(masked)] == ["0.weight", "3.weight"]


def test_size_report_sparsities() -> None:
    k = 13
    dense, masked = masked_conv_model(k, zero_original=True)
    reference = size_report(dense, (2, 8, 8))
    assert reference.sparsity_prunable == reference.sparsity_params == reference.sparsity_macs == 0.0
    params = 4 * 2 * 9 + 4 + 3 * 144 + 3
    prunable = 4 * 2 * 9 + 3 * 144
    macs = 36 * 4 * 2 * 9 + 3 * 144
    assert (reference.params, reference.prunable_params, reference.macs) == (params, prunable, macs)

    expected = {
        "sparsity_prunable": 1 - (prunable - k) / prunable,
        "sparsity_params": 1 - (params - k) / params,
        "sparsity_macs": 1 - (macs - 36 * k) / macs,
    }
    for report in (size_report(masked, (2, 8, 8), dense_reference=reference), size_report(masked, (2, 8, 8))):
        for key, value in expected.items():
            assert getattr(report, key) == pytest.approx(value, rel=1e-12)
        assert report.effective_macs == macs - 36 * k
        assert json.loads(json.dumps(report.to_dict())) == report.to_dict()


def test_size_report_of_a_physically_smaller_model_needs_the_reference() -> None:
    big = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2))
    small = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 2))
    reference = size_report(big, (10,))
    report = size_report(small, (10,), dense_reference=reference)
    assert report.sparsity_params == pytest.approx(1 - (66 + 14) / (88 + 18), rel=1e-12)
    assert report.sparsity_prunable == pytest.approx(1 - (60 + 12) / (80 + 16), rel=1e-12)
    assert report.sparsity_macs == pytest.approx(1 - 72 / 96, rel=1e-12)
    assert size_report(small, (10,)).sparsity_params == 0.0

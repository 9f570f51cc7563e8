"""Channel scores: Hutchinson vs exact traces, hand-computed filter norms, Taylor, HAP's formula."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from secateurs.scoring.channel_criteria import CHANNEL_SCORERS
from secateurs.scoring.channel_criteria.hap import HessianTraceOptions, sensitivity, signed
from secateurs.scoring.hessian import HutchinsonConfig, exact_channel_traces, hutchinson_channel_traces
from secateurs.structure.groups import ChannelGroup, channel_graph

pytestmark = pytest.mark.usefixtures("one_thread")


def criterion(
    name: str,
    model: nn.Module,
    groups: list[ChannelGroup],
    *,
    generator: torch.Generator | None = None,
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    **options: object,
) -> list[torch.Tensor]:
    """The scores of the registered channel criterion ``name``."""
    generator = generator or torch.Generator().manual_seed(0)
    return CHANNEL_SCORERS.get(name).score(model, groups, options, generator=generator, batches=batches or []).scores


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.classifier = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.bn1(self.conv1(x)))
        return self.classifier(torch.tanh(self.conv2(x)).mean((2, 3)))


def tiny_data(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(16, 1, 5, 5, generator=generator)
    return [(inputs[:8], torch.arange(8) % 3), (inputs[8:], torch.arange(8, 16) % 3)]


def tiny_model() -> TinyCNN:
    torch.manual_seed(3)
    model = TinyCNN()
    model.bn1.running_var.fill_(0.7)
    return model.eval()


def test_exact_traces_of_a_quadratic_match_the_formula() -> None:
    # L = mean_n ½‖W x_n − y_n‖²: every row's Hessian block is mean_n x_n x_nᵀ, its trace mean ‖x_n‖²
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    inputs = torch.randn(10, 4)

    def half_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return 0.5 * (outputs - targets).pow(2).sum(1).mean()

    exact = exact_channel_traces(model, [(inputs, torch.zeros(10, 3))], half_squared_error)
    expected = inputs.pow(2).sum(1).mean().item()
    assert torch.allclose(exact["0"], torch.full((3,), expected, dtype=torch.float64), rtol=1e-5)


def test_hutchinson_agrees_with_exact_traces_and_improves_with_probes() -> None:
    model, data = tiny_model(), tiny_data()
    exact = exact_channel_traces(model, data, nn.functional.cross_entropy)
    errors = []
    for probes in (3, 30, 300):
        config = HutchinsonConfig(probes=probes, min_probes=probes, tolerance=0.0)
        result = hutchinson_channel_traces(
            model, data, nn.functional.cross_entropy, torch.Generator().manual_seed(7), config
        )
        assert result.probes == probes
        difference = torch.cat([result.traces[k] - exact[k] for k in exact])
        errors.append(float(difference.norm() / torch.cat(list(exact.values())).norm()))
        if probes == 300:
            spread = torch.cat([result.standard_errors[k] for k in exact])
            assert bool((difference.abs() <= 3 * spread).all()), (difference, spread)
    assert errors[2] < errors[1] < errors[0]


def test_hutchinson_stops_early_when_the_estimates_settle() -> None:
    model, data = tiny_model(), tiny_data()
    config = HutchinsonConfig(probes=100, min_probes=10, tolerance=0.05)
    result = hutchinson_channel_traces(
        model, data, nn.functional.cross_entropy, torch.Generator().manual_seed(0), config
    )
    assert 10 <= result.probes < 100
    assert result.changes[-1] < 0.05 and all(c >= 0.05 for c in result.changes[8:-1])


def test_hutchinson_is_deterministic_and_leaves_the_model_alone() -> None:
    model, data = tiny_model(), tiny_data()
    before = copy.deepcopy(model.state_dict())
    model.train()
    config = HutchinsonConfig(probes=4, min_probes=4, tolerance=0.0)
    first = hutchinson_channel_traces(
        model, data, nn.functional.cross_entropy, torch.Generator().manual_seed(1), config
    )
    second = hutchinson_channel_traces(
        model, data, nn.functional.cross_entropy, torch.Generator().manual_seed(1), config
    )
    assert all(torch.equal(first.traces[k], second.traces[k]) for k in first.traces)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_filter_norm_scores_are_hand_computed() -> None:
    model = tiny_model()
    with torch.no_grad():
        model.conv1.weight.copy_(torch.tensor([1.0, -2.0, 0.0]).reshape(3, 1, 1, 1) * torch.ones(3, 1, 3, 3))
    groups = {g.root: g for g in channel_graph(model, torch.zeros(2, 1, 5, 5)).prunable()}
    l1 = criterion("l1", model, [groups["conv1"]])[0]
    l2 = criterion("l2", model, [groups["conv1"]])[0]
    assert l1.tolist() == [9.0, 18.0, 0.0]  # nine taps of |1|, |−2|, 0
    assert torch.allclose(l2, torch.tensor([3.0, 6.0, 0.0], dtype=torch.float64))  # √9, √36, 0


class TwoWriters(nn.Module):
    """Two convolutions added together: one group, scored by the sum of both filters' scores."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1, bias=False)
        self.b = nn.Conv2d(1, 2, 1, bias=False)
        self.classifier = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier((self.a(x) + self.b(x)).mean((2, 3)))


def test_coupled_group_scores_are_the_sum_of_member_scores() -> None:
    model = TwoWriters()
    with torch.no_grad():
        model.a.weight.copy_(torch.tensor([1.0, -3.0]).reshape(2, 1, 1, 1))
        model.b.weight.copy_(torch.tensor([-2.0, 0.5]).reshape(2, 1, 1, 1))
    (group,) = channel_graph(model, torch.zeros(2, 1, 3, 3)).prunable()
    assert criterion("l1", model, [group])[0].tolist() == [3.0, 3.5]


def test_taylor_scores_match_a_direct_computation() -> None:
    model, data = tiny_model(), tiny_data()
    (group,) = [g for g in channel_graph(model, torch.zeros(2, 1, 5, 5)).prunable() if g.root == "conv1"]
    expected = torch.zeros(3, dtype=torch.float64)
    for inputs, targets in data:
        weight = model.conv1.weight
        (gradient,) = torch.autograd.grad(nn.functional.cross_entropy(model(inputs), targets), [weight])
        expected += (gradient * weight).detach().reshape(3, -1).sum(1).double().pow(2)
    (scores,) = criterion("taylor", model, [group], batches=data)
    assert torch.allclose(scores, expected / len(data), rtol=1e-5)


def test_random_channel_scores_follow_the_generator() -> None:
    groups = channel_graph(tiny_model(), torch.zeros(2, 1, 5, 5)).prunable()
    first = criterion("random", tiny_model(), groups, generator=torch.Generator().manual_seed(4))
    second = criterion("random", tiny_model(), groups, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    expected = torch.rand(groups[0].channels, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.equal(first[0], expected)


def test_sensitivity_variants_and_sign_policy() -> None:
    traces = torch.tensor([2.0, -1.0, 4.0], dtype=torch.float64)
    sizes = torch.tensor([2.0, 4.0, 8.0], dtype=torch.float64)
    norms = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    assert sensitivity(traces, sizes, norms, normalize=True, weight=True).tolist() == [3.0, -0.25, 0.25]
    assert sensitivity(traces, sizes, norms, normalize=False, weight=True).tolist() == [6.0, -1.0, 2.0]
    assert sensitivity(traces, sizes, norms, normalize=False, weight=False).tolist() == [2.0, -1.0, 4.0]
    assert signed(traces, "abs").tolist() == [2.0, 1.0, 4.0]
    assert signed(traces, "clip").tolist() == [2.0, 0.0, 4.0]
    assert signed(traces, "keep").tolist() == [2.0, -1.0, 4.0]


@pytest.mark.parametrize("name", ["hap", "hap-raw", "hap-nonorm"])
def test_hap_group_scores_follow_the_formula(name: str) -> None:
    model, data = tiny_model(), tiny_data()
    groups = channel_graph(model, torch.zeros(2, 1, 5, 5)).prunable()
    options = HessianTraceOptions(probes=5, min_probes=5, tolerance=0.0)
    generator = torch.Generator().manual_seed(2)
    result = CHANNEL_SCORERS.get(name).score(model, groups, options, generator=generator, batches=data)
    scores, info = result.scores, result.diagnostics
    traces = hutchinson_channel_traces(
        model, data, nn.functional.cross_entropy, torch.Generator().manual_seed(2), HutchinsonConfig(5, 5, 0.0)
    ).traces
    assert info["probes"] == 5 and info["calibration_images"] == 16
    for group, score in zip(groups, scores, strict=True):
        weight = model.get_submodule(group.root).weight.detach().double()
        trace = traces[group.root].abs()
        size = weight[0].numel()
        norm = weight.reshape(weight.shape[0], -1).pow(2).sum(1)
        expected = {
            "hap": trace / size * norm,
            "hap-raw": trace,
            "hap-nonorm": trace * norm,
        }[name]
        assert torch.allclose(score, expected)

"""Invariants every registered channel criterion must satisfy, and what the structured methods built on
them promise.

Parametrized over `CHANNEL_SCORERS`, so a criterion added later (one new file in
``scoring/channel_criteria/``) is tested here automatically, on models with a residual stream, a
grouped and a depthwise convolution, and neural implants.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateurs as sec
from secateurs.methods import METHODS
from secateurs.methods.channel_pruning import ChannelPruning
from secateurs.models import build_model
from secateurs.scoring.channel_criteria import CHANNEL_SCORERS, ChannelContext, NoCriterionOptions
from secateurs.structure.groups import channel_graph
from secateurs.structure.surgery import keep_masks, masked_copy

pytestmark = pytest.mark.usefixtures("one_thread")

CRITERIA = CHANNEL_SCORERS.names()
SHAPE = (1, 8, 8)


class Mixed(nn.Module):
    """A residual block, a grouped and a depthwise convolution, then the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.grouped = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(16))
        self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
        self.classifier = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.classifier(self.depthwise(self.grouped(x)).mean((2, 3)))


def calibration(classes: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    inputs = torch.randn(24, *SHAPE, generator=torch.Generator().manual_seed(0))
    return [(inputs[:12], torch.arange(12) % classes), (inputs[12:], torch.arange(12) % classes)]


def mixed() -> nn.Module:
    torch.manual_seed(0)
    return Mixed().eval()


def implanted() -> nn.Module:
    """``Mixed`` after HAP with implants: some layers are `ImplantedConv2d`."""
    result = sec.prune(
        mixed(), "hap", 0.3, example_inputs=calibration()[0][0][:2], data=calibration(), implant_ratio=0.5, probes=3
    )
    assert result.info["implanted_channels"] > 0
    with torch.no_grad():
        for module in result.model.modules():
            if isinstance(module, nn.Conv2d) and module.weight.shape[2:] == (1, 1) and not module.weight.any():
                module.weight.normal_()  # zero-initialised implants: give them weights to score
    return result.model.eval()


MODELS = {"resnet8": lambda: build_model("resnet8", SHAPE, 3).eval(), "mixed": mixed, "implanted": implanted}


def settings(name: str) -> dict[str, object]:
    return {"probes": 4, "min_probes": 4, "tolerance": 0.0} if name.startswith("hap") else {}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("name", CRITERIA)
def test_criterion_scores_every_channel_leaves_the_model_alone_and_is_deterministic(
    name: str, model_name: str
) -> None:
    model = MODELS[model_name]()
    groups = channel_graph(model, calibration()[0][0][:2]).prunable()
    entry = CHANNEL_SCORERS.get(name)
    before = snapshot(model)

    def score() -> list[torch.Tensor]:
        result = entry.score(
            model, groups, settings(name), generator=torch.Generator().manual_seed(3), batches=calibration()
        )
        assert isinstance(result.diagnostics, dict)
        return result.scores

    first, second = score(), score()
    assert len(first) == len(groups)
    for group, scores in zip(groups, first, strict=True):
        assert scores.dtype == torch.float64 and tuple(scores.shape) == (group.channels,), group.root
        assert bool(torch.isfinite(scores).all()), group.root
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # deterministic for a seed
    after = snapshot(model)
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", [n for n in CRITERIA if CHANNEL_SCORERS.get(n).needs_data])
def test_a_data_driven_criterion_without_data_names_itself(name: str) -> None:
    model = mixed()
    groups = channel_graph(model, torch.zeros(2, *SHAPE)).prunable()
    with pytest.raises(sec.errors.UsageError, match=f"channel criterion {name!r} needs data"):
        CHANNEL_SCORERS.get(name).score(model, groups, settings(name), generator=torch.Generator())


STRUCTURED_ON_CRITERIA = sorted(name for name, m in METHODS.items() if isinstance(m, ChannelPruning))


@pytest.mark.parametrize("method_name", STRUCTURED_ON_CRITERIA)
def test_a_method_carries_its_criterions_options_and_data_needs(method_name: str) -> None:
    method = METHODS.get(method_name)
    assert isinstance(method, ChannelPruning)
    entry = CHANNEL_SCORERS.get(method.criterion)
    assert set(entry.options.model_fields) <= set(method.Options.model_fields)
    assert method.needs_data == entry.needs_data


@pytest.mark.parametrize("model_name", ["mixed", "implanted"])
def test_the_context_removes_a_group_as_masks_would_and_restores_it(model_name: str) -> None:
    """`ChannelContext.removed` (what an oracle criterion uses) equals the keep-masks, then undoes itself."""
    model = MODELS[model_name]()
    inputs = calibration()[0][0]
    graph = channel_graph(model, inputs[:2])
    before = snapshot(model)
    with torch.no_grad():
        dense = model(inputs)
    for group in graph.prunable():
        kept = torch.arange(group.channels) % 2 == 0
        kept = group.channels_of_units(group.unit_values(kept.double()) > 0)  # whole units
        reference = masked_copy(model, keep_masks(graph.groups, {group.root: kept})).eval()
        with torch.no_grad(), ChannelContext(NoCriterionOptions(), torch.Generator()).removed(group, kept):
            inside = model(inputs)
            expected = reference(inputs)
        assert torch.allclose(inside, expected, atol=1e-6), group.root
        assert not torch.allclose(inside, dense), group.root
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)

"""Every conv model of the zoo: masked forward == physically pruned forward, exact sizes, exact replay;
every structured method under every allocation policy lands on its parameter target."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateurs as sec
from secateurs.methods import METHODS
from secateurs.metrics.counts import count_macs, count_params
from secateurs.models import MODELS, build_model
from secateurs.sparsity.masks import load_plain_state_dict, plain_state_dict
from secateurs.structure.costs import SizeModel
from secateurs.structure.groups import channel_graph
from secateurs.structure.plan import replay_plan
from secateurs.structure.surgery import apply_plan, keep_masks, masked_copy, removal_plan

pytestmark = pytest.mark.usefixtures("one_thread")

CONV_MODELS = [name for name, entry in MODELS.items() if entry.kind == "conv"]
IMAGE = 8


def shape_of(name: str) -> tuple[int, int, int]:
    return (2, max(IMAGE, MODELS.get(name).min_image_size), max(IMAGE, MODELS.get(name).min_image_size))


def randomized(name: str, seed: int) -> nn.Module:
    """A zoo model in eval mode with non-trivial batch-norm statistics and affine parameters."""
    torch.manual_seed(seed)
    model = build_model(name, shape_of(name), 5).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-1, 1)
    return model


def random_kept(graph, generator: torch.Generator) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """Keep-masks removing about 40 % of every prunable group's units (never all of them)."""
    kept = {}
    for group in graph.prunable():
        units = torch.rand(group.unit_count, generator=generator) >= 0.4
        units[int(torch.randint(group.unit_count, (1,), generator=generator))] = True
        kept[group.root] = group.channels_of_units(units)
    return kept


@pytest.mark.parametrize("name", CONV_MODELS)
def test_masked_equals_pruned_sizes_are_exact_and_plan_replays(name: str) -> None:
    model = randomized(name, 0)
    inputs = torch.randn(3, *shape_of(name))
    graph = channel_graph(model, inputs[:2])
    kept = random_kept(graph, torch.Generator().manual_seed(1))
    assert any(not bool(m.all()) for m in kept.values())
    plan = removal_plan(graph.groups, kept)
    pruned = apply_plan(model, plan, inputs[:2]).eval()

    masked = masked_copy(model, keep_masks(graph.groups, kept)).eval()
    with torch.no_grad():
        assert (masked(inputs) - pruned(inputs)).abs().max().item() <= 1e-5

    predicted = SizeModel(graph, shape_of(name)).size(kept, {})
    assert predicted.params == count_params(pruned) < count_params(model)
    assert predicted.macs == count_macs(pruned, shape_of(name))

    fresh = build_model(name, shape_of(name), 5)
    replay_plan(fresh, plan, torch.zeros(1, *shape_of(name)))
    load_plain_state_dict(fresh, plain_state_dict(pruned))
    fresh.eval()
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}
    with torch.no_grad():
        assert torch.equal(fresh(inputs), pruned(inputs))


# ------------------------------------------------------------------ every structured method × every policy
STRUCTURED = sorted(name for name, method in METHODS.items() if method.kind == "structured")
POLICIES = ("global", "layerwise", "normalized")


def _calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
    inputs = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return [(inputs, torch.arange(16) % 5)]


@pytest.mark.parametrize("scope", POLICIES)
@pytest.mark.parametrize("method", STRUCTURED)
def test_every_structured_method_lands_on_the_params_target_under_every_policy(method: str, scope: str) -> None:
    torch.manual_seed(0)
    model = build_model("resnet8", (1, 8, 8), 5).eval()  # a residual stream shared by several convolutions
    options: dict[str, object] = {"probes": 3} if method.startswith("hap") else {}
    if method in ("tp-hessian", "tp-hessian-fixed"):
        options["samples"] = 8
    batches = _calibration()
    result = sec.prune(model, method, 0.4, example_inputs=batches[0][0][:2], data=batches, scope=scope, **options)
    assert result.info["scope"] == scope
    assert result.info["normalizer"] == ("mean" if scope == "normalized" else None)
    removed = 1 - count_params(result.model) / count_params(model)
    assert result.info["realised"]["params_removed"] == pytest.approx(removed)
    assert abs(removed - 0.4) < 0.03, removed

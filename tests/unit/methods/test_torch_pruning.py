"""Torch-Pruning's pruners as baselines: the same result as its own MetaPruner, and the Hessian bug."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

import secateurs as sec
from secateurs.methods.torch_pruning import CorrectedHessianImportance, l2_normalized
from secateurs.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def per_sample_squares(scorer: tp.importance.GroupHessianImportance) -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0]]))
    samples = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    scorer.zero_grad()
    squares = []
    for sample in samples:
        layer.zero_grad()
        layer(sample).pow(2).sum().mul(0.5).backward()  # gradient = (w·x) x
        squares.append(layer.weight.grad.detach().clone().pow(2))  # type: ignore[union-attr]
        scorer.accumulate_grad(layer)
    return squares[0], squares[1], layer


def test_shipped_hessian_importance_keeps_only_the_last_sample() -> None:
    scorer = tp.importance.GroupHessianImportance()
    first, last, layer = per_sample_squares(scorer)
    assert torch.equal(scorer._accu_grad[layer.weight], last)  # the documented 1.6.1 defect
    assert scorer._counter[layer.weight] == 1
    assert not torch.equal(first, last)


def test_corrected_hessian_importance_sums_every_sample() -> None:
    scorer = CorrectedHessianImportance()
    first, last, layer = per_sample_squares(scorer)
    assert torch.equal(scorer._accu_grad[layer.weight], first + last)
    assert scorer._counter[layer.weight] == 2


@pytest.mark.parametrize(
    ("scope", "normalizer", "global_pruning", "tp_normalizer"),
    [
        (None, "mean", True, "mean"),  # the default: Torch-Pruning's own default settings
        ("normalized", "l2", True, l2_normalized),
        ("global", "mean", True, None),
        ("layerwise", "mean", False, None),
    ],
)
def test_tp_magnitude_matches_metapruner_and_lands_on_the_parameter_target(
    scope: str | None, normalizer: str, global_pruning: bool, tp_normalizer: object
) -> None:
    torch.manual_seed(0)
    model = build_model("resnet8", (1, 8, 8), 5).eval()
    inputs = torch.randn(2, 1, 8, 8)
    result = sec.prune(model, "tp-magnitude", 0.5, example_inputs=inputs, scope=scope, normalizer=normalizer)
    assert result.info["realised"]["params_removed"] == pytest.approx(0.5, abs=0.02)
    assert result.info["scope"] == (scope or "normalized")
    # Torch-Pruning's own one-shot run at the ratio the search found prunes to the same shapes
    reference = copy.deepcopy(model)
    pruner = tp.pruner.MetaPruner(
        reference,
        inputs,
        importance=tp.importance.GroupMagnitudeImportance(p=2, normalizer=tp_normalizer),
        global_pruning=global_pruning,
        pruning_ratio=result.info["pruning_ratio"],
        max_pruning_ratio=0.95,
        ignored_layers=[reference.classifier],
    )
    pruner.step()
    ours = {k: v.shape for k, v in result.model.state_dict().items()}
    theirs = {k: v.shape for k, v in reference.state_dict().items()}
    assert ours == theirs
    if scope == "global":  # raw magnitudes rank differently from the default's normalised ones
        default = sec.prune(model, "tp-magnitude", 0.5, example_inputs=inputs)
        assert {k: v.shape for k, v in default.model.state_dict().items()} != ours
    with torch.no_grad():
        assert torch.allclose(result.model.eval()(inputs), reference.eval()(inputs), atol=1e-6)


@pytest.mark.parametrize("method", ["tp-taylor", "tp-hessian", "tp-hessian-fixed"])
def test_data_driven_tp_baselines_run_at_matched_size(method: str) -> None:
    torch.manual_seed(0)
    model = build_model("resnet8", (1, 8, 8), 5).eval()
    inputs = torch.randn(16, 1, 8, 8)
    result = sec.prune(model, method, 0.5, example_inputs=inputs[:2], data=[(inputs, torch.arange(16) % 5)], samples=8)
    assert result.info["realised"]["params_removed"] == pytest.approx(0.5, abs=0.03)
    assert result.model.classifier.out_features == 5

"""The oracle criterion is the exact loss increase of removing one unit: checked against physical removal."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import secateurs as sec
from secateurs.scoring.channel_criteria import CHANNEL_SCORERS
from secateurs.scoring.channel_criteria.oracle import calibration_loss
from secateurs.structure.groups import channel_graph
from secateurs.structure.surgery import apply_plan, removal_plan

pytestmark = pytest.mark.usefixtures("one_thread")


class Residual(nn.Module):
    """conv → BN → ReLU, a residual pair sharing channels, a grouped conv, flatten → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.grouped = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.BatchNorm2d(6), nn.ReLU())
        self.head = nn.Linear(6 * 5 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.relu(y + self.branch(y))
        return self.head(self.grouped(y).flatten(1))


def trained_like() -> nn.Module:
    torch.manual_seed(0)
    model = Residual()
    for module in model.modules():  # non-trivial running statistics and affine parameters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return model.train()  # the criterion must switch to eval mode itself and restore this


def data() -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    x = torch.randn(12, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    return x, [(x[:6], torch.arange(6) % 3), (x[6:], torch.arange(6) % 3)]


def test_each_score_is_the_loss_change_of_the_physically_pruned_model() -> None:
    model = trained_like()
    x, batches = data()
    loss = nn.functional.cross_entropy
    graph = channel_graph(model, x[:2])
    groups = graph.prunable()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    result = CHANNEL_SCORERS.get("oracle").score(
        model, groups, {}, generator=torch.Generator(), batches=batches, loss_fn=loss
    )
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(module.training for module in model.modules())
    base = calibration_loss(model.eval(), batches, loss)
    assert result.diagnostics["base_loss"] == pytest.approx(base, abs=1e-12)
    assert result.diagnostics["forwards"] == 1 + sum(group.unit_count for group in groups)
    checked = 0
    for group, scores in zip(groups, result.scores, strict=True):
        assert scores.shape == (group.channels,) and scores.dtype == torch.float64
        for unit in range(group.unit_count):
            kept = {group.root: group.units != unit}
            pruned = apply_plan(model, removal_plan(graph.groups, kept), x[:2]).eval()
            expected = calibration_loss(pruned, batches, loss) - base
            assert float(scores[group.units == unit][0]) == pytest.approx(expected, abs=1e-5), (group.root, unit)
            checked += 1
    assert checked == sum(group.unit_count for group in groups) >= 5


def test_oracle_channel_prunes_to_the_target_and_caches_its_scores(tmp_path: Path) -> None:
    x, batches = data()
    cache = tmp_path / "oracle-cache"
    first = sec.prune(
        trained_like(), "oracle-channel", 0.3, example_inputs=x[:2], data=batches, oracle_cache=str(cache)
    )
    assert first.info["criterion"] == "oracle" and first.info["oracle_cache"] == "miss"
    assert first.info["realised"]["params_removed"] == pytest.approx(0.3, abs=0.06)  # whole tied units on a tiny net
    again = sec.prune(
        trained_like(), "oracle-channel", 0.3, example_inputs=x[:2], data=batches, oracle_cache=str(cache)
    )
    assert len(list(cache.glob("*.safetensors"))) == 1
    assert again.info["channel_decisions"] == first.info["channel_decisions"]
    assert again.info["oracle_cache"] == "hit" and again.info["base_loss"] == first.info["base_loss"]

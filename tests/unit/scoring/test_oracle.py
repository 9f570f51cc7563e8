"""The oracle criterion is the exact loss increase of removing one unit: checked against physical removal."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.scoring.oracle import calibration_loss, oracle_channel_scores
from secateurs.structure.groups import channel_graph
from secateurs.structure.surgery import apply_plan, removal_plan

pytestmark = pytest.mark.usefixtures("one_thread")


class Residual(nn.Module):
    """conv → BN → ReLU, a residual pair sharing channels, grouped conv, flatten → linear."""

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
    return model.eval()


def test_each_score_is_the_loss_change_of_the_physically_pruned_model() -> None:
    model = trained_like()
    x = torch.randn(12, 1, 5, 5)
    batches = [(x[:6], torch.arange(6) % 3), (x[6:], torch.arange(6) % 3)]
    loss = nn.functional.cross_entropy
    graph = channel_graph(model, x[:2])
    groups = graph.prunable()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    result = oracle_channel_scores(model, groups, batches, loss)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert result.base_loss == pytest.approx(calibration_loss(model, batches, loss), abs=1e-12)
    assert result.forwards == 1 + sum(group.unit_count for group in groups)
    checked = 0
    for group, scores in zip(groups, result.scores, strict=True):
        assert scores.shape == (group.channels,)
        for unit in range(group.unit_count):
            removed = {group.root: group.units == unit}
            pruned = apply_plan(model, removal_plan(graph.groups, removed), x[:2]).eval()
            expected = calibration_loss(pruned, batches, loss) - result.base_loss
            assert float(scores[group.units == unit][0]) == pytest.approx(expected, abs=1e-5), (group.root, unit)
            checked += 1
    assert checked == sum(group.unit_count for group in groups) >= 5

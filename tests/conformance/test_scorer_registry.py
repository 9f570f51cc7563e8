"""Every registered scorer: one finite score per weight entry, and the model left exactly as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.scoring import SCORERS, ScoreContext
from secateurs.sparsity.masks import MaskStore


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )


@pytest.mark.parametrize("name", SCORERS.names())
@pytest.mark.parametrize("masked", [False, True])
def test_scorers_leave_the_model_unchanged(name: str, masked: bool) -> None:
    model = small_net().train()
    if masked:
        keep = torch.rand(5, 36, generator=torch.Generator().manual_seed(1)) > 0.5
        MaskStore.attached(model).set_("5.weight", keep)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    modes = [module.training for module in model.modules()]
    inputs = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    context = ScoreContext(
        generator=torch.Generator().manual_seed(0),
        example_inputs=inputs[:2],
        batches=[(inputs, torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(3)))],
    )
    names = ["0.weight", "5.weight", "7.weight"]
    scores = SCORERS.get(name).score(model, names, context)
    assert list(scores) == names
    for parameter in names:
        shape = model.get_submodule(parameter.rpartition(".")[0]).weight.shape
        assert scores[parameter].shape == shape and torch.isfinite(scores[parameter]).all()
    assert [module.training for module in model.modules()] == modes
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())

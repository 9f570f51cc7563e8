"""Rewinding restores exactly the stored weights under the mask, and every bias including BN β."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.rewind import capture_rewind_point, rewind_, rewound_names


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def perturb_(model: nn.Module) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
        model[1].running_mean.add_(1.0)
        model[1].running_var.mul_(2.0)


def test_rewind_restores_stored_weights_times_mask_and_every_bias() -> None:
    model = network()
    point = capture_rewind_point(model)
    masks = MaskStore.attached(model)
    keep = torch.rand(2, 48, generator=torch.Generator().manual_seed(1)) > 0.5
    masks.set_("4.weight", keep)
    perturb_(model)
    gamma, running_mean = model[1].weight.detach().clone(), model[1].running_mean.clone()
    restored = rewind_(model, point, masks)
    assert sorted(restored) == ["0.bias", "0.weight", "1.bias", "4.bias", "4.weight"]
    assert torch.equal(masks.original("4.weight"), point["4.weight"] * keep)
    assert torch.equal(model[4].weight, point["4.weight"] * keep)
    assert torch.equal(model[0].weight, point["0.weight"])
    assert torch.equal(model[0].bias, point["0.bias"]) and torch.equal(model[4].bias, point["4.bias"])
    assert torch.equal(model[1].bias, point["1.bias"])  # BN β is a "bias": rewound
    assert torch.equal(model[1].weight, gamma)  # BN γ is not
    assert torch.equal(model[1].running_mean, running_mean)  # nor the running statistics


def test_rewind_everything_also_restores_gamma_and_running_statistics() -> None:
    model = network()
    point = capture_rewind_point(model)
    masks = MaskStore.attached(model)
    masks.set_("0.weight", torch.ones(3, 1, 3, 3, dtype=torch.bool))
    perturb_(model)
    rewind_(model, point, masks, everything=True)
    assert torch.equal(model[1].weight, point["1.weight"])
    assert torch.equal(model[1].running_mean, point["1.running_mean"])
    assert torch.equal(model[1].running_var, point["1.running_var"])
    assert "1.num_batches_tracked" in rewound_names(model, everything=True)


def test_pruned_entries_stay_zero_even_if_the_stored_value_is_not() -> None:
    model = network()
    point = capture_rewind_point(model)
    masks = MaskStore.attached(model)
    keep = torch.zeros(3, 1, 3, 3, dtype=torch.bool)
    keep[0] = True
    masks.set_("0.weight", keep)
    rewind_(model, point, masks)
    assert int((masks.original("0.weight") != 0).sum()) == 9
    assert torch.equal(masks.original("0.weight")[0], point["0.weight"][0])


def test_a_point_from_another_model_is_an_error() -> None:
    model = network()
    with pytest.raises(UsageError, match="rewind point has no"):
        rewind_(model, {"0.weight": torch.zeros(3, 1, 3, 3)}, MaskStore.attached(model))

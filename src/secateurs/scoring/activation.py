"""Activation probabilities for LAP-act (Park et al. 2020, arXiv 2002.04809, §1.3 of METHODS.md).

LAP-act weighs each unit by how often it is active: p_{i,j} is the fraction of training inputs for
which unit j after layer i passes its ReLU. Row j of W_i is multiplied by √p_{i,j} (for a conv, by
Σ over spatial positions of √p at that position, so one p per position as in the released code),
for every layer that has a following Conv2d/Linear layer (the last layer is left alone), and LAP is
run on the scaled weights.

Here "active" means that the layer's output, passed through the layer's own BatchNorm in eval mode
when it has one (`Neighbours.batch_norm`), is positive: exactly the ReLU's activity for Linear/Conv
→ [BN] → ReLU. Deviation: for a layer whose output is added to a skip before its ReLU (a ResNet
block's last conv) this is the branch's own sign, not the sum's (the paper uses LAP-act on MLPs only).
The model is evaluated in eval mode under ``no_grad``; its modes are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from secateurs.scoring.neighbours import Topology


def _positive(output: torch.Tensor, batch_norm: nn.Module | None) -> torch.Tensor:
    if isinstance(batch_norm, nn.modules.batchnorm._BatchNorm) and batch_norm.running_mean is not None:
        output = nn.functional.batch_norm(
            output,
            batch_norm.running_mean,
            batch_norm.running_var,
            batch_norm.weight,
            batch_norm.bias,
            training=False,
            eps=batch_norm.eps,
        )
    return output > 0


def activation_probabilities(
    model: nn.Module,
    layers: Sequence[str],
    batch_norms: Mapping[str, str | None],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """P(unit active) per layer: (C, H, W) for a conv, (C,) for a Linear (leading dims averaged).

    ``batch_norms`` maps a layer to its own BatchNorm (or None). The model is not changed.
    """
    counts: dict[str, torch.Tensor] = {}
    seen: dict[str, int] = {}

    def recorder(name: str, batch_norm: nn.Module | None) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            active = _positive(output.detach(), batch_norm).to(torch.float64)
            if isinstance(module, nn.Linear):
                active = active.reshape(-1, active.shape[-1])
            total = active.sum(dim=0)
            counts[name] = counts[name] + total if name in counts else total
            seen[name] = seen.get(name, 0) + active.shape[0]

        return hook

    modes = {module: module.training for module in model.modules()}
    handles = []
    try:
        for name in layers:
            own = batch_norms.get(name)
            module = model.get_submodule(name)
            handles.append(module.register_forward_hook(recorder(name, model.get_submodule(own) if own else None)))
        model.eval()
        with torch.no_grad():
            for inputs, _ in batches:
                model(inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return {name: counts[name] / seen[name] for name in layers if name in counts}


def row_multipliers(probabilities: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """√p per output unit; for a conv Σ over spatial positions of √p (one value per channel)."""
    return {name: p.sqrt().reshape(p.shape[0], -1).sum(dim=1) for name, p in probabilities.items()}


def scaled_weights(
    weights: Mapping[str, torch.Tensor], multipliers: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Each weight with row j multiplied by its multiplier (weights without one are unchanged)."""
    scaled = dict(weights)
    for name, factor in multipliers.items():
        shape = (-1, *([1] * (weights[name].dim() - 1)))
        scaled[name] = weights[name].to(torch.float64) * factor.to(torch.float64).reshape(shape)
    return scaled


def scaled_layers(topology: Topology) -> list[str]:
    """The layers LAP-act scales: those with at least one following Conv2d/Linear layer (not the last)."""
    return [name for name, n in topology.layers.items() if any(p.layer is not None for p in n.following)]

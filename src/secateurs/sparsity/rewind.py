"""Rewinding for iterative magnitude pruning: restore stored weights under the current masks.

What is rewound (InfCoP's released code, METHODS.md §3.5):

- every parameter with more than one dimension (conv/linear weights) ← stored value ⊙ current mask;
- every parameter named ``bias`` (conv/linear biases *and* BatchNorm β) ← stored value;
- BatchNorm γ and the running statistics are **not** rewound by default: they keep the values the
  previous round trained / estimated (the released code matches parameters by the name "bias", so
  β is reset and γ is not). ``everything=True`` rewinds γ and every buffer too (a full rewind, the
  classic lottery-ticket protocol).

The rewind point is the model's plain state dict (effective weights, canonical names), captured by
`capture_rewind_point`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.sparsity.masks import MaskStore, canonical_name, plain_state_dict


def capture_rewind_point(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer (effective values, canonical names)."""
    return {name: tensor.detach().clone() for name, tensor in plain_state_dict(model).items()}


def rewound_names(model: nn.Module, *, everything: bool = False) -> list[str]:
    """Canonical names of the parameters (and, with ``everything``, buffers) `rewind_` restores."""
    names = []
    for name, parameter in model.named_parameters():
        canonical = canonical_name(name)
        if everything or parameter.dim() > 1 or canonical.rsplit(".", 1)[-1] == "bias":
            names.append(canonical)
    if everything:
        names += [name for name in plain_state_dict(model) if name not in names]
    return names


@torch.no_grad()
def rewind_(
    model: nn.Module,
    point: Mapping[str, torch.Tensor],
    masks: MaskStore,
    *,
    everything: bool = False,
) -> list[str]:
    """Restore ``point`` into ``model`` as described in the module docstring; returns the names restored.

    Masked weights get ``stored ⊙ mask`` in their raw parameter, so pruned entries stay exactly zero.
    Mutates ``model``. A name missing from ``point`` is a `UsageError` (the point is of another model).
    """
    restored = []
    targets: dict[str, torch.Tensor] = {canonical_name(name): tensor for name, tensor in model.named_parameters()}
    if everything:
        targets.update({canonical_name(name): tensor for name, tensor in model.named_buffers()})
    for name in rewound_names(model, everything=everything):
        if name not in point:
            raise UsageError(f"the rewind point has no {name!r}; it was captured from another model")
        if name not in targets:  # a mask buffer or other non-state entry
            continue
        target = targets[name]
        stored = point[name].to(device=target.device, dtype=target.dtype)
        if name in masks:
            stored = stored * masks.get(name).to(stored.dtype)
        target.copy_(stored)
        restored.append(name)
    return restored

"""Scorers: importance of every entry of the prunable weights (higher = more important).

A scorer is a function ``(model, names, context) → {name: scores}`` where ``names`` are canonical
weight names (``features.0.weight``) and each score tensor has the weight's shape. Scorers never
modify the model (a conformance test checks every registered scorer). Structured methods score
channels instead, with the channel criteria of `scoring.channel_criteria` (their own registry).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from secateurs.errors import UsageError
from secateurs.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ScoreContext:
    """What a scorer may use besides the weights: data, a loss, a seeded generator."""

    generator: torch.Generator
    example_inputs: torch.Tensor | None = None
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
    loss_fn: LossFn = nn.functional.cross_entropy
    info: dict[str, Any] = field(default_factory=dict)
    """Scorers record diagnostics here (probes used, spreads); they end up in run.json."""

    def require_batches(self, scorer: str) -> Sequence[tuple[torch.Tensor, torch.Tensor]]:
        if not self.batches:
            raise UsageError(f"scorer {scorer!r} needs data: pass calibration batches (data=...)")
        return self.batches


ScoreFn = Callable[[nn.Module, Sequence[str], ScoreContext], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ScorerEntry:
    name: str
    score: ScoreFn
    description: str
    needs_data: bool = False


SCORERS: Registry[ScorerEntry] = Registry("scorer")


def register_scorer(name: str, *, description: str, needs_data: bool = False) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator registering a score function under ``name``."""

    def decorator(function: ScoreFn) -> ScoreFn:
        SCORERS.add(name, ScorerEntry(name, function, description, needs_data))
        return function

    return decorator


def weight(model: nn.Module, name: str) -> torch.Tensor:
    """The *effective* tensor ``name`` (``a.weight`` → masked weight if a mask is live)."""
    module_name, _, tensor_name = name.rpartition(".")
    value = getattr(model.get_submodule(module_name), tensor_name)
    if not isinstance(value, torch.Tensor):
        raise UsageError(f"{name!r} is not a tensor of the model")
    return value

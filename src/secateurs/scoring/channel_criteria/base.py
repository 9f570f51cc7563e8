"""The channel-criterion contract: one score per channel of every channel group (higher = kept first).

A criterion is one file in this package with a function ``(model, groups, context) → ChannelScores``
registered by `register_channel_scorer`. ``groups`` are the prunable `ChannelGroup`\\s of ``model``
(the structured pipeline's baked copy: masks multiplied in); ``scores[i]`` holds one float64 per
channel of ``groups[i]``; ``diagnostics`` go to ``method_info`` in run.json. A criterion reads a
group's channels only through `structure.channel_view` (every layer type, implants included, is
handled there), must leave ``model`` exactly as it found it (a conformance test checks every
registered criterion) and must be deterministic for a given generator state.

`ChannelContext` gives a criterion what it may use: its own validated options (a pydantic class
named at registration; a method's options carry the same fields), the run's seeded ``generator``,
the calibration ``batches`` and ``loss_fn`` (criteria with ``needs_data``), the example inputs, and
`ChannelContext.removed`, which removes a group's channels for the duration of a ``with`` block
(as masks would: output rows and consumer input slices zeroed), e.g. to measure the loss without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from secateurs.errors import UsageError
from secateurs.registry import Registry
from secateurs.scoring.base import LossFn
from secateurs.structure.channel_view import channels_removed
from secateurs.structure.groups import ChannelGroup


class NoCriterionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CriterionOptionsT = TypeVar("CriterionOptionsT", bound=BaseModel)


@dataclass(frozen=True)
class ChannelScores:
    """What a criterion returns."""

    scores: list[torch.Tensor]
    """One float64 tensor per group, one entry per channel of the group (higher = more important)."""
    diagnostics: dict[str, Any] = field(default_factory=dict)
    """Probes used, spreads, …: recorded in ``method_info``."""


@dataclass
class ChannelContext(Generic[CriterionOptionsT]):
    """Everything a channel criterion may use besides the model and its groups."""

    options: CriterionOptionsT
    generator: torch.Generator
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
    loss_fn: LossFn = nn.functional.cross_entropy
    example_inputs: torch.Tensor | None = None

    def require_batches(self, criterion: str) -> Sequence[tuple[torch.Tensor, torch.Tensor]]:
        """The calibration batches; a `UsageError` naming ``criterion`` when there are none."""
        if not self.batches:
            raise UsageError(f"channel criterion {criterion!r} needs data: pass calibration batches (data=...)")
        return self.batches

    @staticmethod
    def removed(group: ChannelGroup, kept: torch.Tensor) -> AbstractContextManager[None]:
        """Within the block, ``group``'s channels where ``kept`` (per channel) is False are removed.

        See `structure.channel_view.channels_removed`; the model is restored exactly on exit.
        """
        return channels_removed(group, kept)


ChannelScoreFn = Callable[[nn.Module, Sequence[ChannelGroup], ChannelContext[CriterionOptionsT]], ChannelScores]


@dataclass(frozen=True)
class ChannelScorerEntry:
    name: str
    score_fn: ChannelScoreFn[Any]
    description: str
    needs_data: bool
    options: type[BaseModel]
    """The criterion's own options (its fields must be among the options of a method using it)."""

    def score(
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        settings: BaseModel | Mapping[str, Any],
        *,
        generator: torch.Generator,
        batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
        loss_fn: LossFn = nn.functional.cross_entropy,
        example_inputs: torch.Tensor | None = None,
    ) -> ChannelScores:
        """Run the criterion; its options are the fields of ``settings`` (a method's options) it declares."""
        raw = settings.model_dump() if isinstance(settings, BaseModel) else dict(settings)
        options = self.options.model_validate({key: raw[key] for key in self.options.model_fields if key in raw})
        context = ChannelContext(options, generator, batches, loss_fn, example_inputs)
        return self.score_fn(model, groups, context)


CHANNEL_SCORERS: Registry[ChannelScorerEntry] = Registry("channel criterion")


@overload
def register_channel_scorer(
    name: str, *, description: str, needs_data: bool = False
) -> Callable[[ChannelScoreFn[NoCriterionOptions]], ChannelScoreFn[NoCriterionOptions]]: ...


@overload
def register_channel_scorer(
    name: str, *, description: str, needs_data: bool = False, options: type[CriterionOptionsT]
) -> Callable[[ChannelScoreFn[CriterionOptionsT]], ChannelScoreFn[CriterionOptionsT]]: ...


def register_channel_scorer(
    name: str, *, description: str, needs_data: bool = False, options: type[BaseModel] = NoCriterionOptions
) -> Callable[[ChannelScoreFn[Any]], ChannelScoreFn[Any]]:
    """Decorator registering a channel criterion under ``name`` (its options class: ``options``)."""

    def decorator(function: ChannelScoreFn[Any]) -> ChannelScoreFn[Any]:
        CHANNEL_SCORERS.add(name, ChannelScorerEntry(name, function, description, needs_data, options))
        return function

    return decorator

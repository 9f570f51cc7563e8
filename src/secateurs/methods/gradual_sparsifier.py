"""Gradual pruning during training: `GradualSparsifier` and its `Trainer` adapter `GradualCallback`.

The lifecycle copies ``torch.ao.pruning``: construct the sparsifier on a model (it installs all-ones
masks as parametrizations), call `GradualSparsifier.step` after every optimizer step, save and
restore it with `state_dict` / `load_state_dict`, and `squash_mask` to bake the masks in at the end.
Masks are recomputed every Δt steps from ``start`` to ``end`` with the target of a
`CubicSchedule` (Zhu & Gupta 2017, arXiv 1710.01878):

    s(t) = s_f + (s_i − s_f) · (1 − (t − t₀) / (t_end − t₀))³,

and at ``end`` they are frozen (`MaskStore.freeze`: any later change is an error) while training
continues. Masks are hard: removed weights and their optimizer state are zero and stay zero
(`MaskStore.bind_optimizer`), so a removed weight never comes back. Every update also scores removed
entries ``-inf``, so even a granularity whose keep count could rise cannot revive one; as the
schedule only raises the target, successive masks are nested.

Scores are the magnitudes of the *effective* weights (``|original · mask|``) unless another
data-free scorer is named. Each tensor gets the schedule's target through its granularity's own
rounding (`secateurs.sparsity.granularities_structured`), and `info` reports the realised figures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from secateurs.allocation.elements import select
from secateurs.errors import UsageError
from secateurs.scoring import SCORERS
from secateurs.scoring.base import ScoreContext
from secateurs.sparsity.granularities_structured import Balanced, realised_sparsity
from secateurs.sparsity.granularity import Granularity
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.schedules import CubicSchedule
from secateurs.training.loop import Callback, Trainer

log = logging.getLogger(__name__)


def _weight_shape(model: nn.Module, name: str) -> torch.Size:
    module_name, _, tensor_name = name.rpartition(".")
    try:
        tensor = getattr(model.get_submodule(module_name), tensor_name)
    except AttributeError:
        raise UsageError(f"the model has no weight {name!r}") from None
    if not isinstance(tensor, torch.Tensor):
        raise UsageError(f"{name!r} is not a tensor of the model")
    return tensor.shape


def assign_granularities(
    model: nn.Module, names: Sequence[str], granularity: Granularity, fallback: Granularity | None
) -> dict[str, Granularity]:
    """Each weight's granularity: ``granularity`` where it can cut the weight, else ``fallback``.

    Raises the main granularity's `UsageError` (naming the layer) when there is no fallback or the
    fallback cannot cut the weight either.
    """
    assigned: dict[str, Granularity] = {}
    for name in names:
        shape = _weight_shape(model, name)
        try:
            granularity.check(name, shape)
            assigned[name] = granularity
        except UsageError:
            if fallback is None:
                raise
            fallback.check(name, shape)
            assigned[name] = fallback
    return assigned


def update_seed(seed: int, step: int) -> int:
    """The scorer's seed at mask update ``step`` of a run seeded ``seed`` (a random scorer draws anew at
    every update, differently for every run seed; seed 0 keeps the step itself)."""
    return seed * 1_000_003 + step


class GradualSparsifier:
    """Gradual magnitude pruning of ``names`` in ``model`` on ``schedule`` (see the module docstring).

    ``granularities`` maps every weight name to its granularity (`assign_granularities`). Construction
    mutates ``model`` (all-ones masks on every name not masked yet, through ``masks`` or a new
    `MaskStore`) and, when ``step`` is 0 and the schedule starts at 0, applies the initial target. It
    validates up front that the final target is reachable on every tensor (`UsageError` otherwise).
    Pass the ``optimizer`` (or call ``masks.bind_optimizer``) so momentum of removed weights is zeroed.
    """

    def __init__(
        self,
        model: nn.Module,
        granularities: Mapping[str, Granularity],
        schedule: CubicSchedule,
        *,
        scope: str = "layerwise",
        min_keep: int = 1,
        scorer: str = "magnitude",
        masks: MaskStore | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        step: int = 0,
        seed: int = 0,
    ) -> None:
        if not granularities:
            raise UsageError("a gradual sparsifier needs at least one weight to prune")
        self.model = model
        self.granularities = dict(granularities)
        self.schedule = schedule
        self.scope = scope
        self.min_keep = min_keep
        self.scorer = SCORERS.get(scorer)
        self.masks = masks if masks is not None else MaskStore.attached(model)
        self.expected = self.validate(model, granularities, schedule.final, scope=scope, min_keep=min_keep)
        for name in self.granularities:
            if name not in self.masks:
                self.masks.set_(name, torch.ones(_weight_shape(model, name), dtype=torch.bool))
        if optimizer is not None:
            self.masks.bind_optimizer(optimizer)
        self.step_count = step
        self.seed = seed
        self.history: list[dict[str, Any]] = []
        if step == 0 and schedule.is_update_step(0):
            self.update_(0)

    # -------------------------------------------------------------------------------- lifecycle
    def step(self) -> None:
        """Record one optimizer step; recompute the masks if it is an update step; freeze at ``end``."""
        self.step_count += 1
        if self.masks.frozen:
            return
        if self.schedule.is_update_step(self.step_count):
            self.update_(self.step_count)
        if self.step_count >= self.schedule.end:
            self.masks.freeze()
            log.info("masks frozen at step %d (sparsity %.4f)", self.step_count, self.sparsity())

    def squash_mask(self) -> nn.Module:
        """Bake the masks into plain weights (zeros stay) and drop the parametrizations; returns the model.

        The deployable form, as in ``torch.ao.pruning``; the sparsifier cannot step afterwards.
        """
        self.masks.remove()
        self.masks.frozen = True
        return self.model

    @torch.no_grad()
    def update_(self, step: int) -> None:
        """Recompute every mask for the schedule's target at ``step`` (removed entries stay removed)."""
        target = self.schedule.sparsity(step)
        names = list(self.granularities)
        generator = torch.Generator().manual_seed(update_seed(self.seed, step))  # host: same draws on every device
        scores = self.scorer.score(self.model, names, ScoreContext(generator=generator))
        alive = {name: self.masks.get(name) for name in names}
        chosen: dict[str, torch.Tensor] = {}
        for granularity, members in self._by_granularity().items():
            schedule_granularity = (
                granularity.schedule_granularity() if isinstance(granularity, Balanced) else granularity
            )
            chosen.update(
                select(
                    {name: scores[name] for name in members},
                    target,
                    schedule_granularity,
                    scope=self.scope,
                    alive={name: alive[name] for name in members},
                    min_keep=self.min_keep,
                )
            )
        self.masks.update_({name: mask & alive[name] for name, mask in chosen.items()})
        self.history.append({"step": step, "target": target, "sparsity": self.sparsity()})

    def _by_granularity(self) -> dict[Granularity, list[str]]:
        groups: dict[Granularity, list[str]] = {}
        for name, granularity in self.granularities.items():
            groups.setdefault(granularity, []).append(name)
        return groups

    @staticmethod
    def validate(
        model: nn.Module,
        granularities: Mapping[str, Granularity],
        final: float,
        *,
        scope: str = "layerwise",
        min_keep: int = 1,
    ) -> dict[str, float]:
        """Check that ``final`` is reachable on every tensor; return each one's realised sparsity.

        The realised figure is the granularity's documented rounding (layer-wise). Raises `UsageError`
        naming the layer and the accepted range otherwise. Touches nothing.
        """
        expected = {}
        for name, granularity in granularities.items():
            shape = _weight_shape(model, name)
            granularity.check(name, shape)
            try:
                if isinstance(granularity, Balanced):
                    granularity.check_target(final)
                expected[name] = realised_sparsity(granularity, shape, final, min_keep)
            except UsageError as error:
                raise UsageError(f"{name}: {error}") from None
        if scope == "global":
            kinds = sorted({g.name for g in granularities.values()})
            if len(kinds) > 1 or not next(iter(granularities.values())).supports_global:
                raise UsageError(
                    f"scope 'global' needs one granularity that supports it; here: {', '.join(kinds)} "
                    "(accepted: scope 'layerwise')"
                )
        return expected

    # ------------------------------------------------------------------------------- reporting
    def sparsity(self) -> float:
        """Realised fraction removed over the pruned tensors."""
        return self.masks.sparsity(list(self.granularities))

    def info(self) -> dict[str, Any]:
        """JSON-able summary: schedule (steps), per-layer realised sparsity and granularity, updates."""
        counts = self.masks.counts()
        return {
            "schedule": {
                "initial": self.schedule.initial,
                "final": self.schedule.final,
                "start_step": self.schedule.start,
                "end_step": self.schedule.end,
                "every": self.schedule.every,
            },
            "step": self.step_count,
            "frozen": self.masks.frozen,
            "sparsity_pruned_layers": self.sparsity(),
            "layers": {
                name: {
                    "granularity": granularity.name,
                    "kept": counts[name][0],
                    "total": counts[name][1],
                    "sparsity": 1.0 - counts[name][0] / counts[name][1],
                    "final_sparsity": self.expected[name] if self.scope == "layerwise" else None,
                }
                for name, granularity in self.granularities.items()
            },
            "updates": len(self.history),
        }

    # ------------------------------------------------------------------------------ persistence
    def state_dict(self, *, masks: bool = True) -> dict[str, Any]:
        """``step``, ``frozen``, ``history`` and (with ``masks``) the boolean masks by weight name."""
        state: dict[str, Any] = {
            "step": self.step_count,
            "frozen": self.masks.frozen,
            "history": [dict(entry) for entry in self.history],
        }
        if masks:
            state["masks"] = {name: self.masks.get(name).clone() for name in self.granularities}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned (masks too when present). Mutates the masks."""
        missing = [key for key in ("step", "frozen", "history") if key not in state]
        if missing:
            raise UsageError(f"sparsifier state lacks {', '.join(missing)}")
        if "masks" in state:
            unknown = sorted(set(state["masks"]) - set(self.granularities))
            if unknown:
                raise UsageError(f"sparsifier state has masks for {', '.join(unknown)}, not pruned here")
            self.masks.frozen = False
            self.masks.update_(state["masks"])
        self.step_count = int(state["step"])
        self.history = [dict(entry) for entry in state["history"]]
        self.masks.frozen = bool(state["frozen"])


class GradualCallback(Callback):
    """Runs a `GradualSparsifier` inside `Trainer.fit`; the schedule is resolved from the trainer.

    ``make_schedule(steps_per_epoch, total_steps)`` returns the `CubicSchedule` in optimizer steps
    (so options can be given in epochs or fractions of the budget). ``masks`` holds all-ones masks
    from construction on: pass it to the `Trainer` (``masks=callback.masks``) so the optimizer is
    bound and checkpoints carry the masks. Adds ``sparsity`` and ``masks_frozen`` to every epoch record.
    """

    def __init__(
        self,
        model: nn.Module,
        granularities: Mapping[str, Granularity],
        make_schedule: Callable[[int, int], CubicSchedule],
        *,
        scope: str = "layerwise",
        min_keep: int = 1,
        scorer: str = "magnitude",
    ) -> None:
        self.model = model
        self.granularities = dict(granularities)
        self.make_schedule = make_schedule
        self.scope = scope
        self.min_keep = min_keep
        self.scorer = scorer
        self.masks = MaskStore.attached(model)
        for name in self.granularities:
            if name not in self.masks:
                self.masks.set_(name, torch.ones(_weight_shape(model, name), dtype=torch.bool))
        self.sparsifier: GradualSparsifier | None = None
        self._pending: dict[str, Any] | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        schedule: CubicSchedule = self.make_schedule(trainer.steps_per_epoch, trainer.total_steps)
        self.sparsifier = GradualSparsifier(
            self.model,
            self.granularities,
            schedule,
            scope=self.scope,
            min_keep=self.min_keep,
            scorer=self.scorer,
            masks=self.masks,
            step=trainer.step,
            seed=trainer.seed,
        )
        if self._pending is not None:
            self.sparsifier.load_state_dict(self._pending)
            self._pending = None
        if self.sparsifier.step_count != trainer.step:
            raise UsageError(
                f"the sparsifier is at step {self.sparsifier.step_count} but the trainer at step {trainer.step}"
            )

    def on_step_end(self, trainer: Trainer) -> None:
        assert self.sparsifier is not None
        self.sparsifier.step()

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        assert self.sparsifier is not None
        record["sparsity"] = self.sparsifier.sparsity()
        record["masks_frozen"] = self.masks.frozen

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (the masks themselves travel in the trainer's checkpoint)."""
        return self.sparsifier.state_dict(masks=False) if self.sparsifier is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = dict(state) if state else None

    def info(self) -> dict[str, Any]:
        if self.sparsifier is None:
            raise UsageError("the gradual callback has not run yet")
        return self.sparsifier.info()

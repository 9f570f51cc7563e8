"""The shared machinery of gradual methods (``campfire``, ``gmp``): options, schedule, training.

A gradual method prunes *while* it trains. It provides a `GradualCallback` (whose `MaskStore` the
`Trainer` binds) through `GradualMethod.callback`; `apply` (the ``secateurs prune`` path) trains the
given model for the training budget with that callback, and `workflows.train_run` uses the same
callback to prune a model trained from scratch (``secateurs train --method campfire``).

The schedule is given as fractions of the training budget (``start``, ``end``) or in epochs
(``start_epoch``, ``end_epoch``, which take precedence), and resolved to optimizer steps once the
trainer knows its steps per epoch: ``round(epoch · steps_per_epoch)``. The learning-rate schedule is
the training config's and independent of it, so "pruning ends before / after the LR drop" is a
choice of ``end_epoch`` against ``milestones``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from secateurs.config import PruneConfig
from secateurs.deploy.export_packed import storage_report
from secateurs.errors import UsageError
from secateurs.methods.base import Method, PruneContext, PruneOutcome
from secateurs.methods.gradual_sparsifier import GradualCallback, GradualSparsifier, assign_granularities
from secateurs.runtime.distributed import trainer_options
from secateurs.sparsity.fractions import check_sparsity
from secateurs.sparsity.granularity import Granularity
from secateurs.sparsity.granularity import granularity as lookup_granularity
from secateurs.sparsity.masks import MaskStore, plain_state_dict
from secateurs.sparsity.schedules import CubicSchedule
from secateurs.sparsity.targets import prunable_names
from secateurs.training.loop import Trainer, epoch_steps


class GradualOptions(BaseModel):
    """Options of a gradual method (``--option key=value``, or ``options:`` in a recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: float = Field(0.0, ge=0.0, le=1.0)
    """Pruning starts after this fraction of the training budget."""
    end: float = Field(0.5, gt=0.0, le=1.0)
    """Masks are final and frozen after this fraction of the budget; training continues sparse."""
    start_epoch: float | None = Field(None, ge=0.0)
    """Start in epochs (overrides ``start``)."""
    end_epoch: float | None = Field(None, gt=0.0)
    """End in epochs (overrides ``end``)."""
    every: int = Field(50, ge=1)
    """Δt: optimizer steps between mask updates (and one more update at ``end``)."""
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    skip_first: bool = True
    """Leave the first conv/linear layer dense."""
    skip_last: bool = True
    """Leave the last conv/linear layer (the classifier) dense."""
    fallback: str | None = None
    """Granularity for layers the main one cannot cut (1×1 convs and linear layers under ``window``)."""
    scorer: str = "magnitude"
    """A data-free scorer (magnitude of the effective weights by default)."""

    @model_validator(mode="after")
    def _order(self) -> GradualOptions:
        if self.start_epoch is None and self.end_epoch is None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must come after start ({self.start}); accepted: 0 ≤ start < end ≤ 1")
        if self.start_epoch is not None and self.end_epoch is not None and self.end_epoch <= self.start_epoch:
            raise ValueError(
                f"end_epoch ({self.end_epoch}) must come after start_epoch ({self.start_epoch}); "
                "accepted: start_epoch < end_epoch"
            )
        return self


def resolve_schedule(final: float, options: GradualOptions, steps_per_epoch: int, total_steps: int) -> CubicSchedule:
    """The `CubicSchedule` in optimizer steps for a run of ``total_steps`` steps.

    Raises `UsageError` when the resolved end is not after the start or lies past the training budget.
    """
    epochs = total_steps / steps_per_epoch
    start = (
        round(options.start_epoch * steps_per_epoch)
        if options.start_epoch is not None
        else round(options.start * total_steps)
    )
    end = (
        round(options.end_epoch * steps_per_epoch)
        if options.end_epoch is not None
        else round(options.end * total_steps)
    )
    if end > total_steps:
        raise UsageError(
            f"pruning must end within training: end at step {end} (epoch {end / steps_per_epoch:g}) is past the "
            f"budget of {total_steps} steps ({epochs:g} epochs); accepted: end_epoch ≤ {epochs:g}"
        )
    if end <= start:
        raise UsageError(
            f"pruning end (step {end}) must come after its start (step {start}); "
            f"with {steps_per_epoch} steps per epoch, accepted: start < end ≤ {total_steps}"
        )
    return CubicSchedule(final=final, start=start, end=end, every=options.every, initial=options.initial_sparsity)


class GradualMethod(Method[GradualOptions]):
    """Base of the gradual methods: magnitude scores, cubic schedule, frozen masks after ``end``."""

    kind = "gradual"
    trains = True

    def granularity_for(self, config: PruneConfig) -> Granularity:
        """The main granularity of ``config`` (subclasses may restrict it)."""
        return lookup_granularity(config.granularity)

    def assignments(self, model: nn.Module, config: PruneConfig, options: GradualOptions) -> dict[str, Granularity]:
        """Every pruned weight name → its granularity; validates the final target on each."""
        check_sparsity(config.sparsity)
        if options.initial_sparsity > config.sparsity:
            raise UsageError(
                f"initial_sparsity ({options.initial_sparsity}) exceeds the target sparsity ({config.sparsity}); "
                f"accepted: 0 ≤ initial_sparsity ≤ {config.sparsity}"
            )
        names = prunable_names(
            model, exclude=config.exclude, skip_first=options.skip_first, skip_last=options.skip_last
        )
        fallback = lookup_granularity(options.fallback) if options.fallback is not None else None
        return assign_granularities(model, names, self.granularity_for(config), fallback)

    def callback(self, model: nn.Module, config: PruneConfig, options: GradualOptions) -> GradualCallback:
        """A `GradualCallback` for ``model`` (installs all-ones masks); validates everything first."""
        assigned = self.assignments(model, config, options)
        scope = self.scope(config)
        final = config.sparsity

        def make_schedule(steps_per_epoch: int, total_steps: int) -> CubicSchedule:
            return resolve_schedule(final, options, steps_per_epoch, total_steps)

        # Fail on an unreachable target before any training: a dry validation on the final target.
        GradualSparsifier.validate(model, assigned, final, scope=scope, min_keep=config.min_keep)
        return GradualCallback(
            model, assigned, make_schedule, scope=scope, min_keep=config.min_keep, scorer=options.scorer
        )

    def sparsifier(
        self,
        model: nn.Module,
        config: PruneConfig,
        options: GradualOptions,
        *,
        start_step: int,
        end_step: int,
        every: int,
        masks: MaskStore | None = None,
        optimizer: Any = None,
        seed: int = 0,
    ) -> GradualSparsifier:
        """A `GradualSparsifier` over explicit steps (the Python API's `secateurs.gradual`)."""
        schedule = CubicSchedule(
            final=config.sparsity, start=start_step, end=end_step, every=every, initial=options.initial_sparsity
        )
        return GradualSparsifier(
            model,
            self.assignments(model, config, options),
            schedule,
            scope=self.scope(config),
            min_keep=config.min_keep,
            scorer=options.scorer,
            masks=masks,
            optimizer=optimizer,
            seed=seed,
        )

    def check(self, model: nn.Module, config: PruneConfig, options: GradualOptions, context: PruneContext) -> None:
        """The budget, the final target on every layer, and (with data) the schedule in steps, untouched."""
        super().check(model, config, options, context)
        assigned = self.assignments(model, config, options)
        GradualSparsifier.validate(model, assigned, config.sparsity, scope=self.scope(config), min_keep=config.min_keep)
        if context.splits is not None and context.train_config is not None:
            resolve_schedule(config.sparsity, options, *epoch_steps(context.splits, context.train_config))

    def apply(
        self, model: nn.Module, config: PruneConfig, options: GradualOptions, context: PruneContext
    ) -> PruneOutcome:
        if context.splits is None or context.train_config is None:
            raise UsageError(
                f"method {self.name!r} prunes while it trains: give it a training budget "
                "(--finetune-epochs E on the command line; splits= and train_config= from Python)"
            )
        callback = self.callback(model, config, options)
        trainer = Trainer(
            model,
            context.splits,
            context.train_config,
            seed=context.seed,
            masks=callback.masks,
            callbacks=[callback],
            checkpoint_dir=context.checkpoint_dir,
            progress=context.progress,
            **trainer_options(),
        )
        summary = trainer.fit(resume=context.checkpoint_dir is not None)
        return PruneOutcome(
            model=model,
            masks=callback.masks,
            info=gradual_info(model, callback),
            history=summary.history,
            train_epochs=summary.epochs,
        )


def gradual_info(model: nn.Module, callback: GradualCallback) -> dict[str, Any]:
    """The callback's summary plus the packed storage report of the final model (for run.json)."""
    info = callback.info()
    info["storage"] = storage_report(plain_state_dict(model), dict(callback.masks.items()))["total"]
    return info

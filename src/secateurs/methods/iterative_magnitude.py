"""Iterative magnitude pruning with rewinding (``imp``), the engine InfCoP builds on.

Papers: Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (arXiv 1803.03635); with rewinding
to trained weights as in Frankle et al., "Linear mode connectivity and the lottery ticket hypothesis"
(arXiv 1912.05671) and in InfCoP (Gharatappeh & Yasaei Sekeh, arXiv 2501.15592; METHODS.md §3).

Summary. The given model is the dense warm-up (optionally trained further for ``warmup_epochs``). Each
of R rounds prunes by magnitude, rewinds the surviving weights and every bias to the rewind point,
and retrains with hard masks for the per-round budget (the fine-tuning config; fractional epochs
allowed). Rules: ``lth`` removes a fixed fraction of the survivors per round, layer-wise by default
(1 − (1 − S)^(1/R) so that R rounds reach S exactly, or ``rate``, or 20 %); ``sap`` removes SAP's
PQ-index fraction of all survivors globally (p, q = 1, 2 by default; η = 0, γ = 1, β = 0.9), with S > 0
acting as a cap on the final sparsity (the rounds end once it is reached). The ``infcop-*`` methods
(methods/infcop.py) add a flow check that ends a round's retraining early.

Deliberate choices and deviations:
- The rewind point defaults to the given (warmed-up) weights, as InfCoP's code does; ``rewind=initial``
  with ``warmup_epochs`` > 0 gives the classic θ₀ rewind. BN γ and running statistics are not rewound
  unless ``rewind_batchnorm`` (sparsity/rewind.py).
- Every round gets a fresh optimizer; baseline and InfCoP share optimizer, weight decay, LR schedule
  and pruning rule (the released code used weight decay 5e-4 for InfCoP and 0 for its baselines).
- ``sparsity`` with ``lth`` is the fraction removed of the weights alive when the method starts; with
  ``sap`` it is a cap (0: none), since SAP's fractions are adaptive.
- Validation and test accuracy are recorded after every round; the test set is read for the report
  only, never for a decision.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

from secateurs.config import PruneConfig, TrainConfig
from secateurs.errors import ConfigError, UsageError
from secateurs.methods.base import Method, PruneContext, PruneOutcome, register_method
from secateurs.methods.iterative_options import ImpOptions, IterativeOptions, resolve_rate
from secateurs.methods.iterative_run import IterativeRun, RoundPlan
from secateurs.scoring.flow import flow_layers, validation_probe
from secateurs.sparsity.granularity import granularity as lookup_granularity
from secateurs.sparsity.targets import prunable_names
from secateurs.training.flow_check import StoppingRule
from secateurs.training.loop import has_conv

IterativeOptionsT = TypeVar("IterativeOptionsT", bound=IterativeOptions)


class IterativeMagnitudeBase(Method[IterativeOptionsT]):
    """The engine of ``imp`` and ``infcop-*``: rounds of prune → rewind → retrain, with hooks for the flows."""

    kind = "iterative"
    trains = True
    needs_data = True

    # ------------------------------------------------------------------------ hooks for InfCoP
    def stopping_flow(self, options: IterativeOptionsT) -> str | None:
        """The flow whose checks may stop a round (None: IMP never stops early)."""
        return None

    def monitored_flows(self, options: IterativeOptionsT) -> list[str]:
        """Flows logged every check without stopping (IMP's E-INF-2 monitor; none by default)."""
        return []

    def stopping_rule(self, options: IterativeOptionsT, reference_accuracy: float) -> StoppingRule | None:
        return None

    def early_round_epochs(self, options: IterativeOptionsT) -> float | None:
        """Retraining epochs of every round but the last (None: the whole budget every round)."""
        return None

    def round_epochs(self, options: IterativeOptionsT, round_index: int, budget: float) -> float:
        """Round ``round_index``'s retraining epochs: the budget, or `early_round_epochs` before the last."""
        early = self.early_round_epochs(options)
        return early if early is not None and round_index < options.rounds else budget

    # ------------------------------------------------------------------------------ validation
    def uses_flows(self, options: IterativeOptionsT) -> bool:
        return self.stopping_flow(options) is not None or bool(self.monitored_flows(options))

    def check_budget(self, options: IterativeOptionsT, budget: TrainConfig | None) -> None:
        """The per-round budget: > 0 epochs, and no shorter than ``early_round_epochs`` or ``check_every``."""
        super().check_budget(options, budget)
        if budget is None:  # refused by the base check (the method trains)
            return
        if not budget.has_budget:
            amount = budget.steps if budget.steps is not None else budget.epochs
            unit = budget.budget_unit
            raise UsageError(f"method {self.name!r}: the per-round budget must be > 0 {unit}, got {amount}")
        if budget.epochs is None:  # a budget in steps: its length in epochs depends on the data
            return
        early = self.early_round_epochs(options)
        if early is not None and early > budget.epochs:
            raise UsageError(
                f"method {self.name!r}: early_round_epochs ({early}) exceeds the per-round budget ({budget.epochs})"
            )
        if self.uses_flows(options) and options.check_every > budget.epochs:
            raise UsageError(
                f"method {self.name!r}: check_every ({options.check_every} epochs) exceeds the per-round "
                f"budget ({budget.epochs} epochs)"
            )

    def plan(
        self, model: nn.Module, config: PruneConfig, options: IterativeOptionsT, context: PruneContext
    ) -> RoundPlan:
        """Check everything that can be wrong before any training; `UsageError` naming it otherwise."""
        if context.splits is None or context.train_config is None:
            raise UsageError(
                f"method {self.name!r} retrains every round: give a per-round budget (--finetune-epochs on the "
                "command line; splits= and train_config= in Python)"
            )
        budget = context.train_config
        self.check_budget(options, budget)
        names = prunable_names(model, exclude=config.exclude)
        scope = self.scope(config)
        rate = None
        if options.rule == "sap":
            if config.scope == "layerwise":
                raise ConfigError(f"method {self.name!r}: rule 'sap' is global; scope 'layerwise' is not accepted")
            if config.granularity != "element":
                raise ConfigError(f"method {self.name!r}: rule 'sap' prunes single weights (granularity 'element')")
            scope = "global"
        else:
            rate = resolve_rate(options, config.sparsity)
            lookup_granularity(config.granularity)
        plan = RoundPlan(names=names, budget=budget, rate=rate, scope=scope)
        if self.uses_flows(options):
            plan.flow_layers = flow_layers(model, prunable_names(model))
            plan.probe = validation_probe(
                context.splits, options.flow_subset, options.flow_batch_size, channels_last=has_conv(model)
            )
        return plan

    def check(self, model: nn.Module, config: PruneConfig, options: IterativeOptionsT, context: PruneContext) -> None:
        """A dry `plan`: budget, rule and scope, flow layers and the validation probe, before any training."""
        self.plan(model, config, options, context)

    # ---------------------------------------------------------------------------------- apply
    def apply(
        self, model: nn.Module, config: PruneConfig, options: IterativeOptionsT, context: PruneContext
    ) -> PruneOutcome:
        plan = self.plan(model, config, options, context)
        return IterativeRun(self, model, config, options, context, plan).run()


class IterativeMagnitudePruning(IterativeMagnitudeBase[ImpOptions]):
    name = "imp"
    description = "iterative magnitude pruning: R rounds of prune → rewind → retrain (lth 20 % or sap)"
    paper = "arXiv 1803.03635; arXiv 2501.15592"

    def monitored_flows(self, options: ImpOptions) -> list[str]:
        """Flows logged every check without stopping (option ``monitor``, E-INF-2)."""
        return {"none": [], "both": ["information", "gradient"]}.get(options.monitor, [options.monitor])

    def early_round_epochs(self, options: ImpOptions) -> float | None:
        return options.early_round_epochs


register_method(IterativeMagnitudePruning())

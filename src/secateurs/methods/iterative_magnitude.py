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

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from secateurs.data.loader import BatchLoader, Normalization
from secateurs.errors import ConfigError, UsageError
from secateurs.methods.base import Method, PruneConfig, PruneContext, PruneOutcome, register_method
from secateurs.methods.iterative_options import ImpOptions, IterativeOptions, cumulative_keep, resolve_rate
from secateurs.methods.iterative_state import load_round_state, save_round_state
from secateurs.metrics.accuracy import evaluate
from secateurs.scoring.base import weight
from secateurs.scoring.flow import FlowMeasurement, FlowProbe, flow_layers, measure_flow, validation_probe
from secateurs.sparsity.granularity import granularity as lookup_granularity
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.pq_index import sap_masks
from secateurs.sparsity.rewind import capture_rewind_point, rewind_
from secateurs.sparsity.rounds import fixed_fraction_masks
from secateurs.sparsity.targets import prunable_names
from secateurs.train.config import TrainConfig
from secateurs.train.flow_check import FlowCheck, StoppingRule
from secateurs.train.loop import Callback, Trainer, has_conv

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """Everything `apply` validated before any training: the model's targets, budget and probe."""

    names: list[str]
    budget: TrainConfig
    rate: float | None
    scope: str
    flow_layers: list[str] = field(default_factory=list)
    probe: FlowProbe | None = None


def round_seed(seed: int, round_index: int) -> int:
    """The Trainer seed of round t (round 0 is the warm-up): distinct shuffles per round."""
    return seed * 1_009 + round_index


class IterativeMagnitudePruning(Method):
    name = "imp"
    kind = "iterative"
    description = "iterative magnitude pruning: R rounds of prune → rewind → retrain (lth 20 % or sap)"
    paper = "arXiv 1803.03635; arXiv 2501.15592"
    trains = True
    needs_data = True
    Options: ClassVar[type[BaseModel]] = ImpOptions

    # ------------------------------------------------------------------------ hooks for InfCoP
    def stopping_flow(self, options: IterativeOptions) -> str | None:
        """The flow whose checks may stop a round (None: IMP never stops early)."""
        return None

    def monitored_flows(self, options: IterativeOptions) -> list[str]:
        """Flows logged every check without stopping (IMP's E-INF-2 monitor)."""
        monitor = getattr(options, "monitor", "none")
        return {"none": [], "both": ["information", "gradient"]}.get(monitor, [monitor])

    def stopping_rule(self, options: IterativeOptions, reference_accuracy: float) -> StoppingRule | None:
        return None

    # ------------------------------------------------------------------------------ validation
    def plan(self, model: nn.Module, config: PruneConfig, options: IterativeOptions, context: PruneContext) -> Plan:
        """Check everything that can be wrong before any training; `UsageError` naming it otherwise."""
        if context.splits is None or context.train_config is None:
            raise UsageError(
                f"method {self.name!r} retrains every round: give a per-round budget (--finetune-epochs on the "
                "command line; splits= and train_config= in Python)"
            )
        budget = context.train_config
        if not budget.epochs > 0:
            raise UsageError(f"method {self.name!r}: the per-round budget must be > 0 epochs, got {budget.epochs}")
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
        plan = Plan(names=names, budget=budget, rate=rate, scope=scope)
        if self.stopping_flow(options) is not None or self.monitored_flows(options):
            if options.check_every > budget.epochs:
                raise UsageError(
                    f"method {self.name!r}: check_every ({options.check_every} epochs) exceeds the per-round "
                    f"budget ({budget.epochs} epochs)"
                )
            plan.flow_layers = flow_layers(model, prunable_names(model))
            plan.probe = validation_probe(
                context.splits, options.flow_subset, options.flow_batch_size, channels_last=has_conv(model)
            )
        return plan

    # ---------------------------------------------------------------------------------- apply
    def apply(self, model: nn.Module, config: PruneConfig, options: BaseModel, context: PruneContext) -> PruneOutcome:
        if not isinstance(options, IterativeOptions):
            raise UsageError(f"method {self.name!r} got options of type {type(options).__name__}")
        plan = self.plan(model, config, options, context)
        return IterativeRun(self, model, config, options, context, plan).run()


class IterativeRun:
    """One execution of an iterative method: the round loop and its bookkeeping."""

    def __init__(
        self,
        method: IterativeMagnitudePruning,
        model: nn.Module,
        config: PruneConfig,
        options: IterativeOptions,
        context: PruneContext,
        plan: Plan,
    ) -> None:
        self.method, self.model, self.config = method, model, config
        self.options, self.context, self.plan = options, context, plan
        assert context.splits is not None
        self.splits = context.splits
        self.masks = MaskStore.attached(model)
        for name in plan.names:
            if name not in self.masks:
                self.masks.set_(name, torch.ones_like(weight(model, name), dtype=torch.bool))
        self.start_alive = {name: int(self.masks.get(name).sum()) for name in plan.names}
        self.history: list[dict[str, Any]] = []
        self.state: dict[str, Any] = dict(round=0, epochs=0.0, flow_seconds=0.0, monitor_seconds=0.0, train_seconds=0.0)
        self.rewind_point: dict[str, torch.Tensor] = {}
        self.reference: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- helpers
    def _trainer(self, config: TrainConfig, round_index: int, callbacks: list[Callback]) -> Trainer:
        return Trainer(
            self.model,
            self.splits,
            config,
            seed=round_seed(self.context.seed, round_index),
            masks=self.masks,
            callbacks=callbacks,
            progress=self.context.progress,
        )

    def _evaluate(self, split: str) -> float:
        """Accuracy on ``val`` or ``test`` (the first ``eval_subset`` examples when the budget sets one)."""
        data = self.splits.val if split == "val" else self.splits.test
        subset = self.plan.budget.eval_subset
        if subset is not None and subset < len(data):
            data = data.subset(slice(0, subset))
        normalization = Normalization(self.splits.dataset.mean, self.splits.dataset.std)
        loader = BatchLoader(data, self.plan.budget.eval_batch_size, normalization, channels_last=has_conv(self.model))
        return evaluate(self.model, loader).accuracy

    def _flow(self, kind: str) -> FlowMeasurement:
        assert self.plan.probe is not None
        probe, layers, options = self.plan.probe, self.plan.flow_layers, self.options
        return measure_flow(
            kind,
            self.model,
            layers,
            probe,
            absolute=options.flow_absolute,
            per_class=options.flow_per_class,
            loss_fn=self.context.loss_fn,
        )

    def _measure(self, kind: str) -> Callable[[nn.Module], FlowMeasurement]:
        def measure(_model: nn.Module) -> FlowMeasurement:
            return self._flow(kind)

        return measure

    def _warm_up_and_reference(self) -> None:
        """Optional dense warm-up, the rewind point, and the dense reference (accuracy and flows)."""
        options = self.options
        if options.rewind == "initial":
            self.rewind_point = capture_rewind_point(self.model)
        if options.warmup_epochs > 0:
            trainer = self._trainer(self.plan.budget.with_(epochs=options.warmup_epochs), 0, [])
            summary = trainer.fit()
            self.masks.unbind_optimizers()
            self.state["epochs"] += summary.epochs
            self.state["train_seconds"] += summary.train_seconds
        if options.rewind == "warmup":
            self.rewind_point = capture_rewind_point(self.model)
        self.reference = {"val_accuracy": self._evaluate("val"), "flows": {}}
        kinds = [k for k in [self.method.stopping_flow(options), *self.method.monitored_flows(options)] if k]
        for kind in dict.fromkeys(kinds):
            measurement = self._flow(kind)
            self.reference["probe_accuracy"] = measurement.accuracy
            self.reference["flows"][kind] = measurement.values.tolist()
            if kind == self.method.stopping_flow(options):
                self.state["flow_seconds"] += measurement.seconds
                self.reference["flow_seconds"] = measurement.seconds
            else:
                self.state["monitor_seconds"] += measurement.seconds

    def _prune(self, round_index: int) -> float:
        """Install round ``round_index``'s masks; returns the fraction of survivors it removed."""
        names = self.plan.names
        alive = {name: self.masks.get(name) for name in names}
        before = sum(int(mask.sum()) for mask in alive.values())
        if self.options.rule == "sap":
            weights = {name: weight(self.model, name).detach() for name in names}
            chosen, fraction = sap_masks(
                weights,
                alive,
                self.options.sap_p,
                self.options.sap_q,
                cap=self.config.sparsity,
                min_keep=self.config.min_keep,
            )
        else:
            assert self.plan.rate is not None
            chosen = fixed_fraction_masks(
                {name: weight(self.model, name).detach().abs() for name in names},
                alive,
                self.start_alive,
                cumulative_keep(self.plan.rate, round_index, self.options.rounds, self.config.sparsity or None),
                lookup_granularity(self.config.granularity),
                scope=self.plan.scope,
                min_keep=self.config.min_keep,
            )
            fraction = 1.0 - sum(int(mask.sum()) for mask in chosen.values()) / before
        self.masks.update_(chosen)
        return fraction

    def _callbacks(self) -> tuple[FlowCheck | None, list[FlowCheck]]:
        options, method = self.options, self.method
        reference_accuracy = self.reference.get("probe_accuracy")
        stopping = None
        kind = method.stopping_flow(options)
        if kind is not None:
            assert reference_accuracy is not None
            stopping = FlowCheck(
                self._measure(kind),
                torch.tensor(self.reference["flows"][kind], dtype=torch.float64),
                check_every=options.check_every,
                rule=method.stopping_rule(options, reference_accuracy),
                reference_accuracy=reference_accuracy,
                name=kind,
            )
        monitors = [
            FlowCheck(
                self._measure(kind),
                torch.tensor(self.reference["flows"][kind], dtype=torch.float64),
                check_every=options.check_every,
                reference_accuracy=reference_accuracy,
                check_at_end=True,
                name=kind,
            )
            for kind in method.monitored_flows(options)
        ]
        return stopping, monitors

    def _round(self, round_index: int) -> bool:
        """Run one round; False when SAP has nothing left to remove (the sparsity cap is reached)."""
        fraction = self._prune(round_index)
        if self.options.rule == "sap" and fraction == 0.0:
            log.info("round %d: SAP removes nothing more (cap %g reached); stopping", round_index, self.config.sparsity)
            return False
        rewind_(self.model, self.rewind_point, self.masks, everything=self.options.rewind_batchnorm)
        stopping, monitors = self._callbacks()
        trainer = self._trainer(self.plan.budget, round_index, [c for c in [stopping, *monitors] if c is not None])
        summary = trainer.fit()
        self.masks.unbind_optimizers()
        check_seconds = stopping.seconds if stopping is not None else 0.0
        monitor_seconds = sum(m.seconds for m in monitors)
        state = self.state
        state["round"] = round_index
        state["epochs"] += summary.epochs
        state["flow_seconds"] += check_seconds
        state["monitor_seconds"] += monitor_seconds
        state["train_seconds"] += summary.train_seconds - check_seconds - monitor_seconds
        record: dict[str, Any] = {
            "round": round_index,
            "prune_fraction": fraction,
            "sparsity": self.masks.sparsity(self.plan.names),
            "epochs": summary.epochs,
            "stop_reason": summary.stop_reason,
            "flow_seconds": check_seconds,
            "monitor_seconds": monitor_seconds,
            "train_seconds": summary.train_seconds - check_seconds - monitor_seconds,
            "val_accuracy": self._evaluate("val"),
            "test_accuracy": self._evaluate("test"),
            "cumulative_epochs": state["epochs"],
            "cumulative_flow_seconds": state["flow_seconds"],
        }
        if stopping is not None:
            record["checks"] = stopping.records
        if monitors:
            record["monitor"] = {monitor.name: monitor.records for monitor in monitors}
        self.history.append(record)
        log.info(
            "round %d: sparsity %.4f, %.2f epochs (%s), flow checks %.2f s, val %.4f",
            round_index,
            record["sparsity"],
            summary.epochs,
            summary.stop_reason,
            check_seconds,
            record["val_accuracy"],
        )
        return True

    # ---------------------------------------------------------------------------------- run
    def _save(self) -> None:
        if self.context.checkpoint_dir is not None:
            payload = {"state": self.state, "history": self.history, "reference": self.reference}
            save_round_state(self.context.checkpoint_dir, self.model, self.masks, self.rewind_point, payload)

    def _restore(self) -> bool:
        if self.context.checkpoint_dir is None:
            return False
        restored = load_round_state(self.context.checkpoint_dir, self.model, self.masks)
        if restored is None:
            return False
        self.rewind_point, payload = restored
        self.state, self.history, self.reference = payload["state"], payload["history"], payload["reference"]
        log.info("resumed after round %d", self.state["round"])
        return True

    def run(self) -> PruneOutcome:
        started = time.perf_counter()
        if not self._restore():
            self._warm_up_and_reference()
            self._save()
        for round_index in range(int(self.state["round"]) + 1, self.options.rounds + 1):
            if not self._round(round_index):
                break
            self._save()
        return PruneOutcome(
            model=self.model,
            masks=self.masks,
            info=self.info(time.perf_counter() - started),
            history=self.history,
            score_seconds=0.0,
            train_epochs=self.state["epochs"],
        )

    def info(self, seconds: float) -> dict[str, Any]:
        """Totals for run.json: epochs and flow-check seconds, and their sum in epoch-equivalents."""
        state = self.state
        per_epoch = state["train_seconds"] / state["epochs"] if state["epochs"] > 0 else float("nan")
        flow_epochs = state["flow_seconds"] / per_epoch if per_epoch > 0 else float("nan")
        return {
            "rule": self.options.rule,
            "rounds": self.options.rounds,
            "rounds_done": len(self.history),
            "rate": self.plan.rate,
            "scope": self.plan.scope,
            "final_sparsity": self.masks.sparsity(self.plan.names),
            "reference": self.reference,
            "flow_layers": self.plan.flow_layers,
            "flow_subset": self.plan.probe.size if self.plan.probe is not None else 0,
            "train_epochs": state["epochs"],
            "flow_check_seconds": state["flow_seconds"],
            "reference_flow_seconds": self.reference.get("flow_seconds", 0.0),
            "monitor_seconds": state["monitor_seconds"],
            "train_seconds": state["train_seconds"],
            "seconds_per_epoch": per_epoch,
            "flow_check_epoch_equivalents": flow_epochs,
            "cost_epoch_equivalents": state["epochs"] + (flow_epochs if flow_epochs == flow_epochs else 0.0),
            "stop_reasons": [record["stop_reason"] for record in self.history],
            "wall_seconds": seconds,
        }


register_method(IterativeMagnitudePruning())

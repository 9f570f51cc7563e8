"""The round loop of the iterative methods: prune → rewind → retrain, with flow checks and bookkeeping.

`IterativeRun` executes one `RoundPlan` (the rounds' inputs, not a plan.json) that
`IterativeMagnitudeBase.plan` validated (methods/iterative_magnitude.py, which documents the
method); it records per round the epochs trained, why training stopped, the flow-check seconds,
validation and test accuracy and the sparsity, and it saves its state after every round so an
interrupted run resumes (methods/iterative_state.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from secateurs.allocation.rounds import fixed_fraction_masks
from secateurs.config import PruneConfig, TrainConfig
from secateurs.data.loader import BatchLoader, Normalization
from secateurs.methods.base import PruneContext, PruneOutcome
from secateurs.methods.iterative_options import IterativeOptions, cumulative_keep
from secateurs.methods.iterative_state import load_round_state, save_round_state
from secateurs.metrics.accuracy import evaluate
from secateurs.runtime.distributed import trainer_options
from secateurs.scoring.base import weight
from secateurs.scoring.flow import FlowMeasurement, FlowProbe, measure_flow
from secateurs.sparsity.granularity import granularity as lookup_granularity
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.pq_index import sap_masks
from secateurs.sparsity.rewind import capture_rewind_point, rewind_
from secateurs.training.flow_check import FlowCheck
from secateurs.training.loop import Callback, Trainer, budget_epochs, has_conv

if TYPE_CHECKING:
    from secateurs.methods.iterative_magnitude import IterativeMagnitudeBase

log = logging.getLogger(__name__)


@dataclass
class RoundPlan:
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


class IterativeRun:
    """One execution of an iterative method: the round loop and its bookkeeping."""

    def __init__(
        self,
        method: IterativeMagnitudeBase[Any],
        model: nn.Module,
        config: PruneConfig,
        options: IterativeOptions,
        context: PruneContext,
        plan: RoundPlan,
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
            **trainer_options(),
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
        """Run one round; False when SAP has nothing left to remove (the sparsity cap is reached).

        Round 0 is the dense cycle (``dense_cycle``): no pruning and no rewind, only the retraining.
        """
        fraction = self._prune(round_index) if round_index > 0 else 0.0
        if round_index > 0 and self.options.rule == "sap" and fraction == 0.0:
            log.info("round %d: SAP removes nothing more (cap %g reached); stopping", round_index, self.config.sparsity)
            return False
        if round_index > 0:
            rewind_(self.model, self.rewind_point, self.masks, everything=self.options.rewind_batchnorm)
        stopping, monitors = self._callbacks()
        budget = budget_epochs(self.splits, self.plan.budget)
        epochs = self.method.round_epochs(self.options, round_index, budget)
        config = self.plan.budget if epochs == budget else self.plan.budget.with_(epochs=epochs)
        seed_index = round_index if round_index > 0 else self.options.rounds + 1  # round 0's seed is the warm-up's
        trainer = self._trainer(config, seed_index, [c for c in [stopping, *monitors] if c is not None])
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
        if self.options.dense_cycle and not self.state.get("dense_cycle_done", False):
            self._round(0)
            self.state["dense_cycle_done"] = True
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

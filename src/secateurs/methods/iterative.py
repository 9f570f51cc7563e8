"""Iterative pruning without rewinding: prune a share of the survivors, retrain, repeat (the
"iterative" protocol of Park et al. 2020, arXiv 2002.04809, §1.4 of METHODS.md; Han et al. 2015,
arXiv 1506.02626, for magnitude).

``iterative`` wraps any one-shot score-and-select method (``prune: lap`` by default; ``magnitude``,
``random``, ``lap-forward``, ``lamp``, … work the same). Round r = 1 … R prunes the wrapped method to
the cumulative target of round r and then retrains the pruned network for the fine-tuning budget
(``train_config``, a fresh optimizer each round; masked weights stay exactly zero). Targets:

* with ``rates`` (one per prunable layer) and ``rounds`` R: layer i reaches 1 − (1 − p_i)^r after
  round r, i.e. each round removes p_i of its survivors (up to rounding of the kept counts);
* with ``sparsity`` S and the option ``rounds`` R: every round removes the same share
  1 − (1 − S)^(1/R) of the survivors, reaching S after round R.

The network is not rewound (lottery-ticket ``imp`` rewinds; this does not). The last round's
retraining is the method's fine-tuning, so a workflow does not fine-tune again. Each round's
validation accuracy before and after retraining is in the history.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from secateurs.errors import ConfigError
from secateurs.methods.base import (
    METHODS,
    Method,
    PruneConfig,
    PruneContext,
    PruneOutcome,
    ScoreAndSelect,
    register_method,
)
from secateurs.runtime.distributed import trainer_options
from secateurs.sparsity.schedules import geometric_sparsity, per_round_rate
from secateurs.training.loop import Trainer, budget_epochs

log = logging.getLogger(__name__)


class IterativeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prune: str = "lap"
    """The one-shot method applied each round (any score-and-select method)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Options of the wrapped method."""
    rounds: int = Field(5, ge=1)
    """Rounds to reach ``sparsity`` (ignored with per-layer ``rates``, where ``rounds`` is a config field)."""


class Iterative(Method[IterativeOptions]):
    name = "iterative"
    kind = "iterative"
    description = "prune a share of the survivors with a one-shot method, retrain, repeat (no rewinding)"
    paper = "arXiv 2002.04809 (iterative protocol)"
    trains = True
    supports_rates = True
    scopes = ("layerwise", "global", "normalized")
    """Passed to the wrapped method, which accepts all three."""

    def inner(self, options: IterativeOptions) -> tuple[ScoreAndSelect[Any], Any]:
        method = METHODS.get(options.prune)
        if not isinstance(method, ScoreAndSelect):
            accepted = ", ".join(name for name, m in METHODS.items() if isinstance(m, ScoreAndSelect))
            raise ConfigError(f"iterative: 'prune' must be a one-shot score-and-select method ({accepted})")
        return method, method.parse_options(options.options)

    def round_config(self, config: PruneConfig, options: IterativeOptions, round_index: int) -> PruneConfig:
        fields = config.model_dump(exclude={"method", "options", "sparsity", "rates", "rounds"})
        if config.rates is not None:
            return PruneConfig(**fields, method=options.prune, rates=config.rates, rounds=round_index)
        rate = per_round_rate(config.sparsity, options.rounds)
        return PruneConfig(**fields, method=options.prune, sparsity=geometric_sparsity(rate, round_index))

    def apply(
        self, model: nn.Module, config: PruneConfig, options: IterativeOptions, context: PruneContext
    ) -> PruneOutcome:
        splits, train_config = context.require_training(self.name)
        method, inner_options = self.inner(options)
        rounds = config.rounds if config.rates is not None else options.rounds
        history: list[dict[str, Any]] = []
        outcome = PruneOutcome(model=model)
        score_seconds = 0.0
        for round_index in range(1, rounds + 1):
            round_config = self.round_config(config, options, round_index)
            outcome = method.apply(model, round_config, inner_options, context)
            score_seconds += outcome.score_seconds
            trainer = Trainer(
                model, splits, train_config, seed=context.seed + round_index, masks=outcome.masks, **trainer_options()
            )
            record: dict[str, Any] = {
                "round": round_index,
                "sparsity_prunable": outcome.masks.sparsity() if outcome.masks is not None else 0.0,
                "val_accuracy_before_retraining": trainer.evaluate("val").accuracy,
            }
            if train_config.has_budget:
                summary = trainer.fit()
                record["val_accuracy_after_retraining"] = summary.final.get("val_accuracy")
            log.info("iterative round %d/%d: %s", round_index, rounds, record)
            history.append(record)
        return PruneOutcome(
            model=model,
            masks=outcome.masks,
            info={**outcome.info, "prune": options.prune, "rounds": rounds},
            history=history,
            score_seconds=score_seconds,
            train_epochs=rounds * budget_epochs(splits, train_config),
        )


register_method(Iterative())

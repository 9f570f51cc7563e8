"""Benchmark suites: a validated grid of models × methods × sparsities × seeds.

Example (``suites/smoke.yaml``)::

    name: smoke
    data: {name: fashion-mnist}
    seeds: [0]
    models:
      - {name: lenet300, train: {epochs: 1, lr: 0.05}}
    methods:
      - {name: magnitude}
      - {name: random}
    sparsities: [0.5, 0.9]
    finetune: {epochs: 0.5, lr: 0.01}

A model entry names a zoo model or an external reference (``timm:NAME``, ``python:module:factory``,
``path/to/file.py:factory``) with ``args`` for its factory, and an optional ``label``: the name its
rows, cell keys and dense run directories use (default: the name, with every character other than
letters, digits, ``.``, ``_`` and ``-`` turned into ``-``: ``timm:resnet18`` → ``timm-resnet18``).

A method entry is a `PruneConfig` without ``sparsity`` plus an optional ``label`` (the row name; the
method name by default) — the same method can appear twice with different options. A method entry may
also carry its own ``sparsities`` (e.g. structured methods at parameter targets), replacing the
suite's list for that method, its own ``train`` budget, a subset of the suite's ``seeds``, and
``start: init`` to start from the seed's initialisation instead of the trained dense model (gradual
methods that train from scratch).

Instead of sparsities, the axis can be *rounds of per-layer rates* (the lookahead-pruning protocol,
`sparsity.rates`): ``rates: [0.5, 0.5, 0.5, 0.5, 0.25]`` (one per prunable layer) and
``rounds: [4, 5, 6]`` give one cell per round, pruning layer i to 1 − (1 − p_i)^round (global
methods: to the size-weighted mean). Both may be set on the suite or on a method entry (the entry
wins); a method entry with its own ``sparsities`` uses those instead. A round cell's key reads
``model|label|r4|seed``; its row records ``round``, ``rates`` and, as ``sparsity``, the nominal
target (the realised one is in ``metrics.sparsity_prunable``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from secateurs.config import (
    CalibrationConfig,
    DataConfig,
    MeasureConfig,
    PruneConfig,
    Seed,
    TrainConfig,
    load_yaml,
    parse_overrides,
    set_path,
    validate,
)
from secateurs.errors import ConfigError, UsageError
from secateurs.io.paths import check_name
from secateurs.methods import METHODS
from secateurs.models import ModelReference, check_model

UNSAFE_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """A zoo model or an external reference (timm:NAME, python:package.module:factory, FILE.py:factory)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keywords for an external model's factory."""
    label: str | None = None
    """The name of this model's rows, cell keys and dense runs (default: derived from ``name``)."""
    train: TrainConfig = TrainConfig()
    finetune: TrainConfig | None = None
    """Overrides the suite's ``finetune`` for this model."""

    @property
    def row_name(self) -> str:
        """``label``, else ``name`` with every run of characters unsafe in a file name turned into ``-``."""
        return self.label or UNSAFE_LABEL.sub("-", self.name).strip("-.") or "model"

    @property
    def reference(self) -> ModelReference:
        """What builds this entry's model (`secateurs.models.build_model`)."""
        return ModelReference(self.name, dict(self.args))


class MethodEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    label: str | None = None
    scope: str | None = None
    granularity: str = "element"
    target: str = "params"
    min_keep: int = 1
    exclude: tuple[str, ...] = ()
    options: dict[str, Any] = Field(default_factory=dict)
    sparsities: tuple[float, ...] | None = None
    rates: tuple[float, ...] | None = None
    rounds: tuple[int, ...] | None = None
    layer_sparsity: dict[str, float] | str | None = None
    """Per-weight targets or the path of a ``layer_sparsity.yaml`` (`PruneConfig.layer_sparsity`)."""
    bn_recalibrate: bool | None = None
    start: Literal["dense", "init"] = "dense"
    """``init``: the cell starts from the seed's initialisation (the dense run's starting weights)
    instead of the trained dense model: methods that train from scratch (campfire, gmp)."""
    train: TrainConfig | None = None
    """This entry's training/fine-tuning budget (replaces the model's and the suite's ``finetune``)."""
    seeds: tuple[int, ...] | None = None
    """Run this entry for these of the suite's seeds only (default: all)."""

    @property
    def row_name(self) -> str:
        return self.label or self.name

    def prune_config(self, sparsity: float, rates: tuple[float, ...] | None = None, rounds: int = 1) -> PruneConfig:
        """The cell's `PruneConfig`: at ``sparsity``, or (``rates`` given) at round ``rounds`` of the rates."""
        fields = self.model_dump(
            exclude={"name", "label", "sparsities", "rates", "rounds", "bn_recalibrate", "start", "train", "seeds"}
        )
        target: dict[str, object] = {"sparsity": sparsity} if rates is None else {"rates": rates, "rounds": rounds}
        config: PruneConfig = validate(
            PruneConfig, {**fields, "method": self.name, **target}, f"method {self.row_name!r}"
        )
        return config


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    data: DataConfig = DataConfig()
    seeds: tuple[Seed, ...] = (0,)
    models: tuple[ModelEntry, ...]
    methods: tuple[MethodEntry, ...]
    sparsities: tuple[float, ...] = ()
    rates: tuple[float, ...] | None = None
    """Per-layer rates of one round (with ``rounds``: the rate-protocol axis)."""
    rounds: tuple[int, ...] | None = None
    finetune: TrainConfig | None = None
    calibration: CalibrationConfig = CalibrationConfig()
    measure: MeasureConfig = MeasureConfig(latency=False)
    keep_runs: bool = False
    """Also write every cell's pruned model as a run directory under ``DIR/runs/``."""

    @model_validator(mode="after")
    def _check(self) -> Suite:
        if not self.seeds or not self.models or not self.methods:
            raise ValueError("a suite needs at least one seed, one model and one method")
        rows = [m.row_name for m in self.models]
        repeated = sorted({row for row in rows if rows.count(row) > 1})
        if repeated:
            raise ValueError(f"model labels must be unique; repeated: {', '.join(repeated)} (add 'label')")
        labels = [m.row_name for m in self.methods]
        duplicated = sorted({label for label in labels if labels.count(label) > 1})
        if duplicated:
            raise ValueError(f"method labels must be unique; repeated: {', '.join(duplicated)} (add 'label')")
        if self.sparsities and self.rounds:
            raise ValueError("give the suite either 'sparsities' or 'rates' + 'rounds', not both")
        for method in self.methods:
            if method.seeds is not None and not set(method.seeds) <= set(self.seeds):
                raise ValueError(f"method {method.row_name!r}: seeds {list(method.seeds)} are not all suite seeds")
            rates, rounds = method.rates or self.rates, method.rounds or self.rounds
            if method.sparsities is not None:
                continue
            if (rates is None) != (rounds is None):
                raise ValueError(f"method {method.row_name!r}: 'rates' and 'rounds' go together")
            if rounds is None and not self.sparsities:
                raise ValueError(
                    f"method {method.row_name!r} has no sparsities (set 'sparsities' or 'rates' + 'rounds')"
                )
        return self


@dataclass(frozen=True)
class Cell:
    """One pruned model to produce: the grid's unit of work and of resumption."""

    model: ModelEntry
    method: MethodEntry
    sparsity: float
    seed: int
    rates: tuple[float, ...] | None = None
    rounds: int | None = None
    """Set for a rate-protocol cell (then ``sparsity`` is unused)."""

    @property
    def key(self) -> str:
        level = f"r{self.rounds}" if self.rounds is not None else f"{self.sparsity:g}"
        return f"{self.model.row_name}|{self.method.row_name}|{level}|{self.seed}"

    def prune_config(self) -> PruneConfig:
        if self.rounds is None:
            return self.method.prune_config(self.sparsity)
        return self.method.prune_config(0.0, self.rates, self.rounds)


def training_budget(suite: Suite, model: ModelEntry, method: MethodEntry) -> TrainConfig | None:
    """The budget a (model, method) cell trains with: the entry's ``train``, else the model's
    ``finetune``, else the suite's."""
    return method.train or model.finetune or suite.finetune


def method_levels(suite: Suite, method: MethodEntry) -> list[tuple[float, tuple[float, ...] | None, int | None]]:
    """``(sparsity, rates, rounds)`` of each cell of ``method``: its own or the suite's axis."""
    if method.sparsities is not None:
        return [(float(s), None, None) for s in method.sparsities]
    rates, rounds = method.rates or suite.rates, method.rounds or suite.rounds
    if rates is not None and rounds is not None:
        return [(0.0, rates, int(r)) for r in rounds]
    return [(float(s), None, None) for s in suite.sparsities]


def cells(suite: Suite) -> Iterator[Cell]:
    """The grid in a stable order: seed, model, method, sparsity (or round)."""
    for seed in suite.seeds:
        for model in suite.models:
            for method in suite.methods:
                if method.seeds is not None and seed not in method.seeds:
                    continue
                for sparsity, rates, rounds in method_levels(suite, method):
                    yield Cell(model, method, sparsity, seed, rates, rounds)


def load_suite(path: Path, overrides: Sequence[str] = ()) -> Suite:
    tree = load_yaml(path, "suite")
    for key, value in parse_overrides(overrides):
        set_path(tree, key, value)
    suite: Suite = validate(Suite, tree, f"suite {path}")
    for model in suite.models:  # fail on unknown models, bad references and unsafe names before any training
        try:
            check_model(model.reference)
        except UsageError as error:
            raise ConfigError(f"suite {path}: {error}") from None
        check_name(model.row_name, "model label")
    if suite.keep_runs:
        for cell in cells(suite):
            check_name(cell.key.replace("|", "_"), "cell name")
    for method in suite.methods:  # fail on bad method options and budgets before any training
        implementation = METHODS.get(method.name)
        options = implementation.parse_options(method.options)
        for model in suite.models:
            try:
                implementation.check_budget(options, training_budget(suite, model, method))
            except UsageError as error:
                raise ConfigError(f"suite {path}: model {model.row_name!r}: {error}") from None
        for sparsity, rates, rounds in method_levels(suite, method):
            try:
                implementation.check_config(method.prune_config(sparsity, rates, rounds or 1))
            except ConfigError as error:
                raise ConfigError(f"suite {path}: {error}") from None
    return suite

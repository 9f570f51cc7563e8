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

A method entry is a `PruneConfig` without ``sparsity`` plus an optional ``label`` (the row name; the
method name by default) — the same method can appear twice with different options. A method entry may
also carry its own ``sparsities`` (e.g. structured methods at parameter targets), replacing the
suite's list for that method.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from secateurs.config import (
    CalibrationConfig,
    DataConfig,
    MeasureConfig,
    Seed,
    load_yaml,
    parse_overrides,
    set_path,
    validate,
)
from secateurs.methods.base import PruneConfig
from secateurs.train.config import TrainConfig


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    train: TrainConfig = TrainConfig()
    finetune: TrainConfig | None = None
    """Overrides the suite's ``finetune`` for this model."""


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
    bn_recalibrate: bool | None = None

    @property
    def row_name(self) -> str:
        return self.label or self.name

    def prune_config(self, sparsity: float) -> PruneConfig:
        fields = self.model_dump(exclude={"name", "label", "sparsities", "bn_recalibrate"})
        config: PruneConfig = validate(
            PruneConfig, {**fields, "method": self.name, "sparsity": sparsity}, f"method {self.row_name!r}"
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
    finetune: TrainConfig | None = None
    calibration: CalibrationConfig = CalibrationConfig()
    measure: MeasureConfig = MeasureConfig(latency=False)
    keep_runs: bool = False
    """Also write every cell's pruned model as a run directory under ``DIR/runs/``."""

    @model_validator(mode="after")
    def _check(self) -> Suite:
        if not self.seeds or not self.models or not self.methods:
            raise ValueError("a suite needs at least one seed, one model and one method")
        labels = [m.row_name for m in self.methods]
        duplicated = sorted({label for label in labels if labels.count(label) > 1})
        if duplicated:
            raise ValueError(f"method labels must be unique; repeated: {', '.join(duplicated)} (add 'label')")
        for method in self.methods:
            if method.sparsities is None and not self.sparsities:
                raise ValueError(f"method {method.row_name!r} has no sparsities (set 'sparsities')")
        return self


@dataclass(frozen=True)
class Cell:
    """One pruned model to produce: the grid's unit of work and of resumption."""

    model: ModelEntry
    method: MethodEntry
    sparsity: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.model.name}|{self.method.row_name}|{self.sparsity:g}|{self.seed}"


def cells(suite: Suite) -> Iterator[Cell]:
    """The grid in a stable order: seed, model, method, sparsity."""
    for seed in suite.seeds:
        for model in suite.models:
            for method in suite.methods:
                for sparsity in method.sparsities if method.sparsities is not None else suite.sparsities:
                    yield Cell(model, method, float(sparsity), seed)


def load_suite(path: Path, overrides: Sequence[str] = ()) -> Suite:
    tree = load_yaml(path, "suite")
    for key, value in parse_overrides(overrides):
        set_path(tree, key, value)
    suite: Suite = validate(Suite, tree, f"suite {path}")
    from secateurs.models import model_entry
    from secateurs.recipes import check_name

    for model in suite.models:  # fail on unknown models and unsafe cell names before any training
        model_entry(model.name)
    if suite.keep_runs:
        for cell in cells(suite):
            check_name(cell.key.replace("|", "_"), "cell name")
    for method in suite.methods:  # fail on bad method options before any training
        from secateurs.methods import METHODS

        METHODS.get(method.name).parse_options(method.options)
        for sparsity in method.sparsities or suite.sparsities:
            method.prune_config(sparsity)
    return suite

"""Recipe schema: one validated YAML file from data and model to a pruned, fine-tuned, measured run.

Unknown keys and wrong types are errors that name the key. ``--set a.b=value`` overrides any key
(values parsed as YAML scalars: ``--set method.sparsity=0.7``, ``--set train.epochs=2``).

Example::

    name: lenet5-magnitude
    seed: 0
    data: {name: fashion-mnist}
    model: lenet5          # or timm:NAME, python:package.module:factory, path/to/file.py:factory
    train: {epochs: 5, lr: 0.05}
    method: {name: magnitude, sparsity: 0.9, scope: global}
    finetune: {epochs: 1, lr: 0.01}

An external ``model`` takes keywords for its factory in ``model_args`` (``model_args: {img_size: 64}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from secateurs.config.data import DataConfig, Seed
from secateurs.config.prune import PruneConfig
from secateurs.config.train import TrainConfig
from secateurs.config.validation import validate
from secateurs.config.yaml import load_yaml, parse_overrides, set_path


class CalibrationConfig(BaseModel):
    """Training images a data-driven scorer sees: the first ``size`` of the training split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(512, ge=1)
    batch_size: int = Field(256, ge=1)


class RobustnessConfig(BaseModel):
    """Adversarial accuracy on the first ``examples`` test images (`secateurs.metrics.robustness`).

    ε is in pixel units ([0, 1] intensities), whatever the model's input normalisation.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilons: tuple[float, ...] = (0.01, 0.03, 0.05, 0.1)
    attacks: tuple[Literal["fgsm", "pgd"], ...] = ("fgsm", "pgd")
    pgd_steps: int = Field(10, ge=1)
    pgd_step_size: float | None = Field(None, gt=0)
    """None: 2.5 ε / steps (Madry et al.)."""
    examples: int = Field(1000, ge=1)
    batch_size: int = Field(500, ge=1)
    seed: int = 0

    @field_validator("epsilons")
    @classmethod
    def _epsilon_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0.0 <= e <= 1.0 for e in value):
            raise ValueError(f"epsilons must be a non-empty list of values in [0, 1] (pixel units), got {list(value)}")
        return value


class MeasureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latency: bool = True
    latency_batches: tuple[int, ...] = (1, 256)
    latency_repeats: int = Field(20, ge=1)
    bn_recalibrate: bool = False
    """Re-estimate BatchNorm statistics on training batches right after pruning (structured methods)."""
    bn_batches: int = Field(20, ge=1)
    robustness: RobustnessConfig | None = None
    """Opt-in: FGSM/PGD accuracy on the test split, reported as ``metrics.robustness`` in run.json."""


class Recipe(BaseModel):
    """A whole experiment: dense training (or ``from`` an existing run), pruning, fine-tuning."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    seed: Seed = 0
    data: DataConfig = DataConfig()
    model: str | None = None
    model_args: dict[str, Any] = Field(default_factory=dict)
    """Keywords for an external model's factory (`secateurs.models.external`); a zoo model takes none."""
    train: TrainConfig | None = None
    source: str | None = Field(None, alias="from")
    method: PruneConfig | None = None
    finetune: TrainConfig | None = None
    calibration: CalibrationConfig = CalibrationConfig()
    measure: MeasureConfig = MeasureConfig()

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.source is None and (self.model is None or self.train is None):
            raise ValueError("a recipe needs either 'from' (an existing run) or both 'model' and 'train'")
        if self.source is not None and self.train is not None:
            raise ValueError("'from' and 'train' exclude each other: the run given by 'from' is the dense model")
        if self.source is not None and self.method is None:
            raise ValueError("a recipe with 'from' needs a 'method' section")
        if self.model_args and self.model is None:
            raise ValueError("'model_args' go with 'model' (the run given by 'from' records its own)")
        return self


def load_recipe(path: Path, overrides: Sequence[str] = ()) -> Recipe:
    """Load, override and validate a recipe file."""
    tree = load_yaml(path)
    for key, value in parse_overrides(overrides):
        set_path(tree, key, value)
    recipe: Recipe = validate(Recipe, tree, f"recipe {path}")
    return recipe

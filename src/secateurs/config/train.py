"""Training configuration: a frozen, validated model (unknown keys are errors)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainConfig(BaseModel):
    """How to train (or fine-tune) a model. Epochs may be fractional (InfCoP budgets of ½ epoch)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: float = Field(5.0, ge=0)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "step", "cosine"] = "cosine"
    milestones: tuple[float, ...] | None = None
    """Epochs at which a ``step`` schedule multiplies the LR by ``gamma`` (default: 50 % and 75 %)."""
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: Literal["auto", "none", "crop-flip"] = "auto"
    init: Literal["default", "xavier-normal", "kaiming-normal"] = "default"
    channels_last: bool | None = None
    """None: on for conv models."""
    train_subset: int | None = Field(None, ge=1)
    """Use only the first N training examples (fast tests and smoke suites)."""
    eval_subset: int | None = Field(None, ge=1)
    """Evaluate on only the first N validation/test examples."""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.milestones is not None and any(m < 0 for m in self.milestones):
            raise ValueError("milestones must be epochs ≥ 0")
        if self.warmup_epochs > self.epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        return self

    def with_(self, **changes: object) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return TrainConfig.model_validate({**self.model_dump(), **changes})

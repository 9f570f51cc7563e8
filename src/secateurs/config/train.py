"""Training configuration: a frozen, validated model (unknown keys are errors).

A budget is given either in epochs (``epochs``, fractions allowed) or in optimizer steps (``steps``),
never both. Without either it is `DEFAULT_EPOCHS` epochs. A budget in steps transfers across dataset
sizes: N steps are N optimizer steps on any training set, so a suite that fixes its budgets in steps
trains every model for the same number of updates. Warm-up (``warmup_epochs`` or ``warmup_steps``),
``milestones`` and the validation cadence (``eval_every``, in steps) follow the same rule: a config
whose budget is in steps and whose warm-up, milestones and cadence are in steps does not depend on
the dataset's size at all.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_EPOCHS = 5.0
"""The budget of a config that gives neither ``epochs`` nor ``steps``."""


class TrainConfig(BaseModel):
    """How to train (or fine-tune) a model. Epochs may be fractional (InfCoP budgets of ½ epoch)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: float | None = Field(None, ge=0)
    """The budget in epochs; None when the budget is ``steps`` (`DEFAULT_EPOCHS` when neither is given)."""
    steps: int | None = Field(None, ge=0)
    """The budget in optimizer steps, instead of ``epochs`` (exclusive with it)."""
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "step", "cosine"] = "cosine"
    milestones: tuple[float, ...] | None = None
    """When a ``step`` schedule multiplies the LR by ``gamma``, in the budget's unit: epochs, or
    optimizer steps when the budget is ``steps`` (default: 50 % and 75 % of the budget)."""
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_steps: int | None = Field(None, ge=0)
    """Linear warm-up in optimizer steps, instead of ``warmup_epochs`` (exclusive with it)."""
    eval_every: int | None = Field(None, ge=1)
    """Validate (and checkpoint) after every N optimizer steps and after the last one; None: at the
    end of every epoch (and after the last step)."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: Literal["auto", "none", "crop-flip"] = "auto"
    init: Literal["default", "xavier-normal", "kaiming-normal"] = "default"
    channels_last: bool | None = None
    """None: on for conv models."""
    train_subset: int | None = Field(None, ge=1)
    """Use only the first N training examples (fast tests and smoke suites)."""
    eval_subset: int | None = Field(None, ge=1)
    """Evaluate on only the first N validation/test examples."""

    @model_validator(mode="before")
    @classmethod
    def _one_budget(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        epochs, steps = data.get("epochs"), data.get("steps")
        if epochs is not None and steps is not None:
            raise ValueError(
                f"give the budget either in epochs ({epochs}) or in steps ({steps}), not both "
                "(set the other to null to override it)"
            )
        if epochs is None and steps is None:
            return {**data, "epochs": DEFAULT_EPOCHS}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.milestones is not None and any(m < 0 for m in self.milestones):
            raise ValueError(f"milestones must be ≥ 0 ({self.budget_unit}), got {list(self.milestones)}")
        if self.warmup_steps is not None and self.warmup_epochs > 0:
            raise ValueError(
                f"give the warm-up either in epochs ({self.warmup_epochs}) or in steps ({self.warmup_steps}), not both"
            )
        if self.epochs is not None and self.warmup_epochs > self.epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        if self.steps is not None and self.warmup_steps is not None and self.warmup_steps > self.steps > 0:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps})")
        return self

    @property
    def budget_unit(self) -> Literal["epochs", "steps"]:
        """``steps`` when the budget is given in optimizer steps, else ``epochs``."""
        return "steps" if self.steps is not None else "epochs"

    @property
    def has_budget(self) -> bool:
        """True unless the budget is zero (0 epochs or 0 steps): whether there is anything to train."""
        return bool(self.steps) if self.steps is not None else bool(self.epochs)

    def describe_budget(self) -> str:
        """``"2 epochs"`` or ``"500 steps"``, for messages."""
        return f"{self.steps} steps" if self.steps is not None else f"{self.epochs:g} epochs"

    def total_steps(self, steps_per_epoch: int) -> int:
        """The optimizer steps of the budget with ``steps_per_epoch`` batches per epoch.

        ``steps`` as given, or ``round(epochs · steps_per_epoch)`` (Python rounding, halves to even).
        """
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None  # guaranteed by the validator
        return round(self.epochs * steps_per_epoch)

    def budget_epochs(self, steps_per_epoch: int) -> float:
        """The budget in epochs: ``epochs`` as given, or ``steps / steps_per_epoch``."""
        if self.epochs is not None:
            return self.epochs
        return self.total_steps(steps_per_epoch) / steps_per_epoch

    def warmup_steps_for(self, steps_per_epoch: int) -> int:
        """Warm-up length in optimizer steps: ``warmup_steps``, or ``round(warmup_epochs · steps_per_epoch)``."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return round(self.warmup_epochs * steps_per_epoch)

    def milestone_steps(self, steps_per_epoch: int) -> tuple[int, ...]:
        """The ``step`` schedule's milestones in optimizer steps (default: 50 % and 75 % of the budget)."""
        if self.milestones is None:
            if self.steps is not None:
                return (round(0.5 * self.steps), round(0.75 * self.steps))
            assert self.epochs is not None
            return tuple(round(m * steps_per_epoch) for m in (0.5 * self.epochs, 0.75 * self.epochs))
        if self.steps is not None:
            return tuple(round(m) for m in self.milestones)
        return tuple(round(m * steps_per_epoch) for m in self.milestones)

    def with_(self, **changes: object) -> TrainConfig:
        """A validated copy with ``changes`` applied.

        Setting the budget in one unit clears the other: ``with_(epochs=1)`` on a config whose budget
        is in steps gives a budget of one epoch (and likewise ``warmup_epochs`` / ``warmup_steps``).
        """
        tree = self.model_dump()
        for one, other in (("epochs", "steps"), ("steps", "epochs")):
            if changes.get(one) is not None and other not in changes:
                tree[other] = None
        if changes.get("warmup_steps") is not None and "warmup_epochs" not in changes:
            tree["warmup_epochs"] = 0.0
        if changes.get("warmup_epochs") and "warmup_steps" not in changes:
            tree["warmup_steps"] = None
        return TrainConfig.model_validate({**tree, **changes})

"""What to prune and how much: `PruneConfig`, the options every method understands.

Method-specific constraints (does the method take per-layer rates or targets? its own ``options``)
are checked by the method itself (`secateurs.methods.base.Method.check_config`), so this schema
needs no method registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from secateurs.config.yaml import read_yaml
from secateurs.errors import ConfigError

Scope = Literal["layerwise", "global", "normalized"]
"""Allocation policies: ``layerwise`` (every layer its own ranking and target), ``global`` (one ranking of
the raw scores), ``normalized`` (one ranking after dividing each layer's scores by a per-layer statistic,
the method's ``normalizer`` option). Each method lists the ones it accepts (`Method.scopes`)."""


class PruneConfig(BaseModel):
    """Options every method understands; method-specific ones go in ``options``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(validation_alias=AliasChoices("method", "name"))
    """The registered method name (``name`` is accepted as an alias in recipes)."""
    sparsity: float
    """Fraction removed, of the prunable weights (unstructured) or of ``target`` (structured)."""
    scope: Scope | None = None
    """The allocation policy (`Scope`); None: the method's default."""
    granularity: str = "element"
    target: Literal["params", "macs", "channels"] = "params"
    min_keep: int = Field(1, ge=0)
    exclude: tuple[str, ...] = ()
    options: dict[str, Any] = Field(default_factory=dict)
    rates: tuple[float, ...] | None = None
    """Per-layer rates p_i of one round, in prunable-layer order (LAP's protocol, `sparsity.rates`):
    layer i loses 1 − (1 − p_i)^rounds. ``sparsity`` is then left out (it reads 0); a global scope
    prunes to the size-weighted mean of the layer targets. Only methods with ``supports_rates``."""
    rounds: int = Field(1, ge=1)
    """How many rounds of ``rates`` (the paper's iteration index ``it``); needs ``rates``."""
    layer_sparsity: dict[str, float] | None = None
    """Per-weight targets (``features.0.weight: 0.9``), e.g. the ``layer_sparsity.yaml`` that
    `secateurs sensitivity --emit-targets` writes; a string is read as such a YAML file. Weights not
    listed get ``sparsity`` (0 when left out). Layer-wise methods with ``supports_rates`` only."""

    @model_validator(mode="before")
    @classmethod
    def _rates_imply_sparsity(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if isinstance(data.get("layer_sparsity"), str | Path):
            data = {**data, "layer_sparsity": read_layer_sparsity(Path(data["layer_sparsity"]))}
        if (data.get("rates") is not None or data.get("layer_sparsity") is not None) and "sparsity" not in data:
            return {**data, "sparsity": 0.0}
        return data

    @field_validator("sparsity")
    @classmethod
    def _sparsity_range(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"sparsity must be in [0, 1) (the fraction removed), got {value}")
        return value

    @model_validator(mode="after")
    def _check_rates(self) -> PruneConfig:
        if self.layer_sparsity is not None:
            if self.rates is not None:
                raise ValueError("give either layer_sparsity or rates, not both: each sets every layer's target")
            bad = {name: value for name, value in self.layer_sparsity.items() if not 0.0 <= value < 1.0}
            if bad:
                raise ValueError(f"every layer_sparsity must be in [0, 1) (the fraction removed), got {bad}")
        if self.rates is None:
            if self.rounds != 1:
                raise ValueError(f"rounds ({self.rounds}) needs a per-layer rate list 'rates'")
            return self
        if self.sparsity != 0.0:
            raise ValueError(f"give either sparsity ({self.sparsity}) or rates, not both: rates set every target")
        if any(not 0.0 <= rate < 1.0 for rate in self.rates):
            raise ValueError(f"every rate must be in [0, 1) (the fraction removed per round), got {list(self.rates)}")
        return self


def read_layer_sparsity(path: Path) -> dict[str, float]:
    """A ``weight name → sparsity`` YAML mapping (`secateurs sensitivity --emit-targets`); errors are ValueErrors."""
    try:
        document = read_yaml(path, "layer_sparsity file")
    except ConfigError as error:
        raise ValueError(f"cannot read layer_sparsity file: {error}") from None
    if not isinstance(document, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) for k, v in document.items()
    ):
        raise ValueError(f"layer_sparsity file {str(path)!r} must map weight names to numbers (features.0.weight: 0.9)")
    return {name: float(value) for name, value in document.items()}

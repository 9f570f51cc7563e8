"""Which HVP engine a model gets: the registry of engines and the automatic fallback (`select_engine`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from secateurs.errors import StructureError
from secateurs.scoring.base import LossFn
from secateurs.scoring.hvp import Batch, DoubleBackwardEngine, HVPEngine, RewrittenDoubleBackwardEngine
from secateurs.scoring.hvp_functional import FiniteDifferenceEngine, ForwardOverReverseEngine

ENGINES: dict[str, type[HVPEngine]] = {
    engine.name: engine
    for engine in (
        DoubleBackwardEngine,
        RewrittenDoubleBackwardEngine,
        ForwardOverReverseEngine,
        FiniteDifferenceEngine,
    )
}
"""Engine classes by name."""

DEFAULT_ORDER: tuple[str, ...] = (
    "double-backward",
    "double-backward-rewritten",
    "forward-over-reverse",
    "finite-difference",
)
"""`select_engine`'s order: exact and fastest first, the always-applicable approximation last."""


def make_engine(
    name: str,
    model: nn.Module,
    weights: Sequence[torch.Tensor],
    batches: Sequence[Batch],
    loss_fn: LossFn,
    **options: Any,
) -> HVPEngine:
    """Build the engine registered as ``name`` (``options`` go to its constructor)."""
    try:
        engine = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown HVP engine {name!r}; known: {', '.join(ENGINES)}") from None
    return engine(model, weights, batches, loss_fn, **options)


_UNSUPPORTED_PATTERNS = (
    re.compile(r"derivative for .+ is not implemented"),
    re.compile(r"Trying to use forward AD with .+ that does not support it"),
    re.compile(r"does not support (forward AD|double backward|higher.order)", re.IGNORECASE),
    re.compile(r"(forward AD|double backward) (is )?not (yet )?(implemented|supported)", re.IGNORECASE),
    re.compile(r"not implemented for forward.mode", re.IGNORECASE),
    re.compile(r"differentiate twice a function that was marked with @once_differentiable"),
    re.compile(r"autograd\.Function with functorch transforms .* must override the setup_context"),
)


STEP_CHECK_LIMIT = 1e-3
"""Above this `FiniteDifferenceEngine.step_check` value the selection reason flags the products."""


def is_unsupported_derivative(error: BaseException) -> bool:
    """Whether ``error`` says that an op lacks the derivative an engine needs.

    True for ``NotImplementedError`` and for ``RuntimeError`` messages of a missing derivative
    (``derivative for aten::hardsigmoid_backward is not implemented``, ``Trying to use forward AD with
    … that does not support it``, a ``once_differentiable`` custom Function differentiated twice, a
    custom Function without ``setup_context`` under ``torch.func``, `DoubleBackwardEngine`'s gradient
    without a graph); other errors (shapes, memory, bugs) are not reasons to fall back.
    """
    if isinstance(error, NotImplementedError):
        return True
    if isinstance(error, RuntimeError):
        message = str(error)
        return any(pattern.search(message) for pattern in _UNSUPPORTED_PATTERNS)
    return False


@dataclass
class EngineSelection:
    """The outcome of `select_engine`: a prepared engine and the product of the trial probe."""

    engine: HVPEngine
    product: list[torch.Tensor]
    reason: str
    """One log line: the engine chosen and, if any was skipped, why."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Engine name → first line of the error that ruled it out."""
    step_check: float | None = None
    """`FiniteDifferenceEngine.step_check` of the trial probe when finite differences were chosen."""

    @property
    def name(self) -> str:
        return self.engine.name


def select_engine(
    model: nn.Module,
    weights: Sequence[torch.Tensor],
    batches: Sequence[Batch],
    loss_fn: LossFn,
    probe: Sequence[torch.Tensor],
    order: Sequence[str] = DEFAULT_ORDER,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    check_steps: bool = True,
) -> EngineSelection:
    """Try the engines of ``order`` on ``probe``; keep the first that computes its product.

    An engine is skipped only on an unsupported-derivative error (`is_unsupported_derivative`); any
    other error propagates. ``options`` maps engine names to constructor options. The returned
    engine stays prepared, so the trial probe's product (returned too) is not wasted. When the
    finite-difference engine is chosen and ``check_steps`` is set, its `FiniteDifferenceEngine.step_check`
    (two more gradients) goes into the reason and `EngineSelection.step_check`. Raises
    `StructureError` (one line naming each engine's reason) if every engine of ``order`` is unsupported.
    """
    options = options or {}
    skipped: dict[str, str] = {}
    for name in order:
        engine = make_engine(name, model, weights, batches, loss_fn, **dict(options.get(name, {})))
        try:
            product = engine.hvp(probe)
        except (RuntimeError, NotImplementedError) as error:
            engine.close()
            if not is_unsupported_derivative(error):
                raise
            skipped[name] = _first_line(error)
            continue
        reason = f"HVP engine {name}"
        if skipped:
            because = "; ".join(f"{n}: {why}" for n, why in skipped.items())
            reason += f" (skipped {because})"
        step_check = None
        if isinstance(engine, FiniteDifferenceEngine) and check_steps:
            step_check = engine.step_check(probe, product)
            verdict = "ok" if step_check <= STEP_CHECK_LIMIT else "UNRELIABLE: gradient kinks dominate"
            reason += f"; step check {step_check:.1e} ({verdict})"
        return EngineSelection(engine=engine, product=product, reason=reason, skipped=skipped, step_check=step_check)
    details = "; ".join(f"{n}: {why}" for n, why in skipped.items())
    raise StructureError(f"no Hessian-vector-product engine supports this model ({details})")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"

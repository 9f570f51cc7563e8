"""Functional HVP engines: forward-over-reverse (`torch.func`) and central finite differences.

See `secateurs.scoring.hvp` for the contract and the choice between engines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import nn

from secateurs.scoring.base import LossFn
from secateurs.scoring.hvp import Batch, HVPEngine


class _FunctionalEngine(HVPEngine):
    """Shared machinery: the loss of one batch as a function of the weights (``functional_call``)."""

    def __init__(
        self,
        model: nn.Module,
        weights: Sequence[torch.Tensor],
        batches: Sequence[Batch],
        loss_fn: LossFn,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(model, weights, batches, loss_fn)
        self.dtype = dtype
        """Compute dtype for floating tensors; ``None`` keeps each tensor's own."""
        self._constants: dict[str, torch.Tensor] = {}
        self._inputs: list[Batch] = []

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.dtype is not None and tensor.is_floating_point():
            return tensor.to(self.dtype)
        return tensor

    def _prepare(self) -> None:
        chosen = set(self.weight_names)
        # Detached copies (or views, without a cast): constants build no graph and the model's own
        # tensors are never written to.
        constants = {n: self._cast(p.detach()) for n, p in self.model.named_parameters() if n not in chosen}
        constants.update({n: self._cast(b.detach()) for n, b in self.model.named_buffers()})
        self._constants = constants
        self._inputs = [(self._cast(x), self._cast(y)) for x, y in self.batches]

    def _close(self) -> None:
        self._constants = {}
        self._inputs = []

    def _points(self) -> list[torch.Tensor]:
        return [self._cast(w.detach()) for w in self.weights]

    def _batch_loss(
        self, weights: Mapping[str, torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        tensors = {**self._constants, **weights}
        outputs = torch.func.functional_call(self.model, tensors, (inputs,), strict=False)
        return self.loss_fn(outputs, targets) * self._weight(len(targets))


class ForwardOverReverseEngine(_FunctionalEngine):
    """``torch.func.jvp(torch.func.grad(L_b), w, v)`` summed over batches (no amortised graph)."""

    name: ClassVar[str] = "forward-over-reverse"

    def _hvp(self, probes: list[torch.Tensor]) -> list[torch.Tensor]:
        point = dict(zip(self.weight_names, self._points(), strict=True))
        tangent = dict(zip(self.weight_names, (self._cast(v) for v in probes), strict=True))
        total: list[torch.Tensor] | None = None
        for inputs, targets in self._inputs:

            def batch_loss(
                weights: dict[str, torch.Tensor], x: torch.Tensor = inputs, y: torch.Tensor = targets
            ) -> torch.Tensor:
                return self._batch_loss(weights, x, y)

            _, product = torch.func.jvp(torch.func.grad(batch_loss), (point,), (tangent,))[:2]
            terms = [product[n] for n in self.weight_names]
            total = terms if total is None else [a + b for a, b in zip(total, terms, strict=True)]
        assert total is not None
        return total


def central_difference_step(
    weights: Sequence[torch.Tensor],
    probes: Sequence[torch.Tensor],
    dtype: torch.dtype,
) -> float:
    """Step ``h`` of the central difference ``(∇L(w + h v) − ∇L(w − h v)) / (2h)``.

    Rule: ``h = (3 ε)^(1/3) · (1 + ‖w‖) / ‖v‖`` with ε the machine epsilon of the compute ``dtype``
    and norms over all weights together. Derivation (NOTES.md): along the unit direction u = v/‖v‖
    with step length t = h‖v‖ the quotient is ``H u + t²/6 · ∇⁴L[u,u,u] + O(t⁴)`` (truncation) plus
    rounding ``≈ ε G / t`` from the two gradients (G: the magnitude of the gradient terms). If the
    loss varies on a length scale ℓ (``‖∇⁴L‖ ≈ ‖H‖/ℓ²``, ``G ≈ ‖H‖ ℓ``) the relative error is
    ``t²/(6ℓ²) + ε ℓ/t``, minimal at ``t = (3ε)^(1/3) ℓ`` where it is ``(3ε)^(2/3)/2`` (3.8e-11 in
    float64, 2.5e-5 in float32). The scale is ℓ = 1 + ‖w‖ (relative perturbation of the weights
    ≈ (3ε)^(1/3); the 1 guards w ≈ 0).
    """
    eps = torch.finfo(dtype).eps
    weight_norm = math.sqrt(sum(float(w.detach().double().square().sum()) for w in weights))
    probe_norm = math.sqrt(sum(float(v.detach().double().square().sum()) for v in probes))
    if probe_norm == 0.0:
        return 1.0
    return (3.0 * eps) ** (1.0 / 3.0) * (1.0 + weight_norm) / probe_norm


class FiniteDifferenceEngine(_FunctionalEngine):
    """Central difference of first-order gradients (only first derivatives of any op are needed).

    ``dtype`` (default float64) is the compute dtype: every floating parameter, buffer, input and
    target is cast to it, so a float32 model is differentiated in float64 at its exact float32 weights.
    ``dtype=None`` computes in the model's own dtype. ``step`` overrides `central_difference_step`
    (an absolute h, applied to the probe as given). The model is never written to: the perturbed
    weights are fresh tensors passed through ``functional_call``.
    """

    name: ClassVar[str] = "finite-difference"

    def __init__(
        self,
        model: nn.Module,
        weights: Sequence[torch.Tensor],
        batches: Sequence[Batch],
        loss_fn: LossFn,
        dtype: torch.dtype | None = torch.float64,
        step: float | None = None,
    ) -> None:
        super().__init__(model, weights, batches, loss_fn, dtype=dtype)
        self.step = step
        self.last_step: float | None = None
        """The h used by the latest `hvp` call."""

    def step_check(
        self, probes: Sequence[torch.Tensor], product: Sequence[torch.Tensor], factor: float = 10.0
    ) -> float:
        """Relative difference ``‖D(factor·h) − D(h)‖ / ‖D(h)‖`` of the quotient at two steps.

        ``product`` is this engine's `hvp` of ``probes`` (D(h), with h = `last_step`); costs two more
        gradients. On a C⁴ loss the difference is the truncation growth, ≈ (factor² − 1) · the
        truncation error (≈ 1e-9 in float64 at factor 10). Gradient kinks (ReLU-like activations) add
        jumps whose sum scales like h^(-1/2): a value above ~1e-3 means the products are dominated by
        kink crossings and do not approximate the (almost-everywhere) Hessian.
        """
        if self.last_step is None:
            raise ValueError("call hvp first")
        base_step, step = self.last_step, self.step
        try:
            self.step = factor * base_step
            wider = self.hvp(probes)
        finally:
            self.step, self.last_step = step, base_step
        a = torch.cat([t.double().reshape(-1) for t in product])
        b = torch.cat([t.double().reshape(-1) for t in wider])
        return float((b - a).norm() / a.norm().clamp_min(1e-300))

    def _gradient(self, point: list[torch.Tensor]) -> list[torch.Tensor]:
        leaves = [p.requires_grad_() for p in point]
        named = dict(zip(self.weight_names, leaves, strict=True))
        total: list[torch.Tensor] | None = None
        for inputs, targets in self._inputs:
            loss = self._batch_loss(named, inputs, targets)
            terms = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
            total = list(terms) if total is None else [a + b for a, b in zip(total, terms, strict=True)]
        assert total is not None
        return total

    def _hvp(self, probes: list[torch.Tensor]) -> list[torch.Tensor]:
        base = self._points()
        directions = [self._cast(v.detach()) for v in probes]
        compute_dtype = base[0].dtype
        h = self.step if self.step is not None else central_difference_step(base, directions, compute_dtype)
        self.last_step = h
        plus = self._gradient([w + h * v for w, v in zip(base, directions, strict=True)])
        minus = self._gradient([w - h * v for w, v in zip(base, directions, strict=True)])
        return [(a - b) / (2.0 * h) for a, b in zip(plus, minus, strict=True)]

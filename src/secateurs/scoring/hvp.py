"""Hessian-vector-product engines that do not all depend on double-backward support of every op.

An engine computes ``H·v`` for the Hessian ``H`` of the size-weighted mean loss

    L(w) = Σ_b (n_b / N) · loss_fn(model(x_b), y_b),      N = Σ_b n_b

(the loss of `secateurs.scoring.hessian.mean_loss_gradient`) with respect to an explicit list of
the model's parameters (``weights``, typically every Conv2d/Linear weight); every other parameter and
every buffer is a constant. One call `HVPEngine.hvp` takes one probe tensor per weight and returns one
product tensor per weight, with the weights' shapes and dtypes. Work that does not depend on the probe
is done once in `HVPEngine.prepare` (called on first use) and amortised over all probes.

Engines (`secateurs.scoring.hvp_select.ENGINES`, by name; the last two in `scoring.hvp_functional`):

``double-backward``
    Builds ∇L once with ``create_graph=True``; each probe is one ``torch.autograd.grad`` of ∇L with
    ``grad_outputs=v`` (reverse-over-reverse, today's method). Fastest per probe; needs a
    derivative of every op's backward (``aten::hardsigmoid_backward`` and the CPU flash-attention
    backward have none in torch 2.13). Graphs in which autograd would silently drop second-order
    terms (``once_differentiable`` custom Functions) are refused.
``double-backward-rewritten``
    The same, with the forward pass run under `TwiceDifferentiableRewrites`, a torch-function mode
    that replaces ops lacking a double backward by mathematically identical compositions that have
    one (``hardsigmoid(x) = relu6(x + 3) / 6``; scaled-dot-product attention on the math kernel).
``forward-over-reverse``
    ``torch.func.jvp`` of ``torch.func.grad`` of a functional loss (``torch.func.functional_call``),
    batch by batch: each probe costs about one forward + one backward with dual numbers per batch and
    nothing is amortised; memory is one batch's graph. Needs a forward-mode derivative of every op's
    backward (hardsigmoid and CPU flash attention lack it too in torch 2.13).
``finite-difference``
    Central difference of first-order gradients, ``(∇L(w + h v) − ∇L(w − h v)) / (2h)``, by default
    evaluated in float64 (every floating parameter, buffer and input cast; the model itself is never
    touched). Needs only first derivatives, so works for every differentiable model; two gradient
    evaluations per probe. The step rule is `central_difference_step`. On piecewise-linear
    activations (ReLU, ReLU6, hard-swish, hard-sigmoid) the difference also sees the gradient jumps
    of pre-activations that cross a kink within ±h·v; double backward ignores those (measure-zero)
    terms. That bias grows like h^(-1/2) and dominates on ReLU-heavy nets (relative error O(10–100)
    on resnet20), so the engine is reliable only on (nearly) smooth models:
    `FiniteDifferenceEngine.step_check` detects the difference.

`secateurs.scoring.hvp_select.select_engine` tries engines in order on one probe and falls back on the
specific errors of an unsupported derivative (`is_unsupported_derivative`), returning the engine
chosen, the probe's product and a one-line reason.

All engines require ``model`` in eval mode (batch norm on running statistics, no dropout) and never
modify it: parameters, buffers and ``.grad`` are left bit-identical.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from secateurs.scoring.base import LossFn
from secateurs.scoring.hvp_rewrites import TwiceDifferentiableRewrites

Batch = tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Base class


class HVPEngine(ABC):
    """Hessian-vector products of the mean loss over ``batches`` w.r.t. ``weights``.

    ``weights`` must be parameters of ``model`` (compared by identity); ``batches`` are
    ``(inputs, targets)`` pairs; ``loss_fn(outputs, targets)`` returns the mean loss of one batch.
    The constructor only validates and records its inputs; `prepare` does the amortised work.
    """

    name: ClassVar[str]

    def __init__(
        self,
        model: nn.Module,
        weights: Sequence[torch.Tensor],
        batches: Sequence[Batch],
        loss_fn: LossFn,
    ) -> None:
        if model.training:
            raise ValueError("HVP engines need the model in eval mode (call .eval() on a copy)")
        if not weights:
            raise ValueError("no weights given")
        if not batches:
            raise ValueError("no batches given")
        self.model = model
        self.weights = list(weights)
        self.batches = list(batches)
        self.loss_fn = loss_fn
        self.weight_names = _parameter_names(model, self.weights)
        self.total = sum(len(targets) for _, targets in self.batches)
        self._prepared = False

    def prepare(self) -> None:
        """Do the probe-independent work once (idempotent; `hvp` calls it on first use)."""
        if not self._prepared:
            self._prepare()
            self._prepared = True

    def hvp(self, probes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Return ``H·v`` for ``v`` = ``probes`` (one tensor per weight, same shapes)."""
        if len(probes) != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} probe tensors, got {len(probes)}")
        for probe, weight in zip(probes, self.weights, strict=True):
            if probe.shape != weight.shape:
                raise ValueError(f"probe of shape {tuple(probe.shape)} for a weight of shape {tuple(weight.shape)}")
        self.prepare()
        with torch.enable_grad():
            products = self._hvp(list(probes))
        return [p.detach().to(w.dtype) for p, w in zip(products, self.weights, strict=True)]

    def close(self) -> None:
        """Release what `prepare` kept (gradient graphs); the engine prepares again on next use."""
        self._close()
        self._prepared = False

    def _prepare(self) -> None:  # noqa: B027 - optional hook
        """Probe-independent setup (default: nothing)."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Drop what `_prepare` kept (default: nothing)."""

    @abstractmethod
    def _hvp(self, probes: list[torch.Tensor]) -> list[torch.Tensor]:
        """The products, any dtype; called with grad mode enabled after `prepare`."""

    def _weight(self, batch_size: int) -> float:
        return batch_size / self.total


# --------------------------------------------------------------------------------------------------
# Reverse over reverse


class DoubleBackwardEngine(HVPEngine):
    """Reverse-over-reverse: ∇L built once with its graph; one ``autograd.grad`` per probe."""

    name: ClassVar[str] = "double-backward"

    def __init__(
        self,
        model: nn.Module,
        weights: Sequence[torch.Tensor],
        batches: Sequence[Batch],
        loss_fn: LossFn,
    ) -> None:
        super().__init__(model, weights, batches, loss_fn)
        frozen = [n for n, w in zip(self.weight_names, self.weights, strict=True) if not w.requires_grad]
        if frozen:
            raise ValueError(f"double backward needs requires_grad weights; frozen: {', '.join(frozen[:4])}")
        self._gradient: list[torch.Tensor] | None = None

    def _forward_context(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def _prepare(self) -> None:
        with torch.enable_grad(), self._forward_context():
            loss: torch.Tensor | None = None
            for inputs, targets in self.batches:
                term = self.loss_fn(self.model(inputs), targets) * self._weight(len(targets))
                loss = term if loss is None else loss + term
            assert loss is not None
            gradient = torch.autograd.grad(
                loss, self.weights, create_graph=True, allow_unused=True, materialize_grads=True
            )
        self._gradient = list(gradient)
        delayed = _delayed_error_node(self._gradient)
        if delayed is not None:
            self._gradient = None
            raise RuntimeError(
                f"double backward not supported: the gradient graph contains {delayed} (an op whose "
                "backward is not differentiable, e.g. a once_differentiable custom Function; autograd "
                "would silently drop its second-order terms)"
            )

    def _close(self) -> None:
        self._gradient = None

    def _hvp(self, probes: list[torch.Tensor]) -> list[torch.Tensor]:
        assert self._gradient is not None
        # A gradient without a graph means a backward ran outside autograd (a custom Function's
        # backward under no_grad, once_differentiable with constant incoming gradients): its second
        # derivative terms would be silently dropped. (A weight whose gradient is truly constant
        # lands here too; the fallback engines handle it, correctly and slower.)
        detached = [n for n, g in zip(self.weight_names, self._gradient, strict=True) if not g.requires_grad]
        if detached:
            raise RuntimeError(
                f"double backward not supported: the gradient of {', '.join(detached[:4])} has no graph "
                "(a backward computed outside autograd, e.g. a once_differentiable custom Function)"
            )
        return list(
            torch.autograd.grad(
                self._gradient,
                self.weights,
                grad_outputs=probes,
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
        )


class RewrittenDoubleBackwardEngine(DoubleBackwardEngine):
    """`DoubleBackwardEngine` with the forward pass under `TwiceDifferentiableRewrites`."""

    name: ClassVar[str] = "double-backward-rewritten"

    def _forward_context(self) -> contextlib.AbstractContextManager[Any]:
        return TwiceDifferentiableRewrites()


# --------------------------------------------------------------------------------------------------
# Helpers


def _parameter_names(model: nn.Module, weights: Sequence[torch.Tensor]) -> list[str]:
    """The name of each weight among ``model``'s parameters (by identity)."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = []
    for index, weight in enumerate(weights):
        name = by_id.get(id(weight))
        if name is None:
            raise ValueError(f"weight {index} (shape {tuple(weight.shape)}) is not a parameter of the model")
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError("a weight is listed twice")
    return names


def _delayed_error_node(tensors: Sequence[torch.Tensor]) -> str | None:
    """The name of a ``torch::autograd::Error`` node in the graph of ``tensors``, if any.

    ``once_differentiable`` backward functions, differentiated with ``create_graph=True``, return
    outputs behind a ``DelayedError`` node whose own inputs carry no graph. Autograd prunes that node
    from every later backward (no path leads from it to the weights), so instead of raising its
    "differentiate twice" error it contributes nothing: the HVP is silently wrong. Ops whose
    derivative is missing appear as ``torch::autograd::NotImplemented`` and raise on their own.
    """
    seen: set[Any] = set()
    stack: list[Any] = [t.grad_fn for t in tensors if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() in ("torch::autograd::Error", "torch::autograd::DelayedError"):
            return node.name()
        stack.extend(child for child, _ in node.next_functions)
    return None

"""Per-channel Hessian traces by Hutchinson's estimator (HAP, arXiv 2101.08940; PyHessian's ``trace``).

For a loss L and weights w, Tr(H_cc) of the diagonal block of output channel c is estimated as the
mean over Rademacher probes v (i.i.d. ±1 entries) of ``v_cᵀ (Hv)_c``: E[vvᵀ] = I, so cross-block
terms vanish in expectation. **One** Hessian-vector product per probe (a double backward through the
gradient, kept with its graph) yields the records of every channel at once; no per-channel HVPs.

Protocol (METHODS.md §2.1): the model in eval mode (batch norm uses its running statistics); only
Conv2d and Linear *weights* (and those of layer types with a registered filter handler) take part
(biases and batch-norm parameters are constants); the loss is the mean over a fixed set of
calibration images (the prune workflow's first ``--calibration`` training images, 512 by default);
probes come from the caller's explicit generator. Probing stops at ``probes`` (default 100) or
earlier, once at least ``min_probes`` were drawn and the relative change ‖m_k − m_{k−1}‖ / ‖m_{k−1}‖
of the vector m_k of running means falls under ``tolerance`` (PyHessian's rule, applied to the
per-channel estimates). The standard error of each estimate (sample std / √k) is returned with it.

The model is not modified: the work happens on a copy with masks baked in and contiguous memory
(double backward through channels-last convolutions was 2× slower here).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from secateurs.errors import StructureError
from secateurs.layers import LayerHandler, handler_for, weight_layers
from secateurs.runtime.distributed import current_world, sum_over_items
from secateurs.scoring.base import LossFn
from secateurs.scoring.hvp_select import DEFAULT_ORDER, STEP_CHECK_LIMIT, select_engine
from secateurs.sparsity.masks import baked_copy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HutchinsonConfig:
    probes: int = 100
    min_probes: int = 10
    tolerance: float = 1e-3
    engine: str = "auto"
    """``auto`` (`hvp_select.select_engine` in its default order) or one engine's name."""
    probe_seed: int | None = None
    """The probe stream's own seed (see `probe_stream_base`); None: drawn from the caller's generator."""


def probe_stream_base(probe_seed: int, probes: int) -> int:
    """The base seed of probe stream (``probe_seed``, ``probes``): probe i uses base + i.

    The maximum probe count is part of the key, so runs with different budgets (100 and 400 probes)
    draw disjoint, independent streams even with the same ``probe_seed``; the stream does not depend
    on the model seed. SHA-256 of the pair, truncated to 62 bits (room for base + i in torch's 64).
    """
    digest = hashlib.sha256(f"secateurs-hutchinson/{probe_seed}/{probes}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


@dataclass
class ChannelTraces:
    """Trace estimates per output channel of every Conv2d/Linear leaf, keyed by layer name."""

    traces: dict[str, torch.Tensor]
    standard_errors: dict[str, torch.Tensor]
    probes: int
    seconds: float
    hvp_seconds: float
    changes: list[float] = field(default_factory=list)
    """Relative change of the running means after each probe (from the second on)."""
    setup_seconds: float = 0.0
    """Copying the model and building the gradient with its graph (a plain HVP loop needs it too)."""
    engine: str = "double-backward"
    """The HVP engine used (`scoring.hvp_select`)."""
    engine_reason: str = ""
    """Why: the one log line of the engine selection."""
    probe_seed: int | None = None


def hessian_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf filter layers (Conv2d, Linear, registered custom ones) whose weights enter the Hessian,
    in module order (a neural implant enters through its two leaf convolutions)."""
    return [(name, module) for name, module, _ in weight_layers(model)]


def layer_weights(layers: Sequence[tuple[str, nn.Module]]) -> list[torch.Tensor]:
    """The weight of each layer, as its handler reads it."""
    return [_handler(module).weight(module) for _, module in layers]


def rademacher(shape: torch.Size, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of i.i.d. ±1 entries drawn from ``generator``."""
    return torch.randint(0, 2, tuple(shape), generator=generator).to(dtype).mul_(2).sub_(1)


def prepared_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy with masks baked in and contiguous parameters (``model`` untouched)."""
    work = baked_copy(model)
    with torch.no_grad():
        for tensor in [*work.parameters(), *work.buffers()]:
            tensor.data = tensor.data.contiguous()
    work.eval()
    return work


def mean_loss_gradient(
    model: nn.Module,
    weights: Sequence[torch.Tensor],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
) -> tuple[torch.Tensor, ...]:
    """Gradient of the mean loss over all ``batches`` w.r.t. ``weights``, with its graph kept."""
    total = sum(len(targets) for _, targets in batches)
    loss = torch.zeros(())
    for inputs, targets in batches:
        loss = loss + loss_fn(model(inputs.contiguous()), targets) * (len(targets) / total)
    return torch.autograd.grad(loss, list(weights), create_graph=True)


def hutchinson_channel_traces(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    generator: torch.Generator,
    config: HutchinsonConfig = HutchinsonConfig(),
) -> ChannelTraces:
    """Hutchinson estimates of Tr(H_cc) for every output channel c of every Conv2d/Linear leaf.

    Probe ``i`` is drawn from its own generator, seeded with base + ``i``: the base is
    `probe_stream_base` of ``config.probe_seed`` when it is set, else one number drawn from
    ``generator``. The HVP engine is ``config.engine`` or, for ``auto``, the first of
    `hvp_select.DEFAULT_ORDER` that supports the model (tried on probe 0, whose product is kept; one
    log line says which and why). Finite differences whose step check fails (gradient kinks dominate:
    piecewise-linear activations) are refused with a `StructureError` rather than returning noise.
    Under torchrun the probes are split across ranks (`distributed.sum_over_items`: each
    rank runs its share of every round, the sums are all-reduced) and the estimate is the one a
    single process computes with the same rounds. A round is one probe per process; the running
    means are checked for convergence after every round, alike on every rank.
    """
    started = time.perf_counter()
    world = current_world()
    if config.probe_seed is not None:
        base_seed = probe_stream_base(config.probe_seed, config.probes)
    else:
        base_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    work = prepared_copy(model)
    layers = hessian_layers(work)
    weights = layer_weights(layers)
    sizes = [w.shape[0] for w in weights]
    hvp_seconds = 0.0

    def probe(item: int) -> list[torch.Tensor]:
        probe_generator = torch.Generator().manual_seed(base_seed + item)  # host: one stream on every device
        return [rademacher(w.shape, probe_generator, w.dtype).to(w.device) for w in weights]

    def probe_sums(items: range) -> dict[str, torch.Tensor]:
        nonlocal hvp_seconds
        sums = torch.zeros(sum(sizes), dtype=torch.float64, device=weights[0].device)
        squares = torch.zeros_like(sums)
        for item in items:
            probes = probe(item)
            hvp_started = time.perf_counter()
            products = first_product if item == 0 else engine.hvp(probes)
            hvp_seconds += time.perf_counter() - hvp_started
            records = torch.cat(
                [
                    _rows(module, probe * product).sum(1)
                    for (_, module), probe, product in zip(layers, probes, products, strict=True)
                ]
            ).to(torch.float64)
            sums += records
            squares += records * records
        return {"sums": sums, "squares": squares}

    contiguous = [(inputs.contiguous(), targets) for inputs, targets in batches]
    order = DEFAULT_ORDER if config.engine == "auto" else (config.engine,)
    selection = select_engine(work, weights, contiguous, loss_fn, probe(0), order=order)
    if selection.step_check is not None and selection.step_check > STEP_CHECK_LIMIT:
        selection.engine.close()
        raise StructureError(
            f"Hessian traces: {selection.reason}; finite differences are unreliable here and no exact engine "
            "supports the model"
        )
    log.info("%s", selection.reason)
    engine, first_product = selection.engine, selection.product
    with torch.enable_grad():
        setup_seconds = time.perf_counter() - started
        total = torch.zeros(sum(sizes), dtype=torch.float64, device=weights[0].device)
        squares = torch.zeros_like(total)
        previous: torch.Tensor | None = None
        changes: list[float] = []
        count = 0
        while count < config.probes:
            size = min(world.size, config.probes - count)
            round_sums = sum_over_items(size, probe_sums, world, first=count)
            total += round_sums["sums"]
            squares += round_sums["squares"]
            count += size
            means = total / count
            if previous is not None:
                change = float((means - previous).norm() / previous.norm().clamp_min(1e-30))
                changes.append(change)
                if count >= config.min_probes and change < config.tolerance:
                    break
            previous = means
    engine.close()
    means = total / count
    variance = (squares / count - means * means).clamp_min(0.0) * (count / max(count - 1, 1))
    errors = (variance / count).sqrt()
    names = [name for name, _ in layers]
    return ChannelTraces(
        traces=dict(zip(names, means.split(sizes), strict=True)),
        standard_errors=dict(zip(names, errors.split(sizes), strict=True)),
        probes=count,
        seconds=time.perf_counter() - started,
        hvp_seconds=hvp_seconds,
        changes=changes,
        setup_seconds=setup_seconds,
        engine=selection.name,
        engine_reason=selection.reason,
        probe_seed=config.probe_seed,
    )


def _rows(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (shaped like the leaf's weight) as one row per output channel."""
    index = torch.arange(tensor.shape[0])
    return _handler(module).rows(module, tensor, index, "out")


def _handler(module: nn.Module) -> LayerHandler[Any]:
    handler = handler_for(module)
    assert handler is not None  # hessian_layers yields handled layers only
    return handler


def exact_channel_traces(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
) -> dict[str, torch.Tensor]:
    """Exact Tr(H_cc) per output channel by one unit-vector HVP per weight entry (tiny models only)."""
    work = prepared_copy(model)
    layers = hessian_layers(work)
    weights = layer_weights(layers)
    result: dict[str, torch.Tensor] = {}
    with torch.enable_grad():
        gradient = mean_loss_gradient(work, weights, batches, loss_fn)
        for index, ((name, _), weight) in enumerate(zip(layers, weights, strict=True)):
            diagonal = torch.zeros(weight.numel(), dtype=torch.float64)
            for entry in range(weight.numel()):
                unit = [torch.zeros_like(w) for w in weights]
                unit[index].view(-1)[entry] = 1.0
                column = torch.autograd.grad(gradient, weights, grad_outputs=unit, retain_graph=True)[index]
                diagonal[entry] = float(column.reshape(-1)[entry])
            result[name] = diagonal.reshape(weight.shape[0], -1).sum(1)
    return result


def hvp_baseline_seconds(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    generator: torch.Generator,
    count: int,
) -> float:
    """Seconds for the gradient graph plus ``count`` plain HVPs with Rademacher vectors (the benchmark
    reference for `hutchinson_channel_traces`: same copy, same data, nothing per channel)."""
    started = time.perf_counter()
    work = prepared_copy(model)
    weights = layer_weights(hessian_layers(work))
    with torch.enable_grad():
        gradient = mean_loss_gradient(work, weights, batches, loss_fn)
        for _ in range(count):
            probes = [rademacher(w.shape, generator, w.dtype) for w in weights]
            torch.autograd.grad(gradient, weights, grad_outputs=probes, retain_graph=True)
    return time.perf_counter() - started


def relative_standard_error(traces: ChannelTraces) -> float:
    """Median over channels of standard error / |estimate| (the spread the run records)."""
    ratios = [
        (error / trace.abs().clamp_min(1e-30))
        for trace, error in zip(traces.traces.values(), traces.standard_errors.values(), strict=True)
    ]
    joined = torch.cat(ratios) if ratios else torch.zeros(1)
    value = float(joined.median())
    return value if math.isfinite(value) else float("inf")

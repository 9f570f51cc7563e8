"""Information flow and gradient flow between consecutive layers (InfCoP, METHODS.md §3.2-3.3).

Information flow. For consecutive flow layers l, l+1 (Conv2d/Linear modules in registration order,
shortcut/downsample convolutions excluded, skips ignored) take each layer's *pre-activation* output
(the module's own output: before BN and ReLU); a conv output is averaged over its spatial positions,
one value per channel and example. Standardise every unit over the N examples (mean, population std
floored at 1e-6) and form the Pearson cross-correlation matrix

    C_l = (1/N) Σ_n z_l(n) z_{l+1}(n)ᵀ        (units_l × units_{l+1}).

The flow of the pair is ρ_l = mean of the entries of C_l (``signed``, the released stopping rule) or
the mean of their absolute values (``absolute``, the lab's earlier connectivity measure); with
``per_class`` the statistics are computed within each class and averaged over classes. The flow
vector is φ = (ρ_1, …, ρ_{L−1}).

Gradient flow. g_l = mean over the probe batches of ‖∇_{W_l} L ⊙ M_l‖₂ for every flow layer, from
real backward passes (the released code read the stale ``.grad`` of the last training mini-batch
and compared a norm vector against a mean vector; this is the fix METHODS.md §3.3 recommends).
The gradient is taken with respect to the raw parameter under the mask, which *is* ∇W ⊙ M.

Both are measured in eval mode on a fixed `FlowProbe` (a subset of the validation split, not the
whole training set as in the released code); neither changes the model, its ``.grad`` or any RNG.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from secateurs.data.loader import BatchLoader, Normalization
from secateurs.data.types import Splits
from secateurs.errors import UsageError
from secateurs.sparsity.masks import MaskStore

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
STD_FLOOR = 1e-6
EXCLUDED_FROM_FLOW = ("downsample", "shortcut")
"""Modules whose name contains one of these are not flow layers (the released code skips "downsample")."""


# ------------------------------------------------------------------------------------ pure math
def standardize(values: torch.Tensor) -> torch.Tensor:
    """(x − mean) / max(std, 1e-6) per column of an N×U matrix (population std), in float64."""
    values = values.to(torch.float64)
    mean = values.mean(dim=0, keepdim=True)
    std = values.std(dim=0, unbiased=False, keepdim=True).clamp_min(STD_FLOOR)
    return (values - mean) / std


def pearson_cross_correlation(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """C = Z₁ᵀ Z₂ / N for N×U and N×V activations: the U×V matrix of Pearson correlations."""
    if first.dim() != 2 or second.dim() != 2 or first.shape[0] != second.shape[0]:
        raise UsageError(
            f"activations must be N×U and N×V with the same N, got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    return standardize(first).T @ standardize(second) / first.shape[0]


def pair_flow(first: torch.Tensor, second: torch.Tensor, *, absolute: bool = False) -> float:
    """ρ: the mean (or mean absolute) Pearson correlation between the units of two layers."""
    correlation = pearson_cross_correlation(first, second)
    return float((correlation.abs() if absolute else correlation).mean())


def flow_vector(
    activations: Sequence[torch.Tensor],
    *,
    labels: torch.Tensor | None = None,
    absolute: bool = False,
    per_class: bool = False,
) -> torch.Tensor:
    """φ = (ρ_1, …, ρ_{L−1}) for per-layer N×units activations (float64 vector of length L−1).

    ``per_class`` averages the vectors computed within each class of ``labels`` (classes with fewer
    than two examples are skipped: a correlation needs two).
    """
    if len(activations) < 2:
        raise UsageError(f"a flow vector needs at least two layers, got {len(activations)}")
    if not per_class:
        return torch.tensor([pair_flow(a, b, absolute=absolute) for a, b in pairwise(activations)], dtype=torch.float64)
    if labels is None:
        raise UsageError("per-class flow needs the labels of the examples")
    vectors = []
    for label in torch.unique(labels):
        chosen = labels == label
        if int(chosen.sum()) >= 2:
            vectors.append(flow_vector([a[chosen] for a in activations], absolute=absolute))
    if not vectors:
        raise UsageError("per-class flow needs at least two examples of some class")
    return torch.stack(vectors).mean(dim=0)


def flow_distance(current: torch.Tensor, reference: torch.Tensor, *, relative: bool = False) -> float:
    """‖φ − φ_ref‖₂, or divided by ‖φ_ref‖₂ when ``relative`` (NaN entries give NaN)."""
    if current.shape != reference.shape:
        raise UsageError(f"flow vectors differ in length: {tuple(current.shape)} vs {tuple(reference.shape)}")
    distance = float(torch.linalg.vector_norm((current - reference).to(torch.float64)))
    if not relative:
        return distance
    scale = float(torch.linalg.vector_norm(reference.to(torch.float64)))
    return distance / scale if scale > 0 else float("inf")


# ----------------------------------------------------------------------------------- the probe
@dataclass(frozen=True)
class FlowProbe:
    """The fixed examples every flow measurement of a run uses (normalised, in fixed batches)."""

    batches: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def size(self) -> int:
        return sum(int(y.numel()) for _, y in self.batches)

    @property
    def labels(self) -> torch.Tensor:
        return torch.cat([y for _, y in self.batches])


def validation_probe(splits: Splits, size: int, batch_size: int = 500, *, channels_last: bool = False) -> FlowProbe:
    """The first ``size`` images of the validation split; more than the split holds is an error."""
    available = len(splits.val)
    if size < 2 or size > available:
        raise UsageError(f"flow subset must hold 2 to {available} validation images (the split's size), got {size}")
    normalization = Normalization(splits.dataset.mean, splits.dataset.std)
    loader = BatchLoader(splits.val.subset(slice(0, size)), batch_size, normalization, channels_last=channels_last)
    return FlowProbe(tuple(loader))


def flow_layers(model: nn.Module, weight_names: Sequence[str]) -> list[str]:
    """Module names of the flow layers among ``weight_names`` (``a.weight`` → ``a``), in model order.

    Raises `UsageError` when fewer than two remain: a flow needs a pair of consecutive layers.
    """
    wanted = {name.rsplit(".", 1)[0] for name in weight_names if name.endswith(".weight")}
    layers = [
        name
        for name, module in model.named_modules()
        if name in wanted
        and isinstance(module, nn.Conv2d | nn.Linear)
        and not any(part in name for part in EXCLUDED_FROM_FLOW)
    ]
    if len(layers) < 2:
        raise UsageError(
            f"flow needs at least two prunable Conv2d/Linear layers (consecutive pairs); the model has "
            f"{len(layers)}: {', '.join(layers) or 'none'}"
        )
    return layers


# -------------------------------------------------------------------------------- measurements
@dataclass(frozen=True)
class FlowMeasurement:
    """A flow vector, the probe accuracy seen on the way, and the seconds the measurement took."""

    values: torch.Tensor
    accuracy: float
    seconds: float


def _unit_outputs(output: torch.Tensor) -> torch.Tensor:
    """N×units: conv maps averaged over space, other outputs flattened after the first dimension."""
    if output.dim() == 4:
        return output.detach().mean(dim=(2, 3))
    return output.detach().reshape(output.shape[0], -1)


@torch.no_grad()
def collect_preactivations(
    model: nn.Module, layers: Sequence[str], probe: FlowProbe
) -> tuple[list[torch.Tensor], float]:
    """Per-layer N×units outputs of ``layers`` over the probe (eval mode), and the probe accuracy."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda _module, _inputs, output, name=name: outputs[name].append(_unit_outputs(output))
        )
        for name in layers
    ]
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for x, y in probe.batches:
            correct += int((model(x).argmax(dim=1) == y).sum())
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return [torch.cat(outputs[name]) for name in layers], correct / probe.size


def information_flow(
    model: nn.Module, layers: Sequence[str], probe: FlowProbe, *, absolute: bool = False, per_class: bool = False
) -> FlowMeasurement:
    """φ of ``model`` on ``probe`` (see the module docstring). The model is not changed."""
    started = time.perf_counter()
    activations, accuracy = collect_preactivations(model, layers, probe)
    values = flow_vector(activations, labels=probe.labels, absolute=absolute, per_class=per_class)
    return FlowMeasurement(values, accuracy, time.perf_counter() - started)


def gradient_flow(
    model: nn.Module, layers: Sequence[str], probe: FlowProbe, loss_fn: LossFn = nn.functional.cross_entropy
) -> FlowMeasurement:
    """g_l = mean over probe batches of ‖∇_{W_l} L ⊙ M_l‖₂ (real backward passes, eval mode).

    Uses `torch.autograd.grad`, so no ``.grad`` attribute is written; the model is not changed.
    """
    started = time.perf_counter()
    store = MaskStore.attached(model)
    parameters = [store.original(f"{name}.weight") for name in layers]
    totals = torch.zeros(len(layers), dtype=torch.float64)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.enable_grad():
            for x, y in probe.batches:
                logits = model(x)
                correct += int((logits.detach().argmax(dim=1) == y).sum())
                gradients = torch.autograd.grad(loss_fn(logits, y), parameters, allow_unused=True)
                totals += torch.tensor(
                    [0.0 if g is None else float(torch.linalg.vector_norm(g.to(torch.float64))) for g in gradients],
                    dtype=torch.float64,
                )
    finally:
        model.train(was_training)
    return FlowMeasurement(totals / len(probe.batches), correct / probe.size, time.perf_counter() - started)


FLOW_KINDS = ("information", "gradient")


def measure_flow(
    kind: str,
    model: nn.Module,
    layers: Sequence[str],
    probe: FlowProbe,
    *,
    absolute: bool = False,
    per_class: bool = False,
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> FlowMeasurement:
    """Dispatch on ``kind``: ``information`` (φ, length L−1) or ``gradient`` (g, length L, of ``loss_fn``)."""
    if kind == "information":
        return information_flow(model, layers, probe, absolute=absolute, per_class=per_class)
    if kind == "gradient":
        return gradient_flow(model, layers, probe, loss_fn)
    raise UsageError(f"unknown flow {kind!r}; accepted: {', '.join(FLOW_KINDS)}")

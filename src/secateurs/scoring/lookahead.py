"""Lookahead pruning scores (Park, Lee, Mo, Shin, "Lookahead: A Far-Sighted Alternative of
Magnitude-based Pruning", ICLR 2020, arXiv 2002.04809; METHODS.md §1).

For weight w = W_i[j, k] (output unit j, input unit k of layer i), removing w alone changes the
linear three-layer operator W_{i+1} W_i W_{i−1} by the rank-one matrix w · W_{i+1}[:, j] W_{i−1}[k, :],
so the distortion is exactly

    L(w) = |w| · ‖W_{i−1}[k, :]‖₂ · ‖W_{i+1}[:, j]‖₂.

The score returned here is its square, w² · prev_k · next_j with squared norms (as the released code
ranks; the order is identical, and LAP-global normalises these squared scores). Conventions:

* conv layers use whole filters: prev_k = ‖W_{i−1}[k, :, :, :]‖², next_j = ‖W_{i+1}[:, j, :, :]‖²
  (all output channels, all taps); grouped convs read channel k through their group only;
* a Linear after a flatten reads channel c as features c·HW … (c+1)·HW − 1: its prev factor for
  feature f is the producer's filter norm of channel ⌊f / HW⌋, and the conv's next factor for channel
  j sums the Linear's squared columns of its HW features;
* several producers/consumers (found in the real graph, `scoring.neighbours`) add up; skip paths
  and the network's input/output count 1 (first layer: prev = 1; last layer: next = 1);
* LAP-BN multiplies every path by s² for each BatchNorm on it, s = γ / √(running_var + eps) (the
  BN's own eps; the released code adds 1e-10 instead; β and running_mean are ignored);
* neighbour norms use the current (masked) weights, so pruned entries contribute 0.

The functions below are pure (tensors in, tensors out); `lookahead_scores` puts them together for a
dictionary of weights, so sequential variants can re-score with already-pruned neighbours.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from secateurs.errors import StructureError
from secateurs.scoring.activation import activation_probabilities, row_multipliers, scaled_layers, scaled_weights
from secateurs.scoring.base import ScoreContext, register_scorer, weight
from secateurs.scoring.neighbours import Neighbours, Path, Topology, discover, iter_paths, layer_paths

log = logging.getLogger(__name__)


def row_norms(weight: torch.Tensor) -> torch.Tensor:
    """Squared norm of each output unit's incoming weights (a row, or a whole conv filter): (C_out,)."""
    return weight.detach().reshape(weight.shape[0], -1).square().sum(dim=1)


def column_norms(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Squared norm of everything that reads each input unit (a column; all filters and taps): (C_in,).

    For a grouped conv (weight C_out × C_in/G × kh × kw) input channel g·C_in/G + k is read only by
    the C_out/G filters of group g.
    """
    grouped = weight.detach().reshape(groups, weight.shape[0] // groups, weight.shape[1], -1)
    return grouped.square().sum(dim=(1, 3)).reshape(-1)


def expand_channels(values: torch.Tensor, length: int, what: str) -> torch.Tensor:
    """Repeat each channel's value over its ``length / len(values)`` consecutive features (flatten order)."""
    if length % values.numel() != 0:
        raise StructureError(f"{what}: {values.numel()} channels cannot map onto {length} features")
    return values.repeat_interleave(length // values.numel())


def batch_norm_scale(module: nn.Module) -> torch.Tensor:
    """s = γ / √(running_var + eps) of a BatchNorm in eval mode (γ = 1 without affine parameters)."""
    if not isinstance(module, nn.modules.batchnorm._BatchNorm):
        raise StructureError(f"expected a BatchNorm module, found {type(module).__name__}")
    if module.running_var is None:
        raise StructureError("LAP-BN needs BatchNorm running statistics (track_running_stats=True)")
    scale = 1.0 / torch.sqrt(module.running_var.detach() + module.eps)
    return scale * module.weight.detach() if module.weight is not None else scale


def path_scale(path: Path, length: int, scales: Mapping[str, torch.Tensor] | None) -> torch.Tensor | float:
    """Π s² of the BatchNorms on ``path``, expanded to ``length`` features (1 without LAP-BN)."""
    if scales is None or not path.batch_norms:
        return 1.0
    product = torch.ones(length, dtype=torch.float64)
    for name in path.batch_norms:
        product = product * expand_channels(scales[name].to(torch.float64), length, f"BatchNorm {name}").pow(2)
    return product


def identity_scale(path: Path, channels: int, scales: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
    """Π s² per output channel along an identity path (a BN after a flatten: mean over the channel's features)."""
    factor = torch.ones(channels, dtype=torch.float64)
    for name in path.batch_norms if scales is not None else ():
        squares = scales[name].to(torch.float64).pow(2)  # type: ignore[index]
        if squares.numel() % channels != 0:
            raise StructureError(f"BatchNorm {name}: {squares.numel()} features do not map onto {channels} channels")
        factor = factor * squares.reshape(channels, -1).mean(dim=1)
    return factor


def in_features(weight: torch.Tensor, groups: int) -> int:
    return int(weight.shape[1]) * groups


def previous_factor(
    name: str,
    paths: Sequence[Path],
    weights: Mapping[str, torch.Tensor],
    groups: Mapping[str, int],
    scales: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Σ over producer paths of the producer's squared row norms, per input feature of ``name``: (C_in,)."""
    length = in_features(weights[name], groups.get(name, 1))
    total = torch.zeros(length, dtype=torch.float64)
    for path in paths:
        if path.layer is None:
            base = torch.ones(length, dtype=torch.float64)
        else:
            norms = row_norms(weights[path.layer]).to(torch.float64)
            _check_mapping(path, norms.numel(), length, path.layer, name)
            base = expand_channels(norms, length, f"{path.layer} → {name}")
        total = total + base * path_scale(path, length, scales)
    return total


def following_factor(
    name: str,
    paths: Sequence[Path],
    weights: Mapping[str, torch.Tensor],
    groups: Mapping[str, int],
    scales: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Σ over consumer paths of the consumer's squared column norms, per output channel of ``name``: (C_out,)."""
    channels = int(weights[name].shape[0])
    total = torch.zeros(channels, dtype=torch.float64)
    for path in paths:
        if path.layer is None:
            total = total + identity_scale(path, channels, scales)
            continue
        norms = column_norms(weights[path.layer], groups.get(path.layer, 1)).to(torch.float64)
        _check_mapping(path, channels, norms.numel(), name, path.layer)
        values = norms * path_scale(path, norms.numel(), scales)
        total = total + values.reshape(channels, -1).sum(dim=1)
    return total


def _check_mapping(path: Path, channels: int, features: int, producer: str, consumer: str) -> None:
    if features == channels or (path.flattened and features % channels == 0):
        return
    raise StructureError(
        f"lookahead pruning cannot relate {producer} ({channels} output channels) to {consumer} "
        f"({features} input features){'' if path.flattened else ' without a flatten between them'}"
    )


def layer_scores(
    weight: torch.Tensor, previous: torch.Tensor, following: torch.Tensor, groups: int = 1
) -> torch.Tensor:
    """w² · prev[input unit] · next[output unit] for every entry of ``weight`` (same shape).

    ``previous`` has one value per input feature of the layer (C_in, all groups), ``following`` one
    per output unit (C_out). Computed in the weight's precision (float32 at least; float64 weights
    give float64 scores), with one full-size allocation.
    """
    dtype = torch.promote_types(weight.dtype, torch.float32)
    out_channels, in_per_group = int(weight.shape[0]), int(weight.shape[1])
    taps = [1] * (weight.dim() - 2)
    if groups == 1:
        per_input = previous.to(dtype).reshape(1, in_per_group, *taps)
    else:
        per_input = previous.to(dtype).reshape(groups, in_per_group).repeat_interleave(out_channels // groups, dim=0)
        per_input = per_input.reshape(out_channels, in_per_group, *taps)
    scores = weight.detach().to(dtype).square()
    return scores.mul_(following.to(dtype).reshape(-1, 1, *taps)).mul_(per_input)


def lookahead_scores(
    names: Sequence[str],
    weights: Mapping[str, torch.Tensor],
    topology: Topology,
    groups: Mapping[str, int],
    scales: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Squared LAP scores of ``names`` from ``weights`` (every Conv2d/Linear weight, current values)."""
    scores = {}
    for name in names:
        neighbours: Neighbours = layer_paths(topology, name)
        previous = previous_factor(name, neighbours.previous, weights, groups, scales)
        following = following_factor(name, neighbours.following, weights, groups, scales)
        scores[name] = layer_scores(weights[name], previous, following, groups.get(name, 1))
    return scores


def module_name(parameter: str) -> str:
    return parameter.rpartition(".")[0]


def layer_weights(model: nn.Module, topology: Topology) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The current (masked) weight of every Conv2d/Linear layer, keyed by module name, and their groups."""
    weights, groups = {}, {}
    for name in topology.layers:
        module = model.get_submodule(name)
        weights[name] = weight(model, f"{name}.weight").detach()
        groups[name] = int(getattr(module, "groups", 1))
    return weights, groups


def batch_norm_scales(model: nn.Module, topology: Topology) -> dict[str, torch.Tensor]:
    """s = γ/√(running_var + eps) of every BatchNorm on a neighbour path."""
    names = {bn for n in topology.layers.values() for p in (*n.previous, *n.following) for bn in p.batch_norms}
    return {name: batch_norm_scale(model.get_submodule(name)) for name in sorted(names)}


def check_relations(topology: Topology, names: Sequence[str], on_unrelated: str, info: dict[str, object]) -> None:
    """Raise (``error``) or log (``identity``) the paths LAP cannot relate; notes go into ``info``."""
    modules = [m for m in dict.fromkeys(module_name(n) for n in names) if m in topology.layers]
    sides = {"previous": "input side", "following": "output side"}
    relevant = [
        f"{m} ({sides[side]}): {path.reason}"
        for m in modules
        for side, path in iter_paths(topology.layers[m])
        if path.kind == "unrelated"
    ]
    if all(path.kind == "boundary" for m in modules for _, path in iter_paths(topology.layers[m])):
        log.warning("lookahead pruning: no layer has a Conv2d/Linear neighbour; the scores reduce to magnitude²")
        info["lap_no_neighbours"] = True
    if not relevant:
        return
    if on_unrelated == "error":
        raise StructureError(f"lookahead pruning cannot relate {relevant[0]} (set on_unrelated=identity to use 1)")
    log.warning("lookahead pruning counts %d unrelatable path(s) as identity: %s", len(relevant), "; ".join(relevant))
    info["lap_unrelated_as_identity"] = relevant


@dataclass(frozen=True)
class LookaheadInputs:
    """Everything `lookahead_scores` needs, keyed by module name; ``weights`` may be LAP-act-scaled."""

    topology: Topology
    weights: dict[str, torch.Tensor]
    groups: dict[str, int]
    scales: dict[str, torch.Tensor] | None
    modules: list[str]
    """The module of each scored parameter, in the order of ``names``."""


def prepare(
    model: nn.Module,
    names: Sequence[str],
    context: ScoreContext,
    *,
    with_batch_norm: bool = False,
    with_activation: bool = False,
    on_unrelated: str = "identity",
    cache: bool = True,
) -> LookaheadInputs:
    """Trace (or recall) the neighbours, read the weights, BN scales and (LAP-act) row multipliers.

    Diagnostics go into ``context.info``; the model is not changed.
    """
    topology = discover(model, context.example_inputs, cache=cache)
    modules = [_checked_module(topology, name) for name in names]
    check_relations(topology, names, on_unrelated, context.info)
    weights, groups = layer_weights(model, topology)
    scales = batch_norm_scales(model, topology) if with_batch_norm else None
    if with_activation:
        layers = scaled_layers(topology)
        own = {name: topology.layers[name].batch_norm for name in layers}
        probabilities = activation_probabilities(model, layers, own, context.require_batches("lap-act"))
        weights = scaled_weights(weights, row_multipliers(probabilities))
        context.info["lap_act_mean_probability"] = {name: float(p.mean()) for name, p in probabilities.items()}
    return LookaheadInputs(topology, weights, groups, scales, modules)


def score_model(
    model: nn.Module,
    names: Sequence[str],
    context: ScoreContext,
    *,
    with_batch_norm: bool = False,
    with_activation: bool = False,
    on_unrelated: str = "identity",
    cache: bool = True,
) -> dict[str, torch.Tensor]:
    """LAP scores (with BN factors / LAP-act scaling on request) of the weights ``names``; model untouched."""
    inputs = prepare(
        model,
        names,
        context,
        with_batch_norm=with_batch_norm,
        with_activation=with_activation,
        on_unrelated=on_unrelated,
        cache=cache,
    )
    scores = lookahead_scores(inputs.modules, inputs.weights, inputs.topology, inputs.groups, inputs.scales)
    return {name: scores[module] for name, module in zip(names, inputs.modules, strict=True)}


def _checked_module(topology: Topology, parameter: str) -> str:
    module, _, tensor = parameter.rpartition(".")
    if tensor != "weight":
        raise StructureError(f"lookahead pruning scores Conv2d/Linear weights, not {parameter!r}")
    layer_paths(topology, module)
    return module


@register_scorer("lap", description="lookahead: w² · ‖producer rows‖² · ‖consumer columns‖² (Park et al. 2020)")
def lap_scores(model: nn.Module, names: Sequence[str], context: ScoreContext) -> dict[str, torch.Tensor]:
    """Squared LAP score w² · prev_k · next_j (module docstring); returns new float64 tensors."""
    return score_model(model, names, context)


@register_scorer("lap-bn", description="lookahead with each path scaled by its BatchNorms' (γ/σ)² (LAP-BN)")
def lap_bn_scores(model: nn.Module, names: Sequence[str], context: ScoreContext) -> dict[str, torch.Tensor]:
    """LAP-BN: the LAP score with every neighbour path multiplied by Π (γ/√(running_var + eps))²."""
    return score_model(model, names, context, with_batch_norm=True)


@register_scorer(
    "lap-act",
    description="lookahead on weights whose rows are scaled by √(activation probability) (LAP-act)",
    needs_data=True,
)
def lap_act_scores(model: nn.Module, names: Sequence[str], context: ScoreContext) -> dict[str, torch.Tensor]:
    """LAP-act: LAP on W_i with row j scaled by √p_{i,j} (Σ over positions for convs), p from ``context.batches``."""
    return score_model(model, names, context, with_activation=True)

"""Lookahead pruning, LAP (Park, Lee, Mo, Shin, "Lookahead: A Far-Sighted Alternative of
Magnitude-based Pruning", ICLR 2020, arXiv 2002.04809, https://arxiv.org/abs/2002.04809).

Magnitude pruning keeps the weights whose removal distorts each layer least. LAP looks one layer
back and one ahead: removing w = W_i[j, k] alone changes the linear operator W_{i+1} W_i W_{i−1} by
exactly |w| · ‖W_{i−1}[k, :]‖ · ‖W_{i+1}[:, j]‖, so it keeps the weights with the largest such
distortion (the square is ranked; `scoring.lookahead` has the formula and conventions). It needs no
data, and it helps most at high sparsity, where magnitude pruning cuts the paths through a unit
from both sides.

Variants (METHODS.md §1.3), each a registered method: ``lap`` (all layers scored from the same
weights), ``lap-forward`` / ``lap-backward`` (sequential, first → last / last → first: each layer is
masked before the next one is scored, so already-pruned neighbours contribute 0), ``lap-bn``
(neighbour paths scaled by their BatchNorms' (γ/σ)²), ``lap-act`` (rows scaled by √ activation
probability, estimated on ``context.batches``), ``lap-global`` (each layer's squared scores divided
by their L2 norm, one global threshold, as the released ``lap_global_normalize``). Options combine
them (``order``, ``batch_norm``, ``activation``): e.g. ``lap`` with ``{order: forward, batch_norm:
true}`` is the released ``lap_forward_bn``. Per-layer targets: ``sparsity`` (one for every layer) or
the paper's rate protocol (``rates`` + ``rounds``, `methods.base.ScoreAndSelect`).

Deliberate deviations from the paper's released code (all documented in docs/lap.md):

* neighbours come from the traced graph, not from module order: a residual block's input is
  produced by every conv that writes into it plus a skip path counting 1 (`scoring.neighbours`);
* each BatchNorm is attached to the path it lies on, so a projection shortcut's BN never overwrites
  the factor of the block's last conv (the released quirk 7) and a flatten maps BN channels with the
  right divisor (quirk 8);
* LAP-BN uses the BN's own eps inside the square root (the code uses 1e-10);
* ops that LAP cannot relate (concat, gating products, …) count as identity with a logged warning,
  or raise with ``on_unrelated: error``; a model without any Conv2d/Linear neighbours (one layer)
  logs that LAP reduces to magnitude.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from secateurs.allocation.elements import select_layerwise
from secateurs.config import PruneConfig
from secateurs.errors import UsageError
from secateurs.methods.base import PruneContext, ScoreAndSelect, SelectionOptions, register_method
from secateurs.scoring.lookahead import LookaheadInputs, lookahead_scores, prepare
from secateurs.sparsity.granularity import granularity as lookup_granularity


class LookaheadOptions(SelectionOptions):
    """Options of every LAP method (the variants differ only in their defaults)."""

    order: Literal["joint", "forward", "backward"] = "joint"
    """``joint``: score all layers from the same weights; ``forward``/``backward``: sequentially."""
    batch_norm: bool = False
    """LAP-BN: multiply each neighbour path by the (γ/√(running_var + eps))² of its BatchNorms."""
    activation: bool = False
    """LAP-act: scale rows by √(activation probability) estimated on the calibration batches."""
    on_unrelated: Literal["identity", "error"] = "identity"
    """A path through an op LAP cannot relate: count it as identity (logged) or raise."""
    cache_graph: bool = True
    """Reuse the traced neighbour structure for models of the same structure."""


class ForwardOptions(LookaheadOptions):
    order: Literal["joint", "forward", "backward"] = "forward"


class BackwardOptions(LookaheadOptions):
    order: Literal["joint", "forward", "backward"] = "backward"


class BatchNormOptions(LookaheadOptions):
    batch_norm: bool = True


class ActivationOptions(LookaheadOptions):
    activation: bool = True


class Lookahead(ScoreAndSelect[LookaheadOptions]):
    """``lap``: squared LAP score w² · Σ‖producer rows‖² · Σ‖consumer columns‖², layer-wise."""

    name = "lap"
    description = "lookahead pruning: |w| × norms of the producing rows and consuming columns (layer-wise)"
    paper = "arXiv 2002.04809"
    scorer = "lap"

    def _prepare(
        self, model: nn.Module, names: Sequence[str], options: LookaheadOptions, context: PruneContext
    ) -> tuple[LookaheadInputs, dict[str, Any]]:
        score_context = context.score_context()
        inputs = prepare(
            model,
            names,
            score_context,
            with_batch_norm=options.batch_norm,
            with_activation=options.activation,
            on_unrelated=options.on_unrelated,
            cache=options.cache_graph,
        )
        return inputs, score_context.info

    def scores(
        self, model: nn.Module, names: Sequence[str], options: LookaheadOptions, context: PruneContext
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        inputs, info = self._prepare(model, names, options, context)
        scores = lookahead_scores(inputs.modules, inputs.weights, inputs.topology, inputs.groups, inputs.scales)
        return {name: scores[module] for name, module in zip(names, inputs.modules, strict=True)}, info

    def choose(
        self,
        model: nn.Module,
        names: Sequence[str],
        sparsity: float | dict[str, float],
        alive: dict[str, torch.Tensor],
        config: PruneConfig,
        options: LookaheadOptions,
        context: PruneContext,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], float]:
        """Joint: score then select. Forward/backward: score, mask and move on, one layer at a time."""
        if options.order == "joint":
            return super().choose(model, names, sparsity, alive, config, options, context)
        if self.scope(config) != "layerwise":
            raise UsageError(f"{self.name}: order {options.order!r} selects layer by layer; use scope 'layerwise'")
        started = time.perf_counter()
        inputs, info = self._prepare(model, names, options, context)
        parameter = dict(zip(inputs.modules, names, strict=True))
        order = [module for module in inputs.topology.order if module in parameter]
        if options.order == "backward":
            order.reverse()
        granularity = lookup_granularity(config.granularity)
        weights = dict(inputs.weights)
        chosen: dict[str, torch.Tensor] = {}
        for module in order:
            name = parameter[module]
            score = lookahead_scores([module], weights, inputs.topology, inputs.groups, inputs.scales)[module]
            target = sparsity[name] if isinstance(sparsity, dict) else sparsity
            mask = select_layerwise({name: score}, {name: target}, granularity, alive=alive, min_keep=config.min_keep)
            chosen[name] = mask[name]
            weights[module] = weights[module] * mask[name].to(weights[module].dtype)
        info = {**info, "lap_order": order}
        return chosen, info, time.perf_counter() - started


class LookaheadForward(Lookahead):
    """``lap-forward``: sequential first → last; layer i+1 sees layer i already pruned."""

    name = "lap-forward"
    description = "lookahead pruning, layers pruned first to last using the already-pruned previous layer"
    Options = ForwardOptions


class LookaheadBackward(Lookahead):
    """``lap-backward``: sequential last → first; layer i sees layer i+1 already pruned."""

    name = "lap-backward"
    description = "lookahead pruning, layers pruned last to first using the already-pruned next layer"
    Options = BackwardOptions


class LookaheadBatchNorm(Lookahead):
    """``lap-bn``: w² · s²_{i−1,k}‖W_{i−1}[k]‖² · s²_{i,j}‖W_{i+1}[:, j]‖², s = γ/√(running_var + eps)."""

    name = "lap-bn"
    description = "lookahead pruning with BatchNorm scales γ/σ on the neighbour norms (LAP-BN)"
    scorer = "lap-bn"
    Options = BatchNormOptions


class LookaheadActivation(Lookahead):
    """``lap-act``: LAP on W_i with row j scaled by √p_{i,j} (activation probability; Σ_positions for convs)."""

    name = "lap-act"
    description = "lookahead pruning on rows scaled by √(activation probability) from training data (LAP-act)"
    scorer = "lap-act"
    needs_data = True
    Options = ActivationOptions


class LookaheadGlobal(Lookahead):
    """``lap-global``: squared LAP scores divided by each layer's L2 norm, one global threshold."""

    name = "lap-global"
    description = "lookahead scores divided by each layer's L2 norm, one global threshold (scope normalized)"
    default_scope = "normalized"


for _method in (
    Lookahead(),
    LookaheadForward(),
    LookaheadBackward(),
    LookaheadBatchNorm(),
    LookaheadActivation(),
    LookaheadGlobal(),
):
    register_method(_method)

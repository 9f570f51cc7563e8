"""Which layers feed and read each Conv2d/Linear layer: the graph part of lookahead pruning.

LAP (Park et al. 2020, arXiv 2002.04809) scores a weight of layer i with the rows of the layer(s)
that *produce* its input channels and the columns of the layer(s) that *read* its output channels.
This module finds those neighbours in the real computation graph, traced by Torch-Pruning's
`DependencyGraph` (no tracer of our own), instead of assuming a chain in module-registration order.

A *path* links a layer to a neighbouring Conv2d/Linear layer through ops that keep channel identity:
BatchNorm (recorded, for LAP-BN), other normalisations and PReLU, unary element-wise ops (ReLU and
friends, pooling, global means over spatial dimensions, dropout, scalar add/mul), and reshapes
(flatten: a Linear after a flatten reads channel c as features ``c·HW … (c+1)·HW − 1``). A residual
``add``/``sub`` of several tensors is crossed once; a path that reaches a *second* one ends there as
a **skip** path (the identity of the residual stream: factor 1). So in a ResNet the input of a
block's first conv is produced by the previous block's last conv (through its BN and the add) *and*
by a skip path, whose linearised operator is ``[W_conv2, I]`` (row norm² = ‖W_conv2[k]‖² + 1); a
projection shortcut conv is an ordinary producer. A path that reaches the network input or output is
a **boundary** path (factor 1: the paper's first/last-layer rule).

Ops that mix channels in ways a per-channel factor cannot express (concatenation, split/slice,
gating products of two tensors (squeeze-excite), permutes/transposes, attention, convolutions other
than Conv2d) end a path as **unrelated**. `discover` records why; the LAP scorer then either raises a
`StructureError` or (the default) counts the path as identity (factor 1) and logs a warning.

Deviation from the released code: it chains the masked layers in module-registration order and
ignores skips; its helpers can sum several neighbours and an identity, but its driver never builds
such lists. Here every producer/consumer found in the graph contributes, and skip paths count 1.

The neighbour structure depends only on the model's structure; `discover` memoises it per structural
signature (class, module names/types/configs, input shape), so a repeated scoring skips the trace.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import nn

from secateurs.errors import StructureError, UsageError
from secateurs.sparsity.masks import baked_copy

log = logging.getLogger(__name__)

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
NORMALIZATIONS: tuple[type[nn.Module], ...] = (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
UNARY_OPS = frozenset(
    {
        "relu", "relu6", "hardtanh", "leakyrelu", "elu", "selu", "celu", "gelu", "silu", "sigmoid", "tanh",
        "hardswish", "hardsigmoid", "softplus", "mish", "threshold", "maxpool2dwithindices", "maxpool2d",
        "avgpool2d", "adaptiveavgpool2d", "adaptivemaxpool2d", "mean", "clone", "tocopy", "alias",
        "nativedropout", "dropout", "upsamplenearest2d", "upsamplebilinear2d", "add", "sub", "mul", "div", "neg",
    }
)  # fmt: skip
"""Grad-fn names (lower case, without ``Backward`` and digits) of single-input ops that keep channels."""
RESHAPE_OPS = frozenset({"view", "unsafeview", "reshapealias", "reshape", "squeeze", "unsqueeze", "flatten"})
JUNCTION_OPS = frozenset({"add", "sub"})
REDUCTIONS = frozenset({"mean", "sum", "amax", "amin"})

TORCH_PRUNING_OPS: dict[type, str] = {
    tp.ops._ConcatOp: "a concatenation",
    tp.ops._SplitOp: "a split",
    tp.ops._SliceOp: "a slice",
    tp.ops._UnbindOp: "an unbind",
    tp.ops._ExpandOp: "an expand",
}

PathKind = Literal["layer", "skip", "boundary", "unrelated"]


@dataclass(frozen=True)
class Path:
    """One link from a layer to a neighbour: ``layer`` is the neighbour's module name (None: identity).

    ``batch_norms`` are the BatchNorm modules on the path, producer side first; ``flattened`` says
    the path crosses a reshape (the Linear end reads ``channels × spatial`` features).
    """

    kind: PathKind
    layer: str | None = None
    batch_norms: tuple[str, ...] = ()
    flattened: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Neighbours:
    """The producer paths (``previous``) and consumer paths (``following``) of one layer."""

    previous: tuple[Path, ...]
    following: tuple[Path, ...]
    batch_norm: str | None = None
    """The BatchNorm directly after the layer (through unary ops only), if any: its "own" BN."""


@dataclass(frozen=True)
class Topology:
    """Neighbours of every Conv2d/Linear layer (module names) and a topological order of the layers."""

    layers: Mapping[str, Neighbours]
    order: tuple[str, ...]
    unrelated: tuple[str, ...] = field(default=())
    """One line per path that ended at an op LAP cannot relate (layer, direction, op)."""


def op_name(grad_fn: Any) -> str:
    """``ReluBackward0`` → ``relu``: the normalised name of an autograd node."""
    name = type(grad_fn).__name__ if grad_fn is not None else ""
    return re.sub(r"backward\d*$", "", name.lower())


def _reduces_channels(grad_fn: Any) -> bool:
    """True when a reduction (mean/sum/amax) runs over dimension 1 (channels/features) or the batch."""
    dims = getattr(grad_fn, "_saved_dim", None)
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
    if dims is None or sizes is None:
        return True
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    rank = len(sizes)
    return any(d % rank in (0, 1) for d in dims) if rank else True


class _Graph:
    """Torch-Pruning's traced nodes seen through module names, with the data/parameter split."""

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
        self.names = {module: name for name, module in model.named_modules()}
        self._parameter_only: dict[int, bool] = {}

    def node(self, module: nn.Module) -> Any:
        return self.graph.module2node.get(module)

    def is_parameter_path(self, node: Any) -> bool:
        """True for nodes computed from parameters only (a Linear's transposed weight, a parametrization)."""
        key = id(node)
        if key not in self._parameter_only:
            module = node.module
            if isinstance(module, nn.Module) and module in self.names and not isinstance(module, tp.ops._ElementWiseOp):
                self._parameter_only[key] = False
            else:
                self._parameter_only[key] = all(self.is_parameter_path(n) for n in node.inputs)
        return self._parameter_only[key]

    def data_inputs(self, node: Any) -> list[Any]:
        return [n for n in node.inputs if not self.is_parameter_path(n)]

    def step(self, node: Any, direction: str) -> list[Any]:
        return self.data_inputs(node) if direction == "previous" else list(node.outputs)


@dataclass(frozen=True)
class _State:
    node: Any
    junctions: int
    batch_norms: tuple[str, ...]
    flattened: bool


def _classify(graph: _Graph, node: Any) -> tuple[str, str]:
    """``(kind, detail)`` of a node: layer, batch_norm, transparent, reshape, junction or unrelated."""
    module = node.module
    name = graph.names.get(module)
    if isinstance(module, LAYER_TYPES) and name is not None:
        return "layer", name
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and name is not None:
        return "batch_norm", name
    if isinstance(module, (*NORMALIZATIONS, nn.PReLU)):
        return "transparent", name or type(module).__name__
    if isinstance(module, tp.ops._ReshapeOp):
        return "reshape", op_name(node.grad_fn)
    if isinstance(module, tp.ops._OutputOp):
        return "transparent", "output"
    if isinstance(module, tp.ops._ElementWiseOp):
        op = op_name(node.grad_fn)
        data = len(graph.data_inputs(node))
        if op in JUNCTION_OPS and data >= 2:
            return "junction", op
        if op in RESHAPE_OPS:
            return "reshape", op
        if op in REDUCTIONS and _reduces_channels(node.grad_fn):
            return "unrelated", f"a {op} over the channel dimension"
        if (op in UNARY_OPS or op in REDUCTIONS) and data <= 1:
            return "transparent", op
        what = f"{op} of {data} tensors" if data > 1 else op or "an unknown op"
        return "unrelated", what
    for op_type, description in TORCH_PRUNING_OPS.items():
        if isinstance(module, op_type):
            return "unrelated", description
    return "unrelated", f"{name or 'a module'} ({type(module).__name__})"


def _walk(graph: _Graph, start: Any, direction: str) -> tuple[list[Path], str | None]:
    """Every path from ``start`` in ``direction``, and the BN directly after ``start`` (following only)."""
    paths: list[Path] = []
    stack = [_State(n, 0, (), False) for n in reversed(graph.step(start, direction))]
    if not stack:
        paths.append(Path("boundary"))
    while stack:
        state = stack.pop()
        kind, detail = _classify(graph, state.node)
        if kind == "layer":
            paths.append(Path("layer", detail, state.batch_norms, state.flattened))
            continue
        if kind == "unrelated":
            paths.append(Path("unrelated", None, state.batch_norms, state.flattened, detail))
            continue
        junctions, batch_norms, flattened = state.junctions, state.batch_norms, state.flattened
        if kind == "junction":
            if junctions >= 1:
                paths.append(Path("skip", None, batch_norms, flattened))
                continue
            junctions += 1
        elif kind == "batch_norm":
            batch_norms = (detail, *batch_norms) if direction == "previous" else (*batch_norms, detail)
        elif kind == "reshape":
            flattened = True
        successors = graph.step(state.node, direction)
        if not successors:
            paths.append(Path("boundary", None, batch_norms, flattened))
        for successor in reversed(successors):
            stack.append(_State(successor, junctions, batch_norms, flattened))
    own = _own_batch_norm(graph, start) if direction == "following" else None
    return paths, own


def _own_batch_norm(graph: _Graph, start: Any) -> str | None:
    """The BatchNorm reached from ``start`` through single-output unary ops only, else None."""
    node = start
    while len(node.outputs) == 1:
        node = node.outputs[0]
        kind, detail = _classify(graph, node)
        if kind == "batch_norm":
            return detail
        if kind != "transparent" or isinstance(node.module, tp.ops._OutputOp):
            return None
    return None


def _topological_order(layers: Mapping[str, Neighbours], module_order: list[str]) -> tuple[str, ...]:
    """Layers so that every producer comes before its consumers (ties: module order)."""
    rank = {name: index for index, name in enumerate(module_order)}
    waiting = {
        name: {p.layer for p in n.previous if p.layer is not None and p.layer != name} for name, n in layers.items()
    }
    order: list[str] = []
    ready = sorted((name for name, deps in waiting.items() if not deps), key=rank.__getitem__)
    while ready:
        name = ready.pop(0)
        order.append(name)
        for other, deps in waiting.items():
            if name in deps:
                deps.discard(name)
                if not deps and other not in order and other not in ready:
                    ready.append(other)
        ready.sort(key=rank.__getitem__)
    order += [name for name in module_order if name not in order]  # cycles (shared modules): module order
    return tuple(order)


def structure_key(model: nn.Module, example_inputs: torch.Tensor) -> tuple[Any, ...]:
    """What the neighbour structure depends on: the class, every module's type/config, the input shape."""
    modules = tuple(
        (name, type(module).__name__.removeprefix("Parametrized"), module.extra_repr())
        for name, module in model.named_modules()
        if name.split(".")[-1] != "parametrizations" and ".parametrizations." not in f"{name}."
    )
    return (type(model).__module__, type(model).__qualname__, modules, tuple(example_inputs.shape[1:]))


def trace_topology(model: nn.Module, example_inputs: torch.Tensor) -> Topology:
    """Trace a mask-free copy of ``model`` and return every Conv2d/Linear layer's neighbours.

    The model itself is not touched (the trace runs on a deep copy in eval mode). Raises
    `StructureError` if the model cannot be traced.
    """
    try:
        clone = baked_copy(model)
        graph = _Graph(clone, example_inputs.detach())
    except Exception as error:  # copying or Torch-Pruning's forward pass can raise anything
        raise StructureError(f"cannot trace the model for lookahead pruning: {type(error).__name__}: {error}") from None
    module_order = [name for name, module in clone.named_modules() if isinstance(module, LAYER_TYPES)]
    layers: dict[str, Neighbours] = {}
    unrelated: list[str] = []
    for name in module_order:
        node = graph.node(clone.get_submodule(name))
        if node is None:
            path = Path("unrelated", reason="the layer is not used in the forward pass")
            layers[name] = Neighbours((path,), (path,))
            unrelated.append(f"{name}: not used in the forward pass")
            continue
        previous, _ = _walk(graph, node, "previous")
        following, own = _walk(graph, node, "following")
        layers[name] = Neighbours(tuple(previous), tuple(following), own)
        for direction, paths in (("input", previous), ("output", following)):
            unrelated += [f"{name} ({direction} side): {p.reason}" for p in paths if p.kind == "unrelated"]
    return Topology(layers, _topological_order(layers, module_order), tuple(unrelated))


class TopologyCache:
    """A small LRU memo of `trace_topology` keyed by `structure_key` (results are immutable data)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], Topology] = OrderedDict()

    def get(self, model: nn.Module, example_inputs: torch.Tensor) -> Topology:
        key = structure_key(model, example_inputs)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        topology = trace_topology(model, example_inputs)
        self._entries[key] = topology
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return topology

    def clear(self) -> None:
        self._entries.clear()


TOPOLOGIES = TopologyCache()
"""The process-wide memo used by the LAP scorers (`discover`); `TOPOLOGIES.clear()` empties it."""


def discover(model: nn.Module, example_inputs: torch.Tensor | None, *, cache: bool = True) -> Topology:
    """The neighbour `Topology` of ``model`` (memoised per structure unless ``cache`` is False)."""
    if example_inputs is None:
        raise UsageError("lookahead pruning traces the model's graph: pass example_inputs (one small batch)")
    return TOPOLOGIES.get(model, example_inputs) if cache else trace_topology(model, example_inputs)


def layer_paths(topology: Topology, name: str) -> Neighbours:
    """The neighbours of ``name``; a name that is not a Conv2d/Linear layer is a `StructureError`."""
    if name not in topology.layers:
        raise StructureError(
            f"lookahead pruning scores Conv2d/Linear weights; {name!r} is not one "
            f"(layers: {', '.join(list(topology.layers)[:8])}{' …' if len(topology.layers) > 8 else ''})"
        )
    return topology.layers[name]


def iter_paths(neighbours: Neighbours) -> Iterator[tuple[str, Path]]:
    yield from (("previous", p) for p in neighbours.previous)
    yield from (("following", p) for p in neighbours.following)

"""Per-layer latency tables: every prunable layer timed on this machine at candidate widths.

The latency-aware allocator (`latency.allocate`) needs to know what a channel costs in
milliseconds, not in MACs: oneDNN's convolution kernels run much faster per MAC at some channel
counts (multiples of the vector width) than at others, which is why a globally pruned resnet20 with
irregular widths removes 3.6× of the MACs but runs only 1.7× faster (issue 9).

A table holds, for every Conv2d and Linear layer of the model's channel groups, the median time of
that layer alone — a fresh layer of the same kernel, stride, padding, dilation and bias on an input
of the layer's spatial size — on a grid of (input width, output width): the multiples of ``step``
up to the layer's width, plus the full width. A dimension that no prunable group changes (the
image channels, the classifier's outputs) has a single grid point. Timing is batch ``batch``
(default 256), channels_last, ``torch.inference_mode``, ``threads`` intra-op threads, all grid
points interleaved round-robin in one process (`metrics.latency.time_round_robin`), median of
``repeats`` after one warm-up call.

`LatencyTable.layer_ms` interpolates bilinearly between grid points (exact on them) and clamps
below the smallest one: the table never promises a gain it did not measure. `LatencyTable.total_ms`
sums the layers: the prediction covers the convolutions and linear layers only (BatchNorm, ReLU and
additions are memory-bound, cost the same per channel at every width, and are left out).
Depthwise convolutions are timed on the diagonal (input width = output width = groups); other
grouped convolutions and implants are not timed (listed in ``untimed``).

Tables are cached as JSON (`load_or_measure`), keyed by a hash of the layer shapes (which fixes the
model and the input shape), the batch size, the thread count, the grid step, the torch version and
the machine, so a second run with the same key reads the file instead of timing again.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.errors import ConfigError, StructureError
from secateurs.io.files import atomic_write_json, read_json
from secateurs.latency.timing import Runner, time_round_robin, torch_threads
from secateurs.structure.groups import ChannelGraph

log = logging.getLogger(__name__)

FORMAT = "secateurs-latency-table/1"
CACHE_ENV = "SECATEURS_LATENCY_CACHE"
"""Environment variable naming the cache directory (default ``~/.cache/secateurs/latency-tables``)."""


@dataclass(frozen=True)
class LayerShape:
    """One timed layer: its geometry and which groups change its input and output widths."""

    name: str
    kind: str
    """``conv``, ``depthwise`` or ``linear``."""
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    bias: bool
    spatial: tuple[int, ...]
    """Input size after the channel dimension ((H, W) for a conv, the middle dims for a linear)."""
    in_groups: tuple[str, ...]
    """Prunable groups whose removed channels this layer's input loses."""
    out_groups: tuple[str, ...]


def grid_widths(channels: int, step: int, prunable: bool) -> list[int]:
    """The timed widths of one dimension: multiples of ``step`` up to ``channels``, and ``channels``."""
    if not prunable or channels <= step:
        return [channels]
    return sorted({*range(step, channels + 1, step), channels})


def layer_shapes(graph: ChannelGraph, input_shape: tuple[int, ...]) -> tuple[list[LayerShape], list[str]]:
    """The timed layers of ``graph.model`` (input spatial sizes from one forward pass) and the untimed ones."""
    ins: dict[str, set[str]] = {}
    outs: dict[str, set[str]] = {}
    modules: dict[str, nn.Module] = {}
    for group in graph.groups:
        for member in group.members:
            if isinstance(member.module, (nn.Conv2d, nn.Linear)):
                modules[member.name] = member.module
                if group.prunable:
                    (outs if member.role == "out" else ins).setdefault(member.name, set()).add(group.root)
    spatial: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in modules.items():

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: object, name: str = name) -> None:
            shape = tuple(inputs[0].shape)
            spatial[name] = shape[2:] if isinstance(module, nn.Conv2d) else shape[1:-1]

        handles.append(module.register_forward_hook(hook))
    flags = {m: m.training for m in graph.model.modules()}
    try:
        graph.model.eval()
        parameter = next(graph.model.parameters())
        with torch.no_grad():
            graph.model(torch.zeros((1, *input_shape), dtype=parameter.dtype, device=parameter.device))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in flags.items():
            module.training = training
    shapes, untimed = [], []
    order = {name: index for index, (name, _) in enumerate(graph.model.named_modules())}
    for name, module in sorted(modules.items(), key=lambda item: order[item[0]]):
        if name not in spatial:
            untimed.append(name)
            continue
        common: dict[str, Any] = {
            "name": name,
            "spatial": spatial[name],
            "in_groups": tuple(sorted(ins.get(name, ()))),
            "out_groups": tuple(sorted(outs.get(name, ()))),
            "bias": getattr(module, "bias", None) is not None,
        }
        if isinstance(module, nn.Linear):
            one = (1, 1)
            shapes.append(
                LayerShape(
                    kind="linear",
                    in_channels=module.in_features,
                    out_channels=module.out_features,
                    kernel=one,
                    stride=one,
                    padding=(0, 0),
                    dilation=one,
                    **common,
                )
            )
            continue
        assert isinstance(module, nn.Conv2d)
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        if (module.groups > 1 and not depthwise) or not isinstance(module.padding, tuple):
            untimed.append(name)
            continue
        shapes.append(
            LayerShape(
                kind="depthwise" if depthwise else "conv",
                in_channels=module.in_channels,
                out_channels=module.out_channels,
                kernel=_pair(module.kernel_size),
                stride=_pair(module.stride),
                padding=_pair(module.padding),
                dilation=_pair(module.dilation),
                **common,
            )
        )
    return shapes, untimed


def _pair(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class LayerTable:
    in_widths: list[int]
    out_widths: list[int]
    ms: list[list[float]]
    """``ms[i][j]``: median milliseconds at ``in_widths[i]`` × ``out_widths[j]`` (depthwise: diagonal)."""


@dataclass(frozen=True)
class LatencyTable:
    key: dict[str, Any]
    layers: dict[str, LayerTable]
    shapes: dict[str, LayerShape]

    def layer_ms(self, name: str, in_width: float, out_width: float) -> float:
        """Bilinear interpolation of the layer's table (clamped at the grid's ends)."""
        table = self.layers[name]
        if self.shapes[name].kind == "depthwise":
            return _interpolate(table.out_widths, [table.ms[i][i] for i in range(len(table.out_widths))], out_width)
        row = [_interpolate(table.out_widths, values, out_width) for values in table.ms]
        return _interpolate(table.in_widths, row, in_width)

    def total_ms(self, removed: Mapping[str, int]) -> float:
        """Predicted milliseconds of all timed layers when group ``root`` loses ``removed[root]`` channels."""
        total = 0.0
        for name, shape in self.shapes.items():
            in_width = shape.in_channels - sum(removed.get(root, 0) for root in shape.in_groups)
            out_width = shape.out_channels - sum(removed.get(root, 0) for root in shape.out_groups)
            total += self.layer_ms(name, in_width, out_width)
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key": self.key,
            "layers": {name: asdict(table) for name, table in self.layers.items()},
        }


def _interpolate(widths: Sequence[int], values: Sequence[float], width: float) -> float:
    if width <= widths[0]:
        return values[0]
    if width >= widths[-1]:
        return values[-1]
    upper = bisect.bisect_left(widths, width)
    lower = upper - 1
    fraction = (width - widths[lower]) / (widths[upper] - widths[lower])
    return values[lower] + fraction * (values[upper] - values[lower])


def table_key(shapes: Sequence[LayerShape], *, batch: int, threads: int, step: int) -> dict[str, Any]:
    """What a table's validity depends on (the layer shapes fix the model and its input shape)."""
    layers = [asdict(shape) for shape in shapes]
    digest = hashlib.sha256(json.dumps(layers, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "layers": digest,
        "batch": batch,
        "threads": threads,
        "step": step,
        "channels_last": True,
        "torch": torch.__version__,
        "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
    }


def cache_path(key: Mapping[str, Any], directory: Path) -> Path:
    digest = hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:20]
    return directory / f"latency-{key['layers']}-{digest}.json"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "secateurs" / "latency-tables")


def _layer_module(shape: LayerShape, in_width: int, out_width: int) -> tuple[nn.Module, tuple[int, ...]]:
    if shape.kind == "linear":
        return nn.Linear(in_width, out_width, bias=shape.bias), (*shape.spatial, in_width)
    groups = out_width if shape.kind == "depthwise" else 1
    layer = nn.Conv2d(
        in_width, out_width, shape.kernel, shape.stride, shape.padding, shape.dilation, groups, shape.bias
    )
    return layer, (in_width, *shape.spatial)


def grid_points(shape: LayerShape, step: int) -> tuple[list[int], list[int]]:
    in_widths = grid_widths(shape.in_channels, step, bool(shape.in_groups))
    out_widths = grid_widths(shape.out_channels, step, bool(shape.out_groups))
    return in_widths, out_widths


def _caller(layer: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    return lambda: layer(x)


def measure_table(
    shapes: Sequence[LayerShape], *, batch: int = 256, threads: int = 1, step: int = 8, repeats: int = 5
) -> LatencyTable:
    """Time every layer at every grid point, all interleaved round-robin; medians in milliseconds."""
    generator = torch.Generator().manual_seed(0)
    inputs: dict[tuple[int, ...], torch.Tensor] = {}
    runners: dict[str, Runner] = {}
    cells: dict[str, tuple[str, int, int]] = {}
    for shape in shapes:
        in_widths, out_widths = grid_points(shape, step)
        for i, in_width in enumerate(in_widths):
            for j, out_width in enumerate(out_widths):
                if shape.kind == "depthwise" and i != j:
                    continue
                layer, input_shape = _layer_module(shape, in_width, out_width)
                layer.eval()
                if shape.kind != "linear":
                    layer.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
                if input_shape not in inputs:
                    x = torch.randn((batch, *input_shape), generator=generator)
                    inputs[input_shape] = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                label = f"{shape.name}@{in_width}x{out_width}"
                runners[label] = Runner(call=_caller(layer, inputs[input_shape]), context=torch.inference_mode)
                cells[label] = (shape.name, i, j)
    started = time.perf_counter()
    with torch_threads(threads) as used:
        times = time_round_robin(runners, warmup=1, repeats=repeats)
    log.info("latency table: %d layer widths timed in %.1f s", len(runners), time.perf_counter() - started)
    layers: dict[str, LayerTable] = {}
    for shape in shapes:
        in_widths, out_widths = grid_points(shape, step)
        layers[shape.name] = LayerTable(in_widths, out_widths, [[0.0] * len(out_widths) for _ in in_widths])
    for label, (name, i, j) in cells.items():
        ordered = sorted(times[label])
        layers[name].ms[i][j] = ordered[len(ordered) // 2] / 1e6
    key = table_key(shapes, batch=batch, threads=used, step=step)
    return LatencyTable(key=key, layers=layers, shapes={s.name: s for s in shapes})


def table_from_json(tree: Any, shapes: Sequence[LayerShape], source: str) -> LatencyTable:
    """A table read from JSON, checked against ``shapes`` (every layer, every grid point); else `ConfigError`."""
    if not isinstance(tree, dict) or tree.get("format") != FORMAT or not isinstance(tree.get("layers"), dict):
        raise ConfigError(f"{source} is not a latency table (expected format {FORMAT!r})")
    layers: dict[str, LayerTable] = {}
    for shape in shapes:
        raw = tree["layers"].get(shape.name)
        if raw is None:
            raise ConfigError(f"latency table {source} has no layer {shape.name!r} (it was made for another model)")
        try:
            table = LayerTable(
                list(raw["in_widths"]), list(raw["out_widths"]), [list(map(float, r)) for r in raw["ms"]]
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"latency table {source}: layer {shape.name!r} is malformed") from None
        if (
            table.in_widths[-1] != shape.in_channels
            or table.out_widths[-1] != shape.out_channels
            or len(table.ms) != len(table.in_widths)
            or any(len(row) != len(table.out_widths) for row in table.ms)
        ):
            raise ConfigError(
                f"latency table {source}: layer {shape.name!r} does not match the model "
                f"({shape.in_channels}→{shape.out_channels} channels)"
            )
        layers[shape.name] = table
    key: dict[str, Any] = tree["key"] if isinstance(tree.get("key"), dict) else {}
    return LatencyTable(key=key, layers=layers, shapes={s.name: s for s in shapes})


def load_or_measure(
    shapes: Sequence[LayerShape],
    *,
    batch: int = 256,
    threads: int = 1,
    step: int = 8,
    repeats: int = 5,
    cache_dir: Path | None = None,
    table_file: Path | None = None,
) -> tuple[LatencyTable, dict[str, Any]]:
    """The table for ``shapes``: ``table_file`` if given, else the cached one, else measured and cached.

    Returns the table and a record of where it came from (``source``, ``path``, ``seconds``).
    """
    if not shapes:
        raise StructureError("no Conv2d or Linear layer of the model can be timed for a latency table")
    if table_file is not None:
        if not table_file.is_file():
            raise ConfigError(f"latency table {table_file} does not exist")
        return table_from_json(read_json(table_file, "latency table"), shapes, str(table_file)), {
            "source": "file",
            "path": str(table_file),
        }
    key = table_key(shapes, batch=batch, threads=threads, step=step)
    path = cache_path(key, cache_dir or default_cache_dir())
    if path.is_file():
        try:
            tree = read_json(path, "latency table")
            if tree.get("key") == key:
                return table_from_json(tree, shapes, str(path)), {"source": "cache", "path": str(path)}
        except (ConfigError, AttributeError):
            log.warning("ignoring the unreadable cached latency table %s", path)
    started = time.perf_counter()
    table = measure_table(shapes, batch=batch, threads=threads, step=step, repeats=repeats)
    seconds = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, table.to_json())
    return table, {"source": "measured", "path": str(path), "seconds": seconds}

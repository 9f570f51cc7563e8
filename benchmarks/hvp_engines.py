"""Hessian-vector products side by side: secateurs' engines and PyHessian's trace loop, per probe.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \\
        PYTHONPATH=src python benchmarks/hvp_engines.py [--models resnet20 mobilenetv3] [--rounds 5] \\
        [--out results/hvp-engines.json]

For each model (resnet20 of the zoo at 1×28×28; a MobileNetV3-style net with hard-swish and a
hard-sigmoid squeeze-excite gate, whose hard-sigmoid has no double backward), the same 512 random
images in one batch, the same Rademacher probes, every Conv2d/Linear weight (biases and batch norm
constant, as HAP's traces define the Hessian), eval mode, one thread:

* **time per probe** of every engine that supports the model (`secateurs.scoring.hvp_select.ENGINES`:
  double backward, double backward with exact rewrites, forward-over-reverse, central finite
  differences in float64), and of PyHessian 0.1's ``hessian(...).trace`` loop (one
  ``autograd.grad`` of its cached gradient per probe, the reference implementation HAP's code
  uses) over the same weights — interleaved in rounds so the machine's load hits all alike;
  setup (the gradient graph) is timed separately, once;
* **error** of each engine's products against the exact HVP: double backward of the same model
  run in float64 (relative Frobenius error over all weights, mean over probes);
* the ratio of secateurs' default engine (the one `select_engine` picks) to PyHessian per probe
  (the issue's target: ≤ 1.0×). PyHessian gives no per-channel traces; secateurs' loop adds them.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.latency.machine import measurement_conditions
from secateurs.models import build_model
from secateurs.runtime.extras import require
from secateurs.scoring.hessian import hessian_layers, layer_weights, rademacher
from secateurs.scoring.hvp import HVPEngine
from secateurs.scoring.hvp_select import DEFAULT_ORDER, is_unsupported_derivative, make_engine, select_engine

Batch = tuple[torch.Tensor, torch.Tensor]


class MobileNetV3Like(nn.Module):
    """Two inverted residual blocks with hard-swish and a hard-sigmoid squeeze-excite (MobileNetV3's ops)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.ModuleList([self._block(16, 64, 24), self._block(24, 96, 40)])
        self.head = nn.Linear(40, classes)

    @staticmethod
    def _block(inputs: int, hidden: int, outputs: int) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "expand": nn.Sequential(
                    nn.Conv2d(inputs, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish()
                ),
                "depthwise": nn.Sequential(
                    nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False),
                    nn.BatchNorm2d(hidden),
                    nn.Hardswish(),
                ),
                "squeeze": nn.Conv2d(hidden, hidden // 4, 1),
                "excite": nn.Conv2d(hidden // 4, hidden, 1),
                "project": nn.Sequential(nn.Conv2d(hidden, outputs, 1, bias=False), nn.BatchNorm2d(outputs)),
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        for block in self.blocks:
            assert isinstance(block, nn.ModuleDict)
            hidden = block["depthwise"](block["expand"](y))
            gate = nn.functional.hardsigmoid(
                block["excite"](torch.relu(block["squeeze"](hidden.mean((2, 3), keepdim=True))))
            )
            y = block["project"](hidden * gate)
        return self.head(y.mean((2, 3)))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet20": lambda: build_model("resnet20", (1, 28, 28), 10),
    "mobilenetv3": MobileNetV3Like,
}


def prepared(name: str, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    model = MODELS[name]().to(dtype).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for _, module in hessian_layers(model):  # only the Conv2d/Linear weights are variables
        module.weight.requires_grad_(True)
    return model


def relative_error(products: Sequence[torch.Tensor], exact: Sequence[torch.Tensor]) -> float:
    difference = sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(products, exact, strict=True))
    reference = sum(float(b.double().pow(2).sum()) for b in exact)
    return (difference / reference) ** 0.5 if reference > 0 else 0.0


def pyhessian_trace_loop(model: nn.Module, batch: Batch, probes: int) -> tuple[float, float]:
    """(setup seconds, seconds per probe) of PyHessian's ``trace`` with its tolerance disabled."""
    pyhessian = require("pyhessian", "the PyHessian comparison")
    started = time.perf_counter()
    computer = pyhessian.hessian(model, nn.functional.cross_entropy, data=batch, cuda=False)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    computer.trace(maxIter=probes, tol=0.0)
    return setup, (time.perf_counter() - started) / probes


def engine_timing(
    engine: HVPEngine, probes: Sequence[Sequence[torch.Tensor]]
) -> tuple[float, list[list[torch.Tensor]]]:
    started = time.perf_counter()
    products = [engine.hvp(probe) for probe in probes]
    return (time.perf_counter() - started) / len(probes), products


def measure(name: str, images: int, probes_per_round: int, rounds: int) -> dict[str, Any]:
    model = prepared(name, torch.float32)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(images, 1, 28, 28, generator=generator)
    targets = torch.randint(0, 10, (images,), generator=generator)
    batch = (inputs, targets)
    weights = layer_weights(hessian_layers(model))
    probe_generator = torch.Generator().manual_seed(2)
    probes = [[rademacher(w.shape, probe_generator, w.dtype) for w in weights] for _ in range(probes_per_round)]

    exact_model = prepared(name, torch.float64)
    exact_weights = layer_weights(hessian_layers(exact_model))
    exact_batch = (inputs.double(), targets)
    exact = make_engine(
        "double-backward-rewritten", exact_model, exact_weights, [exact_batch], nn.functional.cross_entropy
    )
    reference = [exact.hvp([p.double() for p in probe]) for probe in probes]
    exact.close()

    chosen = select_engine(model, weights, [batch], nn.functional.cross_entropy, probes[0])
    chosen.engine.close()
    engines: dict[str, HVPEngine] = {}
    setups: dict[str, float] = {}
    unsupported: dict[str, str] = {}
    for engine_name in DEFAULT_ORDER:
        engine = make_engine(engine_name, model, weights, [batch], nn.functional.cross_entropy)
        started = time.perf_counter()
        try:
            engine.prepare()
            engine.hvp(probes[0])
        except (RuntimeError, NotImplementedError) as error:
            if not is_unsupported_derivative(error):
                raise
            unsupported[engine_name] = str(error).splitlines()[0][:160]
            engine.close()
            continue
        setups[engine_name] = time.perf_counter() - started
        engines[engine_name] = engine
    times: dict[str, list[float]] = {engine_name: [] for engine_name in engines}
    times["pyhessian"] = []
    errors: dict[str, float] = {}
    pyhessian_setup = 0.0
    for _ in range(rounds):  # interleaved: every engine and PyHessian once per round
        for engine_name, engine in engines.items():
            seconds, products = engine_timing(engine, probes)
            times[engine_name].append(seconds)
            errors[engine_name] = statistics.fmean(
                relative_error(p, r) for p, r in zip(products, reference, strict=True)
            )
        if "pyhessian" in unsupported:
            continue
        try:
            setup, per_probe = pyhessian_trace_loop(copy.deepcopy(model), batch, probes_per_round)
        except RuntimeError as error:  # PyHessian is double backward only: no fallback
            if not is_unsupported_derivative(error):
                raise
            unsupported["pyhessian"] = str(error).splitlines()[0][:160]
            continue
        pyhessian_setup = setup
        times["pyhessian"].append(per_probe)
    for engine in engines.values():
        engine.close()
    medians = {engine_name: statistics.median(values) for engine_name, values in times.items() if values}
    return {
        "model": name,
        "images": images,
        "probes_per_round": probes_per_round,
        "rounds": rounds,
        "default_engine": chosen.name,
        "selection": chosen.reason,
        "seconds_per_probe": medians,
        "setup_seconds": {**setups, "pyhessian": pyhessian_setup},
        "relative_error_vs_float64": errors,
        "unsupported": unsupported,
        "default_vs_pyhessian": medians[chosen.name] / medians["pyhessian"] if "pyhessian" in medians else None,
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    """One row per model and engine: seconds per probe, × PyHessian, error against the exact HVP."""
    lines = [
        "| model | engine | s / probe | × PyHessian | rel. error vs float64 |",
        "|---|---|---:|---:|---:|",
    ]
    for result in results:
        pyhessian = result["seconds_per_probe"].get("pyhessian")
        for engine_name in [*DEFAULT_ORDER, "pyhessian"]:
            if engine_name in result["unsupported"]:
                lines.append(f"| {result['model']} | {engine_name} | unsupported | – | – |")
                continue
            seconds = result["seconds_per_probe"].get(engine_name)
            if seconds is None:
                continue
            mark = " (default)" if engine_name == result["default_engine"] else ""
            error = result["relative_error_vs_float64"].get(engine_name)
            shown = f"{error:.1e}" if error is not None else "–"
            ratio = f"{seconds / pyhessian:.2f}×" if pyhessian else "–"
            lines.append(f"| {result['model']} | {engine_name}{mark} | {seconds:.3f} | {ratio} | {shown} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--probes", type=int, default=3, help="probes per round and engine")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    conditions = measurement_conditions(threads=args.threads)
    results = [measure(name, args.images, args.probes, args.rounds) for name in args.models]
    print(table(results))
    if args.out is not None:
        args.out.write_text(json.dumps({"conditions": conditions, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

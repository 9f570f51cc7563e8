"""Does hardware-aware allocation make speed follow the MACs? resnet20, globally pruned, vs dense.

For resnet20 on Fashion-MNIST's shape (1×28×28), global channel pruning at 50 % and 70 % of the
parameters removed, with channel counts rounded to 1 (irregular), 8 and 16, and latency-aware
(importance per millisecond on a per-layer latency table timed first, width grid 8 — or 16 with
round_to 16 — cached), this
prints, all measured side by side in one process (interleaved round-robin, robust to machine load):

* the MAC ratio (dense MACs ÷ pruned MACs: the physical limit of the speed-up),
* the batch-256 inference speed-up of medians (and of minima), eager PyTorch, channels_last,
* speed-up ÷ MAC ratio (issue 9's target: ≥ 0.8),
* the fine-tuning step time (forward + backward + SGD step at batch 128, train mode, channels_last)
  relative to the dense model's, next to 1 ÷ MAC ratio.

Methods: ``tp-magnitude`` (Torch-Pruning's global pruner, the issue's baseline; its own ``round_to``),
``l2-filter`` and ``hap`` (4 probes) through our allocator (``round_to``, ``latency_aware``). Channel
choice does not change speed, so the dense model is freshly initialised (seed 0) and HAP scores it on
random calibration images.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \\
        PYTHONPATH=src python benchmarks/round_to.py --threads 1 --json results/round-to-speed.json
    python benchmarks/round_to.py --table results/round-to-speed.json   # the markdown table again
    python benchmarks/round_to.py --accuracy results/round-to.jsonl     # suites/round-to.yaml's table
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import secateurs as sec
from secateurs.bench.results import read_results
from secateurs.bench.table import markdown_table
from secateurs.latency.timing import Runner, allocator_env_is_set, compare_latency, time_round_robin, torch_threads
from secateurs.metrics.counts import count_macs, count_params
from secateurs.models import build_model

SHAPE = (1, 28, 28)
STEP_BATCH = 128


def variants(hap: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, method, options) of every pruned model, per sparsity."""
    rows: list[tuple[str, str, dict[str, Any]]] = [
        ("tp-magnitude r1", "tp-magnitude", {}),
        ("tp-magnitude r8", "tp-magnitude", {"round_to": 8}),
        ("tp-magnitude r16", "tp-magnitude", {"round_to": 16}),
        ("l2-filter r1", "l2-filter", {}),
        ("l2-filter r8", "l2-filter", {"round_to": 8}),
        ("l2-filter r16", "l2-filter", {"round_to": 16}),
        ("l2-filter latency-aware", "l2-filter", {"latency_aware": True}),
        ("l2-filter latency-aware r16", "l2-filter", {"latency_aware": True, "round_to": 16}),
    ]
    if hap:
        rows += [
            ("hap r1", "hap", {"probes": 4}),
            ("hap r8", "hap", {"probes": 4, "round_to": 8}),
            ("hap latency-aware", "hap", {"probes": 4, "latency_aware": True}),
        ]
    return rows


def step_runner(model: nn.Module, batch: int) -> Runner:
    """One fine-tuning step (forward, backward, SGD with momentum) of a copy of ``model``."""
    trained = copy.deepcopy(model).train()
    trained.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch, *SHAPE), generator=generator).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=generator)

    def call() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(trained(x), y).backward()
        optimizer.step()

    return Runner(call=call)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    dense = build_model("resnet20", SHAPE, 10).eval()
    inputs = torch.randn(64, *SHAPE)
    data = [(inputs, torch.arange(64) % 10)]
    models: dict[str, nn.Module] = {"dense": dense}
    infos: dict[str, dict[str, Any]] = {"dense": {}}
    with torch_threads(args.threads):
        for sparsity in args.sparsities:
            for label, method, options in variants(args.hap):
                extra = {"latency_cache": args.cache} if options.get("latency_aware") and args.cache else {}
                started = time.perf_counter()
                result = sec.prune(
                    dense, method, sparsity, example_inputs=inputs[:2], data=data, scope="global", **options, **extra
                )
                name = f"{label} @{sparsity:.0%}"
                models[name] = result.model.eval()
                infos[name] = {
                    "method": method,
                    "options": options,
                    "sparsity": sparsity,
                    "prune_seconds": time.perf_counter() - started,
                    "latency_table": result.info.get("latency_table"),
                    "widths": {root: g["channels"] - g["removed"] for root, g in result.info.get("groups", {}).items()},
                }
                print(f"pruned {name} in {infos[name]['prune_seconds']:.1f} s", file=sys.stderr)
    load_before = os.getloadavg()
    inference = compare_latency(models, SHAPE, batch_sizes=(256,), repeats=args.repeats, threads=args.threads)
    with torch_threads(args.threads):
        steps = time_round_robin(
            {name: step_runner(model, STEP_BATCH) for name, model in models.items()},
            warmup=2,
            repeats=args.step_repeats,
        )
    load_after = os.getloadavg()
    dense_macs, dense_params = count_macs(dense, SHAPE), count_params(dense)
    dense_ms = inference["dense"]["batch_256"]
    dense_step = sorted(steps["dense"])[len(steps["dense"]) // 2]
    rows = []
    for name, model in models.items():
        timing = inference[name]["batch_256"]
        step = sorted(steps[name])[len(steps[name]) // 2]
        macs = count_macs(model, SHAPE)
        row = {
            "model": name,
            **infos[name],
            "params_removed": 1 - count_params(model) / dense_params,
            "macs": macs,
            "mac_ratio": dense_macs / macs,
            "batch_256_ms": timing["median_ms"],
            "batch_256_min_ms": timing["min_ms"],
            "speedup_256": dense_ms["median_ms"] / timing["median_ms"],
            "speedup_256_min": dense_ms["min_ms"] / timing["min_ms"],
            "step_ms": step / 1e6,
            "step_relative": step / dense_step,
        }
        row["speedup_over_mac_ratio"] = row["speedup_256"] / row["mac_ratio"]
        rows.append(row)
    return {
        "model": "resnet20",
        "input_shape": list(SHAPE),
        "threads": args.threads,
        "repeats": args.repeats,
        "step_repeats": args.step_repeats,
        "step_batch": STEP_BATCH,
        "allocator_env": allocator_env_is_set(),
        "load_average_before_after": [load_before, load_after],
        "torch": torch.__version__,
        "host": platform.node(),
        "rows": rows,
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        f"resnet20, {tuple(results['input_shape'])}, {results['threads']} thread(s), batch 256 inference "
        f"({results['repeats']} interleaved rounds), fine-tuning step at batch {results['step_batch']} "
        f"({results['step_repeats']} rounds); load average {results['load_average_before_after'][0][0]:.1f}",
        "",
        "| model | params removed | MAC ratio | speed-up b256 (median) | (minima) | speed-up ÷ MAC ratio "
        "| step time vs dense | 1 ÷ MAC ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['model']} | {row['params_removed']:.1%} | {row['mac_ratio']:.2f}× | {row['speedup_256']:.2f}× "
            f"| {row['speedup_256_min']:.2f}× | {row['speedup_over_mac_ratio']:.2f} | {row['step_relative']:.2f} "
            f"| {1 / row['mac_ratio']:.2f} |"
        )
    return "\n".join(lines)


def accuracy_table(path: Path) -> str:
    """Test accuracy before and after fine-tuning of every row of a ``suites/round-to.yaml`` results file."""
    header = ["cell", "params removed", "MACs removed", "test acc. before fine-tuning", "test acc. after 1 epoch"]
    lines = []
    for row in read_results(path):
        metrics = row.metrics
        before = row.metrics_before_finetune.test_accuracy
        lines.append(
            [row.label, f"{metrics.sparsity_params or 0.0:.1%}", f"{metrics.sparsity_macs or 0.0:.1%}",
             "—" if before is None else f"{before:.2%}", f"{metrics.test_accuracy or 0.0:.2%}"]
        )  # fmt: skip
    return markdown_table(header, lines, right=[False, True, True, True, True])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--step-repeats", type=int, default=8)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7])
    parser.add_argument("--no-hap", dest="hap", action="store_false", help="leave HAP out")
    parser.add_argument("--cache", help="latency-table cache directory (default: the library's)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--table", type=Path, help="print the table of an earlier --json file and exit")
    parser.add_argument("--accuracy", type=Path, help="print the table of a round-to suite's results.jsonl and exit")
    args = parser.parse_args()
    if args.accuracy:
        print(accuracy_table(args.accuracy))
        return 0
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    results = measure(args)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

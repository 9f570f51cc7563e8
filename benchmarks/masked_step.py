"""Masked training step vs dense training step, measured side by side (issue 2: target ≤ 1.15×).

For each model, a dense copy and a copy with 90 % element masks (MaskStore parametrizations, bound to
the optimizer: hard masks) take SGD steps (momentum, weight decay) on the same random batch, interleaved
round by round so machine noise hits both alike. Prints the median step times and their ratio, per
thread count; ``--sessions`` repeats the whole measurement and reports the median ratio with its range.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \\
        python benchmarks/masked_step.py --threads 1 2 --sessions 3 --out results/masked-step.json
    python benchmarks/masked_step.py --table results/masked-step.json    # print the markdown table
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.bench.results import group_rows
from secateurs.io.files import atomic_write_json
from secateurs.latency.machine import measurement_conditions
from secateurs.models import build_model
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.targets import prunable_names
from secateurs.training.loop import has_conv

TARGET = 1.15


def step_timer(model: nn.Module, masks: MaskStore | None, x: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    if masks is not None:
        masks.bind_optimizer(optimizer)

    def step() -> float:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        return time.perf_counter() - started

    return step


def measure_model(name: str, batch: int, rounds: int, sparsity: float) -> dict[str, Any]:
    """One interleaved session on model ``name``: median dense and masked step times (ms) and the ratio."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    dense = build_model(name, (1, 28, 28), 10)
    masked = copy.deepcopy(dense)
    store = MaskStore(masked)
    for weight in prunable_names(masked):
        shape = masked.get_parameter(weight).shape
        store.set_(weight, torch.rand(shape, generator=generator) >= sparsity)
    x = torch.randn(batch, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    if has_conv(dense):
        x = x.contiguous(memory_format=torch.channels_last)
        dense.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        masked.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    steps = {"dense": step_timer(dense, None, x, y), "masked": step_timer(masked, store, x, y)}
    times: dict[str, list[float]] = {"dense": [], "masked": []}
    for round_index in range(rounds + 3):
        order = ("dense", "masked") if round_index % 2 == 0 else ("masked", "dense")
        for key in order:
            elapsed = steps[key]()
            if round_index >= 3:  # warm-up rounds are not recorded
                times[key].append(elapsed)
    dense_ms = 1000 * statistics.median(times["dense"])
    masked_ms = 1000 * statistics.median(times["masked"])
    return {"dense_ms": dense_ms, "masked_ms": masked_ms, "ratio": masked_ms / dense_ms}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for session in range(args.sessions):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name in args.models:
                row = {"session": session, "threads": threads, "model": name, "load_average": os.getloadavg()[0]}
                row.update(measure_model(name, args.batch, args.rounds, args.sparsity))
                rows.append(row)
                print(
                    f"session {session} threads {threads} {name:10} dense {row['dense_ms']:8.2f} ms "
                    f"masked {row['masked_ms']:8.2f} ms  {row['ratio']:.2f}×",
                    flush=True,
                )
    return {
        "rows": rows,
        "batch": args.batch,
        "rounds": args.rounds,
        "sparsity": args.sparsity,
        "sessions": args.sessions,
        "target": TARGET,
        "conditions": measurement_conditions(),
        "command": "python " + " ".join(["benchmarks/masked_step.py", *sys.argv[1:]]),
    }


def table(result: dict[str, Any]) -> str:
    """Markdown: one line per (model, threads), median times and ratio over sessions, ratio range."""
    lines = [
        "| model | threads | dense step ms | masked step ms | masked ÷ dense | range over sessions |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (model, threads), rows in group_rows(result["rows"], "model", "threads").items():
        ratios = [row["ratio"] for row in rows]
        dense = statistics.median(row["dense_ms"] for row in rows)
        masked = statistics.median(row["masked_ms"] for row in rows)
        lines.append(
            f"| {model} | {threads} | {dense:.2f} | {masked:.2f} | **{statistics.median(ratios):.2f}×** "
            f"| {min(ratios):.2f}–{max(ratios):.2f} |"
        )
    loads = [row["load_average"] for row in result["rows"]]
    conditions = result["conditions"]
    lines.append("")
    lines.append(
        f"SGD (momentum 0.9, weight decay 5e-4), batch {result['batch']}, {result['sparsity']:.0%} element "
        f"masks, {result['sessions']} session(s) of {result['rounds']} interleaved rounds; target ≤ "
        f"{result['target']:.2f}×; allocator env {'set' if conditions['allocator_env'] else 'NOT set'}; "
        f"load average {min(loads):.1f}–{max(loads):.1f} on {conditions['cpu_count']} cores; "
        f"{conditions['measured_at']}; `{result['command']}`."
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5", "resnet20"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--sessions", type=int, default=1, help="independent interleaved measurements, in turn")
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    parser.add_argument("--table", type=Path, help="print the markdown table of a result file and exit")
    args = parser.parse_args()
    measured = args.table is None
    result = measure(args) if measured else json.loads(args.table.read_text())
    print(table(result))
    if measured and args.out is not None:
        atomic_write_json(args.out, result)
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

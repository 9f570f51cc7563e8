"""CSR sparse inference vs the dense model, measured side by side (issue 9: target ≥ 3× at batch 256).

`mlp-lap` (784-500-500-500-500-10) is pruned to 95 % unstructured sparsity with secateurs' magnitude
method (layer-wise by default; ``--scope global``), then the dense deployable model (masks baked in,
zeros stored) and its CSR conversion (`convert_to_csr`, every layer below 20 % density in CSR) are
timed with `compare_latency`: interleaved round robin, median and p90 after warm-up, at batch 256 and
batch 1, for each thread count, ``--sessions`` times in turn. The "limit" column is the ratio of dense
to non-zero multiply-adds (1 ÷ density of the CSR layers), what a perfect sparse kernel would reach.
The "minima" column compares the fastest call of each model: on a loaded machine the longer dense
call loses time slices more often, so its median moves more than the CSR model's.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \\
        python benchmarks/csr_speed.py --threads 1 2 --out results/csr-speed.json
    python benchmarks/csr_speed.py --table results/csr-speed.json     # print the markdown table
    python benchmarks/csr_speed.py --table results/csr-speed.json --doc docs/deploy.md   # rewrite it there

Weights are the seeded initialisation unless ``--from RUN`` names a trained mlp-lap run (speed depends
on the sparsity pattern, not on the values). Run it on an otherwise idle machine if you can; the load
average at the start is recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import secateurs as sec
from secateurs.bench.results import group_rows
from secateurs.deploy.csr import DEFAULT_DENSITY_THRESHOLD, convert_to_csr
from secateurs.io.files import atomic_write_json
from secateurs.latency.machine import measurement_conditions
from secateurs.latency.timing import compare_latency
from secateurs.models import build_model
from secateurs.sparsity.masks import baked_copy

MODEL = "mlp-lap"
INPUT_SHAPE = (1, 28, 28)
TARGET = 3.0


def pruned_model(sparsity: float, scope: str, run: str | None, seed: int) -> torch.nn.Module:
    if run is not None:
        from secateurs.runs.directory import load_run

        loaded = load_run(Path(run))
        if loaded.record.model.name != MODEL:
            raise SystemExit(f"--from {run}: expected a {MODEL} run, found {loaded.record.model.name}")
        model = loaded.model
    else:
        torch.manual_seed(seed)
        model = build_model(MODEL, INPUT_SHAPE, 10)
    example = torch.randn(2, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))
    result = sec.prune(model, "magnitude", sparsity, example_inputs=example, scope=scope, seed=seed)
    return baked_copy(result.model).eval()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    dense = pruned_model(args.sparsity, args.scope, args.from_run, args.seed)
    conversion = convert_to_csr(dense, density_threshold=args.density_threshold)
    summary = conversion.summary()
    density = summary["csr_nonzeros"] / summary["csr_entries"]  # type: ignore[operator]
    rows = []
    for session, threads in itertools.product(range(1, args.sessions + 1), args.threads):
        timing = compare_latency(
            {"dense": dense, "csr": conversion.model},
            INPUT_SHAPE,
            batch_sizes=tuple(args.batch),
            warmup=args.warmup,
            repeats=args.repeats,
            threads=threads,
        )
        for batch in args.batch:
            key = f"batch_{batch}"
            dense_ms, csr_ms = timing["dense"][key]["median_ms"], timing["csr"][key]["median_ms"]
            rows.append(
                {
                    "session": session,
                    "load_average": os.getloadavg()[0],
                    "threads": threads,
                    "batch": batch,
                    "dense_median_ms": dense_ms,
                    "dense_p90_ms": timing["dense"][key]["p90_ms"],
                    "csr_median_ms": csr_ms,
                    "csr_p90_ms": timing["csr"][key]["p90_ms"],
                    "speedup": dense_ms / csr_ms,
                    "dense_min_ms": timing["dense"][key]["min_ms"],
                    "csr_min_ms": timing["csr"][key]["min_ms"],
                    "speedup_of_minima": timing["dense"][key]["min_ms"] / timing["csr"][key]["min_ms"],
                    "repeats": timing["csr"][key]["repeats"],
                }
            )
    return {
        "benchmark": "csr_speed",
        "model": MODEL,
        "method": "magnitude",
        "scope": args.scope,
        "sparsity": args.sparsity,
        "weights": args.from_run or f"seeded initialisation (seed {args.seed})",
        "density_threshold": args.density_threshold,
        "csr_layers": summary["csr_layers"],
        "dense_layers": summary["dense_layers"],
        "density": density,
        "limit": 1.0 / density,
        "target_speedup_batch_256": TARGET,
        "sessions": args.sessions,
        "rows": rows,
        "conditions": measurement_conditions(
            interleaved=True,
            note="measured on a shared machine (other jobs running); ratios are interleaved, absolute ms are not",
        ),
        "command": "python " + " ".join(["benchmarks/csr_speed.py", *sys.argv[1:]]),
    }


def table(result: dict[str, Any]) -> str:
    """The markdown table of docs/deploy.md, from a result file: one line per (threads, batch).

    With several sessions (independent interleaved measurements, one after the other) the timings are
    the median over sessions and the median speed-up is given with its range over sessions.
    """
    lines = [
        "| threads | batch | dense ms (median / p90) | CSR ms (median / p90) | speed-up of medians "
        "| speed-up of minima | CSR density | limit (1/density) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (threads, batch), rows in group_rows(result["rows"], "threads", "batch").items():

        def middle(key: str, rows: list[Mapping[str, Any]] = rows) -> float:
            return statistics.median(row[key] for row in rows)

        speedups = [row["speedup"] for row in rows]
        spread = f" ({min(speedups):.2f}–{max(speedups):.2f})" if len(rows) > 1 else ""
        minima = min(row["dense_min_ms"] for row in rows) / min(row["csr_min_ms"] for row in rows)
        lines.append(
            f"| {threads} | {batch} | {middle('dense_median_ms'):.3f} / {middle('dense_p90_ms'):.3f} "
            f"| {middle('csr_median_ms'):.3f} / {middle('csr_p90_ms'):.3f} "
            f"| **{statistics.median(speedups):.2f}×**{spread} | {minima:.2f}× "
            f"| {result['density']:.3f} | {result['limit']:.1f}× |"
        )
    conditions = result["conditions"]
    loads = [row["load_average"] for row in result["rows"]]
    lines.append("")
    lines.append(
        f"`{result['model']}`, {result['method']} ({result['scope']}) at {result['sparsity']:.0%} sparsity, "
        f"{result['csr_layers']} CSR layers / {result['dense_layers']} dense; {result['sessions']} session(s) "
        f"of {result['rows'][0]['repeats']} interleaved rounds; allocator env "
        f"{'set' if conditions['allocator_env'] else 'NOT set'}; shared machine, load average "
        f"{min(loads):.1f}–{max(loads):.1f} on {conditions['cpu_count']} cores; {conditions['measured_at']}; "
        f"`{result['command']}`."
    )
    return "\n".join(lines)


BLOCK = re.compile(r"(<!-- table:csr-speed -->\n)(.*?)(<!-- /table -->)", re.DOTALL)


def rewrite_doc(path: Path, markdown: str) -> None:
    """Replace the block between ``<!-- table:csr-speed -->`` and ``<!-- /table -->`` in `path`."""
    text = path.read_text()
    if not BLOCK.search(text):
        raise SystemExit(f"{path} has no <!-- table:csr-speed --> … <!-- /table --> block")
    path.write_text(BLOCK.sub(lambda match: f"{match.group(1)}{markdown}\n{match.group(3)}", text))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.95)
    parser.add_argument("--scope", choices=("layerwise", "global"), default="layerwise")
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=1, help="independent interleaved measurements, in turn")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--density-threshold", type=float, default=DEFAULT_DENSITY_THRESHOLD)
    parser.add_argument("--from", dest="from_run", help="a trained mlp-lap run to prune (default: seeded init)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    parser.add_argument("--table", type=Path, help="print the markdown table of a result file and exit")
    parser.add_argument("--doc", type=Path, help="with --table: also rewrite the table block in this markdown file")
    args = parser.parse_args()
    if args.table is not None:
        markdown = table(json.loads(args.table.read_text()))
        print(markdown)
        if args.doc is not None:
            rewrite_doc(args.doc, markdown)
        return 0
    result = measure(args)
    print(table(result))
    if args.out is not None:
        atomic_write_json(args.out, result)
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does removing channels buy real CPU speed? resnet20, 50 % of its channels removed, vs dense.

Prints batch-1 and batch-256 latency of the dense and the pruned models (measured interleaved, round
robin, in one process: robust to machine load), the speed-up, and next to it the MAC ratio, the
physical limit. Three pruned variants: HAP with every layer keeping exactly half of its channels
(``--scope layerwise``: a 4× MAC reduction), HAP ranked globally (irregular layer widths), and HAP
ranked globally with ``round_to`` 8.
Targets (issues 4 and 9): ≥ 2.3× at batch 256 for the 50 %-channel model in PyTorch, ≥ 2.2× in
onnxruntime (``--runtime torch onnxruntime``: each runtime's models are timed interleaved with each
other; the ONNX graphs are the ``secateurs export --format onnx`` export, run by a CPU session with
``--threads`` intra-op threads).

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \\
        PYTHONPATH=src python benchmarks/hap_speedup.py --threads 1 --runtime torch onnxruntime \\
        --json results/hap-speedup.json

The PyTorch timing uses channels_last inputs (as the runs do). Channel choice does not change speed, so HAP
scores a freshly initialised model on random calibration images with a few probes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import secateurs as sec
from secateurs.deploy.export_onnx import INPUT_NAME, onnx_bytes, onnxruntime_session
from secateurs.latency.timing import Runner, allocator_env_is_set, compare_latency, compare_runners, random_input
from secateurs.metrics.counts import count_macs, count_params
from secateurs.models import build_model

SHAPE = (1, 28, 28)


def onnxruntime_timing(models: dict[str, nn.Module], threads: int, repeats: int) -> dict[str, Any]:
    """Batch-1 and batch-256 latency of every model's ONNX export in onnxruntime, interleaved."""
    sessions = {name: onnxruntime_session(onnx_bytes(model, SHAPE), threads) for name, model in models.items()}

    def factory(name: str) -> Callable[[int], Runner]:
        def runner(batch: int) -> Runner:
            feed = {INPUT_NAME: random_input(batch, SHAPE).numpy()}
            return Runner(call=lambda: sessions[name].run(None, feed))

        return runner

    return compare_runners({name: factory(name) for name in sessions}, batch_sizes=(1, 256), repeats=repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--runtime", nargs="+", choices=("torch", "onnxruntime"), default=["torch"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    dense = build_model("resnet20", SHAPE, 10).eval()
    inputs = torch.randn(64, *SHAPE)
    data = [(inputs, torch.arange(64) % 10)]
    models: dict[str, nn.Module] = {"dense": dense}
    variants = (
        ("hap-50%-channels-layerwise", "layerwise", 1),
        ("hap-50%-channels-global", "global", 1),
        ("hap-50%-channels-global-r8", "global", 8),
    )
    for label, scope, round_to in variants:
        result = sec.prune(
            dense,
            "hap",
            0.5,
            example_inputs=inputs[:2],
            data=data,
            target="channels",
            scope=scope,
            probes=4,
            round_to=round_to,
        )
        models[label] = result.model.eval()
    timings = {}
    if "torch" in args.runtime:
        timings["torch"] = compare_latency(
            models, SHAPE, batch_sizes=(1, 256), repeats=args.repeats, threads=args.threads
        )
    if "onnxruntime" in args.runtime:
        timings["onnxruntime"] = onnxruntime_timing(models, args.threads, args.repeats)
    dense_macs = count_macs(dense, SHAPE)
    rows = []
    print(f"resnet20 on {SHAPE}, {args.threads} thread(s), allocator env set: {allocator_env_is_set()}")
    header = f"{'runtime':13}{'model':28}{'params':>10}{'MACs':>13}{'b1 ms':>9}{'b256 ms':>10}"
    print(f"{header}{'speed-up b1':>13}{'speed-up b256':>15}{'MAC ratio':>11}")
    for runtime, timing in timings.items():
        for name, model in models.items():
            macs = count_macs(model, SHAPE)
            b1 = timing[name]["batch_1"]["median_ms"]
            b256 = timing[name]["batch_256"]["median_ms"]
            row = {
                "runtime": runtime,
                "model": name,
                "params": count_params(model),
                "macs": macs,
                "batch_1_ms": b1,
                "batch_256_ms": b256,
                "speedup_1": timing["dense"]["batch_1"]["median_ms"] / b1,
                "speedup_256": timing["dense"]["batch_256"]["median_ms"] / b256,
                "speedup_256_min": timing["dense"]["batch_256"]["min_ms"] / timing[name]["batch_256"]["min_ms"],
                "mac_ratio": dense_macs / macs,
            }
            rows.append(row)
            print(
                f"{runtime:13}{name:28}{row['params']:>10,}{macs:>13,}{b1:>9.2f}{b256:>10.2f}"
                f"{row['speedup_1']:>12.2f}×{row['speedup_256']:>14.2f}×{row['mac_ratio']:>10.2f}×"
            )
    if args.json:
        payload = {
            "threads": args.threads,
            "repeats": args.repeats,
            "allocator_env": allocator_env_is_set(),
            "load_average": os.getloadavg(),
            "torch": torch.__version__,
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

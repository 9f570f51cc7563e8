"""Does removing channels buy real CPU speed? resnet20, 50 % of its channels removed, vs dense.

Prints batch-1 and batch-256 latency of the dense and the pruned models (measured interleaved, round
robin, in one process: robust to machine load), the speed-up, and next to it the MAC ratio, the
physical limit. Two pruned variants: HAP with every layer keeping exactly half of its channels
(``--scope layerwise``: a 4× MAC reduction) and HAP ranked globally (irregular layer widths).
Target (issue 4): ≥ 2.3× at batch 256 for the 50 %-channel model.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \\
        PYTHONPATH=src python benchmarks/hap_speedup.py [--threads 2] [--repeats 30] [--json out.json]

The timing uses channels_last inputs (as the runs do). Channel choice does not change speed, so HAP
scores a freshly initialised model on random calibration images with a few probes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import secateurs as sec
from secateurs.metrics.counts import count_macs, count_params
from secateurs.metrics.latency import compare_latency
from secateurs.models import build_model

SHAPE = (1, 28, 28)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    dense = build_model("resnet20", SHAPE, 10).eval()
    inputs = torch.randn(64, *SHAPE)
    data = [(inputs, torch.arange(64) % 10)]
    models = {"dense": dense}
    for label, scope in (("hap-50%-channels-layerwise", "layerwise"), ("hap-50%-channels-global", "global")):
        result = sec.prune(
            dense, "hap", 0.5, example_inputs=inputs[:2], data=data, target="channels", scope=scope, probes=4
        )
        models[label] = result.model.eval()
    timing = compare_latency(models, SHAPE, batch_sizes=(1, 256), repeats=args.repeats, threads=args.threads)
    dense_macs = count_macs(dense, SHAPE)
    rows = []
    print(f"resnet20 on {SHAPE}, {args.threads} thread(s), allocator env set: {timing['dense']['allocator_env']}")
    header = f"{'model':28}{'params':>10}{'MACs':>13}{'b1 ms':>9}{'b256 ms':>10}"
    print(f"{header}{'speed-up b1':>13}{'speed-up b256':>15}{'MAC ratio':>11}")
    for name, model in models.items():
        macs = count_macs(model, SHAPE)
        b1 = timing[name]["batch_1"]["median_ms"]
        b256 = timing[name]["batch_256"]["median_ms"]
        row = {
            "model": name,
            "params": count_params(model),
            "macs": macs,
            "batch_1_ms": b1,
            "batch_256_ms": b256,
            "speedup_1": timing["dense"]["batch_1"]["median_ms"] / b1,
            "speedup_256": timing["dense"]["batch_256"]["median_ms"] / b256,
            "mac_ratio": dense_macs / macs,
        }
        rows.append(row)
        print(
            f"{name:28}{row['params']:>10,}{macs:>13,}{b1:>9.2f}{b256:>10.2f}"
            f"{row['speedup_1']:>12.2f}×{row['speedup_256']:>14.2f}×{row['mac_ratio']:>10.2f}×"
        )
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How much of HAP's ranking is noise: per-channel Hutchinson traces against their standard errors.

    PYTHONPATH=src python benchmarks/hap_trace_noise.py runs/hap-trace-cache --out results/hap-trace-noise.json

Reads HAP's trace cache (``trace_cache:`` in suites/hap-fmnist.yaml; one file per dense model and
calibration set) and prints, per cached model: probes, per-channel traces, how many are negative, how
many lie within 2 standard errors of zero (indistinguishable from zero at that many probes), and the
median relative standard error. Only reads safetensors and JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from secateurs.io.files import atomic_write_json, load_tensors, read_json


def summarise(tensors: dict[str, torch.Tensor], probes: int) -> dict[str, Any]:
    names = sorted(key.removeprefix("trace:") for key in tensors if key.startswith("trace:"))
    traces = torch.cat([tensors[f"trace:{name}"].flatten().double() for name in names])
    errors = torch.cat([tensors[f"error:{name}"].flatten().double() for name in names])
    relative = errors / traces.abs().clamp_min(1e-30)
    return {
        "probes": probes,
        "channels": traces.numel(),
        "negative": int((traces < 0).sum()),
        "within_2se_of_zero": int((traces.abs() < 2 * errors).sum()),
        "median_relative_se": float(relative.median()),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| cached model | probes | channel traces | negative | within 2 SE of zero | median relative SE |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        share = row["within_2se_of_zero"] / row["channels"]
        lines.append(
            f"| {row['key'][:8]} | {row['probes']} | {row['channels']} | {row['negative']} "
            f"| {row['within_2se_of_zero']} ({share:.0%}) | {row['median_relative_se']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("cache", type=Path, help="a HAP trace_cache directory")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    rows = []
    for path in sorted(args.cache.glob("*.safetensors")):
        record = read_json(path.with_suffix(".json"), "trace cache record")
        rows.append({"key": path.stem, **summarise(load_tensors(path, "trace cache"), int(record["probes"]))})
    print(table(rows))
    if args.out is not None:
        atomic_write_json(
            args.out, {"rows": rows, "command": "python benchmarks/hap_trace_noise.py " + " ".join(sys.argv[1:])}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

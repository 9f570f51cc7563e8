"""``secateurs latency``: time a finished run's model in a runtime and record it in its run.json."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

from secateurs.commands.common import add_allow_changed

ORDER = 35


def format_result(run: Path, result: dict[str, Any]) -> str:
    """The human-readable report: the conditions on one line, then one line per batch size."""
    conditions = [
        f"{result['threads']} thread{'s' if result['threads'] != 1 else ''}",
        f"allocator env {'set' if result['allocator_env'] else 'NOT set'}",
    ]
    if "channels_last" in result:
        conditions.append(f"channels_last {'on' if result['channels_last'] else 'off'}")
    if "grad_mode" in result:
        conditions.append(result["grad_mode"])
    if "execution_mode" in result:
        conditions.append(f"{result['execution_mode']} execution")
    if "csr" in result:
        csr = result["csr"]
        density = csr["csr_nonzeros"] / max(1, csr["csr_entries"])
        conditions.append(f"{csr['csr_layers']} CSR layers at density {density:.3f}, {csr['dense_layers']} dense")
    lines = [f"latency of {run} in {result['runtime']} ({', '.join(conditions)})"]
    lines.append(f"{'batch':>7} {'median ms':>11} {'p90 ms':>10} {'min ms':>10} {'calls':>6}")
    for key, value in result.items():
        if key.startswith("batch_") and isinstance(value, dict):
            lines.append(
                f"{key[len('batch_') :]:>7} {value['median_ms']:11.3f} {value['p90_ms']:10.3f} "
                f"{value['min_ms']:10.3f} {value['repeats']:6d}"
            )
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    import torch

    from secateurs import __version__
    from secateurs.latency.runtimes import RUNTIMES, LatencyOptions, measure_in_runtime, validate_options
    from secateurs.runs.directory import load_run
    from secateurs.runs.update import record_latency

    runtime = RUNTIMES.get(args.runtime)  # an unknown runtime or a bad option fails before the run is loaded
    options = LatencyOptions(
        batch_sizes=tuple(args.batch),
        threads=args.latency_threads if args.latency_threads is not None else torch.get_num_threads(),
        warmup=args.warmup,
        repeats=args.repeats,
        **({} if args.density_threshold is None else {"density_threshold": args.density_threshold}),
    )
    validate_options(options)
    run = load_run(Path(args.run), allow_changed_model=args.allow_changed_model)
    result = measure_in_runtime(runtime.name, run.model, run.input_shape, options)
    entry = {
        **result,
        "input_shape": list(run.input_shape),
        "warmup": options.warmup,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "platform": platform.platform()},
        "versions": {"secateurs": __version__, "torch": torch.__version__},
    }
    record_latency(run.path, runtime.name, entry)
    if args.json:
        print(json.dumps(entry, indent=2))
    else:
        print(format_result(run.path, entry))
        print(f"recorded in {run.path / 'run.json'} under latency.{runtime.name}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("latency", help="time a run's model (torch, onnxruntime or csr); record it")
    parser.add_argument("run", help="a run directory")
    parser.add_argument("--runtime", default="torch", help="torch (default), onnxruntime or csr")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 256], metavar="B", help="batch sizes (1 256)")
    parser.add_argument(
        "--threads",
        dest="latency_threads",
        metavar="N",
        type=int,
        help="intra-op threads (default: the global --threads)",
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per batch size, after warm-up (30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per batch size first (5)")
    parser.add_argument("--density-threshold", type=float, help="csr: layers below this density run as CSR (0.2)")
    parser.add_argument("--json", action="store_true", help="print the recorded entry as JSON")
    add_allow_changed(parser)
    parser.set_defaults(handler=handle)

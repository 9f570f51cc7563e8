"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from secateurs.api import RunOptions
    from secateurs.config import TrainConfig
    from secateurs.runs.record import Metrics, RunRecord

TRAIN_FLAGS = ("epochs", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "momentum")


def key_values(items: Sequence[str] | None) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` → ``{"a": 1, "b.c": "x"}`` (values parsed as YAML scalars)."""
    from secateurs.config import parse_overrides

    return dict(parse_overrides(items or []))


def show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def train_config(args: argparse.Namespace, prefix: str = "") -> TrainConfig:
    """A validated `TrainConfig` from ``--{prefix}epochs`` etc. and ``--{prefix}set KEY=VALUE``."""
    from secateurs.config import TrainConfig, validate

    tree: dict[str, Any] = {}
    for field in TRAIN_FLAGS:
        value = getattr(args, f"{prefix}{field}", None)
        if value is not None:
            tree[field] = value
    for field in ("init", "train_subset"):
        if getattr(args, field, None) is not None:
            tree[field] = getattr(args, field)
    tree.update(key_values(getattr(args, f"{prefix}set", None)))
    config: TrainConfig = validate(TrainConfig, tree, "training options")
    return config


def run_options(args: argparse.Namespace) -> RunOptions:
    from secateurs.api import RunOptions
    from secateurs.config import MeasureConfig

    return RunOptions(
        out=Path(args.out),
        overwrite=args.overwrite,
        resume=getattr(args, "resume", False),
        progress=show_progress(args),
        measure=MeasureConfig(latency=not args.no_latency, bn_recalibrate=getattr(args, "bn_recalibrate", False)),
        invocation=getattr(args, "command_line", None),
    )


def summary(record: RunRecord, metrics: Metrics | None = None) -> str:
    """One line about a finished run: accuracies, sizes and latency (of ``metrics``, default the recorded)."""
    measured = metrics if metrics is not None else record.metrics

    def show(value: float | int | None, pattern: str) -> str:
        return "–" if value is None else format(value, pattern)

    parts = [
        f"{record.kind} run {record.name or ''}".strip(),
        f"val {show(measured.val_accuracy, '.4f')}",
        f"test {show(measured.test_accuracy, '.4f')}",
        f"params {show(measured.params, ',')}",
        f"non-zero {show(measured.nonzero_params, ',')}",
        f"MACs {show(measured.effective_macs, ',')}",
    ]
    latency = measured.latency_ms.batches() if measured.latency_ms is not None else {}
    if latency:
        parts.append(", ".join(f"batch {batch} {ms:.2f} ms" for batch, ms in latency.items()))
    return " | ".join(parts)


def seed_value(text: str) -> int:
    """``--seed``: an unsigned 32-bit integer (anything else is a usage error naming the range)."""
    from secateurs.config import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, {MAX_SEED}], got {text!r}")
    return value


def add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="run directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run at --out")
    parser.add_argument("--seed", type=seed_value, default=0, help="an integer in [0, 2**32)")
    parser.add_argument("--data-dir", help="dataset directory (or file); default: SECATEURS_DATA, then the system copy")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")


def add_training(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    dash = prefix.replace("_", "-")
    parser.add_argument(f"--{dash}epochs", type=float, help="epochs (fractions allowed)")
    parser.add_argument(f"--{dash}batch-size", type=int)
    parser.add_argument(f"--{dash}lr", type=float)
    parser.add_argument(f"--{dash}optimizer", choices=("sgd", "adam", "adamw"))
    parser.add_argument(f"--{dash}schedule", choices=("constant", "step", "cosine"))
    parser.add_argument(f"--{dash}weight-decay", type=float)
    parser.add_argument(f"--{dash}momentum", type=float)
    parser.add_argument(f"--{dash}set", action="append", metavar="KEY=VALUE", help="any other training option")

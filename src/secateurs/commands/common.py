"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from secateurs.api import RunOptions
    from secateurs.config import DataConfig, TrainConfig
    from secateurs.runs.record import Metrics, RunRecord

TRAIN_FLAGS = ("epochs", "steps", "batch_size", "lr", "optimizer", "schedule", "weight_decay", "momentum")


def key_values(items: Sequence[str] | None) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` → ``{"a": 1, "b.c": "x"}`` (values parsed as YAML scalars)."""
    from secateurs.config import parse_overrides

    return dict(parse_overrides(items or []))


def model_args(items: Sequence[str] | None) -> dict[str, Any]:
    """``--model-arg KEY=VALUE`` pairs → ``{KEY: VALUE}`` (values parsed as YAML scalars: ``img_size=64`` is 64).

    A pair without ``=``, an empty or non-identifier key, or a key given twice is a `UsageError`.
    """
    import yaml

    from secateurs.errors import UsageError

    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-arg expects KEY=VALUE with a keyword as KEY (e.g. drop_rate=0.1), got {item!r}")
        if key in parsed:
            raise UsageError(f"--model-arg {key} is given twice")
        try:
            parsed[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            parsed[key] = raw
    return parsed


def add_model(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--model`` (a zoo name or an external reference) and its repeatable ``--model-arg``."""
    parser.add_argument(
        "--model",
        required=required,
        help="a zoo model (secateurs list models), timm:NAME, python:package.module:factory or path/to/file.py:factory",
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="a keyword for an external model's factory (repeatable; e.g. img_size=64, drop_rate=0.1)",
    )


def add_allow_changed(parser: argparse.ArgumentParser) -> None:
    """``--allow-changed-model``: rebuild a run whose model file changed since it was made."""
    parser.add_argument(
        "--allow-changed-model",
        action="store_true",
        help="use a model file (FILE.py:factory) whose sha256 differs from the one the run recorded; "
        "its weights must still fit",
    )


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


DATA_FLAGS = {
    "split": "split",
    "split_seed": "split_seed",
    "image_size": "image_size",
    "channels": "channels",
    "memory_budget": "memory_budget_mb",
    "cache_dir": "cache_dir",
}
"""``--flag`` (argparse dest) → `DataConfig` field, for the flags given."""


def data_config(args: argparse.Namespace) -> DataConfig:
    """A validated `DataConfig` from ``--data``, ``--data-dir``, ``--split`` and the image-folder flags."""
    from secateurs.config import DataConfig, validate

    tree: dict[str, Any] = {"name": args.data, "dir": args.data_dir}
    for flag, key in DATA_FLAGS.items():
        if getattr(args, flag, None) is not None:
            tree[key] = getattr(args, flag)
    if getattr(args, "strict", False):
        tree["strict"] = True
    config: DataConfig = validate(DataConfig, tree, "data options")
    return config


def add_data(parser: argparse.ArgumentParser) -> None:
    """``--data`` and the options of how it is read and split (``--data-dir`` is in `add_output`)."""
    parser.add_argument("--data", default="fashion-mnist", help="a registered dataset (secateurs list datasets)")
    parser.add_argument(
        "--split",
        choices=("stratified", "tail"),
        help="validation split: stratified by class (default) or the last 1/12 of the training set",
    )
    parser.add_argument("--split-seed", type=seed_value, help="seed of the stratified split (default 0)")
    folder = parser.add_argument_group("image folders (--data imagefolder)")
    folder.add_argument("--image-size", type=int, help="resize the short side and centre-crop to N×N (default 64)")
    folder.add_argument("--channels", type=int, choices=(1, 3), help="3: RGB (default), 1: grayscale")
    folder.add_argument("--strict", action="store_true", help="refuse corrupt and non-image files instead of skipping")
    folder.add_argument(
        "--memory-budget",
        type=float,
        metavar="MB",
        help="memory-map the decoded images from a cache file above this size (default: half the available memory)",
    )
    folder.add_argument("--cache-dir", help="where that cache goes when the image folder is read-only")


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
    parser.add_argument(f"--{dash}epochs", type=float, help="budget in epochs (fractions allowed; default 5)")
    parser.add_argument(f"--{dash}steps", type=int, help=f"budget in optimizer steps, instead of --{dash}epochs")
    parser.add_argument(f"--{dash}batch-size", type=int)
    parser.add_argument(f"--{dash}lr", type=float)
    parser.add_argument(f"--{dash}optimizer", choices=("sgd", "adam", "adamw"))
    parser.add_argument(f"--{dash}schedule", choices=("constant", "step", "cosine"))
    parser.add_argument(f"--{dash}weight-decay", type=float)
    parser.add_argument(f"--{dash}momentum", type=float)
    parser.add_argument(f"--{dash}set", action="append", metavar="KEY=VALUE", help="any other training option")

"""``secateurs prune``: prune a finished run, fine-tune it, measure it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from secateurs.commands.common import (
    add_allow_changed,
    add_output,
    add_training,
    key_values,
    run_options,
    summary,
    train_config,
)

ORDER = 20


def handle(args: argparse.Namespace) -> int:
    from secateurs.api import prune_run
    from secateurs.config import CalibrationConfig, PruneConfig, validate
    from secateurs.errors import UsageError

    if args.sparsity is None and args.layer_sparsity is None:
        raise UsageError("prune needs --sparsity (the fraction removed, in [0, 1)) or --layer-sparsity FILE")
    prune = validate(
        PruneConfig,
        {
            "method": args.method,
            **({"sparsity": args.sparsity} if args.sparsity is not None else {}),
            "scope": args.scope,
            "granularity": args.granularity,
            "target": args.target,
            "min_keep": args.min_keep,
            "exclude": tuple(args.exclude or ()),
            "options": method_options(args),
            "layer_sparsity": args.layer_sparsity,
        },
        "prune options",
    )
    wants_finetune = args.finetune_epochs is not None or args.finetune_steps is not None
    finetune = train_config(args, "finetune_") if wants_finetune else None
    info = prune_run(
        Path(args.source),
        prune,
        finetune,
        seed=args.seed,
        options=run_options(args),
        calibration=CalibrationConfig(size=args.calibration),
        data_dir=args.data_dir,
        allow_changed_model=args.allow_changed_model,
    )
    print(summary(info))
    return 0


GENERIC_OPTIONS = ("rounds", "rule", "round_to", "latency_aware")
"""Flags that feed a method's options (``--rounds 8`` = ``--option rounds=8``) for methods that take them."""


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--option`` pairs plus the generic flags; a flag the method does not take is a `UsageError`."""
    from secateurs.errors import UsageError
    from secateurs.methods import METHODS

    options = key_values(args.option)
    for key in GENERIC_OPTIONS:
        value = getattr(args, key, None)
        if value is None:
            continue
        method = METHODS.get(args.method)
        if key not in method.Options.model_fields:
            takers = sorted(name for name, other in METHODS.items() if key in other.Options.model_fields)
            flag = key.replace("_", "-")
            raise UsageError(
                f"--{flag} does not apply to method {args.method!r}; "
                f"methods that take it: {', '.join(takers) or 'none'}"
            )
        if key in options and options[key] != value:
            raise UsageError(
                f"--{key.replace('_', '-')} {value} contradicts --option {key}={options[key]}; give one of them"
            )
        options[key] = value
    return options


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("prune", help="prune a finished run, then fine-tune it")
    parser.add_argument("--from", dest="source", required=True, help="the run directory to prune")
    parser.add_argument("--method", required=True, help="a registered method (secateurs list methods)")
    parser.add_argument("--sparsity", type=float, default=None, help="fraction removed, in [0, 1)")
    parser.add_argument(
        "--layer-sparsity",
        metavar="FILE",
        help="per-weight targets (layer_sparsity.yaml of `secateurs sensitivity --emit-targets`); "
        "unlisted weights get --sparsity (default 0)",
    )
    parser.add_argument("--scope", choices=("layerwise", "global", "normalized"))
    parser.add_argument("--granularity", default="element")
    parser.add_argument("--target", choices=("params", "macs", "channels"), default="params")
    parser.add_argument("--min-keep", type=int, default=1)
    parser.add_argument("--exclude", action="append", metavar="PATTERN", help="never prune weights matching this")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="a method-specific option")
    parser.add_argument("--rounds", type=int, help="pruning rounds of an iterative method (imp, infcop-*)")
    parser.add_argument("--rule", help="per-round pruning rule of an iterative method: lth or sap")
    parser.add_argument("--round-to", type=int, help="structured methods: keep channel counts in multiples of N")
    parser.add_argument(
        "--latency-aware",
        action="store_true",
        default=None,
        help="structured methods: allocate channels by importance per millisecond (a latency table timed here)",
    )
    parser.add_argument("--calibration", type=int, default=512, help="training images for data-driven scorers")
    parser.add_argument("--bn-recalibrate", action="store_true", help="re-estimate BatchNorm statistics after pruning")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted fine-tuning")
    parser.add_argument("--train-subset", type=int, help="fine-tune on only the first N training images")
    add_allow_changed(parser)
    add_output(parser)
    add_training(parser, "finetune_")
    parser.set_defaults(handler=handle)

"""``secateurs sensitivity``: prune one layer at a time over a sparsity grid; table, plot, per-layer targets."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 45

DEFAULT_GRID = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95"


def parse_grid(text: str) -> list[float]:
    from secateurs.errors import UsageError

    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--sparsities takes comma-separated fractions in [0, 1) like 0.5,0.9; got {text!r}") from None


def handle(args: argparse.Namespace) -> int:
    from secateurs.analysis.layer_targets import scale_to_target, weighted_sparsity
    from secateurs.analysis.sensitivity import run_sensitivity
    from secateurs.analysis.sensitivity_report import TargetRule, markdown_text, tolerated, write_sensitivity
    from secateurs.errors import UsageError

    if not 0.0 <= args.tolerance < 1.0:
        raise UsageError(f"--tolerance is an accuracy drop in [0, 1) (0.01 = one point), got {args.tolerance}")
    if args.target_sparsity is not None and not args.emit_targets:
        raise UsageError("--target-sparsity scales the per-layer targets: add --emit-targets")
    if args.eval_subset is not None and args.eval_subset < 1:
        raise UsageError(f"--eval-subset must be ≥ 1, got {args.eval_subset}")
    if args.min_keep < 0:
        raise UsageError(f"--min-keep must be ≥ 0, got {args.min_keep}")
    result = run_sensitivity(
        Path(args.run),
        parse_grid(args.sparsities),
        granularity=args.granularity,
        exclude=args.exclude or (),
        min_keep=args.min_keep,
        data_dir=args.data_dir,
        subset=args.eval_subset,
    )
    targets = rule = None
    if args.emit_targets:
        rule = TargetRule(tolerance=args.tolerance, target=args.target_sparsity, cap=args.max_layer_sparsity)
        limits = tolerated(result, args.tolerance)
        targets = (
            scale_to_target(limits, result.sizes, args.target_sparsity, args.max_layer_sparsity)
            if args.target_sparsity is not None
            else limits
        )
    written = write_sensitivity(
        Path(args.out), result, tolerance=args.tolerance, source=str(args.run), targets=targets, rule=rule
    )
    print(markdown_text(result, args.tolerance), end="")
    if targets is not None:
        print(f"per-layer targets (weighted overall {weighted_sparsity(targets, result.sizes):.4f}):")
        for name, value in targets.items():
            print(f"  {name}: {value:.4f}")
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("sensitivity", help="per-layer sensitivity analysis of a finished run")
    parser.add_argument("run", help="a run directory")
    parser.add_argument("--out", required=True, help="directory for the table, plot and targets")
    parser.add_argument("--granularity", default="element", help="element (weights) or filter (rows/filters)")
    parser.add_argument("--sparsities", default=DEFAULT_GRID, help=f"comma-separated grid (default {DEFAULT_GRID})")
    parser.add_argument("--exclude", action="append", metavar="PATTERN", help="leave matching weights out")
    parser.add_argument("--min-keep", type=int, default=1, help="units every layer keeps (default 1)")
    parser.add_argument("--eval-subset", type=int, help="evaluate on the first N validation images only")
    parser.add_argument("--data-dir", help="dataset directory (default: the one the run recorded)")
    parser.add_argument(
        "--tolerance", type=float, default=0.01, help="accuracy drop a layer may cost (default 0.01 = one point)"
    )
    parser.add_argument(
        "--emit-targets", action="store_true", help="write layer_sparsity.yaml (weight name → sparsity)"
    )
    parser.add_argument("--target-sparsity", type=float, help="scale the targets to this overall sparsity")
    parser.add_argument(
        "--max-layer-sparsity", type=float, default=0.95, help="cap of a scaled per-layer target (default 0.95)"
    )
    parser.set_defaults(handler=handle)

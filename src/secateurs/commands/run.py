"""``secateurs run``: a recipe from data and model to a pruned, fine-tuned, measured run."""

from __future__ import annotations

import argparse
from pathlib import Path

from secateurs.commands.common import show_progress, summary

ORDER = 40


def handle(args: argparse.Namespace) -> int:
    from secateurs.api.recipes import run_recipe

    for info in run_recipe(
        Path(args.recipe),
        args.set or [],
        out_root=Path(args.out_root),
        overwrite=args.overwrite,
        progress=show_progress(args),
        invocation=getattr(args, "command_line", None),
    ):
        print(summary(info))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("run", help="run a recipe: train → prune → fine-tune")
    parser.add_argument("recipe", help="a recipe YAML file")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe key")
    parser.add_argument("--out-root", default="runs", help="where the recipe's runs go (default: runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace finished runs of the same name")
    parser.set_defaults(handler=handle)

"""``secateurs list``: what is registered."""

from __future__ import annotations

import argparse

ORDER = 90


def handle(args: argparse.Namespace) -> int:
    from secateurs.catalog import catalog

    for name, description in catalog(args.what):
        print(f"{name:22} {description}")
    if args.what == "scorers":  # channel criteria are not per-weight scorers: they are structured methods
        structured = [name for name, description in catalog("methods") if description.startswith("[structured]")]
        print(f"\nchannel criteria are structured methods (secateurs list methods): {', '.join(structured)}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list registered methods, models, datasets, scorers, granularities")
    parser.add_argument("what", choices=("methods", "models", "datasets", "scorers", "granularities", "formats"))
    parser.set_defaults(handler=handle)

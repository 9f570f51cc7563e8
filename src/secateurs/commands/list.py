"""``secateurs list``: what is registered."""

from __future__ import annotations

import argparse

ORDER = 90


def handle(args: argparse.Namespace) -> int:
    from secateurs.catalog import catalog

    for name, description in catalog(args.what):
        print(f"{name:22} {description}")
    if args.what == "scorers":  # [weights] score every weight; [channels] score channels for structured methods
        from secateurs.catalog import channel_criteria_of_methods

        used = ", ".join(f"{method} ({criterion})" for method, criterion in channel_criteria_of_methods())
        print(f"\nchannel criteria are used by the structured methods (secateurs list methods): {used}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list registered methods, models, datasets, scorers, granularities")
    parser.add_argument("what", choices=("methods", "models", "datasets", "scorers", "granularities", "formats"))
    parser.set_defaults(handler=handle)

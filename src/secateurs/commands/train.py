"""``secateurs train``: train a zoo model from scratch into a run directory."""

from __future__ import annotations

import argparse

from secateurs.commands.common import add_output, add_training, run_options, summary, train_config

ORDER = 10


def handle(args: argparse.Namespace) -> int:
    from secateurs.config import DataConfig
    from secateurs.workflows import train_run

    info = train_run(
        args.model,
        DataConfig(name=args.data, dir=args.data_dir),
        train_config(args),
        seed=args.seed,
        options=run_options(args),
    )
    print(summary(info))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model from the zoo")
    parser.add_argument("--model", required=True, help="a registered model (secateurs list models)")
    parser.add_argument("--data", default="fashion-mnist", help="a registered dataset (secateurs list datasets)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    parser.add_argument("--init", choices=("default", "xavier-normal", "kaiming-normal"))
    parser.add_argument("--train-subset", type=int, help="use only the first N training images")
    add_output(parser)
    add_training(parser)
    parser.set_defaults(handler=handle)

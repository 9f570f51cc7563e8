"""``secateurs train``: train a zoo or external model from scratch into a run directory.

``--model`` takes a zoo name or an external reference (``timm:NAME``, ``python:package.module:factory``,
``path/to/file.py:factory``) with ``--model-arg KEY=VALUE`` for its factory (`secateurs.models.external`).

With ``--method`` (a gradual method such as ``campfire`` or ``gmp``) and ``--sparsity`` the model is
pruned gradually while it trains, e.g. ``secateurs train --model cnn-bn5 --epochs 12 --method campfire
--granularity window --sparsity 0.667 --option end_epoch=6 --out runs/cf``.
"""

from __future__ import annotations

import argparse

from secateurs.commands.common import (
    add_data,
    add_model,
    add_output,
    add_training,
    data_config,
    key_values,
    model_args,
    run_options,
    summary,
    train_config,
)
from secateurs.errors import UsageError

ORDER = 10


def handle(args: argparse.Namespace) -> int:
    from secateurs.api import train_run
    from secateurs.config import PruneConfig, validate

    gradual = None
    if (args.method is None) != (args.sparsity is None):
        raise UsageError("pruning while training needs both --method (e.g. campfire) and --sparsity (in [0, 1))")
    if args.method is not None:
        gradual = validate(
            PruneConfig,
            {
                "method": args.method,
                "sparsity": args.sparsity,
                "scope": args.scope,
                "granularity": args.granularity,
                "min_keep": args.min_keep,
                "exclude": tuple(args.exclude or ()),
                "options": key_values(args.option),
            },
            "pruning options",
        )
    info = train_run(
        args.model,
        data_config(args),
        train_config(args),
        seed=args.seed,
        options=run_options(args),
        gradual=gradual,
        model_args=model_args(args.model_arg),
    )
    print(summary(info))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="train a zoo or external model (timm:, python:, FILE.py:), optionally pruning it gradually"
    )
    add_model(parser)
    add_data(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    parser.add_argument("--init", choices=("default", "xavier-normal", "kaiming-normal"))
    parser.add_argument("--train-subset", type=int, help="use only the first N training images")
    pruning = parser.add_argument_group("pruning while training (gradual methods: campfire, gmp)")
    pruning.add_argument("--method", help="a gradual method (secateurs list methods)")
    pruning.add_argument("--sparsity", type=float, help="final fraction removed, in [0, 1)")
    pruning.add_argument("--granularity", default="element", help="element, window, kernel, window+kernel, filter, N:M")
    pruning.add_argument("--scope", choices=("layerwise", "global"))
    pruning.add_argument("--min-keep", type=int, default=1)
    pruning.add_argument("--exclude", action="append", metavar="PATTERN", help="never prune weights matching this")
    pruning.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="a method option (end_epoch=6, every=50, …)"
    )
    add_output(parser)
    add_training(parser)
    parser.set_defaults(handler=handle)

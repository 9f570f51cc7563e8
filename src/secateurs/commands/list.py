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
    if args.what == "datasets":
        print(DATASETS_NOTE)
    if args.what == "models":
        from secateurs.runtime.extras import available, install_hint

        timm = "installed" if available("timm") else f"not installed: {install_hint('timm')}"
        print(MODELS_NOTE.format(timm=timm))
    return 0


MODELS_NOTE = """
external models, wherever a model name is accepted (--model, a recipe's model:, a suite's models):
  timm:NAME                       a timm architecture, random init, never downloaded (timm {timm});
                                  num_classes and in_chans come from the data
  python:package.module:factory   factory(**model args) from an importable module
  path/to/file.py:factory         factory(**model args) from a Python file (its sha256 is recorded)
  --model-arg KEY=VALUE (repeatable; recipes: model_args, suites: args) passes keywords to the
  factory; a factory also gets num_classes, in_channels, image_size, input_shape from the data when
  its signature names them. Its output must be one (batch, classes) tensor.
  eval, export, latency and prune --from rebuild the model from what run.json records;
  --allow-changed-model accepts a model file whose hash changed (its weights must still fit)."""


DATASETS_NOTE = """
--data NAME --data-dir DIR (or SECATEURS_DATA); nothing is ever downloaded.
validation split: 1/12 of the training set, stratified by class with --split-seed (default 0);
  --split tail: the last 1/12 as stored (what the committed suites and recipes use)
imagefolder: --image-size N (short side resized, centre-cropped; default 64), --channels 1|3,
  --strict (refuse bad files instead of skipping them), --memory-budget MB (above it the decoded
  images are memory-mapped from a cache in DIR/.secateurs-cache/ or --cache-dir)
budgets: --epochs E or --steps N (--finetune-epochs / --finetune-steps when pruning)"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list registered methods, models, datasets, scorers, granularities")
    parser.add_argument("what", choices=("methods", "models", "datasets", "scorers", "granularities", "formats"))
    parser.set_defaults(handler=handle)

"""Channel criteria for structured pruning. Importing this package imports every module in it, and
each registers itself (`register_channel_scorer`); `CHANNEL_SCORERS` holds them."""

import importlib
import pkgutil

from secateurs.scoring.channel_criteria.base import (
    CHANNEL_SCORERS,
    ChannelContext,
    ChannelScorerEntry,
    ChannelScores,
    NoCriterionOptions,
    register_channel_scorer,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "CHANNEL_SCORERS",
    "ChannelContext",
    "ChannelScorerEntry",
    "ChannelScores",
    "NoCriterionOptions",
    "register_channel_scorer",
]

"""Random pruning: uniform random scores from the run's seeded generator (the floor to beat)."""

from __future__ import annotations

from secateurs.methods.base import ScoreAndSelect, SelectionOptions, register_method


class RandomPruning(ScoreAndSelect[SelectionOptions]):
    name = "random"
    description = "remove uniformly random weights (seeded)"
    scorer = "random"


register_method(RandomPruning())

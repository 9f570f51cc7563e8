"""LAMP, layer-adaptive magnitude pruning (Lee, Park, Mo, Ahn, Shin, "Layer-adaptive sparsity for the
magnitude-based pruning", ICLR 2021, arXiv 2010.07611, https://arxiv.org/abs/2010.07611).

Each weight's squared magnitude is divided by the sum of the squares of all weights of its layer that
are at least as large (`scoring.lamp`); one global threshold on these scores then sets every layer's
sparsity automatically (the largest weight of every layer scores 1, so no layer is emptied). The
paper's only hyperparameter is the global sparsity. No deviation from the paper; with
``--scope layerwise`` (or per-layer ``rates``) LAMP ranks exactly like magnitude within each layer.
"""

from __future__ import annotations

from secateurs.methods.base import ScoreAndSelect, SelectionOptions, register_method


class Lamp(ScoreAndSelect[SelectionOptions]):
    name = "lamp"
    description = "LAMP: w² / Σ of the squares of the layer's larger weights, one global threshold"
    paper = "arXiv 2010.07611"
    scorer = "lamp"
    default_scope = "global"


register_method(Lamp())

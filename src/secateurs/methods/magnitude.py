"""Magnitude pruning, layer-wise or global (Han et al., "Learning both weights and connections for
efficient neural networks", NeurIPS 2015, arXiv 1506.02626).

Keeps the weights of largest |w|. ``magnitude`` ranks within each layer by default (``--scope global``
gives one raw threshold over all layers, ``--scope normalized`` one threshold after dividing each
layer's scores by their L2 norm); ``magnitude-global`` is the latter by default, the "MP-global
(normalised)" baseline of the LAP paper (§1.3 of METHODS.md).
"""

from __future__ import annotations

from secateurs.methods.base import ScoreAndSelect, SelectionOptions, register_method


class Magnitude(ScoreAndSelect[SelectionOptions]):
    name = "magnitude"
    description = "keep the largest |w| (layer-wise; --scope global for one raw threshold)"
    paper = "arXiv 1506.02626"
    scorer = "magnitude"


class MagnitudeGlobal(ScoreAndSelect[SelectionOptions]):
    name = "magnitude-global"
    description = "|w| divided by each layer's L2 norm, one global threshold (scope normalized)"
    paper = "arXiv 2002.04809 (normalised global MP baseline)"
    scorer = "magnitude"
    default_scope = "normalized"


register_method(Magnitude())
register_method(MagnitudeGlobal())

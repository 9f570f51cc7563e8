"""GMP: gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of
pruning for model compression", ICLR workshop 2018, arXiv 1710.01878). https://arxiv.org/abs/1710.01878

Summary. During training, every Δt steps from t₀ to t_end, each layer's weights of smallest |w| are
masked so that the layer's sparsity follows the cubic schedule s(t) = s_f + (s_i − s_f)(1 − (t − t₀)/
(t_end − t₀))³; masked weights receive no update, and training continues after t_end. It is the
unstructured baseline of the gradual family (Campfire uses the same schedule with structured masks).

Deviations and choices: the same machinery as ``campfire`` (`secateurs.methods.gradual`), restricted
to ``element`` granularity; the first layer and the classifier are dense by default (options
``skip_first``/``skip_last``), as for campfire, so the two compare on the same layers; masks are frozen
after t_end (Zhu & Gupta simply stop updating them, which is the same thing). ``--scope global``
ranks all layers' magnitudes together instead of one target per layer (the paper is layer-wise).
"""

from __future__ import annotations

from secateurs.config import PruneConfig
from secateurs.errors import UsageError
from secateurs.methods.base import register_method
from secateurs.methods.gradual import GradualMethod
from secateurs.sparsity.granularity import Granularity, granularity


class GradualMagnitude(GradualMethod):
    name = "gmp"
    description = "Zhu & Gupta gradual magnitude pruning (unstructured, cubic schedule)"
    paper = "arXiv 1710.01878"

    def granularity_for(self, config: PruneConfig) -> Granularity:
        if config.granularity != "element":
            raise UsageError(
                f"gmp is unstructured (granularity 'element'), got {config.granularity!r}; "
                "for structured gradual pruning use --method campfire --granularity ..."
            )
        return granularity("element")


register_method(GradualMagnitude())

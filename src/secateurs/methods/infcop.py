"""InfCoP / InCoP: information-consistent pruning (``infcop-if``, ``infcop-gf``).

Paper: Gharatappeh & Yasaei Sekeh, "Information Consistent Pruning: How to Efficiently Search for
Sparse Networks?", arXiv 2501.15592 (2025); code Sekeh-Lab/InfCoP @ 6665f5d (METHODS.md §3).

Summary. Iterative magnitude pruning with rewinding (methods/iterative_magnitude.py, the shared
engine `IterativeMagnitudeBase`) whose retraining
inside each round ends early, once the sparse network's inter-layer flow is close to the flow of the
dense warmed-up network: every ``check_every`` epochs the flow vector φ is measured on a fixed probe and
training stops when ‖φ − φ_ref‖₂ < ε (``relative``: divided by ‖φ_ref‖₂), or when the probe accuracy
reaches the dense reference's (``stop_on_accuracy``), or when the round's budget runs out.
``infcop-if`` uses information flow (mean Pearson correlation between consecutive layers'
pre-activations), ``infcop-gf`` gradient flow (per-layer ‖∇W ⊙ M‖₂); see scoring/flow.py. The cost
of every check (and of the reference measurement) is timed and reported next to the epochs.

Deviations from the released code, all deliberate:
- Flow and accuracy are measured on a fixed subset of the **validation** split (``flow_subset``,
  default 2,000 images) instead of two passes over the whole training set, and the accuracy criterion
  compares with the dense model's accuracy on that same subset, not with the best *test* accuracy
  seen during warm-up (test-set leakage).
- Gradient flow is computed with real backward passes on the probe (the released code read the stale
  gradients of the last training batch, divided by #batches − 1, and compared a norm vector with a
  mean vector).
- Checks run every ``check_every`` epochs (0.5 by default) instead of after every 2-epoch "round".
- ε defaults to 0.05 (the released default 1.0 is met by almost any network: METHODS.md §3.4).
- The pruning rule defaults to ``lth`` like ``imp`` (the paper pairs InCoP with ``sap``: ``--rule sap``),
  so that baseline and method differ only in the stopping rule; the weight decay is the same for both.
- At least one check interval of training always runs; no check runs at the very end of the budget.
"""

from __future__ import annotations

from typing import ClassVar

from secateurs.methods.base import register_method
from secateurs.methods.iterative_magnitude import IterativeMagnitudeBase
from secateurs.methods.iterative_options import GradientFlowOptions, InfcopOptions
from secateurs.training.flow_check import StoppingRule


class InformationConsistentPruning(IterativeMagnitudeBase[InfcopOptions]):
    """InfCoP with information flow (the paper's InCoP-IF, code name ``ciap``)."""

    name = "infcop-if"
    description = "IMP whose retraining stops once the inter-layer information flow matches the dense network's"
    paper = "arXiv 2501.15592"
    flow: ClassVar[str] = "information"

    def stopping_flow(self, options: InfcopOptions) -> str | None:
        return self.flow

    def stopping_rule(self, options: InfcopOptions, reference_accuracy: float) -> StoppingRule | None:
        return StoppingRule(
            epsilon=options.epsilon,
            relative=options.relative,
            reference_accuracy=reference_accuracy if options.stop_on_accuracy else None,
        )


class GradientConsistentPruning(InformationConsistentPruning):
    """InfCoP with gradient flow (the paper's InCoP-GF, code name ``giap``), the gradient measure fixed."""

    name = "infcop-gf"
    description = "IMP whose retraining stops once the per-layer gradient norms match the dense network's"
    Options = GradientFlowOptions
    flow: ClassVar[str] = "gradient"


register_method(InformationConsistentPruning())
register_method(GradientConsistentPruning())

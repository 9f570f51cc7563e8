"""Campfire: compressible, regularization-free, structured sparse training for hardware accelerators
(Gamboa, Kudrolli, Dhoot, Pedram; Stanford; arXiv 2001.03253, 2020). https://arxiv.org/abs/2001.03253

Summary. Campfire trains a CNN while pruning it gradually to a *structured* sparsity that hardware can
store compactly: masks come from weight magnitudes (no group-lasso or L1 regulariser), are updated on a
gradual schedule, and become fixed after a set epoch; training then continues with the sparse, frozen
masks. The paper studies sparsity inside a convolution kernel ("window") and inside a filter
("kernel"), the pruning duration, the sparsity level and the learning-rate configuration, and reports
ResNet-50 on ImageNet within 1 % of dense (70 % target sparsity, > 75 % top-1) and the behaviour
under adversarial attacks.

No code is public and only the abstract could be read, so this is the reconstruction of METHODS.md
§4.2; every assumption is listed here and in docs/campfire.md:

- Schedule: Zhu & Gupta's cubic schedule (arXiv 1710.01878) from ``start`` to ``end`` with a mask
  update every Δt = ``every`` steps (default 50) and at ``end``; s_i = 0 by default. Masks are frozen
  after ``end`` (any later change is an error) and removed weights get no update (hard masks: weight
  and momentum zeroed after every optimizer step).
- Scores: |w| of the effective weights; entries already removed stay removed.
- Granularities (`secateurs.sparsity.granularities_structured`): ``window`` (same number of taps in
  every k×k kernel), ``kernel`` (same number of whole kernels, by L1 norm, in every filter),
  ``window+kernel`` (density split equally: √(1 − s) at each level), ``filter`` (coarse reference),
  ``element`` (unstructured reference) and ``N:M`` (M consecutive weights along C_in·kh·kw in
  (kh, kw, C_in) order, the hardware convention; ``n:m`` is M = 4). Reachable sparsities are discrete
  and rounded per group (``round((1 − s) · G)``); run.json reports the realised sparsity.
- Layers: every Conv2d/Linear weight except the first layer and the classifier (both dense by
  default: ``skip_first``/``skip_last`` options), and except ``--exclude`` patterns. A layer the
  granularity cannot cut (a 1×1 conv or a linear layer under ``window``) is an error unless
  ``fallback`` names a granularity for it (e.g. ``fallback=2:4``, the paper's likely treatment of
  ResNet-50's 1×1 convs — uncertain).
- Every layer gets the same target (layer-wise); the granularity and the schedule are the same for
  every comparison, so a comparison isolates the granularity.
- Deviation: the learning-rate schedule and the pruning window of the paper are unknown; both are
  options here (``end_epoch`` against the training config's ``milestones``).
"""

from __future__ import annotations

from secateurs.methods.base import register_method
from secateurs.methods.gradual import GradualMethod


class Campfire(GradualMethod):
    name = "campfire"
    description = "gradual magnitude pruning to window/kernel/window+kernel/filter/N:M structure, masks frozen at end"
    paper = "arXiv 2001.03253"


register_method(Campfire())

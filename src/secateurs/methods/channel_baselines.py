"""The channel-pruning baselines every structured-pruning paper compares against.

* ``l1-filter`` — Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient ConvNets",
  ICLR 2017, https://arxiv.org/abs/1608.08710. Removes the filters of smallest L1 norm, with the same
  fraction per layer (the paper's per-layer sensitivity analysis is replaced by the allocator's
  target search: deviation).
* ``l2-filter`` — the same with the L2 norm of each filter.
* ``taylor`` — Molchanov, Mallya, Tyree, Frosio, Kautz, "Importance Estimation for Neural Network
  Pruning", CVPR 2019, https://arxiv.org/abs/1906.10771. First-order Taylor importance (g·w summed
  over a filter, squared, averaged over calibration batches), ranked globally as in the paper.
  Deviation: one-shot on the calibration batches in eval mode instead of accumulated during training
  and pruned iteratively.
* ``random-channel`` — uniform random channel scores from the run's seed (``random`` is the
  unstructured baseline).

Each is a channel criterion of `scoring.channel_criteria` (``l1``, ``l2``, ``taylor``, ``random``) run
through `ChannelPruning` with its paper's default policy (``--scope`` picks another): coupled groups
score the sum of their filters' scores, channels are removed physically, and ``--target
params|macs|channels`` sets what ``sparsity`` measures.
"""

from __future__ import annotations

from secateurs.methods.base import register_method
from secateurs.methods.channel_pruning import ChannelOptions, ChannelPruning
from secateurs.scoring.channel_criteria.oracle import OracleOptions


class L1Filter(ChannelPruning[ChannelOptions]):
    name = "l1-filter"
    description = "remove the filters (channels) of smallest L1 norm, same fraction per layer"
    paper = "arXiv 1608.08710"
    criterion = "l1"
    default_scope = "layerwise"


class L2Filter(ChannelPruning[ChannelOptions]):
    name = "l2-filter"
    description = "remove the filters (channels) of smallest L2 norm, same fraction per layer"
    paper = "arXiv 1608.08710 (L2 variant)"
    criterion = "l2"
    default_scope = "layerwise"


class Taylor(ChannelPruning[ChannelOptions]):
    name = "taylor"
    description = "first-order Taylor channel importance (Molchanov 2019), global ranking"
    paper = "arXiv 1906.10771"
    needs_data = True
    criterion = "taylor"


class RandomChannel(ChannelPruning[ChannelOptions]):
    name = "random-channel"
    description = "remove uniformly random channels (seeded), same fraction per layer"
    criterion = "random"
    default_scope = "layerwise"


class OracleChannelOptions(ChannelOptions, OracleOptions):
    """The allocation options and the oracle's score cache."""


class OracleChannel(ChannelPruning[OracleChannelOptions]):
    name = "oracle-channel"
    description = "remove the channels whose removal alone raises the calibration loss least (exact, costly)"
    needs_data = True
    criterion = "oracle"


register_method(L1Filter())
register_method(L2Filter())
register_method(Taylor())
register_method(RandomChannel())
register_method(OracleChannel())

"""What is registered: the rows of ``secateurs list``."""

from __future__ import annotations

from secateurs.errors import UsageError

CATALOGS = ("methods", "models", "datasets", "scorers", "granularities", "formats")


def catalog(what: str) -> list[tuple[str, str]]:
    """``(name, description)`` rows of the registry ``what``, sorted by name (``scorers``: the per-weight
    scorers, then the channel criteria, each row saying which kind it is)."""
    if what == "methods":
        from secateurs.methods import METHODS

        return [(name, f"[{m.kind}] {m.description}") for name, m in METHODS.items()]
    if what == "models":
        from secateurs.models import MODELS

        return [(name, f"[{e.kind}] {e.description}") for name, e in MODELS.items()]
    if what == "datasets":
        from secateurs.data.registry import DATASETS

        return [(name, e.description) for name, e in DATASETS.items()]
    if what == "scorers":
        from secateurs.scoring import SCORERS
        from secateurs.scoring.channel_criteria import CHANNEL_SCORERS

        weights = [(name, f"[weights] {e.description}") for name, e in SCORERS.items()]
        return weights + [(name, f"[channels] {e.description}") for name, e in CHANNEL_SCORERS.items()]
    if what == "granularities":
        from secateurs.sparsity.granularity import GRANULARITIES

        return [(name, (type(g).__doc__ or "").strip().splitlines()[0]) for name, g in GRANULARITIES.items()]
    if what == "formats":
        from secateurs.deploy.exporters import load_exporters

        return [(name, e.description) for name, e in load_exporters().items()]
    raise UsageError(f"cannot list {what!r}; accepted: {', '.join(CATALOGS)}")


def channel_criteria_of_methods() -> list[tuple[str, str]]:
    """``(structured method, the channel criterion it runs)`` for every method built on a criterion."""
    from secateurs.methods import METHODS
    from secateurs.methods.channel_pruning import ChannelPruning

    return [(name, method.criterion) for name, method in METHODS.items() if isinstance(method, ChannelPruning)]

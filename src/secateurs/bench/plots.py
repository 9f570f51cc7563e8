"""The report's PNG plots, drawn with matplotlib's object API (Agg canvas, no pyplot global state).

Each function returns a `Plot`: PNG bytes and a caption, or no bytes and a caption that says why the
plot was skipped (the report shows that note instead). The series come from `secateurs.bench.plot_data`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from secateurs.runtime.extras import MissingExtra, install_hint

try:  # the `report` extra
    import matplotlib
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter
except ImportError:
    raise MissingExtra(
        f"plotting (secateurs report, sensitivity.png) needs matplotlib, which is not installed: "
        f"{install_hint('matplotlib')}"
    ) from None

from secateurs.bench import plot_data
from secateurs.bench.plot_data import DENSE, Point
from secateurs.bench.results import ResultRow

BAND_COLOURS = {"prune": "#d62728", "implant": "#ff7f0e", "keep": "#2ca02c"}


@dataclass(frozen=True)
class PlotStyle:
    """Size of one panel in inches, resolution and font size."""

    dpi: int = 100
    panel_width: float = 6.0
    panel_height: float = 4.0
    font_size: float = 9.0


SMALL = PlotStyle(dpi=72, panel_width=5.5, panel_height=3.6, font_size=8.0)
"""The README thumbnails (`make report`)."""


@dataclass(frozen=True)
class Plot:
    """A rendered plot (``png``) or a skipped one (``png`` is None and ``caption`` says why)."""

    name: str
    title: str
    caption: str
    png: bytes | None
    figure: Figure | None = field(default=None, compare=False, repr=False)
    """The matplotlib figure behind ``png`` (tests inspect its axes)."""


def rendered(name: str, title: str, caption: str, fig: Figure) -> Plot:
    return Plot(name, title, caption, png_bytes(fig), fig)


def skipped(name: str, title: str, reason: str) -> Plot:
    return Plot(name, title, reason, None)


def colours(labels: Sequence[str]) -> dict[str, Any]:
    """A fixed colour per method label (dense is black), from matplotlib's qualitative maps."""
    palette = matplotlib.colormaps["tab10" if len(labels) <= 11 else "tab20"]
    others = [label for label in labels if label != DENSE]
    mapping: dict[str, Any] = {label: palette(index % palette.N) for index, label in enumerate(others)}
    mapping[DENSE] = "black"
    return mapping


def figure(style: PlotStyle, panels: int, columns: int = 2, height: float | None = None) -> tuple[Figure, list[Axes]]:
    """A figure with ``panels`` axes in a grid of at most ``columns`` columns."""
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    fig = Figure(
        figsize=(style.panel_width * columns, (height or style.panel_height) * rows),
        dpi=style.dpi,
        layout="constrained",
    )
    FigureCanvasAgg(fig)  # render with Agg; pyplot (and its global backend) is never imported
    axes = [fig.add_subplot(rows, columns, index + 1) for index in range(panels)]
    for ax in axes:
        ax.tick_params(labelsize=style.font_size)
        ax.grid(True, alpha=0.3)
    return fig, axes


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG (no timestamp or software metadata, so re-rendering gives equal bytes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _legend(ax: Axes, style: PlotStyle) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=style.font_size - 1, loc="best")


def _dense_reference(ax: Axes, line: Sequence[Point] | None, scale: float = 100.0) -> None:
    if not line:
        return
    dense = line[0]
    ax.axhline(scale * dense.y, color="black", linestyle="--", linewidth=1, label=f"dense {scale * dense.y:.2f}")
    if dense.y_std:
        ax.axhspan(scale * (dense.y - dense.y_std), scale * (dense.y + dense.y_std), color="black", alpha=0.08)


def _seed_note(series: dict[str, dict[str, list[Point]]]) -> str:
    counts = sorted({p.seeds for by_label in series.values() for line in by_label.values() for p in line})
    if counts == [1]:
        return "one seed per point (no error bars)"
    return f"mean ± std over {'/'.join(str(c) for c in counts)} seeds"


# ------------------------------------------------------------------------------------------ sweeps
def accuracy_vs_sparsity(rows: Sequence[ResultRow], style: PlotStyle, log_remaining: bool | None = None) -> Plot:
    """Test accuracy per method against the fraction of prunable weights removed (or left, on a log axis)."""
    name, title = "accuracy-vs-sparsity", "Test accuracy vs sparsity"
    series = plot_data.sparsity_points(rows)
    if not any(label != DENSE for by_label in series.values() for label in by_label):
        return skipped(name, title, "skipped: no pruned cell has a test accuracy")
    log = plot_data.wants_log_remaining(rows) if log_remaining is None else log_remaining
    palette = colours(plot_data.labels(rows))
    fig, axes = figure(style, len(series))
    for ax, (model, by_label) in zip(axes, series.items(), strict=True):
        _dense_reference(ax, by_label.get(DENSE))
        for label, line in by_label.items():
            if label == DENSE:
                continue
            xs = [100 * (1 - p.x) if log else 100 * p.x for p in line]
            if log:
                xs = [max(x, 1e-4) for x in xs]
            ax.errorbar(
                xs,
                [100 * p.y for p in line],
                yerr=[100 * p.y_std for p in line],
                marker="o",
                markersize=4,
                capsize=3,
                color=palette[label],
                label=label,
            )
        if log:
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.set_xlabel("prunable weights left (%, log scale)", fontsize=style.font_size)
        else:
            ax.set_xlabel("prunable weights removed (%)", fontsize=style.font_size)
        ax.set_ylabel("test accuracy (%)", fontsize=style.font_size)
        ax.set_title(model, fontsize=style.font_size + 1)
        _legend(ax, style)
    axis = "weights left, log scale" if log else "weights removed"
    caption = (
        f"Test accuracy after fine-tuning against the realised fraction of prunable weights ({axis}); "
        f"{_seed_note(series)}; dashed: the dense model."
    )
    return rendered(name, title, caption, fig)


def _cost_panel(
    ax: Axes, by_label: dict[str, list[Point]], palette: dict[str, Any], style: PlotStyle, *, joined: bool = True
) -> None:
    """One colour per method; ``joined`` links its points in x order, else each point is labelled with its sparsity."""
    for label, line in by_label.items():
        if label == DENSE:
            for p in line:
                ax.plot([p.x], [100 * p.y], marker="*", markersize=11, color="black", linestyle="none", label="dense")
            continue
        ax.errorbar(
            [p.x for p in line],
            [100 * p.y for p in line],
            yerr=[100 * p.y_std for p in line],
            marker="o",
            markersize=4,
            capsize=3,
            color=palette[label],
            label=label,
            linestyle="-" if joined else "none",
        )
        if not joined:
            for p in line:
                ax.annotate(
                    f"{p.sparsity:g}",
                    (p.x, 100 * p.y),
                    textcoords="offset points",
                    xytext=(3, 3),
                    fontsize=style.font_size - 2,
                    color=palette[label],
                )
    xs = [p.x for line in by_label.values() for p in line if p.x > 0]
    if xs and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_ylabel("test accuracy (%)", fontsize=style.font_size)
    _legend(ax, style)


def accuracy_vs_macs(rows: Sequence[ResultRow], style: PlotStyle) -> Plot:
    """Test accuracy against multiply-accumulates per image that touch a non-zero weight."""
    name, title = "accuracy-vs-macs", "Test accuracy vs MACs"
    series = plot_data.macs_points(rows)
    if not series:
        return skipped(name, title, "skipped: no row records metrics.effective_macs and a test accuracy")
    palette = colours(plot_data.labels(rows))
    fig, axes = figure(style, len(series))
    for ax, (model, by_label) in zip(axes, series.items(), strict=True):
        _cost_panel(ax, by_label, palette, style)
        ax.set_xlabel("MACs per image (non-zero weights)", fontsize=style.font_size)
        ax.set_title(model, fontsize=style.font_size + 1)
    caption = (
        "Test accuracy against the multiply-accumulates per image that involve a non-zero weight "
        "(structured methods: the physically smaller model); the star is the dense model; "
        f"{_seed_note(series)}."
    )
    return rendered(name, title, caption, fig)


def accuracy_vs_latency(rows: Sequence[ResultRow], style: PlotStyle) -> Plot:
    """Test accuracy against measured inference latency, one panel per model × batch size."""
    name, title = "accuracy-vs-latency", "Test accuracy vs measured latency"
    batches = plot_data.latency_batches(rows)
    keys = [f"batch_{batch}" for batch in batches]
    if not keys:
        return skipped(name, title, "skipped: no row records a latency measurement (the suite ran with latency off)")
    panels = [
        (model, f"batch_{batch}", by_label)
        for batch in batches
        for model, by_label in plot_data.latency_points(rows, batch).items()
    ]
    palette = colours(plot_data.labels(rows))
    fig, axes = figure(style, len(panels), columns=len(keys))
    for ax, (model, key, by_label) in zip(axes, panels, strict=True):
        _cost_panel(ax, by_label, palette, style, joined=False)
        ax.set_xlabel(f"median latency, {key.replace('_', ' ')} (ms)", fontsize=style.font_size)
        ax.set_title(model, fontsize=style.font_size + 1)
    jobs = plot_data.parallel_jobs(rows)
    caveat = (
        f" Some cells were measured while up to {jobs} cells ran in parallel (bench --jobs {jobs}): "
        "their latencies are not comparable; re-run with --jobs 1 for timings."
        if jobs > 1
        else ""
    )
    caption = (
        "Test accuracy against the median of repeated timed forward passes on the machine that ran the suite "
        "(PyTorch dense kernels: unstructured sparsity saves no time there); points are labelled with their "
        f"target sparsity.{caveat}"
    )
    return rendered(name, title, caption, fig)


def accuracy_vs_epochs(rows: Sequence[ResultRow], style: PlotStyle) -> Plot:
    """Validation accuracy per round against cumulative training epochs (iterative methods such as InfCoP)."""
    name, title = "accuracy-vs-epochs", "Accuracy vs cumulative training epochs"
    curves = plot_data.round_curves(rows)
    if not curves:
        return skipped(
            name,
            title,
            "skipped: no row has per-round history (history.method entries with cumulative_epochs and val_accuracy)",
        )
    finals = plot_data.final_epoch_points(rows, curves)
    palette = colours(plot_data.labels(rows))
    fig, axes = figure(style, len(curves))
    for ax, (model, by_label) in zip(axes, curves.items(), strict=True):
        for label, curve in by_label.items():
            ax.errorbar(
                [r.epochs for r in curve],
                [100 * r.accuracy for r in curve],
                yerr=[100 * r.accuracy_std for r in curve],
                marker="o",
                markersize=4,
                capsize=3,
                color=palette[label],
                label=f"{label} (rounds)",
            )
            if len(curve) <= 12:
                for r in curve:
                    if r.sparsity is not None:
                        ax.annotate(
                            f"{100 * (1 - r.sparsity):.3g}%",
                            (r.epochs, 100 * r.accuracy),
                            textcoords="offset points",
                            xytext=(3, 4),
                            fontsize=style.font_size - 2,
                            color=palette[label],
                        )
        for label, line in finals.get(model, {}).items():
            ax.plot(
                [p.x for p in line],
                [100 * p.y for p in line],
                marker="s",
                markersize=5,
                linestyle="none",
                markerfacecolor="none",
                color=palette[label],
                label=f"{label} (final)",
            )
        ax.set_xlabel("cumulative training epochs", fontsize=style.font_size)
        ax.set_ylabel("validation accuracy (%)", fontsize=style.font_size)
        ax.set_title(model, fontsize=style.font_size + 1)
        _legend(ax, style)
    caption = (
        "Validation accuracy at the end of each pruning round against the training epochs spent so far "
        "(labels: prunable weights left); hollow squares: every cell's final validation accuracy against "
        "its total training epochs (train_epochs)."
    )
    return rendered(name, title, caption, fig)


# ------------------------------------------------------------------------------------------ one run
def layer_sparsity(rows: Sequence[ResultRow], style: PlotStyle, run_key: str | None = None) -> Plot:
    """Bars: the fraction of each layer's weights removed in one cell (``--run KEY`` or the first with layers)."""
    name, title = "layer-sparsity", "Per-layer sparsity"
    row = plot_data.choose_row(rows, run_key, "layers")
    counts = plot_data.layer_counts(row) if row is not None else []
    if row is None or not counts:
        which = f"cell {run_key!r} has" if run_key else "no cell has"
        return skipped(name, title, f"skipped: {which} per-layer counts (method_info.layers)")
    fig, (ax,) = figure(style, 1, height=max(2.5, 0.32 * len(counts) + 1.2))
    positions = list(range(len(counts)))
    ax.barh(positions, [100 * c.removed_fraction for c in counts], color="#1f77b4")
    ax.set_yticks(positions, [c.name for c in counts], fontsize=style.font_size - 1)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    for position, count in zip(positions, counts, strict=True):
        ax.annotate(
            f"{count.kept:,}/{count.total:,} kept",
            (100 * count.removed_fraction, position),
            textcoords="offset points",
            xytext=(3, -3),
            fontsize=style.font_size - 2,
        )
    ax.set_xlabel("weights removed (%)", fontsize=style.font_size)
    ax.set_title(row.key, fontsize=style.font_size + 1)
    total = sum(c.total for c in counts)
    kept = sum(c.kept for c in counts)
    caption = (
        f"Fraction of each prunable layer's weights removed in cell {row.key} "
        f"({kept:,} of {total:,} kept overall, {100 * (1 - kept / total):.2f} % removed)."
    )
    return rendered(name, title, caption, fig)


def channel_sensitivity(rows: Sequence[ResultRow], style: PlotStyle, run_key: str | None = None) -> Plot:
    """HAP: every channel's sensitivity sorted ascending, with the prune / implant / keep bands."""
    name, title = "channel-sensitivity", "Per-channel sensitivity (HAP)"
    row = plot_data.choose_row(rows, run_key, "channel_scores")
    if row is None and run_key is not None:
        row = plot_data.choose_row(rows, None, "channel_scores")
    ranking = plot_data.channel_ranking(row) if row is not None else None
    if row is None or ranking is None:
        return skipped(name, title, "skipped: no cell records method_info.channel_scores")
    fig, (curve, bars) = figure(style, 2)
    ranks = list(range(len(ranking.scores)))
    for band in plot_data.BANDS:
        count = ranking.bands.count(band)
        members = [i for i, b in enumerate(ranking.bands) if b == band]
        if members:
            curve.scatter(
                members,
                [ranking.scores[i] for i in members],
                s=6,
                color=BAND_COLOURS[band],
                label=f"{band} ({count})",
                zorder=3,
            )
    curve.plot(ranks, ranking.scores, color="grey", linewidth=0.8, zorder=2)
    for value, label in ((ranking.keep_above, "keep above"), (ranking.implant_above, "implant above")):
        if value is not None:
            curve.axhline(value, color="black", linestyle=":", linewidth=1, label=f"{label} {value:.3g}")
    low = min(ranking.scores)
    if low > 0:
        curve.set_yscale("log")
    if ranking.keep_above is not None:
        top = max(ranking.scores)
        floor = low if low > 0 else min(low, 0.0)
        if ranking.implant_above is not None:
            curve.axhspan(floor, ranking.implant_above, color=BAND_COLOURS["prune"], alpha=0.07)
            curve.axhspan(ranking.implant_above, ranking.keep_above, color=BAND_COLOURS["implant"], alpha=0.1)
        else:
            curve.axhspan(floor, ranking.keep_above, color=BAND_COLOURS["prune"], alpha=0.07)
        curve.axhspan(ranking.keep_above, top, color=BAND_COLOURS["keep"], alpha=0.07)
    curve.set_xlabel("channel rank (ascending sensitivity)", fontsize=style.font_size)
    curve.set_ylabel("sensitivity", fontsize=style.font_size)
    curve.set_title(row.key, fontsize=style.font_size + 1)
    _legend(curve, style)
    per_layer = ranking.band_counts()
    positions = list(range(len(per_layer)))
    left = [0] * len(per_layer)
    for band in plot_data.BANDS:
        widths = [counts[band] for counts in per_layer.values()]
        bars.barh(positions, widths, left=left, color=BAND_COLOURS[band], label=band)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    bars.set_yticks(positions, list(per_layer), fontsize=style.font_size - 2)
    bars.invert_yaxis()
    bars.set_xlabel("channels", fontsize=style.font_size)
    _legend(bars, style)
    summary = ", ".join(f"{ranking.bands.count(b)} {b}" for b in plot_data.BANDS)
    caption = (
        f"Cell {row.key}: every channel's sensitivity (method_info.channel_scores) in ascending order, "
        f"coloured by its fate ({summary}); right: the same per layer."
    )
    return rendered(name, title, caption, fig)

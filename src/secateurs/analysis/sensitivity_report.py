"""Files of a sensitivity analysis: CSV, Markdown, a plot, JSON, and optional per-layer targets (YAML).

``OUT/sensitivity.csv``   one line per (layer, sparsity): requested and realised sparsity, kept/total,
                          validation accuracy and loss, accuracy drop, and the layer's tolerated sparsity
``OUT/sensitivity.md``    layers × sparsities, validation accuracy in %, plus the tolerated sparsity
``OUT/sensitivity.png``   validation accuracy against sparsity, one line per layer
``OUT/sensitivity.json``  everything above, machine-readable
``OUT/layer_sparsity.yaml`` (with targets) weight name → sparsity, for a layer-wise method
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from secateurs.analysis.layer_targets import tolerated_sparsity, weighted_sparsity
from secateurs.analysis.sensitivity import Sensitivity
from secateurs.bench.plots import PlotStyle, figure, png_bytes
from secateurs.io.files import atomic_write_bytes


@dataclass(frozen=True)
class TargetRule:
    """How targets were derived (recorded next to them)."""

    tolerance: float
    target: float | None
    cap: float


def tolerated(result: Sensitivity, tolerance: float) -> dict[str, float]:
    """Every layer's tolerated sparsity (`tolerated_sparsity` over its curve)."""
    return {
        layer: tolerated_sparsity([(p.sparsity, result.drop(p)) for p in result.curve(layer)], tolerance)
        for layer in result.layers
    }


def csv_text(result: Sensitivity, tolerance: float) -> str:
    limits = tolerated(result, tolerance)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "layer",
            "sparsity",
            "realised_sparsity",
            "kept",
            "total",
            "val_accuracy",
            "val_loss",
            "accuracy_drop",
            "tolerated_sparsity",
        ]
    )
    for point in result.points:
        writer.writerow(
            [
                point.layer,
                repr(point.sparsity),
                repr(point.realised_sparsity),
                point.kept,
                point.total,
                repr(point.accuracy),
                repr(point.loss),
                repr(result.drop(point)),
                repr(limits[point.layer]),
            ]
        )
    return buffer.getvalue()


def markdown_text(result: Sensitivity, tolerance: float) -> str:
    limits = tolerated(result, tolerance)
    header = ["layer", "weights", *[f"{s:g}" for s in result.sparsities], f"tolerated (drop ≤ {tolerance:g})"]
    lines = [
        f"Validation accuracy (%) with one layer pruned at a time ({result.granularity} granularity, magnitude); "
        f"unpruned: {100 * result.baseline_accuracy:.2f} %.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for layer in result.layers:
        cells = [layer, f"{result.sizes[layer]:,}"]
        cells += [f"{100 * p.accuracy:.2f}" for p in result.curve(layer)]
        cells.append(f"{limits[layer]:g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_png(result: Sensitivity, style: PlotStyle, tolerance: float | None = None) -> bytes:
    fig, (ax,) = figure(style, 1, height=style.panel_height * 1.1)
    for layer in result.layers:
        curve = result.curve(layer)
        ax.plot(
            [100 * p.sparsity for p in curve], [100 * p.accuracy for p in curve], marker="o", markersize=3, label=layer
        )
    ax.axhline(100 * result.baseline_accuracy, color="black", linestyle="--", linewidth=1, label="unpruned")
    if tolerance is not None:
        ax.axhline(
            100 * (result.baseline_accuracy - tolerance), color="grey", linestyle=":", linewidth=1, label="tolerance"
        )
    ax.set_xlabel(f"sparsity of the one pruned layer (%, {result.granularity})", fontsize=style.font_size)
    ax.set_ylabel("validation accuracy (%)", fontsize=style.font_size)
    ax.legend(fontsize=style.font_size - 2, loc="lower left", ncol=2 if len(result.layers) > 8 else 1)
    return png_bytes(fig)


def targets_yaml(targets: Mapping[str, float], sizes: Mapping[str, int], rule: TargetRule, source: str) -> str:
    """The YAML file of per-layer targets, with a comment header stating how they were derived."""
    overall = weighted_sparsity(targets, sizes)
    scaled = (
        f"scaled to an overall {rule.target:g} of these layers' weights (cap {rule.cap:g} per layer)"
        if rule.target is not None
        else "not scaled (each layer's tolerated sparsity)"
    )
    header = [
        f"# Per-layer sparsity targets from `secateurs sensitivity` of {source}.",
        f"# Rule: largest grid sparsity whose accuracy drop stays within {rule.tolerance:g}, {scaled}.",
        f"# Weighted overall sparsity of the listed layers: {overall:.4f}.",
        "# Use: secateurs prune --layer-sparsity THIS_FILE, or method: {name: magnitude, layer_sparsity: THIS_FILE}.",
    ]
    body = yaml.safe_dump({name: round(float(value), 6) for name, value in targets.items()}, sort_keys=False)
    return "\n".join(header) + "\n" + body


def result_json(
    result: Sensitivity, tolerance: float, source: str, targets: Mapping[str, float] | None, rule: TargetRule | None
) -> dict[str, Any]:
    return {
        "run": source,
        "granularity": result.granularity,
        "scorer": "magnitude",
        "sparsities": list(result.sparsities),
        "baseline": {"val_accuracy": result.baseline_accuracy, "val_loss": result.baseline_loss},
        "layers": {name: {"weights": result.sizes[name]} for name in result.layers},
        "tolerance": tolerance,
        "tolerated_sparsity": tolerated(result, tolerance),
        "points": [
            {
                "layer": p.layer,
                "sparsity": p.sparsity,
                "realised_sparsity": p.realised_sparsity,
                "kept": p.kept,
                "total": p.total,
                "val_accuracy": p.accuracy,
                "val_loss": p.loss,
                "accuracy_drop": result.drop(p),
            }
            for p in result.points
        ],
        "targets": dict(targets) if targets is not None else None,
        "target_rule": None if rule is None else {"tolerance": rule.tolerance, "target": rule.target, "cap": rule.cap},
    }


def write_sensitivity(
    out: Path,
    result: Sensitivity,
    *,
    tolerance: float,
    source: str,
    targets: Mapping[str, float] | None = None,
    rule: TargetRule | None = None,
    style: PlotStyle | None = None,
) -> list[Path]:
    """Write the files listed in the module docstring into ``out``; returns their paths."""
    files = {
        "sensitivity.csv": csv_text(result, tolerance).encode(),
        "sensitivity.md": markdown_text(result, tolerance).encode(),
        "sensitivity.png": plot_png(result, style or PlotStyle(), tolerance),
        "sensitivity.json": (
            json.dumps(result_json(result, tolerance, source, targets, rule), indent=2) + "\n"
        ).encode(),
    }
    if targets is not None and rule is not None:
        files["layer_sparsity.yaml"] = targets_yaml(targets, result.sizes, rule, source).encode()
    written = []
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
        written.append(out / name)
    return written

"""What a run's log.txt tells: the run, section by section, in the order it happened.

While a run is staged the ``secateurs`` logger is mirrored into its log.txt
(`secateurs.runs.directory.RunStage.attach_log`). The workflows of `secateurs.api.runs` log these
sections to the `RUN_LOG` logger (the console shows them with ``--verbose`` only); the trainer adds its
epoch lines and `RunStage.commit` ends the file with the files it published::

    command: secateurs prune --from runs/lenet5 --method l2-filter --sparsity 0.5 --out runs/l2
    config:
        data: name=synthetic, dir=None
        method: method=l2-filter, sparsity=0.5, ...
    data: synthetic: 1,100 train / 100 validation / 400 test images of 1×28×28, 10 classes
        normalisation: mean [0.4999], std [0.2388]
    model: lenet5: 61,706 parameters (61,470 prunable), 416,520 MACs per example
        parent: runs/lenet5 (train run: val 0.7000, test 0.6950)
    method: l2-filter (structured), target 0.5 of params, scope layerwise
        timings: score 0.054 s, prune 0.120 s
        group features.0: 6 → 5 channels (1 removed, 0 implanted)
        scores features.0: 6 channels, min 0.5101, median 0.5802, max 0.8502
        ...
    before fine-tuning: val 0.4200 (loss 1.8134), test 0.4800 (loss 1.8334)
    fine-tuning: none (0 epochs requested)
    metrics:
        accuracy: val 0.4200 (loss 1.8134), test 0.4800 (loss 1.8334)
        parameters: 29,886 (29,886 non-zero), prunable 29,719 (29,719 non-zero)
        ...
    timings: wall 5.12 s, score 0.054 s, prune 0.120 s
    files: runs/l2/ holds log.txt, model.safetensors, plan.json, run.json

Each section is one log record: a first line ``NAME: summary`` and indented detail lines. The
functions ending in ``_section`` are pure (they return the text); `emit` logs one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from secateurs.api.pruning import PruneResult
from secateurs.config import PruneConfig, TrainConfig
from secateurs.data.types import Splits
from secateurs.methods import Method
from secateurs.metrics.counts import SizeReport
from secateurs.runs.directory import RUN_LOG
from secateurs.runs.record import Metrics, ModelSpec, RunConfig, RunRecord, Timings

log = logging.getLogger(RUN_LOG)

INDENT = "    "
MAX_LAYER_LINES = 64
"""Per-layer (or per-group) lines shown before the rest is summarised in one line."""
MAX_SCALARS = 24


def section(name: str, summary: str = "", details: Iterable[str] = ()) -> str:
    """``NAME: summary`` followed by the ``details``, one per line, indented."""
    head = f"{name}: {summary}".rstrip()
    return "\n".join([head, *(f"{INDENT}{line}" for line in details)])


def emit(text: str) -> None:
    """Log one section (a record of the `RUN_LOG` logger at INFO)."""
    log.info("%s", text)


def _number(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e6 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def key_values(values: Mapping[str, Any]) -> str:
    """``a=1, b=x, c=[1, 2]``: a configuration section on one line, in its own order."""
    return ", ".join(f"{key}={_number(value) if isinstance(value, float) else value}" for key, value in values.items())


def _epochs(value: float) -> str:
    return f"{_number(value)} epoch{'' if value == 1 else 's'}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


# ------------------------------------------------------------------------------------ the start
def command_section(invocation: str) -> str:
    """The command line (or Python call) that started the run."""
    return section("command", invocation)


def config_section(config: RunConfig) -> str:
    """The resolved configuration, one line per section."""
    lines = []
    for name, value in config.to_json().items():
        lines.append(f"{name}: {key_values(value) if isinstance(value, dict) else value}")
    return section("config", "", lines)


def data_section(splits: Splits) -> str:
    """The dataset, its split sizes, input shape, class count and normalisation."""
    dataset = splits.dataset
    shape = "×".join(str(size) for size in dataset.input_shape)
    summary = (
        f"{dataset.name}: {len(splits.train):,} train / {len(splits.val):,} validation / {len(splits.test):,} test "
        f"images of {shape}, {dataset.num_classes} classes"
    )
    mean = ", ".join(f"{value:.4f}" for value in dataset.mean)
    std = ", ".join(f"{value:.4f}" for value in dataset.std)
    details = [f"normalisation: mean [{mean}], std [{std}] (x / 255, then (x - mean) / std per channel)"]
    if dataset.augment != "none":
        details.append(f"augmentation: {dataset.augment} (training batches only)")
    return section("data", summary, details)


def model_label(spec: ModelSpec) -> str:
    """The model's name, with an external model's args and what identifies it (timm version, file, sha256)."""
    parts = []
    if spec.args:
        parts.append("args " + ", ".join(f"{key}={value!r}" for key, value in spec.args.items()))
    if spec.timm_version is not None:
        parts.append(f"timm {spec.timm_version}")
    if spec.file is not None:
        parts.append(f"file {spec.file}, sha256 {spec.sha256}")
    return f"{spec.name} ({'; '.join(parts)})" if parts else spec.name


def model_section(name: str, size: SizeReport, parent: RunRecord | None = None, parent_path: str | None = None) -> str:
    """The model before this run changed it: parameters, prunable weights, MACs; the parent run if any."""
    summary = f"{name}: {size.params:,} parameters ({size.prunable_params:,} prunable), {size.macs:,} MACs per example"
    details = []
    if size.nonzero_params != size.params:
        details.append(f"non-zero: {size.nonzero_params:,} parameters, {size.effective_macs:,} effective MACs")
    if parent is not None:
        details.append(f"parent: {parent_path or parent.name} ({parent.kind} run: {_accuracies(parent.metrics)})")
    return section("model", summary, details)


# ------------------------------------------------------------------------------------ the method
def _layer_lines(layers: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, value in layers.items():
        if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
            kept, total = int(value[0]), int(value[1])
            removed = 1 - kept / total if total else 0.0
            lines.append(f"layer {name}: kept {kept:,} of {total:,} ({100 * removed:.2f} % removed)")
    return _capped(lines, "layers")


def _group_lines(groups: Mapping[str, Any]) -> list[str]:
    lines = []
    for root, value in groups.items():
        if not isinstance(value, dict) or not isinstance(value.get("channels"), int):
            continue
        channels, removed = int(value["channels"]), int(value.get("removed", 0))
        implanted = int(value.get("implanted", 0))
        lines.append(
            f"group {root}: {channels} → {channels - removed} channels ({removed} removed, {implanted} implanted)"
        )
    return _capped(lines, "groups")


def _score_lines(scores: Mapping[str, Any], thresholds: object) -> list[str]:
    lines = []
    for layer, values in scores.items():
        numbers = sorted(float(v) for v in values if isinstance(v, int | float)) if isinstance(values, list) else []
        if numbers:
            median = numbers[(len(numbers) - 1) // 2]
            lines.append(
                f"scores {layer}: {len(numbers)} channels, min {numbers[0]:.4g}, median {median:.4g}, "
                f"max {numbers[-1]:.4g}"
            )
    lines = _capped(lines, "score lines")
    if isinstance(thresholds, dict) and thresholds:
        lines.append(
            "thresholds: " + ", ".join(f"{key.replace('_', ' ')} {_number(v)}" for key, v in thresholds.items())
        )
    return lines


def _capped(lines: list[str], what: str) -> list[str]:
    if len(lines) <= MAX_LAYER_LINES:
        return lines
    return [*lines[:MAX_LAYER_LINES], f"... and {len(lines) - MAX_LAYER_LINES} more {what} (run.json method_info)"]


def _scalars(values: Mapping[str, Any], skip: Iterable[str] = ()) -> str:
    chosen = [
        f"{key}={_number(value)}"
        for key, value in values.items()
        if key not in set(skip) and (value is None or isinstance(value, bool | int | float | str))
    ]
    if len(chosen) > MAX_SCALARS:
        chosen = [*chosen[:MAX_SCALARS], f"... {len(chosen) - MAX_SCALARS} more"]
    return ", ".join(chosen)


KNOWN_INFO = ("layers", "groups", "channel_scores", "channel_thresholds", "channel_decisions", "target", "realised")


def method_info_lines(info: Mapping[str, Any]) -> list[str]:
    """What a method's ``info`` says, readable: allocation, per-group or per-layer counts, scores, the rest."""
    lines = []
    target = info.get("target")
    if isinstance(target, dict) and target:
        lines.append("target: " + _scalars(target))
    realised = info.get("realised")
    if isinstance(realised, dict) and realised:
        lines.append("allocation: " + _scalars(realised))
    groups = info.get("groups")
    if isinstance(groups, dict):
        lines += _group_lines(groups)
    layers = info.get("layers")
    if isinstance(layers, dict):
        lines += _layer_lines(layers)
    scores = info.get("channel_scores")
    if isinstance(scores, dict):
        lines += _score_lines(scores, info.get("channel_thresholds"))
    frozen = info.get("frozen")
    if isinstance(frozen, dict):
        lines += [f"not pruned {name}: {reason}" for name, reason in frozen.items()]
    other = _scalars(info, skip=(*KNOWN_INFO, "frozen"))
    if other:
        lines.append("reported: " + other)
    return lines


def gradual_section(config: PruneConfig, info: Mapping[str, Any]) -> str:
    """What a gradual method (pruning while the model trains) did, from its ``info``."""
    summary = f"{config.method} (gradual, while training), target {config.sparsity:g} of prunable weights"
    if config.granularity != "element":
        summary += f", granularity {config.granularity}"
    return section("method", summary, method_info_lines(info))


def round_lines(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per round (or step) of a method that prunes in rounds: its scalar entries."""
    lines = []
    for index, entry in enumerate(history, start=1):
        label = entry.get("round", index)
        lines.append(f"round {label}: " + _scalars(entry, skip=("round",)))
    return _capped(lines, "rounds")


def method_section(result: PruneResult, method: Method) -> str:
    """What the method did: method, target, scope, per-layer/per-group result, scores, timings."""
    config, kind = result.config, method.kind
    target = f"target {config.sparsity:g} of {config.target if kind == 'structured' else 'prunable weights'}"
    if config.rates is not None:
        target = f"per-layer rates {list(config.rates)} for {config.rounds} round(s)"
    scope = config.scope or method.default_scope
    summary = f"{config.method} ({kind}), {target}, scope {scope}"
    if config.granularity != "element":
        summary += f", granularity {config.granularity}"
    details = [f"timings: score {_seconds(result.score_seconds)}, prune {_seconds(result.seconds)}"]
    if config.layer_sparsity:
        details.append(f"layer targets: {key_values(dict(config.layer_sparsity))}")
    if config.options:
        details.append(f"options: {key_values(dict(config.options))}")
    details += method_info_lines(result.info)
    details += round_lines(result.history)
    if result.plan is not None:
        removed = sum(len(step.removed) for step in result.plan.removals())
        implanted = sum(len(step.implanted) for step in result.plan.implants())
        details.append(
            f"plan: {len(result.plan.steps)} steps, {removed} channels removed, {implanted} implanted (plan.json)"
        )
    if result.masks is not None and len(result.masks):
        details.append(f"masks: {len(result.masks)} weights masked (masks.safetensors)")
    return section("method", summary, details)


# ------------------------------------------------------------------------------------ the outcome
def _accuracies(metrics: Metrics) -> str:
    parts = []
    for split, accuracy, loss in (
        ("val", metrics.val_accuracy, metrics.val_loss),
        ("test", metrics.test_accuracy, metrics.test_loss),
    ):
        if accuracy is not None:
            parts.append(f"{split} {accuracy:.4f}" + (f" (loss {loss:.4f})" if loss is not None else ""))
    return ", ".join(parts) or "not measured"


def before_finetune_section(metrics: Metrics) -> str:
    return section("before fine-tuning", _accuracies(metrics))


def finetune_section(finetune: TrainConfig | None, trains: bool, method: str, seconds: float) -> str:
    """Whether the pruned model was fine-tuned, for how long (the epoch lines precede it), and with what."""
    if trains:
        return section("fine-tuning", f"none: {method} trains while it prunes (its budget is its training)")
    if finetune is None or not finetune.has_budget:
        return section("fine-tuning", "none (no fine-tuning budget requested)")
    summary = f"{finetune.describe_budget()} in {_seconds(seconds)}"
    return section("fine-tuning", summary, [key_values(finetune.model_dump(mode="json"))])


def training_section(epochs: float, stop_reason: str | None, seconds: float) -> str:
    reason = f", stopped: {stop_reason}" if stop_reason else ""
    return section("training", f"{_epochs(epochs)} in {_seconds(seconds)}{reason}")


def metrics_section(metrics: Metrics, title: str = "metrics") -> str:
    """The final measurements: accuracies, sizes, the three sparsities, latency, robustness."""
    lines = [f"accuracy: {_accuracies(metrics)}"]
    if metrics.params is not None:
        lines.append(
            f"parameters: {metrics.params:,} ({_number(metrics.nonzero_params)} non-zero), "
            f"prunable {_number(metrics.prunable_params)} ({_number(metrics.nonzero_prunable)} non-zero)"
        )
    if metrics.macs is not None:
        lines.append(f"MACs: {metrics.macs:,} per example ({_number(metrics.effective_macs)} effective)")
    if metrics.sparsity_prunable is not None:
        lines.append(
            f"sparsity: {metrics.sparsity_prunable:.4f} of prunable weights, {metrics.sparsity_params or 0:.4f} "
            f"of parameters, {metrics.sparsity_macs or 0:.4f} of MACs"
        )
    if metrics.latency_ms is not None:
        p90 = metrics.latency_p90_ms or {}
        timed = [
            f"batch {batch} {ms:.3f} ms" + (f" (p90 {p90[f'batch_{batch}']:.3f})" if f"batch_{batch}" in p90 else "")
            for batch, ms in metrics.latency_ms.batches().items()
        ]
        latency = metrics.latency_ms
        conditions = _scalars(
            {key: getattr(latency, key) for key in ("threads", "allocator_env", "channels_last", "grad_mode")}
        )
        lines.append(f"latency: {', '.join(timed)}" + (f" ({conditions})" if conditions else ""))
    if metrics.robustness is not None:
        robust = metrics.robustness
        attacks = [
            f"{attack} ε={epsilon} {value:.4f}"
            for attack, table in (("fgsm", robust.fgsm or {}), ("pgd", robust.pgd or {}))
            for epsilon, value in table.items()
        ]
        lines.append(f"robustness ({robust.examples} test images): clean {robust.clean:.4f}, " + ", ".join(attacks))
    return section(title, "", lines)


def timings_section(timings: Timings) -> str:
    names = {"wall_s": "wall", "train_s": "train", "score_s": "score", "prune_s": "prune", "finetune_s": "fine-tune"}
    parts = [
        f"{label} {_seconds(value)}" for key, label in names.items() if (value := getattr(timings, key)) is not None
    ]
    return section("timings", ", ".join(parts))

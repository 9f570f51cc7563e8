"""The public Python API: prune your own model, train, evaluate, save and load.

    import secateurs as sec
    result = sec.prune(model, method="magnitude", sparsity=0.9, example_inputs=x)
    result.model          # the masked (or physically smaller) model, ready for your own fine-tuning
    print(result.report())
    sec.save(result, "out/")
    run = sec.load("out/", model_factory=lambda: MyNet())
    sparsifier = sec.gradual(model, "campfire", granularity="window", sparsity=0.7, end_step=3000)

The CLI is a thin layer over this module and `secateurs.workflows`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs import methods as _methods  # noqa: F401  (registers the built-in methods)
from secateurs.data.types import Splits
from secateurs.io.rundir import LoadedRun, load_run, writing_run
from secateurs.methods.base import METHODS, PruneConfig, PruneContext, format_validation_error
from secateurs.metrics.accuracy import Evaluation
from secateurs.metrics.accuracy import evaluate as evaluate_batches
from secateurs.metrics.counts import SizeReport, size_report
from secateurs.scoring.base import LossFn
from secateurs.sparsity.gradual import GradualSparsifier
from secateurs.sparsity.masks import MaskStore
from secateurs.train.config import TrainConfig
from secateurs.train.loop import Callback, Trainer, TrainSummary


@dataclass
class PruneResult:
    """What `prune` returns: the pruned model, what was removed, and its measured size."""

    model: nn.Module
    config: PruneConfig
    masks: MaskStore | None
    plan: dict[str, Any] | None
    dense: SizeReport
    size: SizeReport
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    score_seconds: float = 0.0
    seconds: float = 0.0
    train_epochs: float = 0.0

    def report(self) -> str:
        """A plain-text table: params, non-zeros, MACs and the three sparsities, dense vs pruned."""
        rows = [
            ("parameters", self.dense.params, self.size.params),
            ("non-zero parameters", self.dense.nonzero_params, self.size.nonzero_params),
            ("prunable weights (non-zero)", self.dense.nonzero_prunable, self.size.nonzero_prunable),
            ("MACs / example (effective)", self.dense.effective_macs, self.size.effective_macs),
        ]
        lines = [f"{self.config.method} at sparsity {self.config.sparsity:g}", f"{'':30}{'dense':>14}{'pruned':>14}"]
        lines += [f"{label:30}{before:>14,}{after:>14,}" for label, before, after in rows]
        lines.append(
            f"sparsity: {self.size.sparsity_prunable:.4f} of prunable weights, "
            f"{self.size.sparsity_params:.4f} of parameters, {self.size.sparsity_macs:.4f} of MACs"
        )
        return "\n".join(lines)


def _prune_config(method: str, sparsity: float, **fields: Any) -> PruneConfig:
    from pydantic import ValidationError

    from secateurs.errors import ConfigError

    try:
        return PruneConfig(method=method, sparsity=sparsity, **fields)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def prune(
    model: nn.Module,
    method: str,
    sparsity: float,
    *,
    example_inputs: torch.Tensor,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]] = (),
    loss_fn: LossFn = nn.functional.cross_entropy,
    scope: str | None = None,
    granularity: str = "element",
    target: str = "params",
    min_keep: int = 1,
    exclude: Sequence[str] = (),
    layer_sparsity: Mapping[str, float] | str | None = None,
    seed: int = 0,
    splits: Splits | None = None,
    train_config: TrainConfig | None = None,
    progress: bool = False,
    **options: Any,
) -> PruneResult:
    """Prune ``model`` with ``method`` to ``sparsity`` (fraction removed) and measure the result.

    ``example_inputs`` is a batch of inputs (its shape after the batch dimension is the input shape
    used for MAC counts and tracing); ``data`` are calibration batches for data-driven methods;
    ``options`` are the method's own options (validated; unknown keys are errors). ``layer_sparsity``
    (a ``weight name → sparsity`` mapping or the path of such a YAML file, e.g. from `secateurs
    sensitivity --emit-targets`) gives listed layers their own target; the others get ``sparsity``.
    Unstructured methods
    mutate ``model`` (masks as parametrizations); structured methods may return a new, smaller module
    in ``result.model``.
    """
    entry = METHODS.get(method)
    config = _prune_config(
        method,
        sparsity,
        scope=scope,
        granularity=granularity,
        target=target,
        min_keep=min_keep,
        exclude=tuple(exclude),
        options=dict(options),
        layer_sparsity=layer_sparsity,
    )
    parsed = entry.parse_options(config.options)
    input_shape = tuple(example_inputs.shape[1:])
    dense = size_report(model, input_shape)
    generator = torch.Generator().manual_seed(seed)
    context = PruneContext(
        example_inputs=example_inputs,
        generator=generator,
        batches=list(data),
        loss_fn=loss_fn,
        splits=splits,
        train_config=train_config,
        seed=seed,
        progress=progress,
    )
    started = time.perf_counter()
    outcome = entry.apply(model, config, parsed, context)
    seconds = time.perf_counter() - started
    return PruneResult(
        model=outcome.model,
        config=config,
        masks=outcome.masks,
        plan=outcome.plan,
        dense=dense,
        size=size_report(outcome.model, input_shape, dense_reference=dense),
        input_shape=input_shape,
        info=outcome.info,
        history=outcome.history,
        score_seconds=outcome.score_seconds,
        seconds=seconds,
        train_epochs=outcome.train_epochs,
    )


def gradual(
    model: nn.Module,
    method: str = "campfire",
    *,
    sparsity: float,
    end_step: int,
    start_step: int = 0,
    every: int = 50,
    granularity: str = "element",
    scope: str | None = None,
    min_keep: int = 1,
    exclude: Sequence[str] = (),
    optimizer: torch.optim.Optimizer | None = None,
    **options: Any,
) -> GradualSparsifier:
    """A `GradualSparsifier` that prunes ``model`` while you train it in your own loop.

    Call ``sparsifier.step()`` after every ``optimizer.step()``: from ``start_step`` to ``end_step``
    the masks follow Zhu & Gupta's cubic schedule up to ``sparsity`` (updated every ``every`` steps),
    then they are frozen. Pass your ``optimizer`` so removed weights and their momentum stay exactly
    zero. ``options`` are the method's own (``skip_first``, ``skip_last``, ``fallback``, …; validated).
    Mutates ``model`` (masks become parametrizations); ``sparsifier.state_dict()`` /
    ``load_state_dict`` resume it. Example::

        sparsifier = sec.gradual(model, "campfire", granularity="window", sparsity=0.7,
                                 start_step=0, end_step=3000, every=50, optimizer=optimizer)
    """
    from secateurs.methods.gradual import GradualMethod

    entry = METHODS.get(method)
    if not isinstance(entry, GradualMethod):
        from secateurs.errors import UsageError

        accepted = ", ".join(name for name, m in METHODS.items() if isinstance(m, GradualMethod))
        raise UsageError(f"gradual() needs a gradual method, got {method!r} ({entry.kind}); accepted: {accepted}")
    config = _prune_config(
        method,
        sparsity,
        scope=scope,
        granularity=granularity,
        min_keep=min_keep,
        exclude=tuple(exclude),
        options=dict(options),
    )
    return entry.sparsifier(
        model,
        config,
        entry.parse_options(config.options),
        start_step=start_step,
        end_step=end_step,
        every=every,
        optimizer=optimizer,
    )


def train(
    model: nn.Module,
    splits: Splits,
    config: TrainConfig,
    *,
    seed: int = 0,
    masks: MaskStore | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = False,
) -> TrainSummary:
    """Train ``model`` in place (masked weights stay zero when ``masks`` is given)."""
    trainer = Trainer(
        model,
        splits,
        config,
        seed=seed,
        masks=masks,
        callbacks=callbacks,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    return trainer.fit(resume=resume)


def evaluate(model: nn.Module, data: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Evaluation:
    """Top-1 accuracy and mean cross-entropy of ``model`` over ``data`` batches (already normalised)."""
    return evaluate_batches(model, data)


def save(
    result: PruneResult,
    path: str | Path,
    *,
    model_name: str = "custom",
    num_classes: int | None = None,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``result`` as a run directory (model.safetensors, masks/plan, run.json); atomic."""
    out = Path(path)
    input_shape = result.input_shape
    classes = num_classes if num_classes is not None else _num_classes(result.model)
    with writing_run(out, overwrite=overwrite) as stage:
        stage.save_model(result.model)
        stage.save_masks(result.masks)
        stage.save_plan(result.plan)
        stage.commit(
            {
                "kind": "prune",
                "model": {"name": model_name, "input_shape": list(input_shape), "num_classes": classes},
                "preprocessing": {"input_shape": list(input_shape), "mean": None, "std": None},
                "seed": None,
                "config": {"prune": result.config.model_dump()},
                "metrics": result.size.to_dict(),
                "method_info": result.info,
                "history": result.history,
                "timings": {"score_s": result.score_seconds, "prune_s": result.seconds},
                **(extra or {}),
            }
        )
    return out


def load(path: str | Path, model_factory: Callable[[], nn.Module] | None = None) -> LoadedRun:
    """Rebuild a saved run: ``model_factory()`` (or the registry's model), plan replay, weights, masks."""
    return load_run(Path(path), model_factory)


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return int(last[-1].out_features) if last else 0

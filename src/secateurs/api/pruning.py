"""Pruning your own model: `prune` (one shot, iterative or structured) and `gradual` (in your loop).

    import secateurs as sec
    result = sec.prune(model, method="magnitude", sparsity=0.9, example_inputs=x)
    result.model          # the masked (or physically smaller) model, ready for your own fine-tuning
    print(result.report())
    sparsifier = sec.gradual(model, "campfire", granularity="window", sparsity=0.7, end_step=3000)

`prune` is the one path from a config to a method: the run-directory workflows (`secateurs.api.runs`),
the bench and the CLI all prune through it, and `build_context` is the one place a `PruneContext`
is assembled.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from secateurs.config import PruneConfig, TrainConfig, format_validation_error
from secateurs.data.types import Splits
from secateurs.errors import ConfigError, UsageError
from secateurs.methods import METHODS, Method, PruneContext
from secateurs.methods.gradual import GradualMethod
from secateurs.methods.gradual_sparsifier import GradualSparsifier
from secateurs.metrics.counts import SizeReport, size_report
from secateurs.scoring.base import LossFn
from secateurs.sparsity.masks import MaskStore
from secateurs.structure.plan import Plan, parse_plan


@dataclass
class PruneResult:
    """What `prune` returns: the pruned model, what was removed, and its measured size.

    ``masks`` for masked methods, ``plan`` (a `Plan`, what plan.json stores) for physically pruned
    ones; ``info`` and ``history`` are the method's own report (run.json's ``method_info`` and
    ``history.method``); ``score_seconds`` the scoring time, ``seconds`` the whole pruning time.
    ``source`` is, for a physically pruned result, the model as given to `prune` (a reference, not a
    copy: structured methods leave it unchanged), from which `masked_equivalent` builds the twin.
    """

    model: nn.Module
    config: PruneConfig
    masks: MaskStore | None
    plan: Plan | None
    dense: SizeReport
    size: SizeReport
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    score_seconds: float = 0.0
    seconds: float = 0.0
    train_epochs: float = 0.0
    source: nn.Module | None = field(default=None, repr=False)

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


def prune_config(method: str, sparsity: float | None, **fields: Any) -> PruneConfig:
    """A validated `PruneConfig` (a bad field is one `ConfigError` line); ``None`` fields are left out."""
    given = {key: value for key, value in fields.items() if value is not None}
    if sparsity is not None:
        given["sparsity"] = sparsity
    try:
        return PruneConfig(method=method, **given)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


def build_context(
    method: Method,
    *,
    example_inputs: torch.Tensor,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]] = (),
    loss_fn: LossFn = nn.functional.cross_entropy,
    seed: int = 0,
    splits: Splits | None = None,
    train_config: TrainConfig | None = None,
    progress: bool = False,
    checkpoint_dir: Path | None = None,
) -> PruneContext:
    """The `PruneContext` a method runs with (the only place one is built).

    The generator is seeded from ``seed``; ``train_config`` reaches only methods that train while
    they prune (``method.trains``), the others are fine-tuned by their caller.
    """
    return PruneContext(
        example_inputs=example_inputs,
        generator=torch.Generator().manual_seed(seed),
        batches=list(data),
        loss_fn=loss_fn,
        splits=splits,
        train_config=train_config if method.trains else None,
        seed=seed,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
    )


def prune(
    model: nn.Module,
    method: str | PruneConfig,
    sparsity: float | None = None,
    *,
    example_inputs: torch.Tensor,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]] = (),
    loss_fn: LossFn = nn.functional.cross_entropy,
    scope: str | None = None,
    granularity: str | None = None,
    target: str | None = None,
    min_keep: int | None = None,
    exclude: Sequence[str] = (),
    layer_sparsity: Mapping[str, float] | str | None = None,
    seed: int = 0,
    splits: Splits | None = None,
    train_config: TrainConfig | None = None,
    progress: bool = False,
    checkpoint_dir: Path | None = None,
    dense: SizeReport | None = None,
    **options: Any,
) -> PruneResult:
    """Prune ``model`` with ``method`` to ``sparsity`` (fraction removed) and measure the result.

    ``method`` is a registered name (then ``sparsity``, ``scope``, … and ``options`` build the
    config) or a whole `PruneConfig` (then those keywords must be left out). ``example_inputs`` is a
    batch of inputs (its shape after the batch dimension is the input shape used for MAC counts and
    tracing); ``data`` are calibration batches for data-driven methods; ``options`` are the method's
    own options (validated; unknown keys are errors). ``layer_sparsity`` (a ``weight name →
    sparsity`` mapping or the path of such a YAML file, e.g. from `secateurs sensitivity
    --emit-targets`) gives listed layers their own target; the others get ``sparsity``. Methods that
    train while they prune take ``splits`` and ``train_config`` (their budget) and checkpoint into
    ``checkpoint_dir`` when given. ``dense`` is the size every sparsity is measured against (default:
    ``model`` as given). Unstructured methods mutate ``model`` (masks as parametrizations);
    structured methods return a new, smaller module in ``result.model``.
    """
    if isinstance(method, PruneConfig):
        given: dict[str, object] = {"sparsity": sparsity, "scope": scope, "granularity": granularity}
        given.update(target=target, min_keep=min_keep, layer_sparsity=layer_sparsity)
        extra = [key for key, value in given.items() if value is not None] + (["exclude"] if exclude else [])
        extra += sorted(options)
        if extra:
            raise UsageError(f"prune() got a PruneConfig and also {', '.join(extra)}; put them in the config")
        config = method
    else:
        config = prune_config(
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
    entry = METHODS.get(config.method)
    entry.check_config(config)
    parsed = entry.parse_options(config.options)
    input_shape = tuple(example_inputs.shape[1:])
    dense = dense if dense is not None else size_report(model, input_shape)
    context = build_context(
        entry,
        example_inputs=example_inputs,
        data=data,
        loss_fn=loss_fn,
        seed=seed,
        splits=splits,
        train_config=train_config,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
    )
    started = time.perf_counter()
    outcome = entry.apply(model, config, parsed, context)
    seconds = time.perf_counter() - started
    return PruneResult(
        model=outcome.model,
        config=config,
        masks=outcome.masks,
        plan=parse_plan(outcome.plan) if outcome.plan is not None else None,
        dense=dense,
        size=size_report(outcome.model, input_shape, dense_reference=dense),
        input_shape=input_shape,
        info=outcome.info,
        history=outcome.history,
        score_seconds=outcome.score_seconds,
        seconds=seconds,
        train_epochs=outcome.train_epochs,
        source=model if outcome.plan is not None and outcome.model is not model else None,
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
    seed: int = 0,
    **options: Any,
) -> GradualSparsifier:
    """A `GradualSparsifier` that prunes ``model`` while you train it in your own loop.

    Call ``sparsifier.step()`` after every ``optimizer.step()``: from ``start_step`` to ``end_step``
    the masks follow Zhu & Gupta's cubic schedule up to ``sparsity`` (updated every ``every`` steps),
    then they are frozen. Pass your ``optimizer`` so removed weights and their momentum stay exactly
    zero. ``seed`` seeds a random scorer's draws (one per update, `gradual_sparsifier.update_seed`).
    ``options`` are the method's own (``skip_first``, ``skip_last``, ``fallback``, …; validated).
    Mutates ``model`` (masks become parametrizations); ``sparsifier.state_dict()`` /
    ``load_state_dict`` resume it. Example::

        sparsifier = sec.gradual(model, "campfire", granularity="window", sparsity=0.7,
                                 start_step=0, end_step=3000, every=50, optimizer=optimizer)
    """
    entry = METHODS.get(method)
    if not isinstance(entry, GradualMethod):
        accepted = ", ".join(name for name, m in METHODS.items() if isinstance(m, GradualMethod))
        raise UsageError(f"gradual() needs a gradual method, got {method!r} ({entry.kind}); accepted: {accepted}")
    config = prune_config(
        method,
        sparsity,
        scope=scope,
        granularity=granularity,
        min_keep=min_keep,
        exclude=tuple(exclude),
        options=dict(options),
    )
    entry.check_config(config)
    return entry.sparsifier(
        model,
        config,
        entry.parse_options(config.options),
        start_step=start_step,
        end_step=end_step,
        every=every,
        optimizer=optimizer,
        seed=seed,
    )

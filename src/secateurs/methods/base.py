"""The method plug-in contract: a validated config, a context, and one `apply` that prunes.

A method is one file that defines a `Method` subclass and registers an instance in `METHODS`. A
method is generic over its pydantic options class, which it names once, as the type argument
(``class Hap(ChannelPruning[HapOptions])``): `Method.parse_options` validates raw options into that
class and every hook (`apply`, `check`, …) receives them typed. A subclass may narrow ``Options`` to
a subclass of its parent's (``lap-forward`` defaults ``order`` to ``forward``); a class attribute
that is not a subclass of the type argument is a ``TypeError`` when the class is defined. Kinds:

- ``unstructured``: one-shot masks on individual weights (magnitude, random, lap, lamp, …);
- ``structured``: channels removed physically (hap, l1-filter, taylor, …);
- ``iterative``: rounds of train → prune → rewind (imp, infcop);
- ``gradual``: masks grown during training (campfire, gmp).

Methods whose ``trains`` flag is set run their own training from ``context.train_config``; the CLI
then gives them the fine-tuning budget instead of fine-tuning afterwards.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast, get_args, get_origin

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from secateurs.allocation.elements import select
from secateurs.config import PruneConfig, TrainConfig, format_validation_error
from secateurs.config.prune import Scope
from secateurs.data.types import Splits
from secateurs.errors import ConfigError, UsageError
from secateurs.registry import Registry
from secateurs.scoring import SCORERS
from secateurs.scoring.base import LossFn, ScoreContext, weight
from secateurs.sparsity.granularity import granularity as lookup_granularity
from secateurs.sparsity.masks import MaskStore
from secateurs.sparsity.rates import layer_targets, nominal_sparsity
from secateurs.sparsity.targets import prunable_names


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SelectionOptions(BaseModel):
    """Options of every one-shot unstructured method (score-and-select)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    normalizer: Literal["mean", "l2"] = "l2"
    """Scope ``normalized``: each tensor's scores are divided by their L2 norm (the LAP paper's
    normalised global baseline) or their mean before the one global ranking."""


OptionsT = TypeVar("OptionsT", bound=BaseModel)
SelectionOptionsT = TypeVar("SelectionOptionsT", bound=SelectionOptions)


@dataclass
class PruneContext:
    """Everything a method may use besides the model and its config."""

    example_inputs: torch.Tensor
    generator: torch.Generator
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
    loss_fn: LossFn = nn.functional.cross_entropy
    splits: Splits | None = None
    train_config: TrainConfig | None = None
    seed: int = 0
    progress: bool = False
    checkpoint_dir: Path | None = None

    def score_context(self) -> ScoreContext:
        return ScoreContext(
            generator=self.generator,
            example_inputs=self.example_inputs,
            batches=self.batches,
            loss_fn=self.loss_fn,
        )

    def require_training(self, method: str) -> tuple[Splits, TrainConfig]:
        if self.splits is None or self.train_config is None:
            raise UsageError(f"method {method!r} trains while it prunes: pass splits= and train_config=")
        return self.splits, self.train_config


@dataclass
class PruneOutcome:
    """What `Method.apply` returns. ``model`` may be a new, physically smaller module."""

    model: nn.Module
    masks: MaskStore | None = None
    plan: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    score_seconds: float = 0.0
    train_epochs: float = 0.0


class Method(ABC, Generic[OptionsT]):
    """A pruning method over options ``OptionsT``. Subclasses set the class variables and implement `apply`."""

    name: ClassVar[str]
    kind: ClassVar[Literal["unstructured", "structured", "iterative", "gradual"]]
    description: ClassVar[str]
    paper: ClassVar[str] = ""
    trains: ClassVar[bool] = False
    needs_data: ClassVar[bool] = False
    scopes: ClassVar[tuple[Scope, ...]] = ("layerwise", "global")
    """The allocation policies the method accepts (`PruneConfig.scope`)."""
    default_scope: ClassVar[Scope] = "layerwise"
    supports_rates: ClassVar[bool] = False
    """Whether the method honours `PruneConfig.rates` / ``rounds`` (per-layer rate protocols)."""
    Options: ClassVar[type[BaseModel]] = NoOptions
    """The options class: set from the type argument (``Method[HapOptions]``), or a subclass of it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = _declared_options(cls)
        if declared is not None and "Options" not in vars(cls):
            cls.Options = declared
        bound = next((b for b in map(_declared_options, cls.__mro__) if b is not None), None)
        if bound is not None and not issubclass(cls.Options, bound):
            raise TypeError(f"{cls.__name__}.Options ({cls.Options.__name__}) must subclass {bound.__name__}")

    def parse_options(self, raw: Mapping[str, Any]) -> OptionsT:
        """Validate ``raw`` against ``Options``; a bad key or value is a `ConfigError` naming it."""
        try:
            options = self.Options.model_validate(dict(raw))
        except ValidationError as error:
            raise ConfigError(f"method {self.name!r}: {format_validation_error(error)}") from None
        return cast(OptionsT, options)  # Options subclasses the type argument (checked in __init_subclass__)

    def check_config(self, config: PruneConfig) -> None:
        """Refuse what ``config`` asks of this method that it cannot do (`ConfigError`, one line).

        The schema (`PruneConfig`) checks what holds for every method; this adds the method's own
        constraints: its accepted ``scopes``, per-layer ``rates`` and ``layer_sparsity`` only where
        ``supports_rates``.
        """
        self.scope(config)
        if config.layer_sparsity is not None and not self.supports_rates:
            raise ConfigError(f"method {self.name!r} does not take per-layer targets (use 'sparsity')")
        if config.rates is not None and not self.supports_rates:
            raise ConfigError(f"method {self.name!r} does not take per-layer rates (use 'sparsity')")

    def scope(self, config: PruneConfig) -> Scope:
        """The allocation policy: ``config.scope``, else the method's default; `ConfigError` if not accepted."""
        scope = config.scope or self.default_scope
        if scope not in self.scopes:
            raise ConfigError(
                f"method {self.name!r} does not take scope {scope!r}; accepted: {', '.join(self.scopes)}"
            )
        return scope

    def check_budget(self, options: OptionsT, budget: TrainConfig | None) -> None:
        """Refuse a training budget these options cannot use, before any training (`UsageError`).

        ``budget`` is what the method will get as ``PruneContext.train_config``; a suite checks every
        (model, method) pair when it loads, so a bad pairing fails before its dense models train.
        """
        if self.trains and budget is None:
            raise UsageError(
                f"method {self.name!r} trains while it prunes: give it a training budget (`finetune:` or the "
                "method entry's `train:` in a suite, --finetune-epochs on the command line)"
            )

    def check(self, model: nn.Module, config: PruneConfig, options: OptionsT, context: PruneContext) -> None:
        """Refuse, without pruning or training anything, what `apply` would refuse later (`UsageError`).

        A suite calls it for every (model, method) before its first dense model trains. The default
        checks the budget; a method with more to check (IMP and InfCoP: flow layers, the probe) overrides it.
        """
        self.check_budget(options, context.train_config)

    @abstractmethod
    def apply(self, model: nn.Module, config: PruneConfig, options: OptionsT, context: PruneContext) -> PruneOutcome:
        """Prune ``model`` (mutating it, or returning a new one in the outcome)."""


def _declared_options(cls: type) -> type[BaseModel] | None:
    """The options class ``cls`` names as its `Method` type argument (``class X(Method[XOptions])``; a type
    variable stands for its bound), if any."""
    for base in vars(cls).get("__orig_bases__", ()):
        origin = get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Method):
            for argument in get_args(base):
                bound = argument.__bound__ if isinstance(argument, TypeVar) else argument
                if isinstance(bound, type) and issubclass(bound, BaseModel):
                    return bound
    return None


METHODS: Registry[Method[Any]] = Registry("method")

MethodT = TypeVar("MethodT", bound=Method[Any])


def register_method(method: MethodT) -> MethodT:
    """Add ``method`` to `METHODS` under its name (a name registered twice is a ``ValueError``)."""
    METHODS.add(method.name, method)
    return method


class ScoreAndSelect(Method[SelectionOptionsT]):
    """One-shot unstructured pruning: score every prunable weight, select, install masks.

    Existing masks are respected: removed entries stay removed (their score is ``-inf``), so calling
    it again with a higher sparsity prunes further (the iterative protocols rely on this).

    Targets: ``config.sparsity`` (one value, or what `sparsities` returns), or, with ``config.rates``,
    one target per layer, 1 − (1 − p_i)^rounds, for every method built on this class (magnitude,
    random, lap, …); a global scope then prunes to their size-weighted mean (`sparsity.rates`).

    Scopes: ``layerwise`` (each tensor its own target), ``global`` (one ranking of the raw scores) and
    ``normalized`` (one ranking after dividing each tensor's scores by their L2 norm or mean, option
    ``normalizer``: what ``magnitude-global`` and ``lap-global`` do by default).
    """

    kind = "unstructured"
    supports_rates = True
    scopes = ("layerwise", "global", "normalized")
    scorer: ClassVar[str]

    def scores(
        self, model: nn.Module, names: Sequence[str], options: SelectionOptionsT, context: PruneContext
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Scores for ``names`` and the scorer's diagnostics (override for composite scores)."""
        score_context = context.score_context()
        scores = SCORERS.get(self.scorer).score(model, names, score_context)
        return scores, score_context.info

    def targets(self, model: nn.Module, config: PruneConfig, options: SelectionOptionsT) -> list[str]:
        return prunable_names(model, exclude=config.exclude)

    def sparsities(
        self, names: Sequence[str], config: PruneConfig, options: SelectionOptionsT
    ) -> float | dict[str, float]:
        """The target per tensor when no ``rates`` are given (one value by default)."""
        return config.sparsity

    def layer_targets(
        self, model: nn.Module, names: Sequence[str], config: PruneConfig, options: SelectionOptionsT
    ) -> tuple[float | dict[str, float], dict[str, Any]]:
        """The selection target(s) and, for a rate protocol, its description for ``info["protocol"]``."""
        if config.layer_sparsity is not None:
            return self.listed_targets(names, config), {"layer_sparsity": dict(config.layer_sparsity)}
        if config.rates is None:
            return self.sparsities(names, config, options), {}
        targets = layer_targets(config.rates, names, config.rounds)
        sizes = {name: weight(model, name).numel() for name in names}
        nominal = nominal_sparsity(targets, sizes)
        protocol = {"rates": list(config.rates), "rounds": config.rounds, "layers": targets, "target_sparsity": nominal}
        return (targets if self.scope(config) == "layerwise" else nominal), {"protocol": protocol}

    def listed_targets(self, names: Sequence[str], config: PruneConfig) -> dict[str, float]:
        """``config.layer_sparsity`` over ``names`` (unlisted weights get ``config.sparsity``)."""
        listed = config.layer_sparsity or {}
        unknown = sorted(set(listed) - set(names))
        if unknown:
            shown = ", ".join(names[:6]) + (" …" if len(names) > 6 else "")
            raise UsageError(f"layer_sparsity names {', '.join(unknown[:4])}, not prunable weights here ({shown})")
        if self.scope(config) != "layerwise":
            raise UsageError(f"layer_sparsity sets each layer's target; method {config.method!r} ranks globally")
        return {name: listed.get(name, config.sparsity) for name in names}

    def choose(
        self,
        model: nn.Module,
        names: Sequence[str],
        sparsity: float | dict[str, float],
        alive: dict[str, torch.Tensor],
        config: PruneConfig,
        options: SelectionOptionsT,
        context: PruneContext,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], float]:
        """Score, then select: the keep-masks, the scorer's diagnostics and the scoring seconds.

        Sequential methods (LAP-forward/backward) override this to interleave scoring and selection.
        """
        started = time.perf_counter()
        scores, info = self.scores(model, names, options, context)
        score_seconds = time.perf_counter() - started
        chosen = select(
            scores,
            sparsity,
            lookup_granularity(config.granularity),
            scope=self.scope(config),
            alive=alive,
            min_keep=config.min_keep,
            normalizer=options.normalizer,
        )
        return chosen, info, score_seconds

    def apply(
        self, model: nn.Module, config: PruneConfig, options: SelectionOptionsT, context: PruneContext
    ) -> PruneOutcome:
        names = self.targets(model, config, options)
        masks = MaskStore.attached(model)
        alive = {name: masks.get(name) for name in names if name in masks}
        sparsity, protocol = self.layer_targets(model, names, config, options)
        chosen, info, score_seconds = self.choose(model, names, sparsity, alive, config, options, context)
        masks.update_(chosen)
        scope = self.scope(config)
        info = {
            **info,
            **protocol,
            "scope": scope,
            "normalizer": options.normalizer if scope == "normalized" else None,
            "layers": {name: list(masks.counts()[name]) for name in names},
        }
        return PruneOutcome(model=model, masks=masks, info=info, score_seconds=score_seconds)

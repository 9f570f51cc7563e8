"""``run.json`` as a typed, versioned record: `RunRecord` and the models it is made of.

Every command that makes a model writes one `RunRecord` (`secateurs.runs.directory.RunStage.commit`)::

    schema_version          2 (`secateurs.runs.migrate`: a file without it is version 1)
    name, created, versions the run directory's name, when it was published, the software versions
    kind                    "train" (from scratch, possibly pruning while it trains) or "prune"
    parent                  the run it was pruned from (None for a training run)
    seed                    the seed of every stochastic step (None when the API was given none)
    config                  the resolved configuration: data, model, train | method, finetune,
                            calibration, measure
    model                   name (a zoo name or an external reference), input_shape, num_classes,
                            and for external models args, file, sha256, timm_version: what
                            `load_run` rebuilds
    preprocessing           dataset, input_shape, per-channel mean and std, the scaling rule
    dense                   the unpruned parent's accuracies, params and MACs (pruned runs)
    metrics                 `Metrics` of the final model
    metrics_before_finetune `Metrics` right after pruning (accuracies and losses)
    method_info             what the method reports (open-ended: per-layer counts, scores, ...)
    history                 train (per epoch), method (per round), finetune (per epoch)
    stop_reason, train_epochs, timings (wall_s, train_s, score_s, prune_s, finetune_s)
    latency                 ``secateurs latency`` measurements by runtime (open-ended)
    bench                   key, suite, label, sparsity, round, rates of a kept bench cell
    recipe                  the recipe a ``secateurs run`` resolved
    extra                   what the caller added (``sec.save(extra=...)``; open-ended)

The models are strict (no type coercion: ``"3"`` is not a class count) and refuse unknown keys,
except where the content is genuinely open-ended: ``method_info``, ``history`` entries, ``latency``,
``recipe``, ``extra``, the configuration snapshots (whose schema is the config package's) and the
``batch_N`` entries of a latency summary. Optional fields that are None are left out of the JSON.
`parse_record` reads a run.json object of any schema version (migrating it first) and turns every
failure into one `RunDirError` line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from secateurs.config.validation import format_validation_error
from secateurs.errors import RunDirError
from secateurs.runs.migrate import SCHEMA_VERSION, upgrade_record

MAX_INPUT_SIZE = 65_536
"""The largest input dimension (channels, height, width) a run.json may declare."""
MAX_CLASSES = 1_000_000
REQUIRED_KEYS = ("kind", "model", "preprocessing", "seed", "metrics")
BATCH_KEY = re.compile(r"batch_[1-9][0-9]*")


class Record(BaseModel):
    """Base of the record models: strict types, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON object this model is stored as (a new dict; optional fields that are None left out)."""
        data: dict[str, Any] = self.model_dump(mode="json")
        return data


class Sparse(Record):
    """A record model whose None-valued fields are left out of its JSON (its own fields only, except
    those named in ``keep_none``, whose null is information)."""

    keep_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _without_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None or key in self.keep_none}


class Latency(Sparse):
    """``metrics.latency_ms``: median forward time per batch size (``batch_N``) and the conditions.

    The ``batch_N`` keys are open-ended (one per measured batch size); each holds milliseconds.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    threads: int | None = None
    allocator_env: bool | None = None
    channels_last: bool | None = None
    grad_mode: str | None = None

    @model_validator(mode="after")
    def _batch_entries(self) -> Latency:
        for key, value in (self.model_extra or {}).items():
            if not BATCH_KEY.fullmatch(key):
                raise ValueError(f"unknown latency key {key!r} (expected batch_N or threads, allocator_env, ...)")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number of milliseconds, got {value!r}")
        return self

    def batches(self) -> dict[int, float]:
        """``{batch size: milliseconds}``, by batch size."""
        entries = {int(key.removeprefix("batch_")): float(value) for key, value in (self.model_extra or {}).items()}
        return dict(sorted(entries.items()))

    def at(self, batch: int) -> float | None:
        """The milliseconds measured at ``batch`` (None when not measured)."""
        return self.batches().get(batch)


class Robustness(Sparse):
    """``metrics.robustness``: accuracy under FGSM/PGD at each ε (keys ``f"{ε:g}"``), clean accuracy, settings."""

    fgsm: dict[str, float] | None = None
    pgd: dict[str, float] | None = None
    clean: float
    examples: int
    split: str
    epsilons: list[float]
    attacks: list[str]
    pgd_steps: int
    pgd_step_size: float | None = None
    batch_size: int
    seed: int

    def under(self, attack: str, epsilon: str) -> float | None:
        """Accuracy under ``attack`` ("fgsm" or "pgd") at ``epsilon`` (a key like "0.05"); None if not run."""
        table = self.fgsm if attack == "fgsm" else self.pgd if attack == "pgd" else None
        return None if table is None else table.get(epsilon)


class Metrics(Sparse):
    """What is measured about a model (`secateurs.api.measure.measure_model`); every field optional.

    Accuracies and losses on the validation and test splits; ``params`` (all parameters),
    ``nonzero_params``, ``prunable_params`` (conv/linear weights) and ``nonzero_prunable``; dense and
    effective (non-zero) MACs per example; the three sparsities (fractions removed of the prunable
    weights, of all parameters and of MACs, against the dense reference); latency medians and p90s
    (ms, per batch size); robustness.
    """

    val_accuracy: float | None = None
    val_loss: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    params: int | None = None
    nonzero_params: int | None = None
    prunable_params: int | None = None
    nonzero_prunable: int | None = None
    macs: int | None = None
    effective_macs: int | None = None
    sparsity_prunable: float | None = None
    sparsity_params: float | None = None
    sparsity_macs: float | None = None
    latency_ms: Latency | None = None
    latency_p90_ms: dict[str, float] | None = None
    robustness: Robustness | None = None


class ModelSpec(Sparse):
    """What `load_run` rebuilds: a zoo name or an external reference, the input shape of one example,
    the class count, and for external models what identifies them (`secateurs.models.external`).

    ``args``: the model args the factory was called with (without the shapes taken from the data);
    ``file`` and ``sha256``: a model file's absolute path and the hash of its bytes (``FILE.py:factory``);
    ``timm_version``: the timm that built a ``timm:`` model. All optional (left out of the JSON when
    None), so run.json files of schema 2 without them read unchanged.
    """

    name: str
    input_shape: list[int] = Field(min_length=1, max_length=4)
    num_classes: int = Field(ge=1, le=MAX_CLASSES)
    args: dict[str, Any] | None = None
    file: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    timm_version: str | None = None

    @model_validator(mode="after")
    def _sizes(self) -> ModelSpec:
        if not all(1 <= size <= MAX_INPUT_SIZE for size in self.input_shape):
            raise ValueError(f"input_shape sizes must be in [1, {MAX_INPUT_SIZE}], got {self.input_shape}")
        return self


class Preprocessing(Sparse):
    """How inputs are scaled before the model sees them (`eval`, `export`, `latency` apply exactly this).

    Datasets that decode files add what they did (an image folder: ``image_size``, ``channels``,
    ``resize``, ``color``, ``classes``, ...) as further keys.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    dataset: str | None = None
    input_shape: list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    scale: str | None = None
    classes: list[str] | None = None


class SplitRecord(Sparse):
    """``split``: how the validation split was carved (``tail``, ``stratified`` or ``folder``) and its histograms."""

    kind: str
    seed: int | None = None
    sizes: dict[str, int] = Field(default_factory=dict)
    train_classes: list[int] = Field(default_factory=list)
    val_classes: list[int] = Field(default_factory=list)
    warning: str | None = None


class DataSection(Record):
    """``config.data``: the dataset's registry name and directory (the rest follows `DataConfig`)."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str
    dir: str | None = None


class RunConfig(Sparse):
    """``config``: the resolved configuration (each section as its config model dumped it)."""

    data: DataSection | None = None
    model: str | None = None
    model_args: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    finetune: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    measure: dict[str, Any] | None = None


class History(Sparse):
    """Per-epoch training (``train``), per-round pruning (``method``) and per-epoch fine-tuning records."""

    train: list[dict[str, Any]] | None = None
    method: list[dict[str, Any]] | None = None
    finetune: list[dict[str, Any]] | None = None


class Timings(Sparse):
    """Seconds spent: all of it (``wall_s``), training, scoring, pruning, fine-tuning.

    ``resumed`` marks timings that cover only the invocation that finished an interrupted run;
    ``jobs`` the number of bench cells that ran at once (`secateurs.bench.parallel`).
    """

    wall_s: float | None = None
    train_s: float | None = None
    score_s: float | None = None
    prune_s: float | None = None
    finetune_s: float | None = None
    resumed: bool | None = None
    jobs: int | None = None


class Versions(Record):
    """The software that wrote the run."""

    secateurs: str
    torch: str
    torch_pruning: str
    python: str
    platform: str


class BenchCell(Sparse):
    """Which bench cell a kept run is (``keep_runs: true``): its row's key and coordinates."""

    key: str
    suite: str
    label: str
    sparsity: float
    round: int | None = None
    rates: list[float] | None = None


class RunRecord(Sparse):
    """One run.json (see the module docstring for every field)."""

    keep_none: ClassVar[frozenset[str]] = frozenset({"parent", "seed"})

    schema_version: Literal[2] = SCHEMA_VERSION
    name: str | None = None
    created: str | None = None
    versions: Versions | None = None
    kind: Literal["train", "prune"]
    parent: str | None = None
    seed: int | None
    config: RunConfig = Field(default_factory=RunConfig)
    model: ModelSpec
    preprocessing: Preprocessing
    dense: Metrics | None = None
    metrics: Metrics
    metrics_before_finetune: Metrics | None = None
    method_info: dict[str, Any] | None = None
    history: History = Field(default_factory=History)
    stop_reason: str | None = None
    split: SplitRecord | None = None
    train_epochs: float | None = None
    train_steps: int | None = None
    timings: Timings = Field(default_factory=Timings)
    latency: dict[str, dict[str, Any]] | None = None
    bench: BenchCell | None = None
    recipe: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.model.input_shape)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_essentials(raw: Mapping[str, Any], where: str) -> None:
    """The checks with their own messages: required keys, the model spec, object-valued sections."""
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise RunDirError(f"{where} lacks {', '.join(missing)}")
    model = raw["model"]
    if not isinstance(model, dict) or not {"name", "input_shape", "num_classes"} <= set(model):
        raise RunDirError(f"{where}: 'model' needs name, input_shape and num_classes")
    shape, classes = model["input_shape"], model["num_classes"]
    if not (
        isinstance(model["name"], str)
        and isinstance(shape, list)
        and 1 <= len(shape) <= 4
        and all(_is_integer(size) and 1 <= size <= MAX_INPUT_SIZE for size in shape)
        and _is_integer(classes)
        and 1 <= classes <= MAX_CLASSES
    ):
        raise RunDirError(
            f"{where}: 'model' must have a string name, an input_shape of 1 to 4 integers in "
            f"[1, {MAX_INPUT_SIZE}] and an integer num_classes in [1, {MAX_CLASSES}]"
        )
    for key in ("metrics", "preprocessing"):
        if not isinstance(raw[key], dict):
            raise RunDirError(f"{where}: {key!r} must be an object, found {type(raw[key]).__name__}")


def parse_record(raw: object, where: str = "run.json") -> RunRecord:
    """The `RunRecord` of a run.json object of any schema version; any problem is one `RunDirError` line.

    ``where`` names the file in the messages. Version-1 records are migrated in memory
    (`secateurs.runs.migrate.upgrade_record`); ``raw`` is not mutated.
    """
    if not isinstance(raw, dict):
        raise RunDirError(f"{where} must hold a JSON object")
    _check_essentials(raw, where)
    upgraded = upgrade_record(raw, where)
    try:
        return RunRecord.model_validate(upgraded)
    except ValidationError as error:
        raise RunDirError(f"{where}: {format_validation_error(error)}") from None

"""Run directories: written atomically, read back without pickle.

A run is staged in a hidden sibling ``.NAME.partial/`` (training checkpoints live there, so
``--resume`` can continue after a crash) and renamed to ``NAME/`` only when complete, with ``run.json``
written last. A directory called ``NAME/`` therefore always holds a finished run. A lock file
``.NAME.lock`` makes a second writer of the same ``--out`` refuse instead of racing.

run.json is a `RunRecord` (`secateurs.runs.record`; read through the schema migrations of
`secateurs.runs.migrate`), plan.json a `Plan` (`secateurs.structure.plan`). While a run is staged,
the ``secateurs`` logger is mirrored into its ``log.txt``; `RunStage.commit` ends the log with the
files the run published.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import platform
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs import __version__
from secateurs.data.loader import Normalization
from secateurs.errors import RunDirError, UsageError
from secateurs.io.files import atomic_write_json, load_tensors, read_json, replace_dir, save_tensors, tensor_shapes
from secateurs.models import BuiltModel, ModelReference, Provenance, build_model, is_external, resolve_model
from secateurs.runs.record import ModelSpec, RunRecord, Versions, parse_record
from secateurs.sparsity.masks import MaskStore, load_plain_state_dict, plain_state_dict
from secateurs.structure.plan import Plan, parse_plan, replay_plan

RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"
MASKS_FILE = "masks.safetensors"
PLAN_FILE = "plan.json"
LOG_FILE = "log.txt"
CHECKPOINT_DIR = "checkpoint"
log = logging.getLogger(__name__)

RUN_LOG = "secateurs.run"
"""The logger of a run's narrative (the sections of log.txt); the CLI shows it on the console with --verbose."""
MAX_PLAN_SHRINK = 1_000
"""A physically pruned run's weights may hold down to 1/1000 of its unpruned model's parameters."""


def software_versions() -> Versions:
    """The versions of the software writing a run: secateurs, torch, torch_pruning, Python, the platform."""
    try:
        import torch_pruning

        pruning_version = str(getattr(torch_pruning, "__version__", "unknown"))
    except ImportError:  # pragma: no cover - a declared dependency
        pruning_version = "missing"
    return Versions(
        secateurs=__version__,
        torch=str(torch.__version__),
        torch_pruning=pruning_version,
        python=platform.python_version(),
        platform=platform.platform(),
    )


def versions() -> dict[str, str]:
    """`software_versions` as a plain dict (for tables and reports)."""
    return {key: str(value) for key, value in software_versions().model_dump().items()}


def is_run_dir(path: Path) -> bool:
    return (path / RUN_FILE).is_file() and (path / MODEL_FILE).is_file()


def partial_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``out``; a live holder makes this raise `RunDirError`."""
    lock = out.with_name(f".{out.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and _pid_alive(holder):
                raise RunDirError(
                    f"{out} is being written by another secateurs process (pid {holder}); "
                    f"wait for it or remove {lock} if that process is gone"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        break
    else:  # pragma: no cover - two stale-lock races in a row
        raise RunDirError(f"could not lock {out}")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


class RunStage:
    """A run being written: files go into the partial directory; `commit` publishes it."""

    def __init__(self, out: Path, staging: Path, resumed: bool) -> None:
        self.out = out
        self.path = staging
        self.resumed = resumed
        self.committed = False
        self._handler: logging.Handler | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def attach_log(self) -> None:
        """Mirror the ``secateurs`` logger into ``log.txt`` of this run."""
        handler = logging.FileHandler(self.path / LOG_FILE, mode="a")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        logger = logging.getLogger("secateurs")
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        self._handler = handler

    def detach_log(self) -> None:
        if self._handler is not None:
            logging.getLogger("secateurs").removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def save_model(self, model: nn.Module) -> None:
        save_tensors(self.path / MODEL_FILE, plain_state_dict(model))

    def save_masks(self, masks: MaskStore | None) -> None:
        if masks is not None and len(masks):
            save_tensors(self.path / MASKS_FILE, masks.state_dict())

    def save_plan(self, plan: Plan | None) -> None:
        if plan is not None:
            atomic_write_json(self.path / PLAN_FILE, plan.to_json())

    def commit(self, record: RunRecord) -> RunRecord:
        """Write run.json (last), drop training checkpoints, move the run into place; return the record.

        The record gets the run's ``name``, ``created`` (now, UTC) and ``versions``; log.txt ends with
        the files published. ``record`` itself is not mutated (the returned one is a copy).
        """
        if not (self.path / MODEL_FILE).is_file():
            raise RunDirError(f"refusing to publish {self.out}: no {MODEL_FILE} was written")
        published = record.model_copy(
            update={
                "name": self.out.name,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "versions": software_versions(),
            }
        )
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        files = sorted({RUN_FILE, *(path.name for path in self.path.iterdir() if path.is_file())})
        logging.getLogger(RUN_LOG).info("files: %s/ holds %s", self.out, ", ".join(files))
        self.detach_log()
        atomic_write_json(self.path / RUN_FILE, published.to_json())
        replace_dir(self.path, self.out)
        self.committed = True
        return published


@contextlib.contextmanager
def writing_run(out: Path, *, overwrite: bool = False, resume: bool = False) -> Iterator[RunStage]:
    """Stage a run for ``out``; nothing appears at ``out`` unless `RunStage.commit` is called.

    Refuses (`RunDirError`) when ``out`` already holds a finished run and ``overwrite`` is false, when
    ``out`` exists but is not a run directory, or when another process is writing it. On a `UsageError`
    the staging directory is removed unless it was resumed; after a crash or any other error it stays,
    so ``resume=True`` can continue from its last checkpoint.
    """
    out = Path(out)
    linked = [path for path in (out, partial_dir(out)) if path.is_symlink()]
    if linked:
        raise RunDirError(f"{linked[0]} is a symbolic link; refusing to write a run through it")
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not is_run_dir(out)):
            raise RunDirError(f"--out {out} exists and is not a run directory; refusing to replace it")
        if is_run_dir(out) and not overwrite:
            raise RunDirError(f"--out {out} already holds a finished run; pass --overwrite to replace it")
    with run_lock(out):
        staging = partial_dir(out)
        resumed = resume and staging.is_dir()
        if staging.exists() and not resumed:
            shutil.rmtree(staging)
        staging.mkdir(parents=True, exist_ok=True)
        stage = RunStage(out, staging, resumed)
        stage.attach_log()
        try:
            yield stage
        except UsageError:
            stage.detach_log()
            if not resumed:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        except BaseException:
            stage.detach_log()
            raise
        stage.detach_log()
        if not stage.committed:
            shutil.rmtree(staging, ignore_errors=True)


def read_run(path: Path) -> RunRecord:
    """The `RunRecord` of ``path``'s run.json (any schema version, migrated in memory).

    Anything that is not a finished run — no directory, no run.json, a file that is not JSON or not a
    valid record — is a `RunDirError` naming the file. Nothing is written.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a run directory (it does not exist or is not a directory)")
    if not (path / RUN_FILE).is_file():
        raise RunDirError(
            f"{path} is not a run directory: it has no {RUN_FILE} (a finished run has {RUN_FILE} and {MODEL_FILE})"
        )
    return parse_record(read_json(path / RUN_FILE, RUN_FILE), str(path / RUN_FILE))


def recorded_reference(spec: ModelSpec, *, allow_changed: bool = False) -> ModelReference:
    """The `ModelReference` that rebuilds ``spec``'s model, checked on rebuild against what it recorded."""
    recorded = Provenance(file=spec.file, sha256=spec.sha256, timm_version=spec.timm_version)
    return ModelReference(spec.name, dict(spec.args or {}), recorded, allow_changed)


def spec_of(reference: ModelReference, built: Provenance, input_shape: Sequence[int], num_classes: int) -> ModelSpec:
    """run.json's ``model`` for ``reference`` (its args) built with provenance ``built``."""
    return ModelSpec(
        name=reference.name,
        input_shape=list(input_shape),
        num_classes=num_classes,
        args=dict(reference.args) or None,
        file=built.file,
        sha256=built.sha256,
        timm_version=built.timm_version,
    )


def rebuild_model(spec: ModelSpec, *, allow_changed: bool = False) -> BuiltModel:
    """A fresh, unpruned model of ``spec`` (zoo or external), its recorded provenance checked.

    A `UsageError` when the reference no longer resolves or its file changed (unless ``allow_changed``).
    A timm version other than the recorded one is a warning: the weights check decides.
    """
    built = resolve_model(recorded_reference(spec, allow_changed=allow_changed), _shape(spec), spec.num_classes)
    if spec.timm_version is not None and built.provenance.timm_version != spec.timm_version:
        log.warning(
            "model %s was recorded with timm %s; timm %s is installed (the weights must still fit)",
            spec.name,
            spec.timm_version,
            built.provenance.timm_version,
        )
    return built


def _shape(spec: ModelSpec) -> Any:
    return tuple(spec.input_shape)  # build_model names a shape its model cannot take


def _check_weights_fit(path: Path, spec: ModelSpec, pruned: bool, skeleton: nn.Module | None = None) -> None:
    """Compare run.json's model with the weights file's header before loading (or allocating) it.

    A zoo model is built on the ``meta`` device (no memory) unless ``skeleton`` is given (an external
    model, already built): without a plan its tensors must be exactly those of ``model.safetensors``;
    with one (a physically smaller model) the unpruned model may be at most `MAX_PLAN_SHRINK` times
    larger. A crafted run.json thus cannot make `load_run` allocate a zoo model far larger than the
    files on disk.
    """
    if skeleton is None:
        with torch.device("meta"):
            skeleton = build_model(spec.name, _shape(spec), spec.num_classes, args=spec.args)
    expected = {name: tuple(value.shape) for name, value in plain_state_dict(skeleton).items()}
    found = tensor_shapes(path / MODEL_FILE)
    where = path / MODEL_FILE
    described = _described(spec)
    if pruned:
        sizes = [sum(math.prod(shape) for shape in shapes.values()) for shapes in (expected, found)]
        if sizes[0] > MAX_PLAN_SHRINK * max(sizes[1], 1):
            raise RunDirError(
                f"{where} holds {sizes[1]:,} values but run.json's model {described} {tuple(spec.input_shape)} "
                f"has {sizes[0]:,}: more than {MAX_PLAN_SHRINK}x more than any plan could remove"
            )
        return
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        detail = [f"missing {', '.join(missing[:4])}" if missing else "", f"unexpected {', '.join(unexpected[:4])}"]
        raise RunDirError(
            f"{where} does not match the model {described}: {'; '.join(part for part in detail if part.strip())}"
        )
    for name, shape in expected.items():
        if found[name] != shape:
            raise RunDirError(
                f"{where} does not match the model {described}: {name} has shape {found[name]}, "
                f"the model expects {shape}"
            )


def _described(spec: ModelSpec) -> str:
    """The model's name, with what identifies an external one (timm version, file hash) for messages."""
    if spec.timm_version is not None:
        return f"{spec.name} (recorded with timm {spec.timm_version})"
    if spec.sha256 is not None:
        return f"{spec.name} (recorded file sha256 {spec.sha256[:12]}…)"
    return spec.name


@dataclass
class LoadedRun:
    """A finished run rebuilt: its record, its model (weights loaded, eval mode), masks and plan.

    ``provenance`` is that of the model as rebuilt (an external model's file hash and timm version now).
    """

    path: Path
    record: RunRecord
    model: nn.Module
    masks: MaskStore | None
    plan: Plan | None
    provenance: Provenance = field(default_factory=Provenance)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.record.input_shape


def load_run(
    path: Path, model_factory: Callable[[], nn.Module] | None = None, *, allow_changed_model: bool = False
) -> LoadedRun:
    """Rebuild the model of run ``path``: fresh model, plan replay, weights, masks.

    ``model_factory`` builds the unpruned model (default: what run.json's ``model`` names: a zoo
    model, or an external reference rebuilt through `secateurs.models`, whose file must still have its
    recorded hash unless ``allow_changed_model``). A reference that no longer resolves, or weights that
    do not fit the rebuilt model, is a `RunDirError` naming the run. Nothing is written.
    """
    path = Path(path)
    record = read_run(path)
    spec = record.model
    pruned = (path / PLAN_FILE).is_file()
    provenance = Provenance()
    try:
        if model_factory is not None:
            model = model_factory()
        elif is_external(spec.name):
            built = rebuild_model(spec, allow_changed=allow_changed_model)
            model, provenance = built.module, built.provenance
            _check_weights_fit(path, spec, pruned, model)
        else:
            _check_weights_fit(path, spec, pruned)
            model = rebuild_model(spec).module
    except RunDirError:
        raise
    except UsageError as error:
        raise RunDirError(f"{path}: cannot rebuild its model: {error}") from None
    plan = None
    if pruned:
        plan = parse_plan(read_json(path / PLAN_FILE, PLAN_FILE))
        model = replay_plan(model, plan, torch.zeros(1, *spec.input_shape))
    masks = None
    if (path / MASKS_FILE).is_file():
        try:
            masks = MaskStore.attached(model, load_tensors(path / MASKS_FILE, "masks file"))
        except RunDirError:
            raise
        except UsageError as error:
            raise RunDirError(f"{path / MASKS_FILE} does not match the model: {error}") from None
    load_plain_state_dict(model, load_tensors(path / MODEL_FILE, "weights file"), f"{path / MODEL_FILE}")
    if masks is not None:
        masks.enforce_()
    model.eval()
    return LoadedRun(path=path, record=record, model=model, masks=masks, plan=plan, provenance=provenance)


def recorded_normalization(run: LoadedRun) -> Normalization:
    """The normalisation recorded in run.json (``preprocessing.mean``/``std``, one finite value per channel)."""
    recorded = run.record.preprocessing
    channels = run.record.model.input_shape[0]
    mean, std = recorded.mean, recorded.std
    if (
        mean is None
        or std is None
        or len(mean) != channels
        or len(std) != channels
        or not all(math.isfinite(value) for value in (*mean, *std))
        or not all(value > 0 for value in std)
    ):
        raise RunDirError(
            f"{run.path}: run.json preprocessing needs mean and std lists of {channels} finite numbers (std > 0)"
        )
    return Normalization(tuple(mean), tuple(std))

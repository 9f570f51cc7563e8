"""Run directories: written atomically, read back without pickle.

A run is staged in a hidden sibling ``.NAME.partial/`` (training checkpoints live there, so
``--resume`` can continue after a crash) and renamed to ``NAME/`` only when complete, with ``run.json``
written last. A directory called ``NAME/`` therefore always holds a finished run. A lock file
``.NAME.lock`` makes a second writer of the same ``--out`` refuse instead of racing.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import platform
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs import __version__
from secateurs.data.loader import Normalization
from secateurs.errors import RunDirError, UsageError
from secateurs.io.files import atomic_write_json, load_tensors, read_json, replace_dir, save_tensors, tensor_shapes
from secateurs.models import build_model
from secateurs.sparsity.masks import MaskStore, load_plain_state_dict, plain_state_dict
from secateurs.structure.plan import replay_plan

RUN_FILE = "run.json"
MODEL_FILE = "model.safetensors"
MASKS_FILE = "masks.safetensors"
PLAN_FILE = "plan.json"
LOG_FILE = "log.txt"
CHECKPOINT_DIR = "checkpoint"
REQUIRED_KEYS = ("kind", "model", "preprocessing", "seed", "metrics")
MAX_INPUT_SIZE = 65_536
"""The largest input dimension (channels, height, width) a run.json may declare."""
MAX_CLASSES = 1_000_000
MAX_PLAN_SHRINK = 1_000
"""A physically pruned run's weights may hold down to 1/1000 of its unpruned model's parameters."""


def versions() -> dict[str, str]:
    try:
        import torch_pruning

        pruning_version = str(getattr(torch_pruning, "__version__", "unknown"))
    except ImportError:  # pragma: no cover - a declared dependency
        pruning_version = "missing"
    return {
        "secateurs": __version__,
        "torch": torch.__version__,
        "torch_pruning": pruning_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


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

    def save_plan(self, plan: dict[str, Any] | None) -> None:
        if plan is not None:
            atomic_write_json(self.path / PLAN_FILE, plan)

    def commit(self, info: dict[str, Any]) -> dict[str, Any]:
        """Write run.json (last), drop training checkpoints, move the run into place; return run.json."""
        if not (self.path / MODEL_FILE).is_file():
            raise RunDirError(f"refusing to publish {self.out}: no {MODEL_FILE} was written")
        record = {
            "name": self.out.name,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "versions": versions(),
            **info,
        }
        self.detach_log()
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        atomic_write_json(self.path / RUN_FILE, record)
        replace_dir(self.path, self.out)
        self.committed = True
        return record


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


def read_run(path: Path) -> dict[str, Any]:
    """The validated run.json of ``path``; anything that is not a finished run is a `RunDirError`."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a run directory (it does not exist or is not a directory)")
    if not (path / RUN_FILE).is_file():
        raise RunDirError(
            f"{path} is not a run directory: it has no {RUN_FILE} (a finished run has {RUN_FILE} and {MODEL_FILE})"
        )
    info = read_json(path / RUN_FILE, RUN_FILE)
    if not isinstance(info, dict):
        raise RunDirError(f"{path / RUN_FILE} must hold a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in info]
    if missing:
        raise RunDirError(f"{path / RUN_FILE} lacks {', '.join(missing)}")
    model = info["model"]
    if not isinstance(model, dict) or not {"name", "input_shape", "num_classes"} <= set(model):
        raise RunDirError(f"{path / RUN_FILE}: 'model' needs name, input_shape and num_classes")
    if not _valid_model_spec(model):
        raise RunDirError(
            f"{path / RUN_FILE}: 'model' must have a string name, an input_shape of 1 to 4 integers in "
            f"[1, {MAX_INPUT_SIZE}] and an integer num_classes in [1, {MAX_CLASSES}]"
        )
    for key in ("metrics", "preprocessing"):
        if not isinstance(info[key], dict):
            raise RunDirError(f"{path / RUN_FILE}: {key!r} must be an object, found {type(info[key]).__name__}")
    return info


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_model_spec(model: dict[str, Any]) -> bool:
    shape, classes = model["input_shape"], model["num_classes"]
    return (
        isinstance(model["name"], str)
        and isinstance(shape, list)
        and 1 <= len(shape) <= 4
        and all(_is_integer(size) and 1 <= size <= MAX_INPUT_SIZE for size in shape)
        and _is_integer(classes)
        and 1 <= classes <= MAX_CLASSES
    )


def _check_weights_fit(path: Path, spec: dict[str, Any], pruned: bool) -> None:
    """Compare run.json's model with the weights file's header before allocating the model.

    The registry model is built on the ``meta`` device (no memory): without a plan its tensors must
    be exactly those of ``model.safetensors``; with one (a physically smaller model) the unpruned
    model may be at most `MAX_PLAN_SHRINK` times larger. A crafted run.json thus cannot make
    `load_run` allocate a model far larger than the files on disk.
    """
    with torch.device("meta"):
        skeleton = build_model(spec["name"], tuple(spec["input_shape"]), int(spec["num_classes"]))
    expected = {name: tuple(value.shape) for name, value in plain_state_dict(skeleton).items()}
    found = tensor_shapes(path / MODEL_FILE)
    where = path / MODEL_FILE
    if pruned:
        sizes = [sum(math.prod(shape) for shape in shapes.values()) for shapes in (expected, found)]
        if sizes[0] > MAX_PLAN_SHRINK * max(sizes[1], 1):
            raise RunDirError(
                f"{where} holds {sizes[1]:,} values but run.json's model {spec['name']} {tuple(spec['input_shape'])} "
                f"has {sizes[0]:,}: more than {MAX_PLAN_SHRINK}x more than any plan could remove"
            )
        return
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        detail = [f"missing {', '.join(missing[:4])}" if missing else "", f"unexpected {', '.join(unexpected[:4])}"]
        raise RunDirError(f"{where} does not match the model: {'; '.join(part for part in detail if part.strip())}")
    for name, shape in expected.items():
        if found[name] != shape:
            raise RunDirError(
                f"{where} does not match the model: {name} has shape {found[name]}, the model expects {shape}"
            )


@dataclass
class LoadedRun:
    path: Path
    info: dict[str, Any]
    model: nn.Module
    masks: MaskStore | None
    plan: dict[str, Any] | None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.info["model"]["input_shape"]
        return int(c), int(h), int(w)


def load_run(path: Path, model_factory: Callable[[], nn.Module] | None = None) -> LoadedRun:
    """Rebuild the model of run ``path``: fresh model, plan replay, weights, masks.

    ``model_factory`` builds the unpruned model (default: the registry entry recorded in run.json).
    """
    path = Path(path)
    info = read_run(path)
    spec = info["model"]
    try:
        if model_factory is None:
            _check_weights_fit(path, spec, pruned=(path / PLAN_FILE).is_file())
        model = (
            model_factory()
            if model_factory
            else build_model(spec["name"], tuple(spec["input_shape"]), int(spec["num_classes"]))
        )
    except RunDirError:
        raise
    except UsageError as error:
        raise RunDirError(f"{path}: cannot rebuild its model: {error}") from None
    plan = None
    if (path / PLAN_FILE).is_file():
        plan = read_json(path / PLAN_FILE, PLAN_FILE)
        model = replay_plan(model, plan, torch.zeros(1, *spec["input_shape"]))
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
    return LoadedRun(path=path, info=info, model=model, masks=masks, plan=plan)


def recorded_normalization(run: LoadedRun) -> Normalization:
    """The normalisation recorded in run.json (``preprocessing.mean``/``std``, one finite value per channel)."""
    recorded = run.info["preprocessing"]
    channels = run.info["model"]["input_shape"][0]
    values = [recorded.get(key) for key in ("mean", "std")]
    if not all(
        isinstance(value, list)
        and len(value) == channels
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        for value in values
    ) or not all(v > 0 for v in values[1]):
        raise RunDirError(
            f"{run.path}: run.json preprocessing needs mean and std lists of {channels} finite numbers (std > 0)"
        )
    return Normalization(tuple(values[0]), tuple(values[1]))

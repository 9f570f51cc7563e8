"""Run directories under torchrun: rank 0 writes, the other ranks follow.

`writing_run_on(world, out, ...)` is `secateurs.runs.directory.writing_run` for a data-parallel job. Rank 0
stages, locks and publishes the run exactly as a single process would; every other rank gets a
`FollowerStage` that writes nothing (no partial directory, no lock file, no checkpoints) and whose
`commit` returns rank 0's record (sent as its JSON object and parsed again). The ranks agree at
the start (a refusal on rank 0, e.g. a finished run at ``--out`` or a live lock, is raised on every
rank with the same message, and every rank learns whether rank 0 resumed) and at the end (no rank
returns before rank 0 has published the run and released its lock).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from torch import nn

from secateurs.errors import RunDirError, UsageError
from secateurs.runs.directory import RunStage, writing_run
from secateurs.runs.record import RunRecord, parse_record
from secateurs.runtime import distributed
from secateurs.runtime.distributed import World
from secateurs.sparsity.masks import MaskStore
from secateurs.structure.plan import Plan


class Stage(Protocol):
    """What a workflow does with the run being written (`RunStage`, `LeaderStage`, `FollowerStage`)."""

    @property
    def resumed(self) -> bool: ...

    @property
    def checkpoint_dir(self) -> Path | None: ...

    def save_model(self, model: nn.Module) -> None: ...

    def save_masks(self, masks: MaskStore | None) -> None: ...

    def save_plan(self, plan: Plan | None) -> None: ...

    def commit(self, record: RunRecord) -> RunRecord: ...


class LeaderStage:
    """Rank 0's stage: a `RunStage` whose `commit` also sends the published run.json to the others."""

    def __init__(self, stage: RunStage) -> None:
        self.stage = stage

    @property
    def resumed(self) -> bool:
        return self.stage.resumed

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.stage.checkpoint_dir

    def save_model(self, model: nn.Module) -> None:
        self.stage.save_model(model)

    def save_masks(self, masks: MaskStore | None) -> None:
        self.stage.save_masks(masks)

    def save_plan(self, plan: Plan | None) -> None:
        self.stage.save_plan(plan)

    def commit(self, record: RunRecord) -> RunRecord:
        published = self.stage.commit(record)
        distributed.broadcast_json(published.to_json())
        return published


class FollowerStage:
    """A rank other than 0: writes nothing; `commit` waits for rank 0's run.json and returns it."""

    def __init__(self, resumed: bool) -> None:
        self._resumed = resumed

    @property
    def resumed(self) -> bool:
        return self._resumed

    @property
    def checkpoint_dir(self) -> Path | None:
        return None

    def save_model(self, model: nn.Module) -> None:
        """Rank 0 saves the model."""

    def save_masks(self, masks: MaskStore | None) -> None:
        """Rank 0 saves the masks."""

    def save_plan(self, plan: Plan | None) -> None:
        """Rank 0 saves the plan."""

    def commit(self, record: RunRecord) -> RunRecord:
        return parse_record(distributed.broadcast_json(None), "rank 0's run.json")


@contextlib.contextmanager
def writing_run_on(world: World, out: Path, *, overwrite: bool = False, resume: bool = False) -> Iterator[Stage]:
    """`writing_run` for ``world``: rank 0 writes ``out``, the other ranks follow (see the module docstring)."""
    if not world.distributed:
        with writing_run(out, overwrite=overwrite, resume=resume) as stage:
            yield stage
        return
    if not world.is_main:
        status = distributed.broadcast_json(None)
        if "error" in status:
            raise RunDirError(status["error"])
        yield FollowerStage(bool(status["resumed"]))
        distributed.barrier()
        return
    with contextlib.ExitStack() as stack:
        try:
            stage = stack.enter_context(writing_run(out, overwrite=overwrite, resume=resume))
        except UsageError as error:
            distributed.broadcast_json({"error": str(error)})
            raise
        distributed.broadcast_json({"resumed": stage.resumed})
        yield LeaderStage(stage)
    distributed.barrier()

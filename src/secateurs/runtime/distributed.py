"""Data-parallel training with ``torchrun`` and ``torch.distributed`` (DDP; gloo on CPU, NCCL on GPU).

``torchrun --nproc_per_node=N -m secateurs train|prune|run ...`` starts N copies of the CLI with the
rendezvous variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set.
The CLI (and only the CLI: the library never reads the environment) calls `init_from_environment`,
which joins the process group; everything below then asks `current_world` where it runs.

What this module provides:

- `World`: rank, size, local rank, backend and device of this process (``World()`` = one process);
- collectives that are the identity in a single process: `barrier`, `all_reduce_sum`,
  `all_reduce_mean`, `broadcast_`, `broadcast_json`, `broadcast_tensors`, `broadcast_module_`;
- `split_items` / `sum_over_items`: split N independent work items (e.g. Hutchinson probes) across
  ranks and add up the results on every rank;
- `data_parallel` and `trainer_options`: the module wrapper (DDP) and the ``shard=``/``parallel=``
  arguments of `secateurs.training.loop.Trainer`;
- `differing_ranks`: which ranks hold a digest other than rank 0's (`secateurs.training.consistency`
  builds the mask broadcast and the hash checks on it; a difference is a `DistributedMismatch`).

**Hessian probes (HAP).** A Hutchinson estimate ``tr(H) ≈ (1/N) Σᵢ vᵢᵀ H vᵢ`` is a sum over
independent probes. Split it with `sum_over_items`::

    from secateurs.runtime.distributed import sum_over_items

    def probe_sums(items: range) -> dict[str, torch.Tensor]:
        totals = {name: torch.zeros(channels) for name, channels in groups.items()}  # zeros for an empty range
        for i in items:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + i)     # probe i depends on i only
            ...                                                                   # totals[name] += vᵀHv per channel
        return totals

    traces = {name: total / num_probes for name, total in sum_over_items(num_probes, probe_sums).items()}

Every rank gets the same totals, so every rank ranks channels the same way; because probe ``i`` is
drawn from a generator seeded by ``i`` alone, the estimate does not depend on the number of ranks
(up to float summation order). An estimator that stops early once its running mean settles works in
rounds: ``sum_over_items(round_size, probe_sums, first=done)`` returns the same sums on every rank, so
every rank takes the same decision to stop (return sums of squares too for standard errors).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from secateurs.errors import SecateursError, UsageError
from secateurs.io.files import dumps_json

log = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("gloo", "nccl")
DEFAULT_TIMEOUT = timedelta(minutes=30)


class DistributedMismatch(SecateursError):
    """Ranks that must hold identical state (masks, pruning plans, work results) do not."""


@dataclass(frozen=True)
class World:
    """Where this process runs: rank ``rank`` of ``size`` (``World()`` is a single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes run directories, logs and prints."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return (self.rank, self.size)


def _integer(environ: Mapping[str, str], name: str) -> int:
    raw = environ.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"torchrun variable {name} must be an integer, got {raw!r}") from None


def environment_world(environ: Mapping[str, str]) -> World | None:
    """The `World` described by torchrun's variables in ``environ``; None when not under torchrun.

    Pure: reads ``environ`` only. Refuses (`UsageError`) inconsistent values.
    """
    if "WORLD_SIZE" not in environ:
        return None
    size = _integer(environ, "WORLD_SIZE")
    rank = _integer(environ, "RANK") if "RANK" in environ else 0
    local_rank = _integer(environ, "LOCAL_RANK") if "LOCAL_RANK" in environ else rank
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise UsageError(
            f"torchrun variables are inconsistent: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank}"
        )
    if size == 1:
        return None
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(name)]
    if missing:
        raise UsageError(
            f"WORLD_SIZE={size} but {', '.join(missing)} is not set; start distributed runs with torchrun "
            "(torchrun --nproc_per_node=N -m secateurs ...)"
        )
    return World(rank=rank, size=size, local_rank=local_rank)


def default_backend() -> str:
    """NCCL when a GPU is visible, gloo otherwise."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_from_environment(environ: Mapping[str, str], backend: str | None = None) -> World:
    """Join the process group described by torchrun's variables (called once, by the CLI).

    Returns ``World()`` (and does nothing) outside torchrun or with ``WORLD_SIZE=1``. With NCCL the
    process uses GPU ``LOCAL_RANK``. Mutates torch.distributed's process-global state.
    """
    described = environment_world(environ)
    if described is None:
        return World()
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise UsageError(f"unknown distributed backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    device = torch.device("cpu")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise UsageError("the nccl backend needs a GPU; use gloo on CPU")
        device = torch.device("cuda", described.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=described.rank,
            world_size=described.size,
            timeout=DEFAULT_TIMEOUT,
        )
    log.debug("joined process group: rank %d of %d (%s, %s)", described.rank, described.size, backend, device)
    return World(described.rank, described.size, described.local_rank, backend, device)


def current_world() -> World:
    """This process's `World`, from torch.distributed's state (``World()`` when not initialised)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return World()
    backend = str(dist.get_backend())
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank())) if backend == "nccl" else dist.get_rank()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def shutdown(*, synchronize: bool = True) -> None:
    """Leave the process group (no-op when not in one).

    With ``synchronize`` every rank first waits for the others (call it so on success only: a rank
    that failed alone would wait forever). Garbage is collected first so that no DDP wrapper still
    holds the group when it is destroyed (gloo aborts the process if its threads outlive it).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------ collectives
def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    return current_world().device


def barrier() -> None:
    """Wait until every rank arrives (no-op in one process)."""
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place; returns it. Every rank gets the same result."""
    if _active():
        moved = tensor.to(_device())
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        if moved is not tensor:
            tensor.copy_(moved)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average a floating ``tensor`` over ranks, in place; returns it."""
    if not tensor.is_floating_point():
        raise UsageError(f"all_reduce_mean needs a floating tensor, got {tensor.dtype}")
    if _active():
        all_reduce_sum(tensor).div_(dist.get_world_size())
    return tensor


def broadcast_(tensor: torch.Tensor, source: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` with rank ``source``'s, in place; returns it."""
    if _active():
        moved = tensor.to(_device())
        dist.broadcast(moved, src=source)
        if moved is not tensor:
            tensor.copy_(moved)
    return tensor


def broadcast_json(value: Any, source: int = 0) -> Any:
    """Rank ``source``'s JSON-serialisable ``value`` on every rank (other ranks may pass None).

    Sent as UTF-8 JSON bytes (no pickle; written like run.json: tuples and tensors arrive as lists, paths
    as strings, NaN as None): a length, then the bytes.
    """
    if not _active():
        return value
    payload = dumps_json(value).encode() if dist.get_rank() == source else b""
    length = broadcast_(torch.tensor([len(payload)], dtype=torch.int64), source)
    buffer = torch.zeros(int(length.item()), dtype=torch.uint8)
    if dist.get_rank() == source:
        buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    broadcast_(buffer, source)
    return json.loads(buffer.numpy().tobytes().decode())


_DTYPES = {str(dtype): dtype for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                           torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                                           torch.bool)}  # fmt: skip


def broadcast_tensors(tensors: Mapping[str, torch.Tensor] | None, source: int = 0) -> dict[str, torch.Tensor]:
    """Rank ``source``'s dict of CPU tensors on every rank (the others pass None); copies are returned."""
    if not _active():
        return dict(tensors or {})
    layout = None
    if dist.get_rank() == source:
        assert tensors is not None
        layout = [[name, list(t.shape), str(t.dtype)] for name, t in tensors.items()]
    layout = broadcast_json(layout, source)
    result: dict[str, torch.Tensor] = {}
    for name, shape, dtype in layout:
        if dist.get_rank() == source:
            assert tensors is not None
            value = tensors[name].detach().cpu().contiguous().clone()
        else:
            value = torch.empty(shape, dtype=_DTYPES[dtype])
        carrier = value.view(torch.uint8) if value.dtype == torch.bool else value
        broadcast_(carrier, source)
        result[name] = value
    return result


@torch.no_grad()
def broadcast_module_(module: nn.Module, source: int = 0) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank ``source``'s (in place)."""
    if not _active():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        carrier = tensor.data.view(torch.uint8) if tensor.dtype == torch.bool else tensor.data
        broadcast_(carrier, source)


# ---------------------------------------------------------------------------------- work splitting
def split_items(count: int, rank: int, size: int) -> range:
    """The items of ``rank`` among ``count`` items split over ``size`` ranks: contiguous, sizes within one.

    >>> [list(split_items(5, r, 2)) for r in range(2)]
    [[0, 1, 2], [3, 4]]
    """
    if count < 0 or size < 1 or not 0 <= rank < size:
        raise UsageError(f"cannot split {count} items for rank {rank} of {size}")
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def sum_over_items(
    count: int,
    compute: Callable[[range], Mapping[str, torch.Tensor]],
    world: World | None = None,
    *,
    first: int = 0,
) -> dict[str, torch.Tensor]:
    """Σ over items ``first … first+count-1``, each rank computing its own `split_items` share.

    ``compute(items)`` returns, for the given range of item indices, the *sum* of the per-item results
    as a dict of tensors with the same names, shapes and dtypes on every rank and for every range (an
    empty range must give zeros). Returns the total over all items, identical on every rank. Raises
    `DistributedMismatch` when ranks disagree on names or shapes. ``first`` lets a caller work in
    rounds (probes 0-15, then 16-31, …) and stop on a criterion that every rank evaluates alike.
    """
    world = world or current_world()
    share = split_items(count, *world.shard)
    items = range(first + share.start, first + share.stop)
    partial = {name: value.detach().clone() for name, value in compute(items).items()}
    if not world.distributed:
        return partial
    layout = json.dumps([[name, list(value.shape), str(value.dtype)] for name, value in partial.items()])
    differing = differing_ranks(hashlib.sha256(layout.encode()).hexdigest(), world)
    if differing:
        raise DistributedMismatch(
            f"rank(s) {', '.join(map(str, differing))} computed results named or shaped differently from rank 0; "
            "compute() must return the same names, shapes and dtypes for every range of items"
        )
    return {name: all_reduce_sum(value) for name, value in partial.items()}


# ------------------------------------------------------------------------------- DDP and trainers
def per_rank_batch_size(global_batch: int, world: World) -> int:
    """The per-process batch that keeps the global batch ``global_batch``; refuses uneven splits."""
    if global_batch % world.size:
        raise UsageError(
            f"the batch size {global_batch} is the global batch of all {world.size} processes and must be "
            f"divisible by their number; accepted: a multiple of {world.size}"
        )
    return global_batch // world.size


def data_parallel(world: World) -> Callable[[nn.Module], nn.Module] | None:
    """A wrapper putting a module on this rank's device inside `DistributedDataParallel` (None alone)."""
    if not world.distributed:
        return None

    def wrap(module: nn.Module) -> nn.Module:
        module.to(world.device)
        device_ids = [world.device.index] if world.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    return wrap


def trainer_options(world: World | None = None) -> dict[str, Any]:
    """``shard=`` and ``parallel=`` for `Trainer` in this world (``{}`` in a single process).

    Methods that train internally pass ``**trainer_options()`` to their Trainer to train data-parallel.
    """
    world = world or current_world()
    if not world.distributed:
        return {}
    return {"shard": world.shard, "parallel": data_parallel(world)}


# ------------------------------------------------------------------------------ identical state
def differing_ranks(digest: str, world: World | None = None) -> list[int]:
    """The ranks whose ``digest`` differs from rank 0's (every rank gets the same list)."""
    world = world or current_world()
    if not world.distributed:
        return []
    mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.int64, device=world.device)
    gathered = [torch.zeros_like(mine) for _ in range(world.size)]
    dist.all_gather(gathered, mine)
    return [rank for rank, other in enumerate(gathered) if not torch.equal(other.cpu(), gathered[0].cpu())]

"""Identical state on every rank: digests, checks, and the broadcast of masks after pruning.

Under torchrun, rank 0's masks are broadcast to every rank right after pruning
(`synchronize_masks_`) and compared by SHA-256 again after fine-tuning (`check_identical`); a pruning
plan is compared the same way (`check_identical_json`). A difference raises `DistributedMismatch` on
every rank (they all learn the same list of differing ranks). In a single process all of this is free.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import torch

from secateurs.io.files import dumps_json
from secateurs.runtime.distributed import (
    DistributedMismatch,
    World,
    broadcast_json,
    broadcast_tensors,
    current_world,
    differing_ranks,
)
from secateurs.sparsity.masks import MaskStore

log = logging.getLogger(__name__)


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` (in sorted name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_identical(tensors: Mapping[str, torch.Tensor], what: str, world: World | None = None) -> None:
    """Raise `DistributedMismatch` on every rank unless all ranks hold bit-identical ``tensors``."""
    differing = differing_ranks(tensor_digest(tensors), world)
    if differing:
        raise DistributedMismatch(
            f"the {what} differ between ranks: rank(s) {', '.join(map(str, differing))} do not match rank 0 "
            "(every rank must hold identical state; is the method deterministic?)"
        )


def check_identical_json(value: Any, what: str, world: World | None = None) -> None:
    """`check_identical` for a JSON-serialisable value (e.g. a pruning plan)."""
    digest = hashlib.sha256(dumps_json(value).encode()).hexdigest()  # tensors and paths as in plan.json
    differing = differing_ranks(digest, world)
    if differing:
        raise DistributedMismatch(
            f"the {what} differ between ranks: rank(s) {', '.join(map(str, differing))} do not match rank 0 "
            "(every rank must choose the same structure; is the method deterministic?)"
        )


def synchronize_masks_(masks: MaskStore | None, world: World | None = None) -> bool:
    """Make every rank's masks rank 0's (broadcast), then check them by hash.

    Returns True when the masks had differed before the broadcast (logged as a warning). Mutates the
    masks (and zeroes what they remove) on ranks other than 0.
    """
    world = world or current_world()
    if not world.distributed:
        return False
    state = masks.state_dict() if masks is not None else {}
    names = broadcast_json(sorted(state) if world.is_main else None)
    if names != sorted(state):
        raise DistributedMismatch(f"rank {world.rank} masks {len(state)} parameters, rank 0 masks {len(names)}")
    differed = bool(differing_ranks(tensor_digest(state), world))
    if differed:
        log.warning("masks differed between ranks after pruning; every rank now uses rank 0's")
    received = broadcast_tensors(state if world.is_main else None)
    if masks is not None and not world.is_main:
        masks.update_(received)
    check_identical(masks.state_dict() if masks is not None else {}, "masks", world)
    return differed

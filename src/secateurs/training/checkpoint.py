"""Resumable training checkpoints, written atomically at every epoch end (safetensors + JSON).

Layout of ``DIR/latest/``: ``model.safetensors`` (plain layout), ``masks.safetensors`` (if masked),
``optimizer.safetensors`` (per-parameter state tensors), ``state.json`` (trainer and callback state,
optimizer hyper-parameters and scalar state, and the canonical name of every optimizer parameter). A
checkpoint directory is replaced as a whole, so a kill at any moment leaves the previous complete
checkpoint.

Optimizer state is matched to parameters by name, not by position: a model whose masks were installed
after its optimizer was built lists its parameters in another order (``parametrize`` moves ``weight``
behind ``bias``), and a resume must not hand a bias's momentum to a weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.errors import RunDirError
from secateurs.io.files import (
    atomic_write_json,
    load_tensors,
    read_json,
    replace_dir,
    save_tensors,
    staging_dir,
)
from secateurs.sparsity.masks import MaskStore, canonical_name, load_plain_state_dict, plain_state_dict

LATEST = "latest"


def _parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Canonical names of the optimizer's parameters, in its state-dict order (``#i`` if not in ``model``)."""
    names = {id(parameter): canonical_name(name) for name, parameter in model.named_parameters()}
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    return [names.get(id(parameter), f"#{index}") for index, parameter in enumerate(parameters)]


def _optimizer_payload(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    meta = {"param_groups": state["param_groups"], "scalars": scalars, "parameters": _parameter_names(model, optimizer)}
    return tensors, meta


def _optimizer_state(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], current: list[str], source: Path
) -> dict[str, Any]:
    """The saved optimizer state re-indexed to the current optimizer's parameter order ``current``."""
    saved: list[str] = meta.get("parameters", current)
    if sorted(saved) != sorted(current) or len(set(current)) != len(current):
        differing = sorted(set(saved) ^ set(current))[:4]
        raise RunDirError(
            f"checkpoint optimizer state in {source} does not match the model: its parameters "
            f"{', '.join(differing) or '(repeated names)'} are not those of the optimizer"
        )
    position = {name: index for index, name in enumerate(current)}
    remap = {index: position[name] for index, name in enumerate(saved)}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        state.setdefault(remap[int(index)], {})[name] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(remap[int(index)], {}).update(entries)
    groups, start = [], 0
    for group in meta["param_groups"]:  # positions in the current order; group sizes must agree
        groups.append({**group, "params": list(range(start, start + len(group["params"])))})
        start += len(group["params"])
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    masks: MaskStore | None,
    trainer_state: dict[str, Any],
) -> None:
    """Write the full training state to ``directory/latest`` (atomic replace)."""
    target = directory / LATEST
    with staging_dir(target) as staging:
        save_tensors(staging / "model.safetensors", plain_state_dict(model))
        if masks is not None and len(masks):
            save_tensors(staging / "masks.safetensors", masks.state_dict())
        tensors, meta = _optimizer_payload(model, optimizer)
        save_tensors(staging / "optimizer.safetensors", tensors)
        atomic_write_json(staging / "state.json", {"trainer": trainer_state, "optimizer": meta})
        replace_dir(staging, target)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read into memory: plain weights, masks, optimizer tensors and the JSON state."""

    model: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] | None
    optimizer: dict[str, torch.Tensor]
    state: dict[str, Any]
    source: Path


def read_checkpoint(directory: Path) -> Checkpoint | None:
    """Read ``directory/latest`` without applying it; None when there is no checkpoint."""
    source = directory / LATEST
    if not (source / "state.json").is_file():
        return None
    state = read_json(source / "state.json", "checkpoint state")
    if not isinstance(state, dict) or not {"trainer", "optimizer"} <= set(state):
        raise RunDirError(f"checkpoint state {source / 'state.json'} lacks 'trainer' or 'optimizer'")
    masks = None
    if (source / "masks.safetensors").is_file():
        masks = load_tensors(source / "masks.safetensors", "checkpoint masks")
    return Checkpoint(
        model=load_tensors(source / "model.safetensors", "checkpoint weights"),
        masks=masks,
        optimizer=load_tensors(source / "optimizer.safetensors", "optimizer state"),
        state=state,
        source=source,
    )


def apply_checkpoint(
    checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer, masks: MaskStore | None
) -> dict[str, Any]:
    """Restore model, masks and optimizer from ``checkpoint``; return the trainer state (mutates all three)."""
    source = checkpoint.source
    if masks is not None and checkpoint.masks is not None:
        masks.load_state_dict(checkpoint.masks)
    load_plain_state_dict(model, checkpoint.model, source)
    try:
        current = _parameter_names(model, optimizer)
        state = _optimizer_state(checkpoint.optimizer, checkpoint.state["optimizer"], current, source)
        optimizer.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as error:
        raise RunDirError(f"checkpoint optimizer state in {source} does not match the model: {error}") from None
    return dict(checkpoint.state["trainer"])


def load_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    masks: MaskStore | None,
) -> dict[str, Any] | None:
    """Restore model, masks and optimizer from ``directory/latest``; return the trainer state.

    Returns None when there is no checkpoint. Mutates ``model``, ``masks`` and ``optimizer``.
    """
    checkpoint = read_checkpoint(directory)
    return None if checkpoint is None else apply_checkpoint(checkpoint, model, optimizer, masks)

"""Resumable training checkpoints, written atomically at every epoch end (safetensors + JSON).

Layout of ``DIR/latest/``: ``model.safetensors`` (plain layout), ``masks.safetensors`` (if masked),
``optimizer.safetensors`` (per-parameter state tensors), ``state.json`` (trainer and callback state,
optimizer hyper-parameters and scalar state). A checkpoint directory is replaced as a whole, so a kill
at any moment leaves the previous complete checkpoint.
"""

from __future__ import annotations

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
from secateurs.sparsity.masks import MaskStore, load_plain_state_dict, plain_state_dict

LATEST = "latest"


def _optimizer_payload(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


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
        tensors, meta = _optimizer_payload(optimizer)
        save_tensors(staging / "optimizer.safetensors", tensors)
        atomic_write_json(staging / "state.json", {"trainer": trainer_state, "optimizer": meta})
        replace_dir(staging, target)


def load_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    masks: MaskStore | None,
) -> dict[str, Any] | None:
    """Restore model, masks and optimizer from ``directory/latest``; return the trainer state.

    Returns None when there is no checkpoint. Mutates ``model``, ``masks`` and ``optimizer``.
    """
    source = directory / LATEST
    if not (source / "state.json").is_file():
        return None
    state = read_json(source / "state.json", "checkpoint state")
    if masks is not None and (source / "masks.safetensors").is_file():
        masks.load_state_dict(load_tensors(source / "masks.safetensors", "checkpoint masks"))
    load_plain_state_dict(model, load_tensors(source / "model.safetensors", "checkpoint weights"), source)
    try:
        optimizer.load_state_dict(
            _optimizer_state(load_tensors(source / "optimizer.safetensors", "optimizer state"), state["optimizer"])
        )
    except (KeyError, ValueError) as error:
        raise RunDirError(f"checkpoint optimizer state in {source} does not match the model: {error}") from None
    return dict(state["trainer"])

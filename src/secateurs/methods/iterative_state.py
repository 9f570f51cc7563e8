"""Round-level resumable state of the iterative methods (safetensors + JSON, replaced atomically).

Layout of ``DIR/rounds/``: ``model.safetensors`` (plain layout), ``masks.safetensors``,
``rewind.safetensors`` (the rewind point) and ``state.json`` (rounds done, history, references,
counters). Written after every finished round; a run killed mid-round restarts that round, which
reproduces it exactly (a round's training depends only on the seed and the round number).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.io.files import atomic_write_json, load_tensors, read_json, replace_dir, save_tensors, staging_dir
from secateurs.sparsity.masks import MaskStore, load_plain_state_dict, plain_state_dict

STATE = "rounds"


def save_round_state(
    directory: Path, model: nn.Module, masks: MaskStore, rewind_point: dict[str, torch.Tensor], state: dict[str, Any]
) -> None:
    """Write everything needed to continue after the last finished round."""
    target = directory / STATE
    with staging_dir(target) as staging:
        save_tensors(staging / "model.safetensors", plain_state_dict(model))
        save_tensors(staging / "masks.safetensors", masks.state_dict())
        save_tensors(staging / "rewind.safetensors", rewind_point)
        atomic_write_json(staging / "state.json", state)
        replace_dir(staging, target)


def load_round_state(
    directory: Path, model: nn.Module, masks: MaskStore
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Restore model and masks; return (rewind point, state), or None when nothing was saved."""
    source = directory / STATE
    if not (source / "state.json").is_file():
        return None
    state = read_json(source / "state.json", "iterative pruning state")
    masks.load_state_dict(load_tensors(source / "masks.safetensors", "saved masks"))
    load_plain_state_dict(model, load_tensors(source / "model.safetensors", "saved weights"), source)
    rewind_point = load_tensors(source / "rewind.safetensors", "saved rewind point")
    return rewind_point, dict(state)

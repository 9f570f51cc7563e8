"""Every registered model builds on the ``meta`` device with the shapes it has for real.

`load_run` relies on it: it compares run.json's model with the weights file by building the model on
``meta`` (no memory) before allocating it, so a crafted run.json cannot make it allocate a huge model.
"""

from __future__ import annotations

import pytest
import torch

from secateurs.models import MODELS, build_model
from secateurs.sparsity.masks import plain_state_dict


@pytest.mark.parametrize("name", MODELS.names())
def test_meta_skeleton_has_the_real_shapes(name: str) -> None:
    shape = (3, 32, 32) if MODELS.get(name).min_image_size > 28 else (1, 28, 28)
    with torch.device("meta"):
        skeleton = build_model(name, shape, 10)
    real = build_model(name, shape, 10)
    skeleton_shapes = {key: tuple(value.shape) for key, value in plain_state_dict(skeleton).items()}
    assert skeleton_shapes == {key: tuple(value.shape) for key, value in plain_state_dict(real).items()}
    assert all(value.device.type == "meta" for value in skeleton.state_dict().values())

"""The model zoo: a registry of architectures and `build_model`, the one way to make a model.

Importing this package imports every model file, and each registers its factories in `MODELS`.
Every model ends in an ``nn.Linear`` called ``classifier``, uses no in-place operations and traces
with Torch-Pruning's ``DependencyGraph``.
"""

# Imported for their side effect: each model file registers its factories in MODELS.
from secateurs.models import (  # noqa: F401
    convnets,
    lenet,
    mlp,
    mobilenet,
    preresnet,
    resnet,
    resnet_cifar,
    vgg,
)
from secateurs.models.registry import (
    MODEL_KINDS,
    MODELS,
    ModelEntry,
    build_model,
    model_entry,
    register_model,
)

__all__ = ["MODELS", "MODEL_KINDS", "ModelEntry", "build_model", "model_entry", "register_model"]

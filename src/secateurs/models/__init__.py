"""The model zoo: a registry of architectures and `build_model`, the one way to make a model.

Importing this package imports every model file, and each registers its factories in `MODELS`.
Every model ends in an ``nn.Linear`` called ``classifier``, uses no in-place operations and traces
with Torch-Pruning's ``DependencyGraph``. Models from outside the zoo (timm, a Python factory, a model
file) are named by reference and built through the same `build_model` (`secateurs.models.external`).
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
from secateurs.models.external import (
    EXTERNAL_FORMS,
    BuiltModel,
    ModelReference,
    Provenance,
    as_reference,
    is_external,
)
from secateurs.models.registry import (
    MODEL_KINDS,
    MODELS,
    ModelEntry,
    build_model,
    check_model,
    model_entry,
    register_model,
    resolve_model,
)

__all__ = [
    "EXTERNAL_FORMS",
    "MODELS",
    "MODEL_KINDS",
    "BuiltModel",
    "ModelEntry",
    "ModelReference",
    "Provenance",
    "as_reference",
    "build_model",
    "check_model",
    "is_external",
    "model_entry",
    "register_model",
    "resolve_model",
]

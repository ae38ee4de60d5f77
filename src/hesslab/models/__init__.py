"""A small model zoo with seeded, device-independent initialisation."""

from hesslab.models.zoo import (
    ACTIVATIONS,
    MODELS,
    BasicBlock,
    ResNetSmall,
    build_model,
    init_parameters,
    lenet,
    mlp,
    resnet_small,
)

__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "BasicBlock",
    "ResNetSmall",
    "build_model",
    "init_parameters",
    "lenet",
    "mlp",
    "resnet_small",
]

"""A small model zoo with seeded, device-independent initialisation."""

from hesslab.models.zoo import (
    ACTIVATIONS,
    GPT,
    MODELS,
    BasicBlock,
    PatchEmbed,
    ResNetSmall,
    SelfAttention,
    TransformerBlock,
    ViT,
    build_model,
    gpt,
    init_parameters,
    lenet,
    mlp,
    resnet_small,
    vit,
)

__all__ = [
    "ACTIVATIONS",
    "GPT",
    "MODELS",
    "BasicBlock",
    "PatchEmbed",
    "ResNetSmall",
    "SelfAttention",
    "TransformerBlock",
    "ViT",
    "build_model",
    "gpt",
    "init_parameters",
    "lenet",
    "mlp",
    "resnet_small",
    "vit",
]

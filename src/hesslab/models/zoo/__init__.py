"""A small model zoo: MLP, LeNet-style CNN, small ResNet, a small GPT and a small ViT.

Every constructor initialises its weights from a local ``torch.Generator`` seeded by
``seed`` (or the ``generator`` passed): the same seed gives bit-identical weights on
every call, and the global random state is neither read nor advanced. Modules are first
built on the ``meta`` device (no memory, no random numbers), then materialised on the CPU,
initialised, and moved to ``device``/``dtype``, so the weights do not depend on the
device.

The models are plain ``nn.Module`` s without in-place activations or custom autograd, so
``torch.func.functional_call``, ``jvp``, ``vmap`` and double backward work on them.
Parameter names show the layer groups: ``fc1.weight``, ``conv2.bias``, ``out.weight``,
``stage2.0.conv1.weight``...
"""

from hesslab.models.zoo._build import ACTIVATIONS, init_parameters
from hesslab.models.zoo.convnets import BasicBlock, ResNetSmall, lenet, mlp, resnet_small
from hesslab.models.zoo.registry import MODELS, build_model
from hesslab.models.zoo.transformers import (
    GPT,
    PatchEmbed,
    SelfAttention,
    TransformerBlock,
    ViT,
    gpt,
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

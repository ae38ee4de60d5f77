"""Fully connected and convolutional models: MLP, LeNet-style CNN, small ResNet."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hesslab.errors import ConfigurationError
from hesslab.models.zoo._build import Init, _activation, _materialise


def mlp(
    in_dim: int,
    widths: Sequence[int],
    out_dim: int,
    activation: str = "relu",
    bias: bool = True,
    seed: int | None = 0,
    init: Init = None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Sequential:
    """Fully connected network ``in_dim -> widths... -> out_dim``.

    Layers are named ``flatten, fc1, act1, fc2, act2, ..., out``, so parameter names are
    ``fc1.weight``, ``fc1.bias``, ..., ``out.weight``. The leading ``nn.Flatten`` lets the
    MLP take image-shaped inputs (``[N, 1, 8, 8]`` with ``in_dim=64``).

    Args:
        in_dim: input features (product of the input shape).
        widths: hidden widths, e.g. ``(32, 32)``; empty for a linear model.
        out_dim: outputs (classes).
        activation: a name from :data:`ACTIVATIONS`.
        bias: whether the linear layers have biases.
        seed: seed of the weights (``None`` means 0; the global RNG is never used).
        init: see :func:`init_parameters`.
        generator: CPU generator to draw from instead of ``seed``.
        device: where the parameters live.
        dtype: floating dtype of the parameters.

    Example:
        >>> net = mlp(64, (32, 32), 10, seed=0)   # the 64-32-32-10 digits MLP
        >>> sum(p.numel() for p in net.parameters())
        3466
    """
    widths = tuple(int(w) for w in widths)
    if in_dim < 1 or out_dim < 1 or any(w < 1 for w in widths):
        raise ConfigurationError(
            f"mlp needs positive sizes, got in_dim={in_dim}, widths={widths}, out_dim={out_dim}."
        )
    _activation(activation)

    def build() -> nn.Sequential:
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        d = in_dim
        for i, w in enumerate(widths, start=1):
            layers.append((f"fc{i}", nn.Linear(d, w, bias=bias)))
            layers.append((f"act{i}", _activation(activation)))
            d = w
        layers.append(("out", nn.Linear(d, out_dim, bias=bias)))
        return nn.Sequential(OrderedDict(layers))

    model = _materialise(
        build, seed=seed, generator=generator, init=init, device=device, dtype=dtype
    )
    assert isinstance(model, nn.Sequential)
    return model


def _conv_out(size: int, kernel: int, padding: int) -> int:
    return size + 2 * padding - kernel + 1


def lenet(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    seed: int | None = 0,
    *,
    activation: str = "relu",
    channels: tuple[int, int] = (6, 16),
    hidden: tuple[int, int] = (120, 84),
    init: Init = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Sequential:
    """LeNet-5-style CNN: conv, pool, conv, pool, fc, fc, out (LeCun et al., 1998).

    For ``image_size >= 20`` the convolutions are 5x5 without padding (28x28 MNIST:
    28 -> 24 -> 12 -> 8 -> 4, so ``fc1`` sees 16*4*4 = 256 features, the LeNet used by
    Sankar et al., 2021; 32x32 CIFAR gives the classic 16*5*5 = 400). For smaller
    images they are 3x3 with padding 1 (8x8 digits: 8 -> 4 -> 2, 16*2*2 = 64 features).
    Pooling is 2x2 max pooling.

    Layer names: ``conv1, act1, pool1, conv2, act2, pool2, flatten, fc1, act3, fc2, act4,
    out``.

    Args:
        in_channels: image channels (1 for MNIST/digits, 3 for CIFAR).
        num_classes: outputs.
        image_size: height = width of the input images.
        seed: seed of the weights (``None`` means 0).
        activation: a name from :data:`ACTIVATIONS`.
        channels: output channels of the two convolutions.
        hidden: widths of the two hidden fully connected layers.
        init: see :func:`init_parameters`.
        generator: CPU generator to draw from instead of ``seed``.
        device: where the parameters live.
        dtype: floating dtype of the parameters.

    References:
        Sankar, Khasbage, Vigneswaran, Balasubramanian (2021), arXiv:2012.03801.
    """
    kernel, padding = (5, 0) if image_size >= 20 else (3, 1)
    s = _conv_out(image_size, kernel, padding) // 2
    s = _conv_out(s, kernel, padding) // 2
    if s < 1:
        raise ConfigurationError(
            f"image_size={image_size} is too small for lenet (needs at least 4 pixels)."
        )
    _activation(activation)
    c1, c2 = channels
    h1, h2 = hidden

    def build() -> nn.Sequential:
        return nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(in_channels, c1, kernel, padding=padding)),
                    ("act1", _activation(activation)),
                    ("pool1", nn.MaxPool2d(2)),
                    ("conv2", nn.Conv2d(c1, c2, kernel, padding=padding)),
                    ("act2", _activation(activation)),
                    ("pool2", nn.MaxPool2d(2)),
                    ("flatten", nn.Flatten()),
                    ("fc1", nn.Linear(c2 * s * s, h1)),
                    ("act3", _activation(activation)),
                    ("fc2", nn.Linear(h1, h2)),
                    ("act4", _activation(activation)),
                    ("out", nn.Linear(h2, num_classes)),
                ]
            )
        )

    model = _materialise(
        build, seed=seed, generator=generator, init=init, device=device, dtype=dtype
    )
    assert isinstance(model, nn.Sequential)
    return model


class BasicBlock(nn.Module):
    """Residual block ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the identity, or a strided 1x1 convolution with BatchNorm when the
    shape changes (He et al., 2016). No in-place operations.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = nn.ReLU()
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    [
                        ("conv", nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)),
                        ("bn", nn.BatchNorm2d(out_channels)),
                    ]
                )
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """The block's output for ``x`` of shape ``[B, C_in, H, W]``."""
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """Small CIFAR-style ResNet: stem, stages of :class:`BasicBlock`, global pool, ``fc``.

    Stage ``i`` (1-based) has ``width * 2**(i-1)`` channels; every stage after the first
    halves the resolution. Names: ``stem.conv``, ``stem.bn``, ``stage1.0.conv1``, ...,
    ``fc``. Use ``model.eval()`` (BatchNorm with running statistics) for curvature
    computations: in train mode the output of a point depends on its batch.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 16,
        num_blocks: Sequence[int] = (1, 1, 1),
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            OrderedDict(
                [
                    ("conv", nn.Conv2d(in_channels, width, 3, padding=1, bias=False)),
                    ("bn", nn.BatchNorm2d(width)),
                    ("act", nn.ReLU()),
                ]
            )
        )
        c = width
        for i, n in enumerate(num_blocks, start=1):
            out_c = width * 2 ** (i - 1)
            blocks = []
            for j in range(n):
                stride = 2 if (i > 1 and j == 0) else 1
                blocks.append(BasicBlock(c, out_c, stride))
                c = out_c
            self.add_module(f"stage{i}", nn.Sequential(*blocks))
        self.num_stages = len(num_blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for images ``x`` of shape ``[B, C, H, W]``."""
        x = self.stem(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{i}")(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet_small(
    in_channels: int = 3,
    num_classes: int = 10,
    width: int = 16,
    num_blocks: Sequence[int] = (1, 1, 1),
    seed: int | None = 0,
    *,
    init: Init = "kaiming",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ResNetSmall:
    """A small ResNet with BatchNorm (He et al., 2016), for 8x8 up to 32x32 images.

    With the defaults (three stages of one block, width 16) it has about 78k parameters;
    ``num_blocks=(3, 3, 3)`` is the CIFAR ResNet-20. Global average pooling makes it work
    for any image size (8x8 digits: 8 -> 4 -> 2; 32x32 CIFAR: 32 -> 16 -> 8).

    Args:
        in_channels: image channels.
        num_classes: outputs.
        width: channels of the first stage.
        num_blocks: blocks per stage.
        seed: seed of the weights (``None`` means 0).
        init: see :func:`init_parameters` (default ``"kaiming"``).
        generator: CPU generator to draw from instead of ``seed``.
        device: where the parameters live.
        dtype: floating dtype of the parameters.
    """
    blocks = tuple(int(n) for n in num_blocks)
    if not blocks or any(n < 1 for n in blocks) or width < 1:
        raise ConfigurationError(
            f"resnet_small needs width >= 1 and num_blocks >= 1 per stage, got width={width}, "
            f"num_blocks={num_blocks}."
        )

    def build() -> ResNetSmall:
        return ResNetSmall(in_channels, num_classes, width, blocks)

    model = _materialise(
        build, seed=seed, generator=generator, init=init, device=device, dtype=dtype
    )
    assert isinstance(model, ResNetSmall)
    return model

"""A small model zoo: MLP, LeNet-style CNN, small ResNet with BatchNorm.

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

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hesslab.errors import ConfigurationError

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

#: Activation names accepted by the constructors (none of them acts in place).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
    "linear": nn.Identity,
}

#: ``init=`` may be a name, a standard deviation, or ``f(name, tensor, generator)``.
Init = str | float | Callable[[str, Tensor, torch.Generator], None] | None


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except (KeyError, AttributeError):
        raise ConfigurationError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}."
        ) from None


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        if generator.device.type != "cpu":
            raise ConfigurationError("pass a CPU torch.Generator; weights are drawn on the CPU.")
        return generator
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


@torch.no_grad()
def init_parameters(
    model: nn.Module, init: Init = None, *, generator: torch.Generator
) -> nn.Module:
    """(Re-)initialise every ``Linear``/``Conv`` and normalisation layer of ``model``.

    Args:
        model: the module, with parameters on the CPU (changed in place and returned).
        init: ``None``/``"default"``: PyTorch's default, weights and biases
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; ``"kaiming"``: weights
            ``N(0, 2/fan_in)``, biases 0 (He et al., 2015); ``"xavier"``: weights
            ``N(0, 2/(fan_in+fan_out))``, biases 0 (Glorot & Bengio, 2010); a float
            ``s``: every weight and bias ``N(0, s^2)`` (Sagun et al., 2017 use 0.1); a
            callable ``f(qualified_name, tensor, generator)`` that fills each
            weight/bias tensor in place.
            Normalisation layers always get weight 1, bias 0 and reset running stats.
        generator: CPU generator the random numbers come from.
    """
    for mod_name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            w, b = mod.weight, mod.bias
            fan_out = w.shape[0] * (w[0, 0].numel() if w.ndim > 2 else 1)
            fan_in = w[0].numel()
            prefix = f"{mod_name}." if mod_name else ""
            if callable(init) and not isinstance(init, str):
                init(prefix + "weight", w, generator)
                if b is not None:
                    init(prefix + "bias", b, generator)
            elif isinstance(init, (int, float)) and not isinstance(init, bool):
                w.normal_(0.0, float(init), generator=generator)
                if b is not None:
                    b.normal_(0.0, float(init), generator=generator)
            elif init is None or init == "default":
                bound = 1.0 / math.sqrt(fan_in)
                w.uniform_(-bound, bound, generator=generator)
                if b is not None:
                    b.uniform_(-bound, bound, generator=generator)
            elif init in ("kaiming", "xavier"):
                var = 2.0 / fan_in if init == "kaiming" else 2.0 / (fan_in + fan_out)
                w.normal_(0.0, math.sqrt(var), generator=generator)
                if b is not None:
                    b.zero_()
            else:
                raise ConfigurationError(
                    f"unknown init {init!r}; use None, 'default', 'kaiming', 'xavier', a "
                    "standard deviation (float) or a callable(name, tensor, generator)."
                )
        elif isinstance(mod, nn.modules.batchnorm._NormBase):
            if mod.weight is not None:
                mod.weight.fill_(1.0)
                mod.bias.zero_()
            if mod.track_running_stats:
                mod.reset_running_stats()
        elif isinstance(mod, (nn.LayerNorm, nn.GroupNorm)):
            if mod.weight is not None:
                mod.weight.fill_(1.0)
            if mod.bias is not None:
                mod.bias.zero_()
    return model


def _materialise(
    build: Callable[[], nn.Module],
    *,
    seed: int | None,
    generator: torch.Generator | None,
    init: Init,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> nn.Module:
    if dtype is not None and not dtype.is_floating_point:
        raise ConfigurationError(f"dtype must be a floating dtype, got {dtype}.")
    with torch.device("meta"):
        model = build()
    model = model.to_empty(device="cpu")
    if dtype is not None:
        model = model.to(dtype=dtype)
    init_parameters(model, init, generator=_generator(seed, generator))
    if device is not None:
        model = model.to(device=device)
    return model


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


#: Model constructors by the names the CLI accepts.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "lenet": lenet,
    "resnet_small": resnet_small,
}


def build_model(name: str, data: Any = None, **kwargs: Any) -> nn.Module:
    """Build a model from :data:`MODELS` by name, inferring sizes from ``data``.

    Args:
        name: ``"mlp"``, ``"lenet"`` or ``"resnet_small"`` (``-`` and ``_`` are
            interchangeable).
        data: optional :class:`~hesslab.data.TensorData` or :class:`~hesslab.data.Split`;
            fills in ``in_dim``/``out_dim`` (mlp), ``in_channels``/``image_size``/
            ``num_classes`` (lenet, resnet_small) unless given in ``kwargs``.
        **kwargs: passed to the constructor (e.g. ``widths=(32, 32)``, ``seed=1``).

    Example:
        >>> from hesslab.data import digits
        >>> net = build_model("mlp", digits(), widths=(32, 32))
    """
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise ConfigurationError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    if data is not None:
        train = getattr(data, "train", data)
        shape = tuple(train.x.shape[1:])
        k = train.num_classes
        if key == "mlp":
            kwargs.setdefault("in_dim", math.prod(shape))
            if k is not None:
                kwargs.setdefault("out_dim", k)
            elif train.y.ndim > 1:
                kwargs.setdefault("out_dim", math.prod(train.y.shape[1:]))
            else:
                kwargs.setdefault("out_dim", 1)
        else:
            if len(shape) != 3:
                raise ConfigurationError(
                    f"{key} needs image inputs [N, C, H, W], the data have [N, "
                    f"{', '.join(map(str, shape))}]; use the image form (e.g. 'digits-image')."
                )
            kwargs.setdefault("in_channels", shape[0])
            if key == "lenet":
                kwargs.setdefault("image_size", shape[1])
            if k is not None:
                kwargs.setdefault("num_classes", k)
    try:
        return MODELS[key](**kwargs)
    except TypeError as e:
        raise ConfigurationError(f"bad options for model {name!r}: {e}") from e

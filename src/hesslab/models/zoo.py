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

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesslab.errors import ConfigurationError

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
    """(Re-)initialise every ``Linear``/``Conv``/``Embedding`` and normalisation layer.

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
            Embeddings get ``N(0, 1)`` (PyTorch's default), ``N(0, s^2)`` for a float
            ``s``, or the callable. Modules with an ``init_own_(generator)`` method (the
            transformers' class tokens, position tables) initialise what they own.
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
        elif isinstance(mod, nn.Embedding):
            prefix = f"{mod_name}." if mod_name else ""
            if callable(init) and not isinstance(init, str):
                init(prefix + "weight", mod.weight, generator)
            else:
                std = float(init) if isinstance(init, (int, float)) else 1.0
                mod.weight.normal_(0.0, std, generator=generator)
        if hasattr(mod, "init_own_"):  # tokens and buffers a module owns directly
            mod.init_own_(generator)
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


# ---------------------------------------------------------------------------------------
# transformers


def _normal_init(std: float) -> Callable[[str, Tensor, torch.Generator], None]:
    """GPT-2's initialisation: weights and embeddings ``N(0, std^2)``, biases 0."""

    def init(name: str, t: Tensor, generator: torch.Generator) -> None:
        if name.endswith("bias"):
            t.zero_()
        else:
            t.normal_(0.0, std, generator=generator)

    return init


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (Vaswani 2017).

    ``softmax(q k^T / sqrt(d_head) + mask) v`` per head, with separate projections ``q``,
    ``k``, ``v`` and the output projection ``o`` (so each is its own parameter block).

    Args:
        dim: model width ``d``.
        num_heads: heads; ``d`` must be divisible by it.
        causal: position ``t`` attends to positions ``<= t`` only.
    """

    def __init__(self, dim: int, num_heads: int, causal: bool) -> None:
        super().__init__()
        self.num_heads, self.causal = num_heads, causal
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B, T, D = x.shape
        h = self.num_heads

        def heads(t: Tensor) -> Tensor:
            return t.reshape(B, T, h, D // h).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(y.transpose(1, 2).reshape(B, T, D))


class TransformerBlock(nn.Module):
    """Pre-LN block ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))`` (Xiong et al. 2020).

    The MLP is ``proj(gelu(fc(x)))`` with hidden width ``mlp_ratio * dim``; no dropout.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, causal: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, causal)
        self.ln2 = nn.LayerNorm(dim)
        hidden = mlp_ratio * dim
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("fc", nn.Linear(dim, hidden)),
                    ("act", nn.GELU()),
                    ("proj", nn.Linear(hidden, dim)),
                ]
            )
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


def _sinusoidal(length: int, dim: int) -> Tensor:
    """Vaswani et al. (2017) positions: ``sin(t / 10000^(2i/d))``, ``cos(...)`` interleaved."""
    t = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pe = torch.zeros(length, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(t * freq)
    pe[:, 1::2] = torch.cos(t * freq)[:, : dim // 2]
    return pe


class GPT(nn.Module):
    """A small decoder-only transformer (GPT-2 shape, Radford et al. 2019), no dropout.

    ``logits = ln_f(blocks(tok[ids] + pos[t])) @ tok.weight^T``: token embedding ``tok``
    (``[V, d]``), learned (``pos``, ``[max_len, d]``) or sinusoidal (a buffer) positions,
    ``depth`` pre-LN :class:`TransformerBlock` s with causal attention, a final LayerNorm,
    and the output layer TIED to the token embedding (one parameter, ``tok.weight``,
    counted once). Takes ``input_ids`` ``[B, T]`` (``T <= max_len``) and an optional
    ``attention_mask`` ``[B, T]`` (1 = token, 0 = padding: no query attends to padding
    keys, every position attends to itself); returns logits ``[B, T, V]``.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: int,
        positions: str,
    ) -> None:
        super().__init__()
        self.max_len, self.positions = max_len, positions
        self.tok = nn.Embedding(vocab_size, dim)
        if positions == "learned":
            self.pos = nn.Embedding(max_len, dim)
        else:
            self.register_buffer("pe", torch.zeros(max_len, dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_ratio, causal=True) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(dim)

    @torch.no_grad()
    def init_own_(self, generator: torch.Generator) -> None:
        """Fill the sinusoidal position table (no random numbers drawn)."""
        if self.positions != "learned":
            self.pe.copy_(_sinusoidal(*self.pe.shape))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        B, T = input_ids.shape
        if T > self.max_len:
            raise ConfigurationError(
                f"sequences of {T} tokens exceed the model's max_len={self.max_len}; build "
                "it with a larger max_len or cut the sequences."
            )
        pos = self.pos.weight[:T] if self.positions == "learned" else self.pe[:T]
        h = self.tok(input_ids) + pos
        mask = None
        if attention_mask is not None:
            causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
            keys = attention_mask.to(torch.bool)[:, None, None, :]
            mask = (causal & keys) | torch.eye(T, dtype=torch.bool, device=h.device)
        for block in self.blocks:
            h = block(h, mask)
        return F.linear(self.ln_f(h), self.tok.weight)


class PatchEmbed(nn.Module):
    """Image to tokens: ``proj`` (a ``patch x patch`` convolution with stride ``patch``),
    an optional class token ``cls`` in front, plus learned positions ``pos``."""

    def __init__(self, in_channels: int, dim: int, patch: int, num_patches: int, cls: bool):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.empty(1, 1, dim)) if cls else None
        self.pos = nn.Parameter(torch.empty(1, num_patches + int(cls), dim))

    @torch.no_grad()
    def init_own_(self, generator: torch.Generator) -> None:
        """Class token and positions ``N(0, 0.02^2)`` (ViT, Dosovitskiy et al. 2021)."""
        for t in (self.cls, self.pos):
            if t is not None:
                t.normal_(0.0, 0.02, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        t = self.proj(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        return t + self.pos


class ViT(nn.Module):
    """A small vision transformer (Dosovitskiy et al. 2021), pre-LN, no dropout.

    ``head(pool(ln_f(blocks(embed(x)))))``: :class:`PatchEmbed`, ``depth``
    :class:`TransformerBlock` s with full (non-causal) attention, a final LayerNorm, the
    class token (``pool="cls"``) or the mean over tokens (``pool="mean"``), and a linear
    ``head``. Takes images ``[B, C, H, W]`` (``H = W = image_size``); returns logits
    ``[B, num_classes]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: int,
        pool: str,
    ) -> None:
        super().__init__()
        self.pool = pool
        n = (image_size // patch_size) ** 2
        self.embed = PatchEmbed(in_channels, dim, patch_size, n, cls=pool == "cls")
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_ratio, causal=False) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        return self.head(h[:, 0] if self.pool == "cls" else h.mean(dim=1))


def _check_heads(dim: int, depth: int, num_heads: int, mlp_ratio: int) -> None:
    if min(dim, depth, num_heads, mlp_ratio) < 1 or dim % num_heads:
        raise ConfigurationError(
            f"a transformer needs positive sizes and dim divisible by num_heads, got dim={dim}, "
            f"depth={depth}, num_heads={num_heads}, mlp_ratio={mlp_ratio}."
        )


def gpt(
    vocab_size: int = 30,
    max_len: int = 64,
    dim: int = 32,
    depth: int = 2,
    num_heads: int = 2,
    mlp_ratio: int = 4,
    positions: str = "learned",
    seed: int | None = 0,
    *,
    init: Init = "gpt2",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> GPT:
    """A small decoder-only transformer (:class:`GPT`) for the bundled text corpus.

    With the defaults (``V = 30``, ``d = 32``, 2 blocks, 2 heads, MLP ``4d``) it has
    27,520 parameters, the output layer tied to the token embedding.
    Parameter names: ``tok.weight``, ``pos.weight``, ``blocks.0.ln1.weight``,
    ``blocks.0.attn.q.weight`` (``k``, ``v``, ``o``), ``blocks.0.mlp.fc.weight``,
    ``blocks.0.mlp.proj.weight``, ..., ``ln_f.weight``.

    Args:
        vocab_size: tokens ``V``.
        max_len: longest sequence ``T``.
        dim: model width ``d``.
        depth: transformer blocks.
        num_heads: attention heads (``d`` divisible by it).
        mlp_ratio: MLP hidden width over ``d``.
        positions: ``"learned"`` or ``"sinusoidal"`` (Vaswani et al. 2017, not trained).
        seed: seed of the weights (``None`` means 0).
        init: ``"gpt2"`` (weights and embeddings ``N(0, 0.02^2)``, biases 0; Radford et
            al. 2019) or anything :func:`init_parameters` accepts.
        generator: CPU generator to draw from instead of ``seed``.
        device: where the parameters live.
        dtype: floating dtype of the parameters.

    Example:
        >>> net = gpt(vocab_size=30, max_len=64)
        >>> net(torch.zeros(2, 64, dtype=torch.long)).shape
        torch.Size([2, 64, 30])
    """
    _check_heads(dim, depth, num_heads, mlp_ratio)
    if vocab_size < 1 or max_len < 1 or positions not in ("learned", "sinusoidal"):
        raise ConfigurationError(
            f"gpt needs vocab_size >= 1, max_len >= 1 and positions 'learned' or "
            f"'sinusoidal', got {vocab_size}, {max_len}, {positions!r}."
        )
    if positions == "sinusoidal" and dim % 2:
        raise ConfigurationError(f"sinusoidal positions need an even dim, got {dim}.")

    def build() -> GPT:
        return GPT(vocab_size, max_len, dim, depth, num_heads, mlp_ratio, positions)

    model = _materialise(
        build,
        seed=seed,
        generator=generator,
        init=_normal_init(0.02) if init == "gpt2" else init,
        device=device,
        dtype=dtype,
    )
    assert isinstance(model, GPT)
    return model


def vit(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 8,
    patch_size: int | None = None,
    dim: int = 32,
    depth: int = 2,
    num_heads: int = 2,
    mlp_ratio: int = 2,
    pool: str = "cls",
    seed: int | None = 0,
    *,
    init: Init = "gpt2",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> ViT:
    """A small vision transformer (:class:`ViT`) for 8x8 digits, 28x28 MNIST or CIFAR.

    ``patch_size=None`` cuts the image into a 4x4 grid of patches (8x8 digits: 2x2
    patches; 28x28: 7x7; 32x32: 8x8). With the defaults (1 channel, 8x8, ``d = 32``, 2
    blocks, MLP ``2d``) it has 17,546 parameters. Names: ``embed.proj.weight``,
    ``embed.cls``, ``embed.pos``, ``blocks.0.attn.q.weight``, ..., ``ln_f.weight``,
    ``head.weight``.

    Args:
        in_channels: image channels.
        num_classes: outputs.
        image_size: height = width of the images.
        patch_size: side of a square patch (divides ``image_size``).
        dim: model width ``d``.
        depth: transformer blocks.
        num_heads: attention heads (``d`` divisible by it).
        mlp_ratio: MLP hidden width over ``d``.
        pool: ``"cls"`` (class token) or ``"mean"`` (mean over patch tokens).
        seed: seed of the weights (``None`` means 0).
        init: ``"gpt2"`` (``N(0, 0.02^2)`` weights, zero biases) or anything
            :func:`init_parameters` accepts; class token and positions ``N(0, 0.02^2)``.
        generator: CPU generator to draw from instead of ``seed``.
        device: where the parameters live.
        dtype: floating dtype of the parameters.
    """
    _check_heads(dim, depth, num_heads, mlp_ratio)
    patch = patch_size if patch_size is not None else max(1, image_size // 4)
    if patch < 1 or image_size % patch or pool not in ("cls", "mean"):
        raise ConfigurationError(
            f"vit needs a patch_size dividing image_size and pool 'cls' or 'mean', got "
            f"patch_size={patch}, image_size={image_size}, pool={pool!r}."
        )

    def build() -> ViT:
        return ViT(
            in_channels, num_classes, image_size, patch, dim, depth, num_heads, mlp_ratio, pool
        )

    model = _materialise(
        build,
        seed=seed,
        generator=generator,
        init=_normal_init(0.02) if init == "gpt2" else init,
        device=device,
        dtype=dtype,
    )
    assert isinstance(model, ViT)
    return model


#: Model constructors by the names the CLI accepts.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "lenet": lenet,
    "resnet_small": resnet_small,
    "gpt": gpt,
    "vit": vit,
}


def build_model(name: str, data: Any = None, **kwargs: Any) -> nn.Module:
    """Build a model from :data:`MODELS` by name, inferring sizes from ``data``.

    Args:
        name: ``"mlp"``, ``"lenet"``, ``"resnet_small"``, ``"gpt"`` or ``"vit"`` (``-``
            and ``_`` are interchangeable).
        data: optional :class:`~hesslab.data.TensorData` or :class:`~hesslab.data.Split`;
            fills in ``in_dim``/``out_dim`` (mlp), ``in_channels``/``image_size``/
            ``num_classes`` (lenet, resnet_small, vit), ``vocab_size``/``max_len`` (gpt,
            from token data such as ``text``) unless given in ``kwargs``.
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
        elif key == "gpt":
            if len(shape) != 1 or train.x.is_floating_point() or k is None:
                raise ConfigurationError(
                    "gpt needs token sequences (integer input_ids [N, T] with a vocabulary "
                    "size as num_classes), e.g. the bundled 'text' data."
                )
            kwargs.setdefault("vocab_size", k)
            kwargs.setdefault("max_len", shape[0])
        else:
            if len(shape) != 3:
                raise ConfigurationError(
                    f"{key} needs image inputs [N, C, H, W], the data have [N, "
                    f"{', '.join(map(str, shape))}]; use the image form (e.g. 'digits-image')."
                )
            kwargs.setdefault("in_channels", shape[0])
            if key in ("lenet", "vit"):
                kwargs.setdefault("image_size", shape[1])
            if k is not None:
                kwargs.setdefault("num_classes", k)
    try:
        return MODELS[key](**kwargs)
    except TypeError as e:
        raise ConfigurationError(f"bad options for model {name!r}: {e}") from e

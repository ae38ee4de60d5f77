"""Small transformers: a decoder-only GPT and a vision transformer (ViT)."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesslab.errors import ConfigurationError
from hesslab.models.zoo._build import Init, _materialise, _normal_init


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
        """Attend over ``x`` ``[B, T, d]``; a boolean ``mask`` (True: attend) overrides causal."""
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
        """The block on tokens ``x`` ``[B, T, d]`` (``mask`` as in :class:`SelfAttention`)."""
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
        """Logits ``[B, T, V]`` for ``input_ids`` ``[B, T]`` (see the class docstring)."""
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
    """Image to tokens: a patch convolution, an optional class token, learned positions.

    ``proj`` is a ``patch x patch`` convolution with stride ``patch``; the class token
    ``cls`` (if any) goes in front, and the learned positions ``pos`` are added.
    """

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
        """Tokens ``[B, num_patches (+ 1), d]`` for images ``x`` ``[B, C, H, W]``."""
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
        """Logits ``[B, num_classes]`` for images ``x`` ``[B, C, H, W]``."""
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        return self.head(h[:, 0] if self.pool == "cls" else h.mean(dim=1))


def _gpt2_init(init: Init) -> Init:
    """``init`` with ``"gpt2"`` made concrete: weights and embeddings ``N(0, 0.02²)``."""
    return _normal_init(0.02) if init == "gpt2" else init


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
        build, seed=seed, generator=generator, init=_gpt2_init(init), device=device, dtype=dtype
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
        build, seed=seed, generator=generator, init=_gpt2_init(init), device=device, dtype=dtype
    )
    assert isinstance(model, ViT)
    return model

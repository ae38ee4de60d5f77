"""Attention models and their dense float64 references, built by double backward.

``torch.func.hessian`` (jacfwd over jacrev) is wrong for a transformer block on torch
2.13 (3.8% off finite differences, asymmetric), so the references here are column-by-
column double backward of a scalar full-data loss, under the math SDPA kernel, each
checked against central finite differences of the gradient by :func:`fd_check`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

LossOfParams = Callable[[dict[str, Tensor]], Tensor]


class MHAModel(nn.Module):
    """Embedding -> nn.MultiheadAttention -> LayerNorm -> GELU MLP -> mean-pooled head."""

    def __init__(self, d: int = 8, heads: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 12), nn.GELU(), nn.Linear(12, d))
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = x + self.attn(x, x, x, need_weights=False)[0]
        h = h + self.mlp(self.norm(h))
        return self.head(h.mean(1))


class EncoderModel(nn.Module):
    """nn.TransformerEncoder (its fused fast path applies in eval mode) and a head."""

    def __init__(self, d: int = 8, heads: int = 2, classes: int = 3) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, 16, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.enc(x).mean(1))


class TinyGPT(nn.Module):
    """Decoder-only LM: tied embeddings, pre-LN, causal ``F.scaled_dot_product_attention``."""

    def __init__(self, vocab: int = 7, d: int = 8, heads: int = 2, T: int = 6) -> None:
        super().__init__()
        self.heads = heads
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Parameter(0.1 * torch.randn(T, d))
        self.ln1, self.ln2, self.lnf = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        B, T = input_ids.shape
        h = self.wte(input_ids) + self.wpe[:T]
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        split = lambda t: t.view(B, T, self.heads, -1).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
        h = h + self.proj(a.transpose(1, 2).reshape(B, T, -1))
        h = h + self.mlp(self.ln2(h))
        return self.lm_head(self.lnf(h))


def params_of(model: nn.Module) -> dict[str, Tensor]:
    """The model's (deduplicated) parameters, detached."""
    return {n: p.detach() for n, p in model.named_parameters()}


def flatten(d: dict[str, Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in d.values()])


def unflatten(like: dict[str, Tensor], flat: Tensor) -> dict[str, Tensor]:
    out, i = {}, 0
    for n, t in like.items():
        out[n] = flat[i : i + t.numel()].view(t.shape)
        i += t.numel()
    return out


def call(model: nn.Module, theta: dict[str, Tensor], *args: object, **kw: object) -> Tensor:
    """The model at ``theta`` (buffers and tied weights from the model)."""
    return functional_call(model, theta, args, kw)


def dense_hessian(loss: LossOfParams, theta: dict[str, Tensor]) -> Tensor:
    """``d^2 loss / d theta^2`` by double backward (math SDPA kernel), column by column."""
    flat = flatten(theta).clone().requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):
        g = torch.autograd.grad(loss(unflatten(theta, flat)), flat, create_graph=True)[0]
        cols = [torch.autograd.grad(g[i], flat, retain_graph=True)[0] for i in range(len(g))]
    return torch.stack(cols, 1)


def gradient(loss: LossOfParams, theta: dict[str, Tensor], flat: Tensor | None = None) -> Tensor:
    flat = (flatten(theta) if flat is None else flat).clone().requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):
        return torch.autograd.grad(loss(unflatten(theta, flat)), flat)[0]


def fd_check(loss: LossOfParams, theta: dict[str, Tensor], H: Tensor, cols: int = 4) -> float:
    """Largest relative error of ``H``'s columns against central differences of the gradient."""
    flat = flatten(theta)
    gen = torch.Generator().manual_seed(0)
    worst, eps = 0.0, 1e-5
    for j in torch.randperm(len(flat), generator=gen)[:cols].tolist():
        e = torch.zeros_like(flat)
        e[j] = eps
        fd = (gradient(loss, theta, flat + e) - gradient(loss, theta, flat - e)) / (2 * eps)
        worst = max(worst, float((fd - H[:, j]).norm() / H[:, j].norm().clamp_min(1e-30)))
    return worst


def dense_jacobian(fn: Callable[[dict[str, Tensor]], Tensor], theta: dict[str, Tensor]) -> Tensor:
    """``d fn / d theta`` as ``[outputs, P]`` by reverse mode (math SDPA kernel)."""
    flat = flatten(theta).clone().requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):
        out = fn(unflatten(theta, flat)).reshape(-1)
        rows = [torch.autograd.grad(out[i], flat, retain_graph=True)[0] for i in range(len(out))]
    return torch.stack(rows)

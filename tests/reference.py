"""Dense float64 ground truth, computed independently of hesslab's operators.

Everything here materialises full matrices with ``torch.func`` on the flat parameter
vector, so it is only for small models (P up to a few thousand).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev


def flat_params(model: nn.Module, names: Sequence[str] | None = None) -> tuple[Tensor, list]:
    named = dict(model.named_parameters())
    names = list(names) if names is not None else list(named)
    return torch.cat([named[n].detach().reshape(-1) for n in names]), names


def _unflat(model: nn.Module, names: list[str], flat: Tensor) -> dict[str, Tensor]:
    named = dict(model.named_parameters())
    out, i = {}, 0
    for n in names:
        k = named[n].numel()
        out[n] = flat[i : i + k].view(named[n].shape)
        i += k
    full = {n: p.detach() for n, p in named.items()}
    full.update({n: b.detach() for n, b in model.named_buffers()})
    full.update(out)
    return full


def full_loss_fn(
    model: nn.Module,
    criterion: Callable[[Tensor, Tensor], Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
    names: list[str],
    reduction: str = "mean",
) -> Callable[[Tensor], Tensor]:
    """``theta -> (1/N) sum_i l_i`` over all batches (mean or sum criterion reduction)."""
    N = sum(len(x) for x, _ in batches)

    def L(flat: Tensor) -> Tensor:
        params = _unflat(model, names, flat)
        total = 0.0
        for x, y in batches:
            loss = criterion(functional_call(model, params, (x,)), y)
            total = total + (loss * len(x) / N if reduction == "mean" else loss / N)
        return total

    return L


def dense_hessian(model, criterion, batches, names=None, reduction="mean") -> Tensor:
    """``[P, P]`` Hessian of the full-data loss by ``torch.func.hessian``."""
    flat, names = flat_params(model, names)
    return hessian(full_loss_fn(model, criterion, batches, names, reduction))(flat)


def dense_ggn(model, criterion, batches, names=None, reduction="mean") -> Tensor:
    """``[P, P]`` Gauss–Newton ``sum_b w_b J_b^T H_l J_b`` with every piece dense."""
    flat, names = flat_params(model, names)
    N = sum(len(x) for x, _ in batches)
    G = torch.zeros(len(flat), len(flat), dtype=flat.dtype)
    for x, y in batches:

        def f(th, x=x):
            return functional_call(model, _unflat(model, names, th), (x,))

        out = f(flat).detach()
        J = jacrev(f)(flat).reshape(out.numel(), -1)
        Hl = hessian(lambda o, y=y: criterion(o, y))(out).reshape(out.numel(), out.numel())
        w = len(x) / N if reduction == "mean" else 1.0 / N
        G += w * J.T @ Hl @ J
    return G


def per_sample_grads(model, criterion, batches, names=None) -> Tensor:
    """``[N, P]`` per-sample gradients by a Python loop (one point at a time)."""
    flat, names = flat_params(model, names)
    rows = []
    for x, y in batches:
        for i in range(len(x)):

            def li(th, i=i, x=x, y=y):
                return criterion(
                    functional_call(model, _unflat(model, names, th), (x[i : i + 1],)), y[i : i + 1]
                )

            rows.append(torch.func.grad(li)(flat))
    return torch.stack(rows)

"""Losses and full-data passes of the trainer (:func:`hesslab.train.fit`).

:func:`resolve_loss` names the mean-reduced losses; :func:`full_pass` is the exact mean
loss (and gradient) over data in chunks, each chunk weighted by ``n_chunk / N``;
:func:`evaluate` is its public, eval-mode form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesslab.data.datasets import TensorData
from hesslab.errors import ConfigurationError, DataError
from hesslab.train._norms import differentiable_batch_norm
from hesslab.validation import check_targets

__all__ = ["LossSpec", "evaluate", "resolve_loss"]

LossSpec = str | Callable[[Tensor, Tensor], Tensor]


def resolve_loss(loss: LossSpec) -> Callable[[Tensor, Tensor], Tensor]:
    """The mean-reduced loss function ``f(outputs, targets) -> scalar`` for ``loss``.

    ``"ce"`` (alias ``"cross_entropy"``), ``"mse"``, or a callable returning the mean loss
    over its batch.
    """
    if callable(loss) and not isinstance(loss, str):
        return loss
    if loss in ("ce", "cross_entropy"):
        return _cross_entropy
    if loss == "mse":
        return _mse
    raise ConfigurationError(
        f"unknown loss {loss!r}; use 'ce', 'mse' or a callable(outputs, targets) -> mean loss."
    )


def _cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    if y.is_floating_point():
        raise DataError(
            "loss='ce' needs integer class labels, the targets are floating point; use "
            "loss='mse' for regression."
        )
    check_targets("ce", out, y)
    return F.cross_entropy(out, y)


def _mse(out: Tensor, y: Tensor) -> Tensor:
    y = check_targets("mse", out, y)  # [N] targets for [N, 1] outputs; never a broadcast
    if not y.is_floating_point():
        target = F.one_hot(y, num_classes=out.shape[-1]).to(out.dtype)
    else:
        target = y
    return F.mse_loss(out, target)


def _chunks(n: int, chunk_size: int | None) -> list[tuple[int, int]]:
    size = n if chunk_size is None else max(1, int(chunk_size))
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def set_mode(model: nn.Module, modes: dict[nn.Module, bool] | bool) -> dict[nn.Module, bool]:
    old = {m: m.training for m in model.modules()}
    for m in model.modules():
        m.training = modes if isinstance(modes, bool) else modes[m]
    return old


class Pass(NamedTuple):
    loss: Tensor  # the mean loss (float64 when summed over several chunks), no penalty
    accuracy: Tensor | None
    penalty: Tensor | None  # the term added before backward, if any


def full_pass(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    chunk_size: int | None,
    *,
    backward: bool,
    extra: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
) -> Pass:
    """Exact mean loss (and accuracy) over ``x``; accumulates ``.grad`` if asked.

    With several chunks, each chunk's mean loss is weighted by ``n_chunk / N`` (so the
    gradient is exactly that of the mean over all points) and the loss is summed in
    float64. ``extra(x, y, loss) -> term`` (one chunk only) is added to the loss before
    ``backward``; the forward pass then runs under :func:`differentiable_batch_norm`, so
    the term may differentiate the loss's graph to third order.
    """
    n = x.shape[0]
    chunks = _chunks(n, chunk_size)
    total: Tensor | None = None
    correct: Tensor | None = None
    term: Tensor | None = None
    classify = not y.is_floating_point()
    for a, b in chunks:
        xc, yc = (x, y) if len(chunks) == 1 else (x[a:b], y[a:b])
        with torch.set_grad_enabled(backward):
            with differentiable_batch_norm() if extra is not None else nullcontext():
                out = model(xc)
                loss = loss_fn(out, yc)
            if len(chunks) > 1:
                loss = loss * ((b - a) / n)
        if backward:
            if extra is not None:
                term = extra(xc, yc, loss)
                (loss + term).backward()
            else:
                loss.backward()
        value = loss.detach()
        if len(chunks) > 1:
            value = value.to(torch.float64)
        total = value if total is None else total + value
        if classify and out.ndim == 2 and out.shape[1] > 1:
            c = (out.detach().argmax(dim=1) == yc).sum()
            correct = c if correct is None else correct + c
        else:
            classify = False
    assert total is not None
    acc = correct / n if classify and correct is not None else None
    return Pass(total, acc, None if term is None else term.detach())


def grad_norm(params: Sequence[Tensor]) -> Tensor:
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorData,
    *,
    loss: LossSpec = "ce",
    batch_size: int | None = 4096,
) -> tuple[float, float | None]:
    """Mean loss and accuracy of ``model`` over all of ``data``, in eval mode.

    The model's train/eval flags are restored afterwards. Data are moved to the model's
    device and dtype.

    Returns:
        ``(loss, accuracy)``; accuracy is ``None`` for regression targets.
    """
    p = next(iter(model.parameters()), None)
    data = data.to(p.device if p is not None else None, p.dtype if p is not None else None)
    old = set_mode(model, False)
    try:
        total, acc, _ = full_pass(
            model, data.x, data.y, resolve_loss(loss), batch_size, backward=False
        )
    finally:
        set_mode(model, old)
    return float(total), None if acc is None else float(acc)


def full_grad_norm(
    model: nn.Module,
    params: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    chunk_size: int | None,
) -> float:
    old = set_mode(model, False)
    try:
        for p in params:
            p.grad = None
        full_pass(model, x, y, loss_fn, chunk_size, backward=True)
        norm = float(grad_norm(params))
        for p in params:
            p.grad = None
    finally:
        set_mode(model, old)
    return norm

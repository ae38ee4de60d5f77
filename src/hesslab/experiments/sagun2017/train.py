"""Data, models and training of the sagun2017 reproduction.

Full-batch GD continued by a full-batch L-BFGS finisher to ``‖∇L‖ ≤ grad_tol``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hesslab.data import blobs, gaussian_mixture
from hesslab.data.datasets import Split
from hesslab.errors import ConfigurationError
from hesslab.experiments._base import config_dtype as _dtype
from hesslab.experiments.sagun2017.config import Sagun2017Config
from hesslab.models import mlp
from hesslab.train import fit, resolve_loss


def _is_min(cfg: Sagun2017Config, grad_norm: float) -> bool:
    return bool(grad_norm <= cfg.minimum_tol)


def _mixture(
    cfg: Sagun2017Config,
    k: int,
    seed: int,
    *,
    separation: float | None = None,
    spread: float | None = None,
    num_per_class: int | None = None,
) -> Split:
    if cfg.data == "blobs":
        sep = cfg.separation if separation is None else separation
        std = (cfg.spread if spread is None else spread) * cfg.separation / sep
        n = cfg.num_points or 2 * (num_per_class or cfg.num_per_class) * k
        if num_per_class is not None:
            n = 2 * num_per_class * k
        return blobs(num_classes=k, num_train=n // 2, num_test=n - n // 2, dim=cfg.dim,
                     cluster_std=std, seed=seed, dtype=_dtype(cfg))  # fmt: skip
    if cfg.data != "simplex":
        raise ConfigurationError(f"data must be 'blobs' or 'simplex', got {cfg.data!r}")
    return gaussian_mixture(
        num_classes=k,
        dim=cfg.dim,
        num_per_class=num_per_class or cfg.num_per_class,
        spread=cfg.spread if spread is None else spread,
        separation=cfg.separation if separation is None else separation,
        seed=seed,
        dtype=_dtype(cfg),
    )


def _model(cfg: Sagun2017Config, in_dim: int, widths: Sequence[int], k: int, seed: int):
    return mlp(
        in_dim, tuple(widths), k, activation=cfg.activation, seed=seed, init=cfg.init,
        dtype=_dtype(cfg),
    )  # fmt: skip


def _train_gd(cfg: Sagun2017Config, model: nn.Module, split: Split, *, lr=None, steps=None):
    res = fit(
        model,
        split,
        loss=cfg.loss,
        optimizer="gd",
        lr=cfg.lr if lr is None else lr,
        momentum=cfg.momentum,
        steps=cfg.steps if steps is None else steps,
        grad_tol=cfg.grad_tol,
    )
    return _finish(cfg, res, split)


def _finish(cfg: Sagun2017Config, res: Any, split: Split) -> Any:
    """Continue a GD result with full-batch L-BFGS until ``‖∇L‖ ≤ grad_tol``.

    ``cfg.finisher == "lbfgs"``: :class:`torch.optim.LBFGS` (strong Wolfe line search,
    history 50) on the exact full-batch loss, restarted (fresh history) until the
    gradient norm reaches ``grad_tol`` or ``finisher_iters`` iterations are spent. The
    returned result is :func:`hesslab.train.fit`'s with zero further steps at the
    finished weights (so its ``final_*`` fields are measured there), ``steps`` the GD
    steps plus the L-BFGS iterations and ``stopped_by`` ``"lbfgs"``.
    """
    if cfg.finisher == "none" or cfg.grad_tol is None or res.converged:
        return res
    if cfg.finisher != "lbfgs":
        raise ConfigurationError(f"finisher must be 'none' or 'lbfgs', got {cfg.finisher!r}")
    net = copy.deepcopy(res.model)
    x, y = split.train.tensors
    loss_fn = resolve_loss(cfg.loss)
    spent, chunk, last = 0, max(1, min(500, cfg.finisher_iters)), math.inf
    while spent < cfg.finisher_iters:  # restarts with a fresh history while progressing
        made: list[torch.optim.LBFGS] = []
        step = fit(
            net, split.train, loss=cfg.loss, optimizer=_lbfgs(cfg, chunk, made),
            batch_size=None, steps=1, inplace=True,
        )  # fmt: skip
        if not step.history:  # the loss turned non-finite: nothing to continue
            break
        value, opt = step.history[0]["loss"], made[0]
        spent += max(1, int(opt.state[opt.param_groups[0]["params"][0]].get("n_iter", chunk)))
        if float(_grad_norm_of(net, x, y, loss_fn)) <= cfg.grad_tol or value >= last:
            break  # reached the criterion, or a restart made no progress (a kink)
        last = value
    done = fit(net, split, loss=cfg.loss, optimizer="gd", steps=0, grad_tol=cfg.grad_tol)
    return dataclasses.replace(done, steps=res.steps + spent, stopped_by="lbfgs",
                               seconds=res.seconds + done.seconds)  # fmt: skip


def _lbfgs(cfg: Sagun2017Config, chunk: int, made: list) -> Callable:
    """The finisher's L-BFGS factory for :func:`fit` (each optimizer made is appended)."""

    def make(params: list) -> torch.optim.LBFGS:
        opt = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=chunk,
            history_size=50,
            line_search_fn="strong_wolfe",
            tolerance_grad=cfg.grad_tol / 10,
            tolerance_change=1e-30,
        )
        made.append(opt)
        return opt

    return make


def _grad_norm_of(net: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable) -> Tensor:
    grads = torch.autograd.grad(loss_fn(net(x), y), [p for p in net.parameters()])
    return torch.sqrt(sum(g.square().sum() for g in grads))


def _kink(model: nn.Module, x: Tensor) -> float:
    """Smallest ``|pre-activation|`` of any ReLU over ``x``, relative to its layer's largest.

    Near 0 says a ReLU kink sits on a training point, where the loss is
    not differentiable and ``‖∇L‖`` need not vanish at a minimum.
    """
    out: list[float] = []

    def hook(_m: nn.Module, inp: tuple[Tensor, ...], _o: Tensor) -> None:
        a = inp[0].detach().abs()
        out.append(float(a.min() / a.max().clamp_min(1e-300)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return min(out) if out else math.nan


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _set_flat(model: nn.Module, flat: Tensor) -> nn.Module:
    out = copy.deepcopy(model)
    torch.nn.utils.vector_to_parameters(flat, out.parameters())
    return out.eval()

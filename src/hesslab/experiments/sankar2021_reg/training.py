"""Training with a curvature penalty and the final measurements (one part = one run)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hesslab.data import digits
from hesslab.data.datasets import Split
from hesslab.errors import ConfigurationError
from hesslab.experiments._base import Context
from hesslab.models import lenet
from hesslab.operators import hessian
from hesslab.quantities import Settings, measure
from hesslab.train import evaluate, fit
from hesslab.train.regularizers import HessianTracePenalty, WSBoundPenalty

Penalty = HessianTracePenalty | WSBoundPenalty

#: config variant -> the trace penalty's ``selection``.
SELECTION = {"full": "all", "middle": "middle", "middle-layers": "middle-layers"}


@dataclass(frozen=True, eq=False)
class TrainOutcome:
    """One training run of :func:`train_with_penalty`.

    Attributes:
        model: the trained model (eval mode).
        epoch_loss: mean minibatch loss (without the penalty) per epoch.
        penalty_values: the penalty's unscaled estimate at every penalized step.
        penalty_steps: the steps of ``penalty_values``.
        penalty_seconds: mean seconds per penalized call (0 without a penalty).
        seconds: wall time of the training.
        steps: number of updates.
    """

    model: nn.Module
    epoch_loss: tuple[float, ...]
    penalty_values: tuple[float, ...]
    penalty_steps: tuple[int, ...]
    penalty_seconds: float
    seconds: float
    steps: int


def train_with_penalty(
    model: nn.Module,
    split: Split,
    *,
    penalty: Penalty | None,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    milestones: Sequence[int] = (),
    lr_decay: float = 0.1,
    seed: int = 0,
) -> TrainOutcome:
    """SGD with momentum on ``split.train`` with ``loss + penalty``, in place.

    The batch order comes from ``torch.Generator().manual_seed(seed)``. Trained by
    :func:`hesslab.train.fit` with ``penalty=``: the penalty reuses the minibatch loss of
    the step (``loss=``), so each step costs one forward pass plus the penalty's products.
    """
    t0 = time.perf_counter()
    res = fit(
        model, split.train, optimizer="sgd", lr=lr, momentum=momentum,
        batch_size=batch_size, epochs=int(epochs), milestones=milestones, gamma=lr_decay,
        seed=int(seed), penalty=penalty, chunk_size=None, inplace=True,
    )  # fmt: skip
    hist = penalty.history if penalty is not None else []
    return TrainOutcome(
        model=res.model,
        epoch_loss=_epoch_means(res.history, len(split.train), batch_size),
        penalty_values=tuple(r.value for r in hist),
        penalty_steps=tuple(r.step for r in hist),
        penalty_seconds=float(np.mean([r.seconds for r in hist])) if hist else 0.0,
        seconds=time.perf_counter() - t0,
        steps=res.steps,
    )


def _epoch_means(history: Sequence[dict[str, float]], n: int, batch_size: int) -> tuple:
    """Mean minibatch loss per epoch, each batch weighted by its size (the last is short)."""
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    means, total, pos = [], 0.0, 0
    for rec in history:
        total += rec["loss"] * sizes[pos]
        pos += 1
        if pos == len(sizes):
            means.append(total / n)
            total, pos = 0.0, 0
    if pos:  # a run stopped inside an epoch (diverged): its partial mean
        means.append(total / n)
    return tuple(means)


def make_penalty(cfg: Any, variant: str, seed: int, steps_per_epoch: int) -> Penalty | None:
    """The penalty of ``variant`` (``None`` for ``"none"``); a bad name raises."""
    if variant == "none":
        return None
    common = dict(
        num_probes=cfg.num_probes,
        gamma=cfg.gamma,
        distribution=cfg.distribution,
        every=cfg.every,
        start_step=cfg.start_epoch * steps_per_epoch,
        seed=1000 + seed,
    )
    if variant in SELECTION:
        return HessianTracePenalty(selection=SELECTION[variant], **common)
    if variant in ("ws", "ws-middle"):
        sel = "all" if variant == "ws" else "middle"
        return WSBoundPenalty(selection=sel, eps=cfg.eps, **common)
    raise ConfigurationError(
        f"unknown variant {variant!r}; use 'none', 'full', 'middle', 'middle-layers' "
        "(sankar2021-reg) or 'ws', 'ws-middle' (wsbound-reg)."
    )


def _measure(cfg: Any, model: nn.Module, split: Split, seed: int, *, ws: bool) -> dict[str, Any]:
    """The final measurements of one trained model.

    ``tr H`` and ``lambda_max`` (with ``ws``: ``lambda_min`` and the Wolkowicz–Styan
    bounds) on the training split, and the accuracies; ``measure_seconds`` is the sum of
    the curvature results' own ``seconds``.
    """
    H = hessian(model, "ce", split.train.tensors)
    s = Settings(tol=cfg.lanczos_tol, return_vectors=False, num_matvecs=cfg.trace_matvecs)
    tr = measure("trace", H, s, torch.Generator().manual_seed(seed))
    top = measure("lambda_max", H, s, torch.Generator().manual_seed(seed))
    results = [tr, top]
    out: dict[str, Any] = {
        "trace": tr.value,
        "trace_stderr": tr.stderr,
        "lambda_max": float(top.values[0]),
        "lambda_max_converged": bool(top.converged.all()),
    }
    if ws:
        s_low = s.replace(k=1, max_matvecs=cfg.min_matvecs)
        low = measure("bottom", H, s_low, torch.Generator().manual_seed(seed))
        b = measure("ws_bounds", H, s, torch.Generator().manual_seed(seed))
        results += [low, b]
        out.update(
            lambda_min=float(low.values[0]),
            lambda_min_converged=bool(low.converged.all()),
            ws_upper=b.lambda_max_upper,
            ws_lower_min=b.lambda_min_lower,
            spread=float(top.values[0]) - float(low.values[0]),
        )
    _, acc = evaluate(model, split.test)
    tl, ta = evaluate(model, split.train)
    out.update(test_accuracy=acc, train_accuracy=ta, train_loss=tl)
    out["measure_seconds"] = sum(float(r.seconds) for r in results)
    return out


def digits_split(cfg: Any) -> tuple[Split, int]:
    """The digits split (seeded: the same in every part) and the steps per epoch."""
    split = digits(flat=False, seed=cfg.data_seed)
    return split, math.ceil(len(split.train) / cfg.batch_size)


def check_config(cfg: Any) -> None:
    """Raise :class:`ConfigurationError` on bad variants, before any training."""
    if "none" not in cfg.variants or len(cfg.variants) < 2:
        raise ConfigurationError("variants must contain 'none' and at least one penalty.")
    _, steps_per_epoch = digits_split(cfg)
    for variant in cfg.variants:  # fail on a bad variant before any training
        make_penalty(cfg, variant, 0, steps_per_epoch)


def train_one(ctx: Context, seed: int, variant: str, *, ws: bool) -> tuple[dict[str, Any], Any]:
    """One training run (variant, seed) and its final measurements."""
    cfg, run_dir = ctx.cfg, ctx.run_dir
    split, steps_per_epoch = digits_split(cfg)
    model = lenet(1, 10, image_size=8, seed=seed, channels=cfg.channels,
                  hidden=cfg.hidden)  # fmt: skip
    penalty = make_penalty(cfg, variant, seed, steps_per_epoch)
    out = train_with_penalty(
        model, split, penalty=penalty, epochs=cfg.epochs, batch_size=cfg.batch_size,
        lr=cfg.lr, momentum=cfg.momentum, milestones=cfg.milestones,
        lr_decay=cfg.lr_decay, seed=seed,
    )  # fmt: skip
    m = _measure(cfg, out.model, split, seed, ws=ws)
    row = {"variant": variant, "seed": seed, **m}
    row["train_seconds"] = out.seconds
    row["penalty_seconds_per_call"] = out.penalty_seconds
    row["penalized_steps"] = len(out.penalty_values)
    index = cfg.seeds.index(seed) * len(cfg.variants) + cfg.variants.index(variant) + 1
    run_dir.log_metrics(index, **{k: v for k, v in row.items() if k != "variant"})
    run_dir.add_array(f"{variant}/seed{seed}/epoch_loss", np.asarray(out.epoch_loss))
    if out.penalty_values:
        run_dir.add_array(f"{variant}/seed{seed}/penalty", np.asarray(out.penalty_values))
    ctx.tick(f"{variant} seed {seed}: acc {m['test_accuracy']:.3f}, trace {m['trace']:.3g}")
    return row, out

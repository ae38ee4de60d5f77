"""Li et al. (2019), part 3: many tiny nets trained and measured with vmap."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from hesslab.data import gaussian_mixture, with_label_noise
from hesslab.experiments._base import config_dtype as _dtype
from hesslab.experiments._claims import add_claim, decide
from hesslab.experiments.li2019.config import S3, Li2019Config, _gen
from hesslab.models import mlp
from hesslab.report import plots
from hesslab.report.run import RunDir


def _flat_losses(
    base: torch.nn.Module, names: list[str], shapes: list[torch.Size]
) -> tuple[Callable[[Tensor, Tensor, Tensor], Tensor], Callable[[Tensor, Tensor, Tensor], Tensor]]:
    """Batch and single-sample cross-entropy as functions of a flat parameter vector."""
    numels = [int(math.prod(s)) for s in shapes]

    def unflat(vec: Tensor) -> dict[str, Tensor]:
        chunks = torch.split(vec, numels)
        return {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}

    def loss_flat(vec: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(base, unflat(vec), (xb,)), yb)

    def sample_loss(vec: Tensor, xi: Tensor, yi: Tensor) -> Tensor:
        return loss_flat(vec, xi[None], yi[None])

    return loss_flat, sample_loss


def _tiny_nets(cfg: Li2019Config, split: Any, gi: int, frac: float) -> tuple[Tensor, Tensor, Any]:
    """Group ``gi``'s ``R`` tiny MLPs, stacked.

    Returns:
        ``θ`` ``[R, P]``, the labels ``[R, N]`` and the flat batch / single-sample losses
        (:func:`_flat_losses`).
    """
    R, dtype = cfg.repeats, _dtype(cfg)
    y_clean = split.train.tensors[1]
    models = [
        mlp(
            cfg.repeat_dim,
            (cfg.repeat_width,),
            cfg.repeat_classes,
            activation="relu",
            seed=cfg.seed + 10_000 * (gi + 1) + r,
            dtype=dtype,
        )
        for r in range(R)
    ]
    ys = torch.stack(
        [
            with_label_noise(split.train, frac, seed=cfg.seed + 20_000 * (gi + 1) + r).tensors[1]
            if frac > 0
            else y_clean
            for r in range(R)
        ]
    )  # [R, N]
    params, _ = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    names = list(params)
    shapes = [params[n].shape[1:] for n in names]
    theta = torch.cat([params[n].detach().reshape(R, -1) for n in names], 1)  # [R, P]
    return theta, ys, _flat_losses(base, names, shapes)


def _measure_nets(
    cfg: Li2019Config, fns: dict[str, Any], theta: Tensor, x: Tensor, ys: Tensor, g: Any
) -> dict[str, Tensor]:
    """Overlap, random null, ``tr H``, ``Σθ²H_jj`` and loss of all ``R`` nets (vmap)."""
    R, P = theta.shape
    N, B, k = x.shape[0], cfg.repeat_batch, cfg.top_k
    H = fns["hess"](theta, x, ys)  # [R, P, P]
    H = 0.5 * (H + H.transpose(1, 2))
    Gs = fns["psg"](theta, x, ys)  # [R, N, P]
    gbar = Gs.mean(1)
    C = Gs.transpose(1, 2) @ Gs / N - gbar[:, :, None] * gbar[:, None, :]
    M = gbar[:, :, None] * gbar[:, None, :] + C / B
    UH = torch.linalg.eigh(H)[1][:, :, -k:]
    UM = torch.linalg.eigh(M)[1][:, :, -k:]
    ov = (UH.transpose(1, 2) @ UM).pow(2).sum((1, 2)) / k
    Q = torch.linalg.qr(torch.randn(R, P, k, generator=g, dtype=theta.dtype))[0]
    rnd = (UH.transpose(1, 2) @ Q).pow(2).sum((1, 2)) / k
    diag = torch.diagonal(H, dim1=1, dim2=2)
    with torch.no_grad():
        lv = vmap(fns["loss"], in_dims=(0, None, 0))(theta, x, ys)
    return {
        "overlap": ov,
        "trace": diag.sum(1),
        "sit": (theta**2 * diag).sum(1),
        "loss": lv,
        "random": rnd,
    }


def _train_group(
    cfg: Li2019Config, split: Any, gi: int, frac: float, measure_at: list[int]
) -> tuple[dict[str, np.ndarray], int]:
    """Train group ``gi``'s ``R`` nets together (vmap SGD, per-net minibatches).

    Measured at the steps ``measure_at``; returns ``({key: [R, len(measure_at)]}, P)``.
    """
    x = split.train.tensors[0]
    N, R, B = x.shape[0], cfg.repeats, cfg.repeat_batch
    theta, ys, (loss_flat, sample_loss) = _tiny_nets(cfg, split, gi, frac)
    grad_b = vmap(torch.func.grad(loss_flat))
    fns = {
        "loss": loss_flat,
        "hess": vmap(torch.func.hessian(loss_flat), in_dims=(0, None, 0)),
        "psg": vmap(vmap(torch.func.grad(sample_loss), in_dims=(None, 0, 0)), in_dims=(0, None, 0)),
    }
    g = _gen(cfg.seed + 30_000 + gi)
    rec: dict[str, list[Tensor]] = {
        key: [] for key in ("overlap", "trace", "sit", "loss", "random")
    }
    for step in range(cfg.repeat_steps + 1):
        if step in measure_at:
            for key, v in _measure_nets(cfg, fns, theta, x, ys, g).items():
                rec[key].append(v)
        if step == cfg.repeat_steps:
            break
        idx = torch.randint(0, N, (R, B), generator=g)
        xb = x[idx]  # [R, B, d]
        yb = torch.gather(ys, 1, idx)
        theta = theta - cfg.repeat_lr * grad_b(theta, xb, yb)
    return {key: torch.stack(v, 1).detach().numpy() for key, v in rec.items()}, theta.shape[1]


def part3(cfg: Li2019Config, run_dir: RunDir, tick: Callable[[str], None]) -> dict[str, Any]:
    """Part 3: ``R`` tiny nets per label-noise fraction, trained and measured with vmap.

    Returns:
        ``{"summary": {group: {...}}, "P", "null" (k/P), "holds", "verdict", "vmap"}``.
    """
    split = gaussian_mixture(
        num_classes=cfg.repeat_classes,
        dim=cfg.repeat_dim,
        num_per_class=cfg.repeat_per_class,
        separation=cfg.separation,
        seed=cfg.seed + 5,
        dtype=_dtype(cfg),
    )
    every = max(1, cfg.repeat_steps // max(1, cfg.repeat_measure))
    measure_at = sorted(set(range(0, cfg.repeat_steps + 1, every)) | {cfg.repeat_steps})
    groups: dict[str, dict[str, np.ndarray]] = {}
    P = 0
    for gi, frac in enumerate(cfg.repeat_noise_fractions):
        groups[f"noise {frac:g}"], P = _train_group(cfg, split, gi, frac, measure_at)
        tick(f"{cfg.repeats} tiny nets, noise {frac}")
    steps = np.asarray(measure_at, dtype=np.float64)
    return _report_repeats(cfg, run_dir, groups, steps, split.train.tensors[0].shape[0], P)


def _report_repeats(
    cfg: Li2019Config,
    run_dir: RunDir,
    groups: dict[str, dict[str, np.ndarray]],
    steps: np.ndarray,
    N: int,
    P: int,
) -> dict[str, Any]:
    """Part 3's text, quantile-band figures, end table and across-seeds overlap claim."""
    R, B, k = cfg.repeats, cfg.repeat_batch, cfg.top_k
    null = k / P
    run_dir.add_text(
        S3,
        f"{R} tiny ReLU MLPs {cfg.repeat_dim}-{cfg.repeat_width}-{cfg.repeat_classes} "
        f"(P = {P}) per label-noise fraction, different init (and label-noise) seeds, on a "
        f"{cfg.repeat_classes}-class Gaussian mixture (N = {N}); SGD batch {B}, lr "
        f"{cfg.repeat_lr}, {cfg.repeat_steps} steps. Training, dense Hessians, per-sample "
        "gradients and M_B all vectorised over the R nets with torch.func.vmap "
        "(stack_module_state + functional_call); top-k eigenspaces by batched eigh. "
        f"Bands: 5/25/50/75/95% quantiles over nets; random null k/P = {null:.3g}.",
    )
    for key, label in (
        ("overlap", "overlap top-k(H), top-k(M_B)"),
        ("trace", "tr H"),
        ("sit", "Σθ²H_jj"),
        ("loss", "training loss"),
    ):
        run_dir.add_figure(
            S3,
            f"repeats_{key}",
            plots.plot_quantile_bands(
                steps, {n: v[key] for n, v in groups.items()}, title=label, ylabel=label
            ),
            caption=f"{label}: quantile bands over {R} nets per label-noise fraction.",
        )
        for n, v in groups.items():
            run_dir.add_array(f"repeats_{key}_{n.replace(' ', '')}", v[key])
    rows = []
    summary = {}
    for n, v in groups.items():
        end = v["overlap"][:, -1]
        summary[n] = {
            "overlap_end_median": float(np.median(end)),
            "overlap_end_q05": float(np.quantile(end, 0.05)),
            "overlap_end_q95": float(np.quantile(end, 0.95)),
            "random_end_median": float(np.median(v["random"][:, -1])),
            "overlap_start_median": float(np.median(v["overlap"][:, 0])),
            "loss_end_median": float(np.median(v["loss"][:, -1])),
        }
        rows.append({"group": n, **summary[n], "k/P": null})
    run_dir.add_table(S3, "repeats at the end", rows)
    q05 = min(s["overlap_end_q05"] for s in summary.values())
    thr = max(0.5, cfg.overlap_factor * null)
    ends = np.concatenate([v["overlap"][:, -1] for v in groups.values()])
    verdict = decide(ends, rule="fraction", margin=thr)
    holds = verdict.holds
    add_claim(
        run_dir,
        S3,
        "top subspaces of H and M_B overlap strongly (≫ random), across seeds",
        verdict,
        f"end overlap of {ends.size} nets ({R} seeds per label-noise group) vs threshold "
        f"{thr:.3g} = max(0.5, {cfg.overlap_factor:g}·k/P), k/P = {null:.3g}; 5% quantile "
        f"(lowest group) {q05:.3f}",
    )
    run_dir.add_array("repeats_steps", steps)
    return {
        "summary": summary,
        "P": P,
        "null": null,
        "holds": holds,
        "verdict": verdict.as_dict(),
        "vmap": True,
    }

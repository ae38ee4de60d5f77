"""Li et al. (2019), part 1: overlap of the top subspaces of H and M_B over SGD."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hesslab.data import gaussian_mixture, with_label_noise
from hesslab.experiments._base import config_dtype as _dtype
from hesslab.experiments._claims import add_claim, decide
from hesslab.experiments.li2019.config import S1, Li2019Config, _gen
from hesslab.linalg import eigenpairs
from hesslab.measures import subspace_overlap
from hesslab.models import mlp
from hesslab.objective import Objective
from hesslab.operators import gradient_moment, hessian
from hesslab.report import plots
from hesslab.report.run import RunDir
from hesslab.train import fit


def _data(cfg: Li2019Config, fraction: float) -> tuple[Tensor, Tensor]:
    split = gaussian_mixture(
        num_classes=cfg.classes,
        dim=cfg.dim,
        num_per_class=cfg.per_class,
        separation=cfg.separation,
        seed=cfg.seed,
        dtype=_dtype(cfg),
    )
    train = split.train
    if fraction > 0:
        train = with_label_noise(train, fraction, seed=cfg.seed + 1)
    x, y = train.tensors
    return x, y


def _top(op: Any, k: int, tol: float, seed: int) -> tuple[Tensor, Tensor]:
    res = eigenpairs(op, k=k, which="largest", tol=tol, generator=_gen(seed))
    assert res.vectors is not None
    return res.values, res.vectors


def _overlap_at(
    model: torch.nn.Module, data: tuple[Tensor, Tensor], B: int, cfg: Li2019Config, seed: int
) -> dict[str, float]:
    obj = Objective(model, "ce", data, check_determinism=False)
    P, k = obj.space.size, cfg.top_k
    lh, UH = _top(hessian(obj), k, cfg.eig_tol, seed)
    _, UM = _top(gradient_moment(obj, kind="minibatch", batch_size=B), k, cfg.eig_tol, seed + 1)
    R = torch.randn(P, k, generator=_gen(seed + 2), dtype=UH.dtype)
    return {
        "overlap": subspace_overlap(UH, UM),
        "random": subspace_overlap(UH, R),
        "lambda_max": float(lh[0]),
        "loss": obj.value(),
    }


def _train_and_track(
    cfg: Li2019Config, fraction: float, B: int, seed: int
) -> tuple[torch.nn.Module, tuple[Tensor, Tensor], dict[str, list[float]]]:
    """SGD with batches of ``B`` drawn with replacement, tracking the overlap.

    Each run has its own initialisation and its own minibatch sequence (both from
    ``seed``; the data are the same for every run of a noise fraction). Trained by
    :func:`hesslab.train.fit`; the overlap is measured by a callback every
    ``measure_every`` steps and at the end.
    """
    data = _data(cfg, fraction)
    model = mlp(cfg.dim, cfg.widths, cfg.classes, activation="relu", seed=seed, dtype=_dtype(cfg))
    keys = ("step", "overlap", "random", "lambda_max", "loss")
    rec: dict[str, list[float]] = {key: [] for key in keys}

    def track(net: torch.nn.Module, step: int, info: dict[str, Any]) -> None:
        if step % cfg.measure_every == 0 or step == cfg.steps:
            m = _overlap_at(net, data, B, cfg, seed + 7 * step)
            rec["step"].append(step)
            for key, v in m.items():
                rec[key].append(v)

    res = fit(
        model, data, optimizer="sgd", lr=cfg.lr, batch_size=B, sampling="replacement",
        steps=cfg.steps, generator=_gen(seed), callbacks=track, chunk_size=None,
    )  # fmt: skip
    return res.model, data, rec


def part1(cfg: Li2019Config, run_dir: RunDir, tick: Callable[[str], None]) -> dict[str, Any]:
    """Part 1: SGD runs per (noise fraction, B), tracking the top-subspace overlap.

    Returns:
        ``{"runs": {(noise, B): (model, data, record)}, "P", "null", "table",
        "min_end_overlap", "holds"}``.
    """
    runs, P = _train_runs(cfg, tick)
    null = cfg.top_k / P  # the mean overlap of a random k-subspace
    _describe(cfg, run_dir, P, null)
    rows = _report_runs(run_dir, runs, null)
    ends = [r["overlap end"] for r in rows]
    holds = _claim(cfg, run_dir, ends, null)
    return {
        "runs": runs,
        "P": P,
        "null": null,
        "table": rows,
        "min_end_overlap": min(ends),
        "holds": holds,
    }


def _train_runs(
    cfg: Li2019Config, tick: Callable[[str], None]
) -> tuple[dict[tuple[float, int], Any], int]:
    """One tracked SGD run per (noise fraction, B): ``({(noise, B): (model, data, rec)}, P)``."""
    runs: dict[tuple[float, int], Any] = {}
    P = None
    for i, frac in enumerate(cfg.noise_fractions):
        for j, B in enumerate(cfg.batch_sizes):
            model, data, rec = _train_and_track(cfg, frac, B, cfg.seed + 1000 * i + 100 * j)
            runs[(frac, B)] = (model, data, rec)
            P = sum(p.numel() for p in model.parameters())
            tick(f"trained noise {frac}, B={B}")
    assert P is not None
    return runs, P


def _describe(cfg: Li2019Config, run_dir: RunDir, P: int, null: float) -> None:
    """The setup paragraph of part 1."""
    run_dir.add_text(
        S1,
        f"Gaussian mixture ({cfg.classes} classes, dim {cfg.dim}, N = "
        f"{cfg.classes * cfg.per_class // 2} training points, separation {cfg.separation}), "
        f"ReLU MLP {cfg.dim}-{'-'.join(map(str, cfg.widths))}-{cfg.classes} (P = {P}), "
        f"cross-entropy, SGD lr {cfg.lr} with batch B (with replacement), {cfg.steps} steps. "
        f"Every {cfg.measure_every} steps: top-{cfg.top_k} eigenvectors of H and of "
        "M_B = ∇L∇Lᵀ + C/B (hesslab.eigenpairs, Lanczos) and overlap ‖U_HᵀU_M‖²_F/k; "
        f"random-subspace null k/P = {null:.3g}.",
    )


def _run_row(frac: float, B: int, rec: dict[str, list[float]], null: float) -> dict[str, Any]:
    """The table row of one run."""
    return {
        "label noise": frac,
        "B": B,
        "overlap start": rec["overlap"][0],
        "overlap end": rec["overlap"][-1],
        "overlap mean": float(np.mean(rec["overlap"])),
        "random end": rec["random"][-1],
        "k/P": null,
        "final loss": rec["loss"][-1],
        "λ_max end": rec["lambda_max"][-1],
    }


def _report_runs(
    run_dir: RunDir, runs: dict[tuple[float, int], Any], null: float
) -> list[dict[str, Any]]:
    """Each run's overlap curve (array, metrics log, figure) and table row; returns the rows."""
    series: dict[str, Any] = {}
    rows = []
    steps = None
    for (frac, B), (_, _, rec) in runs.items():
        steps = np.asarray(rec["step"], dtype=np.float64)
        series[f"noise {frac:g}, B={B}"] = np.asarray(rec["overlap"])
        rows.append(_run_row(frac, B, rec, null))
        run_dir.add_array(f"overlap_noise{frac:g}_B{B}", np.asarray(rec["overlap"]))
        for s, o in zip(rec["step"], rec["overlap"], strict=True):
            run_dir.log_metrics(s, **{f"overlap_noise{frac:g}_B{B}": o})
    assert steps is not None
    series["random null k/P"] = np.full_like(steps, null)
    run_dir.add_array("overlap_steps", steps)
    run_dir.add_figure(
        S1,
        "overlap",
        plots.plot_series(
            steps, series, title="overlap of top-k(H) and top-k(M_B)", ylabel="overlap"
        ),
        caption="‖U_HᵀU_M‖²_F/k over training per label-noise fraction and batch size; the "
        "flat line is the random-subspace mean k/P.",
    )
    run_dir.add_table(S1, "overlaps", rows)
    return rows


def _claim(cfg: Li2019Config, run_dir: RunDir, ends: list[float], null: float) -> bool:
    """The claim of part 1: the share of runs whose end overlap exceeds ``max(0.5, f·k/P)``."""
    thr = max(0.5, cfg.overlap_factor * null)
    verdict = decide(ends, rule="fraction", margin=thr)
    add_claim(
        run_dir,
        S1,
        "top subspaces of H and M_B overlap strongly (≫ random)",
        verdict,
        f"end-of-training overlaps {', '.join(f'{e:.3f}' for e in ends)} over the "
        f"{len(ends)} (noise, B) runs vs random k/P = {null:.3g}; threshold {thr:.3g}",
    )
    return verdict.holds

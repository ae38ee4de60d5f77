"""Training one network with one seed for sankar2021, measuring every epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from hesslab.experiments.sankar2021.config import METRICS, Sankar2021Config, _section
from hesslab.experiments.sankar2021.measure import _build, _gen, _measure
from hesslab.experiments.sankar2021.report import _density_figures, _distances, _trends
from hesslab.quantities import Settings, measure
from hesslab.report.run import RunDir
from hesslab.train import fit


def _epoch_callback(
    name: str,
    cfg: Sankar2021Config,
    sub: tuple[torch.Tensor, torch.Tensor],
    run_dir: RunDir,
    tick: Callable[[str], None],
    mi: int,
    seed: int,
    spe: int,
) -> tuple[Callable[[nn.Module, int, dict[str, Any]], None], list[dict[str, Any]], dict]:
    """A :func:`~hesslab.train.fit` callback measuring at every epoch boundary.

    Returns the callback, the list it appends one record per epoch to, and the dict whose
    ``"measure"`` entry accumulates the measurements' own wall time.
    """
    records: list[dict[str, Any]] = []
    seconds = {"measure": 0.0}

    def callback(net: nn.Module, step: int, info: dict[str, Any]) -> None:
        if step % spe != 0:
            return
        epoch = step // spe
        m = _measure(net, sub, cfg, key=seed * 100_003 + 7919 * mi + epoch)
        seconds["measure"] += m.pop("seconds")
        m["epoch"] = epoch
        if epoch == cfg.epochs:
            s = Settings(tol=1e-8, return_vectors=False)
            ev = measure("lambda_max", m["operator"], s, _gen(seed, mi, 3))
            seconds["measure"] += ev.seconds
            m["lmax_lanczos"] = float(ev.values[0])
        m.pop("operator")
        if epoch not in (0, cfg.epochs):
            m.pop("densities")
        records.append(m)
        run_dir.log_metrics(
            epoch,
            model=name,
            seed=seed,
            lmax_full=m["lmax"]["full"],
            trace_full=m["trace"]["full"],
            **{f"w1_{k}": v for k, v in m["distances"]["w1"].items()},
            **{f"sankar_{k}": v for k, v in m["distances"]["sankar"].items()},
        )
        tick(f"{name} seed {seed} epoch {epoch}")

    return callback, records, seconds


def _describe(
    name: str,
    cfg: Sankar2021Config,
    run_dir: RunDir,
    section: str,
    first: dict[str, Any],
    layers: list[str],
    n_train: int,
    spe: int,
    n_sub: int,
    seed: int,
) -> None:
    """The report's paragraph on network ``name``'s size, layers and training setup."""
    run_dir.add_text(
        section,
        f"{name}: P = {first['P']} parameters; weight layers (depth order, sizes): "
        + ", ".join(f"{n} ({first['layer_sizes'][n]})" for n in layers)
        + f". SGD lr {cfg.lr}, momentum {cfg.momentum}, batch {cfg.batch_size}, "
        f"{cfg.epochs} epochs on {n_train} {cfg.data} images ({spe} steps/epoch), training seeds "
        f"{list(cfg.seeds)} (figures and tables: seed {seed}; claims: over the seeds). "
        f"Measured at initialization and after every epoch on {n_sub} "
        f"balanced training points ({cfg.per_class}/class), {cfg.dtype}.",
    )


def _lmax_check(last: dict[str, Any]) -> dict[str, Any]:
    """Final full ``λ_max``: SLQ's top Ritz value vs Lanczos, within max(σ, Ritz residual)."""
    lam_slq, lam_ref = last["lmax"]["full"], last["lmax_lanczos"]
    tol = max(last["sigma_full"], last["lmax_residual"]["full"])
    return {
        "slq": lam_slq,
        "lanczos": lam_ref,
        "abs_diff": abs(lam_slq - lam_ref),
        "tolerance": tol,
        "agrees": bool(abs(lam_slq - lam_ref) <= tol),
    }


def _run_model(
    name: str,
    cfg: Sankar2021Config,
    split: Any,
    sub: tuple[torch.Tensor, torch.Tensor],
    run_dir: RunDir,
    tick: Callable[[str], None],
    mi: int,
    seed: int,
) -> dict[str, Any]:
    """Train ``name`` with training seed ``seed``, measuring every epoch.

    The first seed's run writes the figures and tables; every seed writes its arrays
    (suffixed ``_seed<s>`` after the first). No claims: :func:`_claims_over_seeds`.
    """
    section = _section(name, mi, cfg.data)
    report = seed == cfg.seeds[0]
    tag = "" if report else f"_seed{seed}"
    model = _build(name, cfg, seed)
    n_train = int(split.train.x.shape[0])
    spe = math.ceil(n_train / cfg.batch_size)
    callback, records, seconds = _epoch_callback(name, cfg, sub, run_dir, tick, mi, seed, spe)
    t0 = time.perf_counter()
    res = fit(
        model,
        split,
        loss="ce",
        optimizer="sgd",
        lr=cfg.lr,
        momentum=cfg.momentum,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        seed=seed,
        callbacks=[callback],
    )
    total = time.perf_counter() - t0
    layers = list(records[0]["layer_sizes"])
    epochs = np.asarray([r["epoch"] for r in records], dtype=np.int64)
    dist = {
        k: np.asarray([[r["distances"][k][n] for n in layers] for r in records]) for k in METRICS
    }
    if report:
        n_sub = int(sub[1].numel())
        _describe(name, cfg, run_dir, section, records[0], layers, n_train, spe, n_sub, seed)
    dist_summary = _distances(name, cfg, run_dir, section, layers, epochs, dist, report, tag)
    if report:
        for rec in (records[0], records[-1]):
            _density_figures(name, cfg, run_dir, section, rec)
    trends, trend_start = _trends(name, cfg, run_dir, section, layers, epochs, records, report, tag)
    run_dir.add_scalar(section, f"{name} seed {seed} seconds", total, unit="s")
    return {
        "seed": seed,
        "P": records[0]["P"],
        "layers": layers,
        "layer_sizes": records[0]["layer_sizes"],
        "epochs": epochs.tolist(),
        "distances": {k: dist[k].tolist() for k in METRICS},
        "distance_summary": dist_summary,
        "lmax": {n: [r["lmax"][n] for r in records] for n in ["full", *layers]},
        "trace": {n: [r["trace"][n] for r in records] for n in ["full", *layers]},
        "trends": trends,
        "trend_start": trend_start,
        "trend_decreasing": sum(t["decreases"] for t in trends.values()),
        "trend_series": len(trends),
        "lmax_check": _lmax_check(records[-1]),
        "train_accuracy": res.final_train_accuracy,
        "test_accuracy": res.final_test_accuracy,
        "seconds": total,
        "measure_seconds": seconds["measure"],
    }

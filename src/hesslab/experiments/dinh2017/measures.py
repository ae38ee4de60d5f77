"""The measures of one rescaled model, the rows of an α sweep and their statistics.

Every measure of :mod:`hesslab.experiments.dinh2017` on the Hessian data: ``λ_max(H)``,
``tr(H)``, ε-sharpness (they move under ``T_α``), ``tr(ΘHΘ)``, ``λ_max(ΘHΘ)`` and the
per-tensor normalized ``λ_max``/trace (they do not).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from hesslab.experiments.dinh2017.config import INVARIANT, MOVING, Dinh2017Config
from hesslab.measures.sharpness import (
    epsilon_sharpness,
    layer_normalized_sharpness,
    scale_invariant_operator,
)
from hesslab.objective import Objective
from hesslab.operators import hessian
from hesslab.quantities import Settings, measure
from hesslab.reparam import rescale_pair
from hesslab.report.progress import StepProgress

__all__ = ["measures", "rescaled_rows", "subset", "sweep_statistics"]


def measures(
    model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], cfg: Dinh2017Config
) -> dict[str, Any]:
    """Every measure of one (rescaled) model on the Hessian data."""
    obj = Objective(model, "ce", data)
    H = hessian(obj)
    seed = cfg.seed
    s = Settings(tol=cfg.lanczos_tol, return_vectors=False, num_matvecs=cfg.trace_matvecs)
    lam = measure("lambda_max", H, s, torch.Generator().manual_seed(seed))
    tr = measure("trace", H, s, torch.Generator().manual_seed(seed + 1))
    sharp = epsilon_sharpness(
        obj, cfg.eps, steps=cfg.sharpness_steps, generator=torch.Generator().manual_seed(seed + 2)
    )
    inv_op = scale_invariant_operator(H, obj.flat_params())
    inv_tr = measure("trace", inv_op, s, torch.Generator().manual_seed(seed + 3))
    inv_lam = measure("lambda_max", inv_op, s, torch.Generator().manual_seed(seed + 4))
    layers = layer_normalized_sharpness(
        obj,
        trace_method="krylov",
        num_matvecs=min(cfg.trace_matvecs, 32),
        tol=cfg.lanczos_tol,
        seed=seed + 5,
    )
    return {
        "loss": sharp.loss,
        "grad_norm": float(obj.gradient().norm()),
        "lambda_max": float(lam.values[0]),
        "trace": float(tr.value),
        "trace_stderr": float(tr.stderr),
        "eps_sharpness": float(sharp.value),
        "inv_trace": float(inv_tr.value),
        "inv_trace_stderr": float(inv_tr.stderr),
        "inv_lambda_max": float(inv_lam.values[0]),
        "layers": {k: asdict(v) for k, v in layers.items()},
        "num_matvecs": int(
            lam.num_matvecs
            + tr.num_matvecs
            + inv_tr.num_matvecs
            + inv_lam.num_matvecs
            + sum(v.num_matvecs for v in layers.values())
        ),
        "num_gradients": sharp.num_gradients + 1,
    }


def _layer_summary(layers: dict[str, dict[str, Any]], key: str) -> float:
    """The largest per-tensor value of ``key`` (a single number per model for the table)."""
    return max(v[key] for v in layers.values())


def rescaled_rows(
    model: nn.Module,
    hess_data: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    cfg: Dinh2017Config,
    tick: StepProgress,
    what: str,
) -> list[dict[str, Any]]:
    """One row of measures per ``α`` (each with its per-tensor ``"_layers"``)."""
    xt, yt = test
    with torch.no_grad():
        f0 = model(xt)
    scale = float(f0.abs().max())
    rows: list[dict[str, Any]] = []
    for alpha in cfg.alphas:
        m = rescale_pair(model, 0, alpha)
        with torch.no_grad():
            fa = m(xt)
        meas = measures(m, hess_data, cfg)
        row = {
            "alpha": float(alpha),
            "output_change": float((fa - f0).abs().max()) / scale,
            "test_accuracy": float((fa.argmax(1) == yt).double().mean()),
            "train_loss": meas["loss"],
            "grad_norm": meas["grad_norm"],
            "lambda_max": meas["lambda_max"],
            "trace": meas["trace"],
            "eps_sharpness": meas["eps_sharpness"],
            "inv_trace": meas["inv_trace"],
            "inv_lambda_max": meas["inv_lambda_max"],
            "layer_norm_lambda_max": _layer_summary(meas["layers"], "normalized_lambda_max"),
            "layer_norm_trace": _layer_summary(meas["layers"], "normalized_trace"),
            "num_matvecs": meas["num_matvecs"],
        }
        row["_layers"] = meas["layers"]
        rows.append(row)
        tick(f"{what}: α = {alpha:.3g}")
    return rows


def sweep_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the claims read off the rows.

    Returns:
        ``{"alphas", "ref" (the row closest to α = 1), "out_max", "accs", "moves"
        (max/min of each moving measure), "inv_dev" (max relative deviation of each
        invariant measure from ``ref``, per tensor too)}``.
    """
    alphas = np.array([r["alpha"] for r in rows])
    i1 = int(np.argmin(np.abs(np.log10(alphas))))  # the row closest to α = 1
    ref = rows[i1]
    moves = {
        k: max(abs(r[k]) for r in rows) / max(min(abs(r[k]) for r in rows), 1e-300) for k in MOVING
    }
    inv_dev = {
        k: max(abs(r[k] - ref[k]) for r in rows) / max(abs(ref[k]), 1e-300) for k in INVARIANT
    }
    # per-tensor deviations (the table reports the max over tensors; check each tensor)
    for key in ("normalized_lambda_max", "normalized_trace"):
        dev = 0.0
        for name, v in ref["_layers"].items():
            for r in rows:
                dev = max(dev, abs(r["_layers"][name][key] - v[key]) / max(abs(v[key]), 1e-300))
        inv_dev[f"per_tensor_{key}"] = dev
    return {
        "alphas": alphas,
        "ref": ref,
        "out_max": max(r["output_change"] for r in rows),
        "accs": {r["test_accuracy"] for r in rows},
        "moves": moves,
        "inv_dev": inv_dev,
    }


def subset(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` points of ``(x, y)`` (all of them when ``n <= 0`` or ``n >= N``)."""
    return (x, y) if n <= 0 or n >= x.shape[0] else (x[:n], y[:n])

"""Per-epoch measurement for sankar2021: full and layerwise SLQ densities, traces, distances."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from hesslab.experiments._base import config_dtype as _dtype
from hesslab.experiments.sankar2021.config import IMAGE_SIDE, Sankar2021Config
from hesslab.linalg.density import SpectralDensity
from hesslab.linalg.results import TraceEstimate
from hesslab.measures import sankar_density_distance, spectrum_w1
from hesslab.models import lenet, mlp, vit
from hesslab.operators import hessian
from hesslab.quantities import Settings, measure


def _build(name: str, cfg: Sankar2021Config, seed: int) -> nn.Module:
    if name == "lenet":
        return lenet(
            1,
            10,
            image_size=IMAGE_SIDE[cfg.data],
            seed=seed,
            channels=tuple(cfg.lenet_channels),  # type: ignore[arg-type]
            hidden=tuple(cfg.lenet_hidden),  # type: ignore[arg-type]
        )
    if name == "vit":
        return vit(
            1, 10, 8, dim=cfg.vit_dim, depth=cfg.vit_depth, num_heads=cfg.vit_heads, seed=seed
        )
    return mlp(IMAGE_SIDE[cfg.data] ** 2, tuple(cfg.mlp_widths), 10, seed=seed)


def _gen(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k)) % (2**62)
    return torch.Generator().manual_seed(seed)


def _sigma(d: SpectralDensity, cfg: Sankar2021Config) -> float:
    return cfg.sigma_rel * d.width()


def _trace(op: Any, cfg: Sankar2021Config, g: torch.Generator) -> TraceEstimate:
    """``tr op``: exact (``P`` unit vectors) when ``P <= trace_matvecs``, else Krylov."""
    method = "exact" if op.shape[0] <= cfg.trace_matvecs else "krylov"
    return measure("trace", op, Settings(num_matvecs=cfg.trace_matvecs, trace_method=method), g)


def _normalized_curve(d: SpectralDensity, cfg: Sankar2021Config) -> tuple[np.ndarray, np.ndarray]:
    grid = d.grid(cfg.grid_points, cfg.range_margin)
    phi = d.evaluate(grid, _sigma(d, cfg))
    lo, hi = d.spectral_range()
    w = hi - lo if hi > lo else 1.0
    return ((grid - lo) / w).numpy(), (phi * w).numpy()


def _measure(
    net: nn.Module, data: tuple[torch.Tensor, torch.Tensor], cfg: Sankar2021Config, key: int
) -> dict[str, Any]:
    """Full and layerwise SLQ densities, λ_max, traces and distances at ``net``'s weights.

    ``seconds`` is the densities' and traces' own wall time.
    """
    model = copy.deepcopy(net).to(_dtype(cfg)).eval()
    H = hessian(model, "ce", data)
    blocks = H.blocks(weights_only=True)
    ops: dict[str, Any] = {"full": H, **blocks}
    dens: dict[str, SpectralDensity] = {}
    out: dict[str, Any] = {"lmax": {}, "lmax_residual": {}, "trace": {}, "trace_se": {}}
    s = Settings(num_steps=cfg.num_steps, num_probes=cfg.num_probes)
    seconds = 0.0
    for j, (name, op) in enumerate(ops.items()):
        d = measure("density", op, s, _gen(key, j, 1))
        dens[name] = d
        top = int(torch.argmax(d.nodes.flatten()))
        out["lmax"][name] = float(d.nodes.flatten()[top])
        out["lmax_residual"][name] = float(d.ritz_residuals.flatten()[top])
        tr = _trace(op, cfg, _gen(key, j, 2))
        se = tr.stderr
        out["trace"][name] = float(tr.value)
        out["trace_se"][name] = float(se) if se is not None and math.isfinite(se) else 0.0
        seconds += d.seconds + tr.seconds
    full = dens["full"]
    out["distances"] = {
        "w1": {
            n: spectrum_w1(dens[n], full, normalize=cfg.w1_normalize)  # type: ignore[arg-type]
            for n in blocks
        },
        "sankar": {
            n: sankar_density_distance(
                dens[n],
                full,
                cfg.grid_points,
                cfg.sigma_rel * _union_width(dens[n], full),
                margin=cfg.range_margin,
            )
            for n in blocks
        },
    }
    out["sigma_full"] = _sigma(full, cfg)
    out["densities"] = dens
    out["operator"] = H
    out["layer_sizes"] = {n: int(op.shape[0]) for n, op in blocks.items()}
    out["P"] = int(H.shape[0])
    out["seconds"] = seconds
    return out


def _union_width(a: SpectralDensity, b: SpectralDensity) -> float:
    lo = min(a.spectral_range()[0], b.spectral_range()[0])
    hi = max(a.spectral_range()[1], b.spectral_range()[1])
    return hi - lo if hi > lo else 1.0

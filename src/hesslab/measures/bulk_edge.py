"""The bulk edge of a spectrum from its eigenvalue counting function (SLQ or exact).

The rule behind :func:`hesslab.count_outliers` ``method="density"``; see its docstring.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["density_rule"]


def _spacing_ratios(v: Tensor, n: Tensor, window: float, rel_floor: float,
                    max_count: float) -> Tensor:  # fmt: skip
    """``r_i = (θ_i − θ_{i+1}) / s_i`` for the top values ``θ`` (decreasing) of counts ``n``.

    ``s_i`` is the mean eigenvalue spacing just below the gap: the distance from
    ``θ_{i+1}`` down to the first node ``θ_j`` that closes ``window`` eigenvalues, over
    the number of eigenvalues it spans (half of each end node's count: the mass of a
    quadrature node sits around it). NaN where the rule does not look: fewer than
    ``window`` eigenvalues below, the gap's foot below ``rel_floor·θ_1``, or more than
    ``max_count`` eigenvalues above.
    """
    m = v.numel()
    r = torch.full((max(m - 1, 0),), math.nan, dtype=torch.float64)
    if m < 3 or float(v[0]) <= 0:
        return r
    above = torch.cumsum(n, 0)
    floor = rel_floor * float(v[0])
    for i in range(m - 2):
        if float(above[i]) > max_count + 0.5 or float(v[i + 1]) <= floor:
            break
        below = above[i + 2 :] - above[i]  # eigenvalues in nodes i+1..j
        j = int(torch.searchsorted(below, torch.tensor(float(window), dtype=torch.float64)))
        if j >= below.numel():
            break
        span = float(below[j]) - 0.5 * float(n[i + 1]) - 0.5 * float(n[i + 2 + j])
        s = (float(v[i + 1]) - float(v[i + 2 + j])) / max(span, 1e-300)
        mass = max(1.0, 0.5 * (float(n[i]) + float(n[i + 1])))  # eigenvalues the gap holds
        r[i] = (float(v[i]) - float(v[i + 1])) / (s * mass) if s > 0 else math.inf
    return r


def _edge_of(v: Tensor, n: Tensor, r: Tensor, kappa: float) -> tuple[float, float]:
    """Bulk edge and the count above it for the ratio threshold ``kappa``.

    The edge is the lowest gap with ``r_i ≥ kappa`` (everything above it stands apart);
    without one it is the top value (count 0).
    """
    hit = torch.nonzero(r >= kappa).reshape(-1)
    if not hit.numel():
        return float(v[0]), 0.0
    i = int(hit.max())
    return 0.5 * (float(v[i]) + float(v[i + 1])), float(n[: i + 1].sum())


def _pooled(probes: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The probe-averaged measure: every probe's nodes with counts ``n / K``, decreasing."""
    K = len(probes)
    v = torch.cat([p[0] for p in probes])
    n = torch.cat([p[1] for p in probes]) / K
    order = torch.argsort(v, descending=True, stable=True)
    return v[order], n[order]


Rule = tuple[Tensor, tuple[float, float], float, float]


def _rule(v: Tensor, n: Tensor, kappa: float, margin: float, window: float,
          rel_floor: float, cap: float) -> Rule:  # fmt: skip
    """Ratios, (edge, count) at ``kappa``, and the counts at ``kappa·margin``, ``kappa/margin``."""
    r = _spacing_ratios(v, n, window, rel_floor, cap)
    return (r, _edge_of(v, n, r, kappa), _edge_of(v, n, r, kappa * margin)[1],
            _edge_of(v, n, r, kappa / margin)[1])  # fmt: skip


def density_rule(
    probes: list[tuple[Tensor, Tensor]], P: int, exact: bool, kappa: float, window: float,
    rel_floor: float, max_count: int | None, margin: float,
) -> tuple[int, float, Tensor, Tensor, dict[str, Any], int, int]:  # fmt: skip
    """The ``"density"`` rule of :func:`hesslab.count_outliers`.

    The count and edge come from the probe-averaged measure (the SLQ estimate of the
    spectral measure, least noisy); each probe alone gives an edge and a count, whose
    spread (standard error over probes) and extremes, with those of the pooled measure
    at ``kappa·margin`` and ``kappa/margin``, give the range.

    Returns:
        ``(count, edge, ratios, values, info, low, high)``: ``ratios`` and ``values`` of
        the pooled measure, decreasing.
    """
    cap = float(max_count) if max_count is not None else max(1.0, math.ceil(math.sqrt(P)))
    v, n = _pooled(probes)
    ratios, (edge, mass), lo_mass, hi_mass = _rule(v, n, kappa, margin, window, rel_floor, cap)
    per = [_rule(pv, pn, kappa, margin, window, rel_floor, cap)[1] for pv, pn in probes]
    K = len(probes)
    e = torch.tensor([p[0] for p in per], dtype=torch.float64)
    c = torch.tensor([p[1] for p in per], dtype=torch.float64)
    count = round(mass)
    low = min(count, round(lo_mass), round(float(c.min())))
    high = max(count, round(hi_mass), round(float(c.max())))
    spread = 0.0 if exact else math.nan
    info: dict[str, Any] = {
        "kappa": kappa, "window": window, "rel_floor": rel_floor, "margin": margin,
        "max_count": cap, "num_probes": K, "exact": exact, "count_mass": mass,
        "probe_counts": c.tolist(), "probe_edges": e.tolist(),
        "count_stderr": float(c.std() / math.sqrt(K)) if K > 1 else spread,
        "edge_stderr": float(e.std() / math.sqrt(K)) if K > 1 else spread,
    }  # fmt: skip
    if count == 0:
        info["widest_spacing_ratio"] = float(torch.nan_to_num(ratios, nan=0.0).max()) if (
            ratios.numel()
        ) else 0.0  # fmt: skip
    return count, edge, ratios, v, info, low, high

"""Spectra of the sagun2017 reproduction.

Dense or Lanczos eigenvalues of the Hessian or Gauss–Newton matrix, the outlier count
(:func:`hesslab.count_outliers`) and bulk statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from hesslab.data.datasets import Split
from hesslab.experiments.sagun2017.config import Sagun2017Config
from hesslab.experiments.sagun2017.train import _mixture, _model, _train_gd
from hesslab.measures.spectrum import OutlierCount, count_outliers
from hesslab.operators import ggn, hessian


def count_outliers_eigengap(
    values: Any, max_count: int, *, rel_floor: float = 1e-3, margin: float = 1.25
) -> tuple[int, float]:
    """Number of outliers by the log-eigengap rule (``count_outliers(method="gap")``).

    The rule of earlier versions of this reproduction, kept for comparison only: the
    reproduction counts with hesslab's one rule (``method="density"``, :func:`_count`).
    The count searched in ``1..max_count``; the bulk edge is the lowest gap that cannot
    be told from the widest (``margin``). Returns ``(count, λ_count / λ_count+1)``
    (``(0, nan)`` without a gap or with fewer than two positive eigenvalues).
    """
    v = torch.as_tensor(values).detach().to("cpu", torch.float64).reshape(-1)
    if int((v > 0).sum()) < 2:
        return 0, float("nan")
    r = count_outliers(v, method="gap", max_count=max_count, rel_floor=rel_floor, margin=margin)
    return r.count, (float(r.gaps[r.count - 1]) if r.count else float("nan"))


def _count(values: Any, max_count: int, rel_floor: float, margin: float) -> OutlierCount:
    """The one outlier rule of hesslab (:func:`hesslab.count_outliers`, ``method="density"``)."""
    v = torch.as_tensor(values).detach().to("cpu", torch.float64)
    return count_outliers(
        v, method="density", max_count=max_count, rel_floor=rel_floor, margin=margin,
        dimension=v.numel(),
    )  # fmt: skip


def _outliers(cfg: Sagun2017Config, values: Any, k: int) -> OutlierCount:
    """The outlier count used everywhere in this reproduction."""
    return _count(values, _max_count(cfg, k), cfg.outlier_floor, cfg.outlier_margin)


def _max_count(cfg: Sagun2017Config, k: int) -> int:
    return max(1, math.ceil(cfg.outlier_search * k))


def _spectrum(
    cfg: Sagun2017Config,
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    *,
    which: str = "hessian",
    vectors: bool = False,
    top: int | None = None,
    seed: int = 0,
    dense: bool = False,
) -> dict[str, Any]:
    """Eigenvalues (descending) of the Hessian or GGN: dense ``eigh`` or Lanczos top-``top``.

    Dense (exact, float64) when ``P <= cfg.dense_max`` or ``dense`` (bulk statistics
    need every eigenvalue); Lanczos top-``top`` otherwise.
    """
    from hesslab.linalg.lanczos import eigenpairs

    make = hessian if which == "hessian" else ggn
    op = make(model, cfg.loss, data)
    P = op.shape[0]
    exact = dense or P <= cfg.dense_max
    k = P if exact else min(P, top or cfg.digits_top)
    res = eigenpairs(
        op, k, which="largest", tol=cfg.lanczos_tol, method="dense" if exact else "lanczos",
        generator=torch.Generator().manual_seed(seed), return_vectors=vectors,
    )  # fmt: skip
    method = "dense eigh"
    if not exact:
        method = f"lanczos top-{k} ({res.num_matvecs} matvecs, "
        method += f"{int(res.converged.sum())}/{k} converged)"
    out = {"values": res.values.to(torch.float64).cpu(), "method": method, "exact": exact}
    if not exact:
        out["converged"] = bool(res.converged.all())
    if vectors:
        out["vectors"] = res.vectors.to(torch.float64).cpu()
    out["P"] = P
    out["seconds"] = res.seconds
    return out


def _lambda_max(
    cfg: Sagun2017Config, model: nn.Module, data: tuple[Tensor, Tensor], seed: int
) -> float:
    """Largest Hessian eigenvalue by Lanczos (a few dozen products instead of ``P``)."""
    from hesslab.linalg.lanczos import eigenpairs

    res = eigenpairs(
        hessian(model, cfg.loss, data), 1, which="largest", tol=cfg.lanczos_tol,
        generator=torch.Generator().manual_seed(seed), return_vectors=False,
    )  # fmt: skip
    return float(res.values[0])


def _bulk_stats(values: Tensor, count: int, near_zero_tol: float) -> dict[str, float]:
    v = values.to(torch.float64)
    bulk = v[count:]
    return {
        "bulk_edge": float(bulk[0]) if bulk.numel() else float("nan"),
        "lambda_min": float(v[-1]),
        "bulk_width": float(bulk[0] - bulk[-1]) if bulk.numel() else float("nan"),
        "near_zero": int((v.abs() <= near_zero_tol).sum()),
        "near_zero_fraction": float((v.abs() <= near_zero_tol).double().mean()),
    }


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{float(x):.3g}" for x in values)


def _leading(flags: Tensor) -> int:
    """How many leading entries of a boolean vector are true."""
    bad = (~flags).nonzero()
    return int(bad[0]) if bad.numel() else int(flags.numel())


class TrainedSpectrum(NamedTuple):
    """One mixture run: its data, training result, exact spectrum and outlier count."""

    split: Split
    res: Any
    spec: dict[str, Any]
    values: Tensor
    outliers: OutlierCount
    count: int
    gap: float
    bulk: dict[str, float]


def _trained_spectrum(
    cfg: Sagun2017Config, k: int, seed: int, *, separation: float | None = None
) -> TrainedSpectrum:
    """Train on one k-class mixture, take its exact spectrum and count the outliers."""
    split = _mixture(cfg, k, seed, separation=separation)
    res = _train_gd(cfg, _model(cfg, cfg.dim, cfg.widths, k, seed), split)
    spec = _spectrum(cfg, res.model, split.train.tensors, seed=seed, dense=True)
    v = spec["values"]
    oc = _outliers(cfg, v, k)
    n, gap = oc.count, (float(oc.gaps[oc.count - 1]) if oc.count else math.nan)
    return TrainedSpectrum(split, res, spec, v, oc, n, gap, _bulk_stats(v, n, cfg.near_zero_tol))

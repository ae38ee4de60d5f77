"""Distances between Hessian spectra (e.g. a layer's block vs the full Hessian).

Two measures, for Sankar et al. (AAAI 2021, arXiv:2012.03801; PAPERS.md §5), who compare
each layerwise Hessian's spectrum with the full Hessian's:

* :func:`spectrum_w1` -- the principled one: the 1-Wasserstein distance between the two
  **eigenvalue distributions** (discrete measures ``(1/P) sum_i delta_{lambda_i}`` or
  their SLQ estimates), each first mapped to a normalized axis so that spectra of very
  different scale (a layer block vs the full Hessian) can be compared by shape.
* :func:`sankar_density_distance` -- **the Sankar et al. code's variant**, kept for
  faithful reproduction: both spectra are Gaussian-broadened into density curves on a
  common grid, and ``scipy.stats.wasserstein_distance`` is applied to the two arrays of
  **density values** (treated as samples). This is not a distance between the spectra as
  distributions over eigenvalues -- it compares the histograms of density heights, is
  blind to where on the axis the mass sits, and depends on the grid and ``sigma`` -- but
  it is what their numbers were computed with.

And one for Zhang et al. (NeurIPS 2024, arXiv:2402.16788), who compare the blocks of a
network with each other: :func:`spectrum_js`, the Jensen-Shannon distance between two
Gaussian-broadened densities on a common grid.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg.density import wasserstein1

__all__ = ["as_measure", "sankar_density_distance", "spectrum_js", "spectrum_w1"]

logger = logging.getLogger(__name__)

#: Kernel width relative to the spectral width (Ghorbani et al., 2019: sigma^2 = 1e-5).
_SIGMA_REL = math.sqrt(1e-5)


def as_measure(x: Any) -> tuple[Tensor, Tensor]:
    """``(nodes, weights)`` (float64 CPU, weights summing to 1) of a spectrum.

    Accepts exact eigenvalues (tensor, array or list: uniform weights ``1/P``), an object
    with ``nodes_and_weights()`` (e.g. :class:`~hesslab.SpectralDensity`), or a tuple
    ``(nodes, weights)``.
    """
    if hasattr(x, "nodes_and_weights"):
        nodes, weights = x.nodes_and_weights()
    elif isinstance(x, tuple) and len(x) == 2:
        nodes, weights = x
    else:
        nodes, weights = x, None
    nodes = torch.as_tensor(nodes, dtype=torch.float64).detach().flatten().cpu()
    if nodes.numel() == 0:
        raise ConfigurationError("a spectrum needs at least one eigenvalue or node")
    if not bool(torch.isfinite(nodes).all()):
        raise ConfigurationError("the spectrum has NaN or infinite eigenvalues/nodes")
    if weights is None:
        weights = torch.full_like(nodes, 1.0 / nodes.numel())
    weights = torch.as_tensor(weights, dtype=torch.float64).detach().flatten().cpu()
    if weights.shape != nodes.shape or bool((weights < 0).any()) or not weights.sum() > 0:
        raise ConfigurationError(
            "weights must be nonnegative, with a positive sum and one per node; pass "
            "(nodes, weights) of equal length"
        )
    return nodes, weights / weights.sum()


def _normalize(nodes: Tensor, how: str | None) -> Tensor:
    if how is None:
        return nodes
    if how == "width":
        lo, hi = float(nodes.min()), float(nodes.max())
        return (nodes - lo) / (hi - lo) if hi > lo else nodes - lo
    if how == "scale":
        s = float(nodes.abs().max())
        return nodes / s if s > 0 else nodes
    raise ConfigurationError(f"normalize must be 'width', 'scale' or None, got {how!r}")


def spectrum_w1(
    a: Any,
    b: Any,
    normalize: Literal["width", "scale"] | None = "width",
) -> float:
    """1-Wasserstein distance between two eigenvalue distributions on a normalized axis.

    ``W1(mu_a, mu_b) = integral |F_a(x) - F_b(x)| dx`` (exact, :func:`hesslab.wasserstein1`)
    between the spectral measures ``mu = sum_j w_j delta_{x_j}``, after each is mapped to
    a normalized axis by ``normalize``:

    * ``"width"`` (default): ``x -> (x - min) / (max - min)`` with the measure's own
      support, so both live on ``[0, 1]`` and the distance (in ``[0, 1]``) compares shapes
      only -- invariant to shifting and positively rescaling either spectrum.
    * ``"scale"``: ``x -> x / max|x|``, keeps zero fixed (a bulk at zero stays at zero) and
      compares shapes up to scale; in ``[0, 2]``.
    * ``None``: raw units (``lambda``).

    Args:
        a: exact eigenvalues (``[P]``, uniform weights), a
            :class:`~hesslab.SpectralDensity` (its ``nodes_and_weights()``), or
            ``(nodes, weights)``.
        b: the same for the other spectrum (e.g. the full Hessian's).
        normalize: ``"width"``, ``"scale"`` or ``None``.

    Returns:
        The distance (float).

    Reference: the principled alternative to the Sankar et al. (2021) layer-vs-full
    comparison (PAPERS.md §5); see :func:`sankar_density_distance` for theirs.
    """
    xa, wa = as_measure(a)
    xb, wb = as_measure(b)
    return wasserstein1(_normalize(xa, normalize), wa, _normalize(xb, normalize), wb)


def _broadened(x: Tensor, w: Tensor, grid: Tensor, sigma: float) -> Tensor:
    out = torch.zeros(grid.numel(), dtype=torch.float64)
    g = grid.reshape(-1, 1)
    for s in range(0, x.numel(), 4096):
        z = (g - x[s : s + 4096]) / sigma
        out += (torch.exp(-0.5 * z * z) * w[s : s + 4096]).sum(dim=1)
    return out / (sigma * math.sqrt(2 * math.pi))


def sankar_density_distance(
    density_a: Any,
    density_b: Any,
    grid: Tensor | np.ndarray | int = 1024,
    sigma: float | None = None,
    *,
    margin: float = 0.05,
    method: Literal["values", "l1"] = "values",
) -> float:
    """**Sankar et al. (2021) code's variant**: distance between broadened density VALUES.

    Both spectra are turned into Gaussian-broadened densities
    ``phi(x) = sum_j w_j N(x; x_j, sigma^2)`` evaluated on one common grid
    ``x_1..x_G``. Then:

    * ``method="values"`` (default, as in their code):
      ``scipy.stats.wasserstein_distance(phi_a(x_1..x_G), phi_b(x_1..x_G))``, i.e. the
      1-Wasserstein distance between the two *empirical distributions of density heights*
      (each array treated as G samples). The grid positions are discarded, so two spectra
      whose densities are mirror images or shifted copies can be at distance 0; the value
      depends on ``grid`` and ``sigma``. Use it to compare with their numbers only.
    * ``method="l1"``: ``sum_g |phi_a(x_g) - phi_b(x_g)| dx``, the L1 distance between the
      curves (a proper distance between the smoothed densities, in ``[0, 2]``).

    For a principled comparison of eigenvalue distributions use :func:`spectrum_w1`.

    Args:
        density_a: a :class:`~hesslab.SpectralDensity`, exact eigenvalues, or
            ``(nodes, weights)``.
        density_b: the same for the other spectrum.
        grid: the grid points (1-D), or their number ``G`` (default 1,024 as in their
            code): evenly spaced over the union of both supports widened by
            ``margin * width`` on each side.
        sigma: kernel width (default ``sqrt(1e-5) * width`` of the union of supports).
        margin: relative widening of the default grid (their code widens the range 5%).
        method: ``"values"`` (their variant) or ``"l1"``.

    Returns:
        The distance (float).

    Reference: Sankar, Khasbage, Vigneswaran, Balasubramanian (AAAI 2021),
    arXiv:2012.03801, public code (PAPERS.md §5).
    """
    xa, wa = as_measure(density_a)
    xb, wb = as_measure(density_b)
    lo = min(float(xa.min()), float(xb.min()))
    hi = max(float(xa.max()), float(xb.max()))
    width = hi - lo if hi > lo else max(1.0, abs(hi))
    if isinstance(grid, (int, np.integer)):
        if grid < 2:
            raise ConfigurationError(f"grid must have at least 2 points, got {grid}")
        g = torch.linspace(lo - margin * width, hi + margin * width, int(grid), dtype=torch.float64)
    else:
        g = torch.as_tensor(grid, dtype=torch.float64).flatten().cpu()
        if g.numel() < 2:
            raise ConfigurationError("grid must have at least 2 points")
    if sigma is None:
        sigma = _SIGMA_REL * width
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ConfigurationError(f"sigma must be a positive number, got {sigma}")
    pa, pb = _broadened(xa, wa, g, sigma), _broadened(xb, wb, g, sigma)
    if method == "values":
        from scipy.stats import wasserstein_distance

        return float(wasserstein_distance(pa.numpy(), pb.numpy()))
    if method == "l1":
        dx = torch.diff(g)
        mid = 0.5 * ((pa - pb).abs()[1:] + (pa - pb).abs()[:-1])
        return float((mid * dx).sum())
    raise ConfigurationError(f"method must be 'values' or 'l1', got {method!r}")


def spectrum_js(
    a: Any,
    b: Any,
    grid: int = 1024,
    sigma_rel: float = 0.01,
    *,
    normalize: Literal["width", "scale"] | None = None,
    margin: float = 0.05,
) -> float:
    """Jensen-Shannon distance between two Gaussian-broadened spectral densities.

    Each spectrum ``mu = sum_j w_j delta_{x_j}`` (after mapping its axis by
    ``normalize``, as in :func:`spectrum_w1`; ``None`` keeps raw eigenvalues, so a block
    whose eigenvalues are 100x smaller than another's is far from it) is broadened into
    ``phi(x) = sum_j w_j N(x; x_j, sigma^2)`` on ``grid`` evenly spaced points over the
    union of both supports widened by ``margin`` of its width on each side, with
    ``sigma = sigma_rel * width``; the two curves are normalised to probability vectors
    ``p``, ``q`` over the grid and

    ``JS(p, q) = sqrt( KL(p || m) / 2 + KL(q || m) / 2 )``, ``m = (p + q) / 2``,

    with base-2 logarithms, so the distance lies in ``[0, 1]`` (0: equal curves, 1:
    disjoint supports) and is a metric (Endres & Schindelin, 2003).

    Args:
        a: exact eigenvalues, a :class:`~hesslab.SpectralDensity`, or ``(nodes, weights)``.
        b: the same for the other spectrum.
        grid: number of grid points (>= 2).
        sigma_rel: kernel width relative to the width of the union of supports.
        normalize: ``None`` (raw eigenvalues), ``"width"`` or ``"scale"``.
        margin: relative widening of the grid.

    Returns:
        The distance (float).

    Reference: Zhang, Chen, Ding, Li, Sun, Luo (NeurIPS 2024), "Why Transformers Need
    Adam: A Hessian Perspective", arXiv:2402.16788 (JS distances between blockwise SLQ
    densities).
    """
    if grid < 2:
        raise ConfigurationError(f"grid must have at least 2 points, got {grid}")
    if not (sigma_rel > 0 and math.isfinite(sigma_rel)):
        raise ConfigurationError(f"sigma_rel must be a positive number, got {sigma_rel}")
    xa, wa = as_measure(a)
    xb, wb = as_measure(b)
    xa, xb = _normalize(xa, normalize), _normalize(xb, normalize)
    lo = min(float(xa.min()), float(xb.min()))
    hi = max(float(xa.max()), float(xb.max()))
    width = hi - lo if hi > lo else max(1.0, abs(hi))
    g = torch.linspace(lo - margin * width, hi + margin * width, int(grid), dtype=torch.float64)
    sigma = sigma_rel * width
    p, q = _broadened(xa, wa, g, sigma), _broadened(xb, wb, g, sigma)
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(u: Tensor) -> float:
        keep = (u > 0) & (m > 0)  # m > 0 wherever u > 0, unless u underflowed to a denormal
        return float((u[keep] * torch.log2(u[keep] / m[keep])).sum())

    return math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))

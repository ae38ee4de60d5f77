"""Measures of a spectrum: number of outliers beyond the bulk, and effective rank.

The Hessian of a trained classifier has a bulk of eigenvalues near zero and a few large
outliers, about one per class (``k`` or ``k - 1`` for ``k`` classes; Sagun et al., 2017;
Papyan, 2018). :func:`count_outliers` counts them from eigenvalues (top-``k`` from
:func:`hesslab.eigenpairs` or a full ``eigvalsh``) or from a spectral density;
:func:`effective_rank` summarises how many directions carry the spectrum's mass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg.results import rounding_floor
from hesslab.measures.bulk_edge import density_rule

__all__ = ["OutlierCount", "count_outliers", "effective_rank"]

#: Consistency constant that turns a MAD into a standard deviation for Gaussian data.
MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class OutlierCount:
    """Result of :func:`count_outliers`.

    Attributes:
        count: number of eigenvalues above the bulk.
        threshold: eigenvalues ``> threshold`` are the outliers: the bulk edge
            (``"density"``: the midpoint of the edge gap, the probes' standard error in
            ``info["edge_stderr"]``; ``"gap"``: midpoint of the chosen gap; ``"edge"``:
            ``median + c * MAD``).
        method: ``"density"``, ``"gap"`` or ``"edge"``.
        gaps: ``"density"``: the ratios ``r_i`` of each gap to the local eigenvalue
            spacing (NaN where not examined); ``"gap"``: the ratios
            ``lambda_i / max(lambda_{i+1}, floor)`` of the candidates; ``"edge"``: the
            distances of the top values above the edge in units of the bulk scale.
            Largest eigenvalue first, float64 CPU tensor.
        values: the eigenvalues (or pooled Ritz nodes) examined, decreasing (float64,
            CPU), with the values that are zero within their error bound set to 0.
        info: rule parameters (``kappa``, ``window``, ``min_ratio``, ``margin``, ``c``,
            ...) and, for ``"density"``, ``probe_counts``, ``probe_edges``,
            ``count_stderr`` and ``edge_stderr`` (NaN for one probe, 0 when exact).
        low: smallest plausible count (``"density"``: over the probes and with
            ``kappa·margin``; ``"gap"``: the counts of every gap the rule cannot tell
            from the chosen one; ``"edge"``: with ``c·margin``).
        high: largest plausible count (``low <= count <= high``).
    """

    count: int
    threshold: float
    method: str
    gaps: Tensor
    values: Tensor
    info: dict[str, Any]
    low: int = -1
    high: int = -1

    def __post_init__(self) -> None:
        if self.low < 0:
            object.__setattr__(self, "low", self.count)
        if self.high < 0:
            object.__setattr__(self, "high", self.count)

    def __int__(self) -> int:
        return self.count

    @property
    def text(self) -> str:
        """The count in words: ``"9"``, or ``"9 (plausible 5-9)"`` when uncertain.

        A refusal reads ``"0 (no gap ≥ 8 local spacings; widest 3.1)"`` (``"density"``)
        or ``"0 (no eigengap ≥ 2; widest 1.24)"`` (``"gap"``): a spectrum that decays
        without a gap has no outliers *by this rule*.
        """
        out = str(self.count) if self.low == self.high else (
            f"{self.count} (plausible {self.low}-{self.high})"
        )  # fmt: skip
        if self.count == 0 and "widest_ratio" in self.info:
            out += (
                f" (no eigengap ≥ {self.info['min_ratio']:g}; widest "
                f"{self.info['widest_ratio']:.3g})"
            )
        if self.count == 0 and "widest_spacing_ratio" in self.info:
            out += (
                f" (no gap ≥ {self.info['kappa']:g} local spacings; widest "
                f"{self.info['widest_spacing_ratio']:.3g})"
            )
        return out


def _as_values(x: Any) -> Tensor:
    if isinstance(x, Tensor):
        v = x.detach().to("cpu", torch.float64)
    elif isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        v = torch.as_tensor(np.asarray(x, dtype=np.float64))
    else:
        raise ConfigurationError(
            f"expected eigenvalues as a tensor, array or list, got {type(x).__name__}"
        )
    v = v.reshape(-1)
    if v.numel() == 0:
        raise ConfigurationError("got no eigenvalues; pass at least two values")
    if not bool(torch.isfinite(v).all()):
        raise ConfigurationError("eigenvalues contain NaN or inf; check the eigensolver's result")
    return v


def _density_to_values(density: Any, dimension: int | None) -> Tensor:
    """Quantiles of a spectral density (nodes + weights) as ``P`` representative values."""
    if isinstance(density, tuple) and len(density) == 2:
        nodes, weights = density
    else:
        nodes, weights = getattr(density, "nodes", None), getattr(density, "weights", None)
    if nodes is None or weights is None:
        raise ConfigurationError(
            "pass eigenvalues (tensor/array), a (nodes, weights) pair, or a density object "
            "with .nodes and .weights"
        )
    x = torch.as_tensor(nodes).detach().to("cpu", torch.float64).reshape(-1)
    w = torch.as_tensor(weights).detach().to("cpu", torch.float64).reshape(-1)
    if x.shape != w.shape or x.numel() == 0:
        raise ConfigurationError(f"nodes and weights must match, got {x.shape} and {w.shape}")
    P = dimension
    if P is None:
        P = getattr(density, "dimension", None) or getattr(density, "P", None)
    if P is None:
        raise ConfigurationError("counting outliers from a density needs dimension=P")
    order = torch.argsort(x)
    x, w = x[order], w.clamp_min(0)[order]
    cdf = torch.cumsum(w, 0) / w.sum()
    q = (torch.arange(int(P), dtype=torch.float64) + 0.5) / int(P)
    idx = torch.searchsorted(cdf, q).clamp_max(x.numel() - 1)
    return x[idx]


def _zeroed(v: Tensor, errors: Any, zero_tol: float | None) -> tuple[Tensor, Tensor]:
    """``v`` with the values within their error bound of zero set to 0, and the bounds.

    Bounds: ``errors`` (per value, e.g. Ritz residual norms ``‖Hu − θu‖ ≥ |λ − θ|``), else
    ``zero_tol``, else the rounding bound ``n·ε·max|λ|`` of a dense symmetric eigensolver.
    """
    n = v.numel()
    if errors is not None:
        e = _as_values(errors).abs()
        if e.numel() != n:
            raise ConfigurationError(f"errors must match the {n} eigenvalues, got {e.numel()}")
    else:
        tol = zero_tol if zero_tol is not None else n * torch.finfo(torch.float64).eps * float(
            v.abs().max()
        )  # fmt: skip
        e = torch.full_like(v, float(tol))
    return torch.where(v.abs() <= e, torch.zeros_like(v), v), e


def _gap_count(v: Tensor, e: Tensor, min_ratio: float, rel_floor: float, max_count: int | None,
               margin: float) -> OutlierCount:  # fmt: skip
    """The gap rule on sorted (decreasing) values ``v`` with error bounds ``e``."""
    top = float(v[0])
    info: dict[str, Any] = {"min_ratio": min_ratio, "rel_floor": rel_floor, "margin": margin}
    empty = torch.zeros(0, dtype=torch.float64)
    if top <= 0 or v.numel() < 2:
        return OutlierCount(0, top, "gap", empty, v, info)
    floor = rel_floor * top
    info["floor"] = floor
    k = int((v[:-1] > floor).sum())
    if max_count is not None:
        k = min(k, int(max_count))
    if k == 0:
        return OutlierCount(0, top, "gap", empty, v, info)
    ratios = v[:k] / v[1 : k + 1].clamp_min(floor)
    hi = (v[:k] + e[:k]) / (v[1 : k + 1] - e[1 : k + 1]).clamp_min(floor)
    lo = (v[:k] - e[:k]).clamp_min(0) / (v[1 : k + 1] + e[1 : k + 1]).clamp_min(floor)
    if float(hi.max()) < min_ratio:
        # no gap qualifies; one within the margin of qualifying makes the refusal
        # uncertain: the count it would give is the top of the plausible range
        info["widest_ratio"] = float(hi.max())
        near = torch.nonzero(hi >= min_ratio / margin).reshape(-1)
        high = int(near.max()) + 1 if near.numel() else 0
        return OutlierCount(0, top, "gap", ratios, v, info, low=0, high=high)
    # every gap the widest cannot be told from (error bounds, then the margin) is a
    # candidate bulk edge; the bulk edge is the lowest of them (everything above it stands
    # apart from the bulk), and the others give the plausible range of the count
    near = torch.nonzero(hi >= max(min_ratio, float(lo.max()) / margin)).reshape(-1)
    count = int(near.max()) + 1
    low = int(near.min()) + 1 if float(lo.max()) >= min_ratio else 0
    threshold = 0.5 * (float(v[count - 1]) + float(v[count]))
    return OutlierCount(count, threshold, "gap", ratios, v, info, low=low, high=count)


# -- the bulk edge from the spectral density (the one meaning of "outlier") ------------


def _probe_measures(x: Any, dimension: int | None, errors: Any, zero_tol: float | None
                    ) -> tuple[list[tuple[Tensor, Tensor]], int, bool]:  # fmt: skip
    """Per probe: (values, eigenvalue counts) sorted decreasing, ``P``, and exactness.

    Eigenvalues (tensor, array, list): one "probe" whose every value counts 1 (values zero
    within their error set to 0). A :class:`~hesslab.SpectralDensity`: each probe's Ritz
    nodes with the counts ``P·w`` of :meth:`~hesslab.SpectralDensity.probe_weights`
    (converged nodes count exactly 1) plus the deflated eigenvalues (1 each). A
    ``(nodes, weights)`` pair or an object with ``.nodes``/``.weights``: one probe.
    """
    if isinstance(x, (Tensor, np.ndarray, list)):
        v, _ = _zeroed(_as_values(x), errors, zero_tol)
        v = torch.sort(v, descending=True).values
        return [(v, torch.ones_like(v))], int(v.numel()) if dimension is None else dimension, True
    if errors is not None:
        raise ConfigurationError("errors go with eigenvalues, not with a density")
    if hasattr(x, "probe_weights") and hasattr(x, "outliers"):
        P = int(x.dimension)
        nodes, counts = x.nodes.to(torch.float64), P * x.probe_weights().to(torch.float64)
        defl = x.outliers.to("cpu", torch.float64).reshape(-1)
        out = []
        for k in range(nodes.shape[0]):
            keep = counts[k] > 0
            v = torch.cat([nodes[k][keep].cpu(), defl])
            n = torch.cat([counts[k][keep].cpu(), torch.ones_like(defl)])
            order = torch.argsort(v, descending=True)
            out.append((v[order], n[order]))
        return out, P, False
    nodes, weights = x if isinstance(x, tuple) and len(x) == 2 else (
        getattr(x, "nodes", None), getattr(x, "weights", None)
    )  # fmt: skip
    if nodes is None or weights is None:
        raise ConfigurationError(
            "pass eigenvalues (tensor/array), a SpectralDensity, a (nodes, weights) pair, "
            "or an object with .nodes and .weights"
        )
    P = dimension or getattr(x, "dimension", None) or getattr(x, "P", None)
    if P is None:
        raise ConfigurationError("counting outliers from a density needs dimension=P")
    v = torch.as_tensor(nodes).detach().to("cpu", torch.float64).reshape(-1)
    w = torch.as_tensor(weights).detach().to("cpu", torch.float64).reshape(-1)
    if v.shape != w.shape or v.numel() == 0:
        raise ConfigurationError(f"nodes and weights must match, got {v.shape} and {w.shape}")
    keep = w > 0
    v, n = v[keep], int(P) * w[keep] / w.sum()
    order = torch.argsort(v, descending=True)
    return [(v[order], n[order])], int(P), False


def count_outliers(
    values_or_density: Tensor | np.ndarray | Any,
    *,
    method: Literal["density", "gap", "edge"] | None = None,
    kappa: float = 8.0,
    window: float = 20.0,
    min_ratio: float = 2.0,
    rel_floor: float = 1e-3,
    max_count: int | None = None,
    c: float = 10.0,
    dimension: int | None = None,
    margin: float = 1.25,
    errors: Tensor | np.ndarray | None = None,
    zero_tol: float | None = None,
) -> OutlierCount:
    """Count the eigenvalues that stand out above the bulk of a spectrum, with a range.

    Only the top of the spectrum is examined (outliers are large positive eigenvalues).
    First every value within its error bound of zero is set to 0 (``errors``, e.g. Ritz
    residual norms; else ``zero_tol``; else the dense rounding bound ``n·ε·max|λ|``).

    ``method="density"`` (the default; hesslab's one meaning of "outlier": the CLI
    summary, ``analyze``'s report and figures and the experiments use it). The bulk is
    where the spectral measure carries the mass of many eigenvalues; an outlier is an
    eigenvalue standing apart from it. Write the measure as values ``θ₁ ≥ θ₂ ≥ ...`` with
    eigenvalue counts ``nⱼ``: exact eigenvalues count 1 each; a stochastic Lanczos
    quadrature (SLQ) density gives, per probe, its Ritz nodes with ``nⱼ = P·wⱼ`` (a
    converged node counts exactly 1, a bulk node the many eigenvalues it stands for;
    deflated eigenvalues count 1). Below each gap ``θᵢ − θᵢ₊₁`` the local mean eigenvalue
    spacing ``sᵢ`` is the distance from ``θᵢ₊₁`` down to where ``window`` eigenvalues
    are closed, over their number (the inverse of ``P`` times the density there). The
    gap is a bulk edge when ``rᵢ = (θᵢ − θᵢ₊₁)/sᵢ ≥ kappa``: within a bulk consecutive
    spacings are of the local mean spacing (a Marchenko–Pastur edge or a power-law tail
    gives ``r`` of order 1), an eigenvalue beyond it is ``kappa`` mean spacings away. The
    bulk edge is the *lowest* such gap (everything above it stands apart, whether or not
    the outliers are spread among themselves), the count is ``Σ nⱼ`` above it. Gaps
    are looked for only while at most ``max_count`` (default ``⌈√P⌉``) eigenvalues lie
    above and the gap's foot is above ``rel_floor·θ₁`` (a cluster of zeros has spacing
    0). Per probe this gives an edge and a count; :attr:`OutlierCount.threshold` is the
    mean edge (``info["edge_stderr"]`` its standard error over probes), the count the
    rounded mean (``info["count_stderr"]``), and ``low``/``high`` span the probes'
    counts and the counts with ``kappa·margin`` and ``kappa/margin``. With exact
    eigenvalues the same rule has no probe uncertainty. Ghorbani et al. (2019) resolve
    outliers in the SLQ density exactly so: isolated Ritz nodes of weight ``≈ 1/P``
    (one eigenvalue each) apart from the bulk's continuum; Papyan (2020) identifies the
    ``C`` class outliers as eigenvalues separated from the bulk.

    ``method="gap"`` (the log-eigengap rule of earlier versions). Sort
    ``λ₁ ≥ λ₂ ≥ ...``, let ``floor = rel_floor·λ₁`` and, for every candidate ``i`` with
    ``λᵢ > floor`` (and ``i <= max_count``), ``rᵢ = λᵢ / max(λᵢ₊₁, floor)``. No ``rᵢ``
    reaching ``min_ratio`` (within the error bounds): no outliers. Otherwise the gaps that
    cannot be told from the widest one — ``rᵢ`` (at its most favourable within the error
    bounds) at least ``max r / margin`` (at its least favourable) — are the candidate bulk
    edges; the count is the number of eigenvalues above the *lowest* of them, and
    ``low``/``high`` span the counts of all candidates. A refusal (count 0) is uncertain
    when some gap reaches ``min_ratio / margin``: ``high`` is then the count at the lowest
    such gap (e.g. ``"0 (plausible 0-5)"``), so a near-miss is never reported as a certain
    zero, and two gaps of nearly equal width give the same count on every CPU. A
    density is turned into ``P`` quantiles for this rule.

    ``method="edge"`` (robust-scale rule). With the median ``mu`` and the scaled median
    absolute deviation ``sigma = 1.4826·MAD`` of all values, the count is the number of
    values ``> mu + c·sigma`` (``low``/``high``: with ``c·margin`` and ``c/margin``).
    Needs the full spectrum; suits compact bulks. Real Hessian bulks are heavy-tailed at
    the scale of their MAD, so ``"edge"`` over-counts there.

    Args:
        values_or_density: eigenvalues (tensor, array or list; any order), a
            :class:`~hesslab.SpectralDensity` (per-probe nodes and weights), a
            ``(nodes, weights)`` pair or an object with ``.nodes``/``.weights``.
        method: ``"density"`` (default), ``"gap"`` or ``"edge"``.
        kappa: ``"density"``: gap in units of the local eigenvalue spacing that makes a
            bulk edge (default 8).
        window: ``"density"``: eigenvalues over which the spacing is averaged (default
            20; a list of fewer than ``3·window`` eigenvalues, e.g. a Lanczos top-``k``,
            averages over a third of them, so that it can count up to about ``2k/3 − 2``).
        min_ratio: ``"gap"``: smallest ratio that counts as a gap (default 2).
        rel_floor: ``"density"``/``"gap"``: floor relative to ``λ₁`` (default 1e-3).
        max_count: largest count considered (``"density"``: default ``⌈√P⌉``; ``"gap"``:
            all candidates).
        c: ``"edge"``: edge at ``median + c·1.4826·MAD`` (default 10).
        dimension: ``P``, needed when a density is given without a ``dimension`` attribute.
        margin: the factor on ``kappa`` (``"density"``), on the widest gap (``"gap"``) or
            on ``c`` (``"edge"``) that gives the plausible range (default 1.25).
        errors: error bound of each eigenvalue (same order as the values), e.g. Ritz
            residual norms from :func:`hesslab.eigenpairs`.
        zero_tol: one error bound for every value (when ``errors`` is not given).

    Returns:
        :class:`OutlierCount` (``int(result)`` is the count; ``.low``/``.high`` its range).

    Raises:
        ConfigurationError: empty or non-finite input, or bad parameters.

    References:
        Ghorbani, Krishnan, Xiao (2019), "An investigation into neural net optimization
        via Hessian eigenvalue density", ICML, arXiv:1901.10159 (outliers in the SLQ
        density). Papyan (2020), "Traces of class/cross-class structure pervade deep
        learning spectra", JMLR, arXiv:2008.11865. Sagun, Evci, Guney, Dauphin, Bottou
        (2017), arXiv:1706.04454 (bulk and outliers).
    """
    method = "density" if method is None else method
    if not margin >= 1.0:
        raise ConfigurationError(f"margin must be at least 1, got {margin}")
    if method == "density":
        if not (kappa > 1.0 and window >= 1.0 and rel_floor > 0):
            raise ConfigurationError("need kappa > 1, window >= 1 and rel_floor > 0")
        probes, P, exact = _probe_measures(values_or_density, dimension, errors, zero_tol)
        n = probes[0][0].numel()
        if exact and n < 3 * window:  # a short list (Lanczos top-k): a third of it
            window = max(2.0, float(n // 3))
        count, edge, ratios, vals, info, low, high = density_rule(
            probes, P, exact, kappa, window, rel_floor, max_count, margin
        )
        return OutlierCount(count, edge, "density", ratios, vals, info, low=low, high=high)
    if isinstance(values_or_density, (Tensor, np.ndarray, list)):
        v = _as_values(values_or_density)
    else:
        if errors is not None:
            raise ConfigurationError("errors go with eigenvalues, not with a density")
        v = _density_to_values(values_or_density, dimension)
    v, e = _zeroed(v, errors, zero_tol)
    order = torch.argsort(v, descending=True)
    v, e = v[order], e[order]
    if method == "gap":
        if not (min_ratio > 1.0 and rel_floor > 0):
            raise ConfigurationError("need min_ratio > 1 and rel_floor > 0")
        return _gap_count(v, e, min_ratio, rel_floor, max_count, margin)
    if method == "edge":
        return _edge_count(v, c, margin)
    raise ConfigurationError(f"unknown method {method!r}; choose 'density', 'gap' or 'edge'")


def _edge_count(v: Tensor, c: float, margin: float) -> OutlierCount:
    """The ``"edge"`` rule (``median + c·1.4826·MAD``) on decreasing values ``v``."""
    if not c > 0:
        raise ConfigurationError(f"c must be positive, got {c}")
    mu = float(v.median())
    sigma = MAD_TO_STD * float((v - mu).abs().median())
    edge = mu + c * sigma
    count = int((v > edge).sum())
    scale = sigma if sigma > 0 else math.inf
    dist = (v[: max(count, 1)] - edge) / scale
    info = {"c": c, "median": mu, "scale": sigma, "margin": margin}
    low = int((v > mu + c * margin * sigma).sum())
    high = int((v > mu + c / margin * sigma).sum())
    return OutlierCount(count, edge, "edge", dist, v, info, low=low, high=high)


def effective_rank(
    values: Tensor | np.ndarray,
    *,
    method: Literal["entropy", "participation", "threshold"] = "entropy",
    negative: Literal["abs", "clip"] = "abs",
    rtol: float = 1e-3,
    atol: float | None = None,
) -> float:
    """Effective rank of a spectrum ``lambda_1..lambda_n`` (any order).

    Negative eigenvalues are handled explicitly by ``negative``: ``"abs"`` (default) uses
    ``|lambda_i|`` (curvature magnitude in every direction), ``"clip"`` uses
    ``max(lambda_i, 0)`` (positive curvature only). Values that are zero within their
    error, ``|lambda_i| <= atol``, count as exactly 0 (their sign and size are rounding:
    an exact zero eigenvalue computed as ``±1e-17``). With ``w_i`` the resulting weights:

    * ``"entropy"`` (Roy & Vetterli, EUSIPCO 2007): ``exp(-sum_i p_i log p_i)`` with
      ``p_i = w_i / sum_j w_j``; equals ``r`` for ``r`` equal nonzero values.
    * ``"participation"``: participation ratio ``(sum_i w_i)^2 / sum_i w_i^2``; also ``r``
      for ``r`` equal values, and more dominated by the largest ones.
    * ``"threshold"``: number of ``w_i > rtol * max_j w_j`` (an integer, as a float).

    Returns 0.0 when every weight is 0.

    Args:
        values: the eigenvalues (tensor, array or list).
        method: ``"entropy"``, ``"participation"`` or ``"threshold"``.
        negative: ``"abs"`` or ``"clip"``.
        rtol: ``"threshold"``: relative cut.
        atol: absolute error bound of the values, e.g. ``res.error_bounds(P).max()`` of
            an :class:`~hesslab.linalg.results.EigenResult`; default: the float64
            rounding of the largest, ``rounding_floor(max |lambda|, n)`` (which removes
            rounding residues next to a nonzero top, but cannot tell that a spectrum
            that is all rounding noise is zero: pass ``atol`` then).

    Raises:
        ConfigurationError: empty or non-finite input, unknown method or handling, or a
            negative ``atol``.
    """
    v = _as_values(values)
    if atol is None:
        atol = rounding_floor(float(v.abs().max()), v.numel())
    if not atol >= 0:
        raise ConfigurationError(f"atol must be a non-negative error bound, got {atol}")
    v = torch.where(v.abs() <= atol, torch.zeros_like(v), v)
    if negative == "abs":
        w = v.abs()
    elif negative == "clip":
        w = v.clamp_min(0.0)
    else:
        raise ConfigurationError(f"negative must be 'abs' or 'clip', got {negative!r}")
    total = float(w.sum())
    if total == 0.0:
        return 0.0
    if method == "entropy":
        p = w / total
        p = p[p > 0]
        return float(torch.exp(-(p * p.log()).sum()))
    if method == "participation":
        return total * total / float((w * w).sum())
    if method == "threshold":
        if not rtol > 0:
            raise ConfigurationError(f"rtol must be positive, got {rtol}")
        return float((w > rtol * float(w.max())).sum())
    raise ConfigurationError(
        f"unknown method {method!r}; choose 'entropy', 'participation' or 'threshold'"
    )


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(OutlierCount, _display.outlier_summary)

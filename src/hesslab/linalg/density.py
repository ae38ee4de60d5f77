"""Spectral density by stochastic Lanczos quadrature (SLQ), with outlier deflation.

The spectral measure of a symmetric ``A`` with eigenpairs ``(lambda_i, u_i)`` is
``mu = (1/P) sum_i delta_{lambda_i}``. For a random probe ``v`` with ``E[v v^T] = I``,
``mu_v = sum_i (u_i^T v)^2 / ||v||^2 delta_{lambda_i}`` is an unbiased estimate of ``mu``
(Rademacher: ``||v||^2 = P`` exactly; Gaussian: the direction is uniform on the sphere).
``m`` Lanczos steps from ``v`` give the ``m``-node Gauss quadrature of ``mu_v``
(Golub & Welsch, 1969): nodes are the Ritz values ``theta_j``, weights the squared first
components of the eigenvectors of the tridiagonal ``T_m``; it integrates polynomials of
degree ``<= 2m - 1`` exactly. Averaging over probes gives SLQ (Lin, Saad & Yang, 2016,
"Approximating spectral densities of large matrices", SIAM Review;
Ghorbani, Krishnan & Xiao, 2019, ICML, "An investigation into neural net optimization via
Hessian eigenvalue density"; Ubaru, Chen & Saad, 2017).

Accuracy: for a single probe the error of the quadrature measure in the 1-Wasserstein
distance is ``O(width / m)`` from the quadrature plus ``O(width / sqrt(P))`` from the
probe; with ``P`` in the thousands one probe with many steps beats several probes with
few steps at the same number of products, hence the defaults ``num_steps=90,
num_probes=1``. Partial reorthogonalization (semi-orthogonal bases) keeps the nodes free
of ghost copies.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.io import Checkpoint, as_checkpoint
from hesslab.linalg.basis import gram_orthonormalize
from hesslab.linalg.lanczos import eigenpairs
from hesslab.linalg.memory import records_peak_memory
from hesslab.linalg.probes import generator_digest, mean_stderr
from hesslab.linalg.quadrature import QuadratureRule, lanczos_quadrature
from hesslab.linalg.results import TraceEstimate
from hesslab.linalg.space import shared_generator, space_of
from hesslab.operators.base import LinearOperator, as_operator
from hesslab.validation import require_symmetric

__all__ = ["SpectralDensity", "spectral_density", "wasserstein1"]

#: Default Gaussian broadening relative to the spectral width: sigma^2 = 1e-5 width^2,
#: the default of Ghorbani et al. (2019) for a spectrum of unit width.
_SIGMA_REL = math.sqrt(1e-5)


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ estimate of the spectral measure of a symmetric operator.

    Attributes:
        nodes: ``[K, m]`` Gauss quadrature nodes (Ritz values) per probe, float64 CPU.
            A probe whose recurrence stopped early (invariant subspace after ``j < m``
            steps, then its rule is exact) repeats its last node with weight 0.
        weights: ``[K, m]`` quadrature weights per probe (each row sums to 1).
        dimension: ``P``.
        num_matvecs: operator columns applied (including those of the deflation).
        seconds: wall time.
        num_steps: ``m``.
        steps: ``[K]`` Lanczos steps actually taken per probe.
        outliers: ``[r]`` deflated eigenvalues (point masses of weight ``1/P`` each;
            empty when ``deflate=0``).
        outlier_residuals: ``[r]`` their residual norms.
        locked: ``[K, m]`` bool, nodes whose Ritz residual was below
            ``converged_tol * ||A||_est`` and which :meth:`nodes_and_weights` treats as
            exact eigenvalues of mass ``1/P`` (see :func:`spectral_density`).
        ritz_residuals: ``[K, m]`` Ritz residual norms of the nodes.
        distribution: ``"rademacher"`` or ``"gaussian"``.
        info: free-form diagnostics.
    """

    nodes: Tensor
    weights: Tensor
    dimension: int
    num_matvecs: int
    seconds: float
    num_steps: int
    steps: Tensor
    outliers: Tensor
    outlier_residuals: Tensor
    locked: Tensor
    ritz_residuals: Tensor
    distribution: str = "rademacher"
    info: dict[str, Any] = field(default_factory=dict)
    #: Peak memory of the call beyond its start, bytes (see :mod:`hesslab.linalg.memory`).
    peak_memory_bytes: int | None = None

    @property
    def num_probes(self) -> int:
        """``K``."""
        return int(self.nodes.shape[0])

    @property
    def bulk_fraction(self) -> float:
        """Mass of the quadrature (non-deflated) part, ``(P - r) / P``."""
        return (self.dimension - self.outliers.numel()) / self.dimension

    def probe_weights(self) -> Tensor:
        """``[K, m]`` weights of each probe's measure after locking, each row summing to
        ``bulk_fraction``: locked nodes get ``1/P``, the others share the rest in
        proportion to their quadrature weights."""
        P = self.dimension
        lock = self.locked
        n_lock = lock.sum(dim=1, keepdim=True).to(torch.float64)
        rest = torch.where(lock, torch.zeros_like(self.weights), self.weights)
        total = rest.sum(dim=1, keepdim=True)
        rest_mass = self.bulk_fraction - n_lock / P
        scaled = torch.where(total > 0, rest / total.clamp_min(1e-300) * rest_mass, rest)
        return torch.where(lock, torch.full_like(self.weights, 1.0 / P), scaled)

    def nodes_and_weights(self) -> tuple[Tensor, Tensor]:
        """The pooled discrete measure: probe-averaged quadrature plus point masses.

        Returns:
            ``(nodes, weights)``, sorted by node, weights summing to 1: every probe's
            rule (:meth:`probe_weights`) divided by ``K``, every deflated outlier with
            ``1/P``. This is the estimate of ``(1/P) sum_i delta_{lambda_i}`` to compare
            (e.g. with :func:`wasserstein1`) against exact eigenvalues.
        """
        w = self.probe_weights().flatten() / self.num_probes
        x = self.nodes.flatten()
        keep = w > 0
        x, w = x[keep], w[keep]
        if self.outliers.numel():
            x = torch.cat([x, self.outliers])
            w = torch.cat([w, torch.full_like(self.outliers, 1.0 / self.dimension)])
        order = torch.sort(x, stable=True).indices
        return x[order], w[order]

    def spectral_range(self) -> tuple[float, float]:
        """Smallest and largest node (Ritz values bracket the spectrum from inside)."""
        x, _ = self.nodes_and_weights()
        return float(x.min()), float(x.max())

    def width(self) -> float:
        """``max node - min node`` (falls back to ``max(1, |node|)`` for a point mass)."""
        lo, hi = self.spectral_range()
        w = hi - lo
        return w if w > 0 else max(1.0, abs(hi))

    def grid(self, num_points: int = 1024, margin: float = 0.05) -> Tensor:
        """Evenly spaced grid over the spectral range widened by ``margin * width``."""
        if num_points < 2:
            raise ConfigurationError(f"num_points must be >= 2, got {num_points}")
        lo, hi = self.spectral_range()
        pad = margin * self.width()
        return torch.linspace(lo - pad, hi + pad, num_points, dtype=torch.float64)

    def evaluate(self, grid: Tensor | np.ndarray, sigma: float | None = None) -> Tensor:
        """Gaussian-broadened density ``phi(x) = sum_j w_j N(x; theta_j, sigma^2)``.

        Args:
            grid: points ``x`` (any shape).
            sigma: kernel width; default ``sqrt(1e-5) * width`` (Ghorbani et al., 2019,
                use ``sigma^2 = 1e-5`` on a spectrum of unit width).

        Returns:
            Density values, float64, same shape as ``grid``; it integrates to 1 over the
            real line.
        """
        x = torch.as_tensor(grid, dtype=torch.float64).cpu()
        if sigma is None:
            sigma = _SIGMA_REL * self.width()
        if not sigma > 0:
            raise ConfigurationError(f"sigma must be positive, got {sigma}")
        nodes, w = self.nodes_and_weights()
        flat = x.reshape(-1, 1)
        out = torch.zeros(flat.shape[0], dtype=torch.float64)
        for start in range(0, nodes.numel(), 4096):
            z = (flat - nodes[start : start + 4096]) / sigma
            out += (torch.exp(-0.5 * z * z) * w[start : start + 4096]).sum(dim=1)
        return (out / (sigma * math.sqrt(2 * math.pi))).reshape(x.shape)

    def moment(self, j: int) -> float:
        """Estimate of ``tr(A^j) / P``: ``sum_i w_i theta_i^j`` of the pooled measure.

        Exact for each probe's ``v^T A^j v / ||v||^2`` when ``j <= 2 m - 1``.
        """
        x, w = self.nodes_and_weights()
        return float((w * x**j).sum())

    def probe_traces(self, fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Per-probe estimates of ``tr f(A)`` (default ``f(x) = x``), ``[K]``.

        Probe ``k`` gives ``sum_outliers f(lambda) + P sum_j w_kj f(theta_kj)`` with the
        weights of :meth:`probe_weights` (for ``r = 0`` and no locked nodes this is the
        Hutchinson estimate ``v^T f(A) v * P / ||v||^2``).
        """
        f = (lambda t: t) if fn is None else fn
        vals = self.dimension * (self.probe_weights() * f(self.nodes)).sum(dim=1)
        if self.outliers.numel():
            vals = vals + f(self.outliers).sum()
        return vals

    def trace(self) -> TraceEstimate:
        """Estimate of ``tr(A)`` with the standard error across probes.

        The standard error is ``inf`` for one probe (unknown, as in :func:`hesslab.trace`:
        :func:`hesslab.linalg.probes.mean_stderr`).
        """
        vals = self.probe_traces()
        value, stderr = mean_stderr(vals)
        return TraceEstimate(
            value=value,
            stderr=stderr,
            num_matvecs=self.num_matvecs,
            seconds=self.seconds,
            method="slq",
            samples=vals,
        )


@records_peak_memory
def spectral_density(
    op: Any,
    num_steps: int = 90,
    num_probes: int = 1,
    *,
    generator: torch.Generator | None = None,
    deflate: int = 0,
    distribution: str = "rademacher",
    deflate_tol: float = 1e-8,
    converged_tol: float | None = 1e-4,
    basis_device: torch.device | str | None = None,
    basis_dir: str | os.PathLike[str] | None = None,
    basis_chunk: int | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
) -> SpectralDensity:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature.

    Runs ``num_probes`` independent Lanczos recurrences of ``m = num_steps`` steps (one
    block product of ``K`` columns per step), with partial reorthogonalization (semi-
    orthogonal bases, see :mod:`hesslab.linalg.quadrature`), and keeps each
    probe's Gauss quadrature rule (see the module docstring for the math).

    Deflation (``deflate = r > 0``): the top-``r`` eigenpairs by magnitude are computed
    first with :func:`~hesslab.linalg.lanczos.eigenpairs` (to relative residual
    ``deflate_tol``); SLQ then runs on ``(I - U U^T) A (I - U U^T)`` restricted to the
    complement of ``span(U)`` (probes projected), and the ``r`` eigenvalues are added back
    as exact point masses of weight ``1/P`` each, the quadrature weights scaled by
    ``(P - r)/P``. The outliers then no longer take quadrature nodes from the bulk.

    Free deflation (``converged_tol``): a node whose Ritz residual
    ``beta_m |s_{m,j}|`` is at most ``converged_tol * ||A||_est`` is an eigenvalue of
    ``A`` to that accuracy; its quadrature weight ``(u_j^T v)^2 / ||v||^2`` is a noisy
    (chi-square, one degree of freedom) estimate of ``1/P``, so
    :meth:`SpectralDensity.nodes_and_weights` gives it exactly ``1/P`` and rescales the
    probe's other weights to the remaining mass -- the deflated estimator with the
    probe's own converged Ritz vectors, at no extra products. On a trained-MLP Hessian
    (P = 3,466, m = 100, one probe) it lowered the 1-Wasserstein error from
    ~1.3e-3 to ~8e-4 of the spectral width. A node whose weight exceeds ``20/P`` is never
    locked (it stands for a multiple eigenvalue: one Krylov space sees one vector per
    eigenspace); a locked eigenvalue of small multiplicity ``d`` misplaces ``(d-1)/P``
    of mass. ``converged_tol=None`` disables it. ``weights`` always holds the raw
    quadrature weights.

    Args:
        op: symmetric operator (anything :func:`~hesslab.as_operator` accepts).
        num_steps: Lanczos steps ``m`` per probe (capped by ``P``).
        num_probes: number of probes ``K``.
        generator: randomness for probes and deflation (default: fresh unseeded).
        deflate: number ``r`` of outliers to deflate, ``0 <= r < P``.
        distribution: ``"rademacher"`` or ``"gaussian"`` probes.
        deflate_tol: relative residual tolerance of the deflation eigenpairs.
        converged_tol: relative Ritz residual below which a node counts as an exact
            eigenvalue (see above); ``None`` disables.
        basis_device: where Lanczos bases live (default ``op.device``); SLQ keeps
            ``K x P x m`` numbers of ``op.dtype``. ``"disk"``: a memory-mapped file, moved to the
            device ``basis_chunk`` vectors at a time (see
            :func:`~hesslab.linalg.lanczos.eigenpairs`).
        basis_dir: folder of the ``"disk"`` basis file (default: the temp folder).
        basis_chunk: basis vectors per transfer with ``"disk"`` (default: 256 MiB worth).
        callback: called after every Lanczos step with ``{"step", "num_matvecs"}``
            (with a checkpoint also ``"probe"``, the 0-based probe being run).
        checkpoint: a file path (or a :class:`hesslab.io.Checkpoint`; a read-only one
            resumes without writing, as the non-zero ranks of a torchrun job do). The probes
            then run one after another (one column per
            product, ``P x m`` basis numbers instead of ``K x P x m``) and the state (the
            deflation, the generator state before the probes were drawn, every finished
            probe's nodes, weights, residuals and step count, products and seconds so far)
            is saved there atomically after the deflation and after every probe. A later
            call with the same arguments, the same generator (seed) and the same file skips
            the finished probes and returns bit-identical nodes and weights to an
            uninterrupted run with this file, leaving the generator in the same state
            (products are deterministic). The deflation eigensolve checkpoints itself to
            ``<checkpoint>.deflate``. The file is removed when the call returns normally.
            With ``num_probes = 1`` the result is also bit-identical to a call without
            checkpoint; with several probes it agrees with the block run to rounding
            (a block product need not equal ``K`` single products bit for bit).

    Returns:
        :class:`SpectralDensity`.

    Raises:
        ConfigurationError: invalid sizes or distribution, or a checkpoint written by a
            call with other arguments or another generator.
    """
    t0 = time.perf_counter()
    op = as_operator(op)
    require_symmetric(op, "spectral_density")
    space = space_of(op)  # sharded: P is the global size, the probes this rank's rows
    P = space.global_size(op.shape[0])
    _check(P, num_steps, num_probes, deflate, distribution)
    entry_state = None if generator is None else generator_digest(generator)
    generator = shared_generator(generator, space)
    disk = basis_device == "disk"
    # small P x r / P x K tensors (deflation basis, probes) stay on the device with "disk"
    bdev = op.device if basis_device is None or disk else torch.device(basis_device)
    store = {"basis_device": basis_device, "basis_dir": basis_dir, "basis_chunk": basis_chunk}
    m = int(min(num_steps, P - deflate))
    K = int(num_probes)
    key = {
        "P": P, "dtype": str(op.dtype), "num_steps": m, "num_probes": K,
        "deflate": int(deflate), "deflate_tol": float(deflate_tol),
        "distribution": distribution, "generator": entry_state,
    }  # fmt: skip
    checkpoint = as_checkpoint(checkpoint)
    state = None if checkpoint is None else checkpoint.load_state(key, "spectral_density")
    prior_seconds = 0.0 if state is None else float(state["seconds"])
    defl = _deflation(op, int(deflate), deflate_tol, generator, store, checkpoint, state, bdev)
    if state is not None:
        generator.set_state(state["generator"])
    elif checkpoint is not None:
        state = {
            "key": key,
            "deflation": None if defl["U"] is None else {**defl, "U": defl["U"].cpu()},
            "generator": generator.get_state(),
            "probes": [],
            "seconds": time.perf_counter() - t0,
        }
        checkpoint.save(state)
    V0 = space.local_part(_probes(P, K, distribution, generator)).to(bdev)
    if checkpoint is None:
        rule = lanczos_quadrature(op, V0, m, deflate=defl["U"], **store, callback=callback)
    else:
        assert state is not None

        def save(probes: list[dict[str, Any]]) -> None:
            state["seconds"] = prior_seconds + time.perf_counter() - t0
            checkpoint.save(state)

        rule = _probe_by_probe(op, V0, m, defl["U"], store, callback, state["probes"], save)
        checkpoint.remove()
    seconds = prior_seconds + time.perf_counter() - t0
    return _result(rule, defl, converged_tol, P, int(deflate), m, distribution, seconds)


def _result(
    rule: Any,
    defl: dict[str, Any],
    converged_tol: float | None,
    P: int,
    deflate: int,
    m: int,
    distribution: str,
    seconds: float,
) -> SpectralDensity:
    """The :class:`SpectralDensity` of the quadrature ``rule`` and the deflation ``defl``."""
    nodes, weights, ritz_res, steps, nmv = rule
    outliers = defl["outliers"]
    locked = _locked(rule, outliers, converged_tol, P, deflate, m)
    info: dict[str, Any] = {"num_locked": locked.sum(dim=1)}
    if defl["U"] is not None:
        info["deflation_converged"] = defl["converged"]
        info["deflation_matvecs"] = defl["num_matvecs"]
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        dimension=P,
        num_matvecs=nmv + int(defl["num_matvecs"]),
        seconds=seconds,
        num_steps=m,
        steps=steps,
        outliers=outliers,
        outlier_residuals=defl["outlier_residuals"],
        locked=locked,
        ritz_residuals=ritz_res,
        distribution=distribution,
        info=info,
    )


def _check(P: int, num_steps: Any, num_probes: Any, deflate: Any, distribution: str) -> None:
    if distribution not in ("rademacher", "gaussian"):
        raise ConfigurationError(
            f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}"
        )
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ConfigurationError(f"num_steps must be a positive int, got {num_steps!r}")
    if not isinstance(num_probes, (int, np.integer)) or num_probes < 1:
        raise ConfigurationError(f"num_probes must be a positive int, got {num_probes!r}")
    if not isinstance(deflate, (int, np.integer)) or not 0 <= deflate < P:
        raise ConfigurationError(f"deflate must be an int in [0, P={P}), got {deflate!r}")


def _deflation(
    op: LinearOperator,
    r: int,
    tol: float,
    generator: torch.Generator,
    store: dict[str, Any],
    checkpoint: Checkpoint | None,
    state: dict[str, Any] | None,
    bdev: torch.device,
) -> dict[str, Any]:
    """The top-``r`` eigenpairs by magnitude (from the checkpoint when it has them):
    ``U`` (orthonormal, ``None`` for ``r = 0``), ``outliers``, ``outlier_residuals``,
    ``converged``, ``num_matvecs``."""
    empty = torch.zeros(0, dtype=torch.float64)
    saved = None if state is None else state["deflation"]
    if saved is not None:
        return {**saved, "U": saved["U"].to(bdev)}
    if r == 0 or state is not None:
        return {"U": None, "outliers": empty, "outlier_residuals": empty, "num_matvecs": 0}
    eig = eigenpairs(
        op,
        r,
        "magnitude",
        tol=tol,
        generator=generator,
        **store,
        checkpoint=None if checkpoint is None else checkpoint.derived(".deflate"),
    )
    space = space_of(op)
    if space.distributed:
        U, _, _ = gram_orthonormalize(eig.vectors.to(dtype=torch.float64, device=bdev), space, 0.0)
    else:
        U, _ = torch.linalg.qr(eig.vectors.to(dtype=torch.float64, device=bdev))
    return {
        "U": U,
        "outliers": eig.values.clone(),
        "outlier_residuals": eig.residual_norms.clone(),
        "converged": eig.converged,
        "num_matvecs": eig.num_matvecs,
    }


def _probes(P: int, K: int, distribution: str, generator: torch.Generator) -> Tensor:
    """``[P, K]`` float64 probes drawn on the generator's device."""
    if distribution == "rademacher":
        V0 = torch.randint(0, 2, (P, K), generator=generator, device=generator.device)
        return (2.0 * V0 - 1.0).to(torch.float64)
    return torch.randn((P, K), generator=generator, dtype=torch.float64, device=generator.device)


def _probe_by_probe(
    op: LinearOperator,
    V0: Tensor,
    m: int,
    U: Tensor | None,
    store: dict[str, Any],
    callback: Callable[[dict[str, Any]], None] | None,
    probes: list[dict[str, Any]],
    save: Callable[[list[dict[str, Any]]], None],
) -> QuadratureRule:
    """The probes one after another, skipping the finished ones (``probes``, from a
    checkpoint) and calling ``save`` after each new one."""
    for kk in range(len(probes), V0.shape[1]):
        done = sum(p["num_matvecs"] for p in probes)

        def step_callback(d: dict[str, Any], kk: int = kk, done: int = done) -> None:
            if callback is not None:
                callback({**d, "probe": kk, "num_matvecs": done + d["num_matvecs"]})

        x, w, r, st, n = lanczos_quadrature(
            op, V0[:, kk : kk + 1], m, deflate=U, **store, callback=step_callback
        )
        probes.append(
            {"nodes": x[0], "weights": w[0], "residuals": r[0], "steps": st[0], "num_matvecs": n}
        )
        save(probes)
    return QuadratureRule(
        torch.stack([p["nodes"] for p in probes]),
        torch.stack([p["weights"] for p in probes]),
        torch.stack([p["residuals"] for p in probes]),
        torch.stack([p["steps"] for p in probes]),
        sum(int(p["num_matvecs"]) for p in probes),
    )


def _locked(
    rule: QuadratureRule,
    outliers: Tensor,
    converged_tol: float | None,
    P: int,
    deflate: int,
    m: int,
) -> Tensor:
    """Nodes treated as exact eigenvalues of mass ``1/P`` (see :func:`spectral_density`)."""
    nodes, weights, ritz_res, steps = rule.nodes, rule.weights, rule.residuals, rule.steps
    if converged_tol is None:
        return torch.zeros_like(weights, dtype=torch.bool)
    normest = float(nodes.abs().max())
    if outliers.numel():
        normest = max(normest, float(outliers.abs().max()))
    conv = (ritz_res <= converged_tol * normest) & (weights > 0)
    locked = conv & (weights * P <= 20.0)
    # a recurrence that spanned the whole (deflated) space has P - r simple eigenvalues
    # as nodes: all get 1/P, the measure is exact. One that closed an invariant
    # subspace earlier (every node converged) may hold multiple eigenvalues: its rule
    # is exact as it stands and nothing is locked.
    full = steps >= P - deflate
    closed = ~full & ((steps < m) | (conv | (weights == 0)).all(dim=1))
    locked[closed] = False
    locked[full] = weights[full] > 0
    return locked


def wasserstein1(
    nodes_a: Tensor | np.ndarray,
    weights_a: Tensor | np.ndarray | None,
    nodes_b: Tensor | np.ndarray,
    weights_b: Tensor | np.ndarray | None = None,
) -> float:
    """Exact 1-Wasserstein distance between two discrete measures on the real line.

    ``W1(a, b) = integral |F_a(x) - F_b(x)| dx`` with ``F`` the cumulative distribution
    functions (Vallender, 1974), evaluated exactly on the merged, sorted support.

    Args:
        nodes_a: support of ``a``.
        weights_a: its weights (``None``: uniform); normalized to sum 1.
        nodes_b: support of ``b``, e.g. exact eigenvalues.
        weights_b: its weights (``None``: uniform); normalized to sum 1.

    Returns:
        The distance, in the units of the nodes (divide by the spectral width for a
        scale-free number).
    """

    def prep(x, w) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(x, dtype=torch.float64).flatten().cpu()
        if w is None:
            w = torch.full_like(x, 1.0 / max(x.numel(), 1))
        w = torch.as_tensor(w, dtype=torch.float64).flatten().cpu()
        if x.numel() == 0 or w.shape != x.shape:
            raise ConfigurationError(
                f"nodes and weights must be non-empty and of equal length, got "
                f"{tuple(x.shape)} and {tuple(w.shape)}"
            )
        if bool((w < 0).any()) or not float(w.sum()) > 0:
            raise ConfigurationError("weights must be nonnegative with a positive sum")
        return x, w / w.sum()

    xa, wa = prep(nodes_a, weights_a)
    xb, wb = prep(nodes_b, weights_b)
    x = torch.cat([xa, xb])
    w = torch.cat([wa, -wb])
    order = torch.sort(x, stable=True).indices
    x, w = x[order], w[order]
    cdf_diff = torch.cumsum(w, 0)[:-1]
    return float((cdf_diff.abs() * torch.diff(x)).sum())


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(SpectralDensity, _display.density_summary)

"""Power iteration with Hotelling deflation, the classic baseline for top eigenpairs.

For the largest-magnitude eigenvalue, ``v <- A v / ||A v||`` converges to the top
eigenvector at the rate ``|lambda_2 / lambda_1|`` per product (von Mises, 1929). Further
pairs come from Hotelling deflation (Hotelling, 1933): after finding ``(lambda_i, u_i)``,
iterate on ``A - sum_i lambda_i u_i u_i^T``. Kept for comparison with
:func:`hesslab.linalg.lanczos.eigenpairs`, which needs far fewer products.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.linalg.basis import as_block
from hesslab.linalg.memory import records_peak_memory
from hesslab.linalg.probes import draw_probes
from hesslab.linalg.results import EigenResult
from hesslab.operators.base import as_operator
from hesslab.rng import resolve_generator
from hesslab.validation import check_k_tol, require_symmetric

__all__ = ["power_iteration"]


@records_peak_memory
def power_iteration(
    op: Any,
    k: int = 1,
    *,
    tol: float = 1e-6,
    max_matvecs: int | None = None,
    generator: torch.Generator | None = None,
    v0: Tensor | np.ndarray | None = None,
) -> EigenResult:
    """Top-``k`` eigenpairs by largest magnitude with power iteration and deflation.

    Pair ``i`` iterates ``w = A v - U_i diag(lambda) U_i^T v`` (Hotelling deflation of the
    pairs found so far), ``theta = v^T w`` (Rayleigh quotient), ``v <- w / ||w||``, and stops
    on the residual of the *undeflated* operator,
    ``||A v - theta v|| <= tol * |lambda_1|`` (``A v`` is recovered from ``w`` without
    another product), never on the change of ``theta``. Each step costs one product.
    Hotelling deflation passes each pair's error on: pair ``i`` cannot reach a residual
    much below ``|lambda_j| |u_j^T v_i|`` from the inexact earlier ``u_j``, about the
    earlier pairs' residuals; pairs that are deflated later are therefore iterated to
    ``0.1 tol`` (the reported ``converged`` flags use ``tol``), and ``tol`` should stay
    well above ``eps``.

    Args:
        op: symmetric operator (anything :func:`~hesslab.as_operator` accepts).
        k: number of pairs, ``1 <= k <= P``.
        tol: relative residual tolerance, relative to the norm estimate ``|lambda_1|``.
        max_matvecs: total budget of products over all pairs (default ``1000 k``); it is
            split evenly among the pairs still to be found.
        generator: randomness for the start vectors (default: fresh unseeded).
        v0: optional start vector ``[P]`` or block ``[P, j]``; column ``i`` starts pair ``i``.

    Returns:
        :class:`~hesslab.linalg.results.EigenResult` with ``method="power"`` and
        ``which="magnitude"``; values ordered by decreasing ``|lambda|``; ``residual_norms``
        are true residuals ``||A v - theta v||``.

    Raises:
        ConfigurationError: invalid ``k``, ``tol``, ``max_matvecs`` or ``v0``.
    """
    t0 = time.perf_counter()
    op = as_operator(op)
    require_symmetric(op, "power_iteration")
    P = op.shape[0]
    k, max_matvecs = _check(P, k, tol, max_matvecs)
    generator = resolve_generator(generator)
    f64 = torch.float64
    dev = op.device
    X0 = None if v0 is None else as_block(v0, P, "v0").to(dtype=f64, device=dev)

    U = torch.zeros(P, 0, dtype=f64, device=dev)
    lams: list[float] = []
    residuals: list[float] = []
    state = {"normest": 0.0, "num_matvecs": 0}
    for i in range(k):
        budget = (max_matvecs - state["num_matvecs"]) // (k - i)
        if X0 is not None and i < X0.shape[1] and float(X0[:, i].norm()) > 0:
            v = X0[:, i].clone()
        else:
            v = draw_probes(P, 1, distribution="gaussian", generator=generator, device=dev)[:, 0]
        pair_tol = tol * (0.1 if i < k - 1 else 1.0)
        v, theta, res = _one_pair(op, v, U, lams, budget, pair_tol, state)
        U = torch.cat([U, v[:, None]], dim=1)
        lams.append(theta)
        residuals.append(res)
    normest, num_matvecs = state["normest"], state["num_matvecs"]

    values = torch.tensor(lams, dtype=f64)
    res_t = torch.tensor(residuals, dtype=f64)
    order = torch.sort(-values.abs(), stable=True).indices
    return EigenResult(
        values=values[order],
        vectors=U[:, order.to(dev)].to(op.dtype),
        residual_norms=res_t[order],
        converged=res_t[order] <= tol * normest,
        num_matvecs=num_matvecs,
        seconds=time.perf_counter() - t0,
        method="power",
        which="magnitude",
        tol=float(tol),
        norm_estimate=normest,
        info={"residual_kind": "true"},
    )


def _check(P: int, k: Any, tol: Any, max_matvecs: int | None) -> tuple[int, int]:
    """Validated ``(k, max_matvecs)`` (see :func:`power_iteration`)."""
    k = check_k_tol(P, k, tol)
    if max_matvecs is None:
        max_matvecs = 1000 * k
    if max_matvecs < k:
        raise ConfigurationError(
            f"max_matvecs={max_matvecs} is below one product per pair (k={k}); increase it"
        )
    return k, int(max_matvecs)


def _one_pair(
    op: Any,
    v: Tensor,
    U: Tensor,
    lams: list[float],
    budget: int,
    tol: float,
    state: dict[str, Any],
) -> tuple[Tensor, float, float]:
    """Power iteration for the next pair on ``A - U diag(lams) U^T`` from ``v`` (float64).

    Returns ``(v, theta, ||A v - theta v||)`` once that residual is at most
    ``tol * normest`` or ``budget`` products are spent (``state`` counts products and
    holds the norm estimate).
    """
    f64 = torch.float64
    v = v - U @ (U.T @ v)
    v = v / torch.linalg.vector_norm(v)
    lam_d = torch.tensor(lams, dtype=f64, device=v.device)
    theta, res = 0.0, math.inf
    for step in range(budget):
        Av = op.matvec(v.to(op.dtype)).detach().to(f64)
        state["num_matvecs"] += 1
        w = Av - U @ (lam_d * (U.T @ v))
        theta = float(v @ w)
        state["normest"] = max(state["normest"], abs(theta))
        res = float(torch.linalg.vector_norm(Av - theta * v))
        if res <= tol * state["normest"] or step == budget - 1:
            break
        nw = torch.linalg.vector_norm(w)
        if float(nw) == 0.0:  # v lies in the null space of the deflated operator
            break
        v = w / nw
    return v, theta, res

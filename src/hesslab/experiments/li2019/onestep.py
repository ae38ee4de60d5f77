"""Li et al. (2019), part 2's tools: the one-step loss change, predicted and sampled.

Per-sample gradients, the second-order prediction of the one-step loss change and its
Monte-Carlo (vmap, memory-bounded) measurement.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.func import vmap

from hesslab.errors import ConfigurationError
from hesslab.experiments.li2019.config import _gen
from hesslab.linalg import trace
from hesslab.objective import Objective
from hesslab.operators import per_sample_gradients
from hesslab.operators.base import FunctionOperator


def all_sample_gradients(objective: Objective) -> Tensor:
    """Per-sample gradients ``[P, N]`` of every data point (columns ``gᵢ``)."""
    return torch.cat([per_sample_gradients(objective, b) for b, _ in objective.batches()], 1)


def predicted_change(
    grad: Tensor, H: Tensor, M: Tensor, lr: float, precond: Tensor | None = None
) -> float:
    """Second-order prediction of ``E_B[L(θ − η D g_B)] − L(θ)``.

    ``−η ∇Lᵀ D ∇L + (η²/2) Tr(D H D M_B)`` with ``D = diag(precond)`` (identity if
    ``None``). Exact for quadratic losses (Li et al., 2019, arXiv:1907.10732).
    """
    d = torch.ones_like(grad) if precond is None else precond
    first = -lr * float(grad @ (d * grad))
    DHD = d[:, None] * H * d[None, :]
    return first + 0.5 * lr**2 * float((DHD * M.T).sum())


def loss_at(objective: Objective, thetas: Tensor, chunk_size: int | None = 512) -> Tensor:
    """Full-data losses ``[K]`` at ``K`` flat parameter vectors ``thetas`` (``[K, P]``).

    Evaluated with :func:`torch.func.vmap` (``chunk_size`` vectors at a time).
    """
    batches = list(objective.batches())
    space = objective.space

    def f(vec: Tensor) -> Tensor:
        th = space.unflatten(vec)
        out = vec.new_zeros(())
        for b, w in batches:
            out = out + w * objective.batch_loss(th, b)
        return out

    with torch.no_grad():
        return vmap(f, chunk_size=chunk_size)(thetas)


#: Working-memory bound of :func:`sampled_change` (bytes).
SAMPLED_MEMORY_BYTES = 64 * 2**20


def sampled_chunk_rows(N: int, P: int, itemsize: int, memory_bytes: int) -> int:
    """Minibatches per chunk of :func:`sampled_change`: ``rows·(N + 2P)·itemsize ≤ memory``.

    At least one row (a single minibatch needs ``(N + 2P)·itemsize`` bytes).
    """
    return max(1, int(memory_bytes // ((N + 2 * P) * itemsize)))


def sampled_change(
    objective: Objective,
    G: Tensor,
    batch_size: int,
    lr: float,
    num_samples: int,
    generator: torch.Generator,
    *,
    replacement: bool = True,
    precond: Tensor | None = None,
    memory_bytes: int = SAMPLED_MEMORY_BYTES,
) -> dict[str, float]:
    """Monte-Carlo ``E_B[L(θ − η D g_B)] − L(θ)`` at the objective's ``θ``.

    The ``K`` minibatch gradients are formed ``rows`` at a time
    (:func:`sampled_chunk_rows`), so the working memory stays below ``memory_bytes``
    whatever ``K``, ``B`` and ``P`` (all at once, ``K·B·P`` numbers: 31.5 GB at the full
    size).

    Args:
        objective: the loss at ``θ`` (mean reduction).
        G: per-sample gradients ``[P, N]`` at ``θ``.
        batch_size: ``B``.
        lr: ``η``.
        num_samples: minibatches ``K``.
        generator: source of the minibatch indices.
        replacement: minibatches drawn with or without replacement.
        precond: diagonal ``D`` (``None``: identity).
        memory_bytes: bound on the chunk's working memory (the ``[rows, N]`` counts, the
            ``[rows, P]`` gradients and their ``[rows, P]`` parameter vectors).

    Returns:
        ``mean``/``stderr`` of ``Δ = L(θ') − L(θ)``; ``cv_mean``/``cv_stderr`` of the
        control-variate estimate ``Δ − η(∇LᵀD∇L − ∇LᵀD g_B)`` (same expectation);
        ``curv_mean``/``curv_stderr`` of ``Δ + η ∇LᵀD g_B`` (expectation: the second-order
        term ``(η²/2) Tr(DHDM_B)`` up to ``O(η³)``).
    """
    P, N = G.shape
    if num_samples < 2:
        raise ConfigurationError(f"num_samples must be at least 2, got {num_samples}")
    if replacement:
        idx = torch.randint(0, N, (num_samples, batch_size), generator=generator)
    else:
        idx = torch.argsort(torch.rand(num_samples, N, generator=generator), 1)[:, :batch_size]
    gbar = G.mean(1)
    d = torch.ones_like(gbar) if precond is None else precond
    theta = objective.flat_params()
    L0 = objective.value()
    rows = sampled_chunk_rows(N, P, G.element_size(), memory_bytes)
    deltas, lins = [], []
    for start in range(0, num_samples, rows):  # memory bounded: rows x (N + 2P) numbers
        sel = idx[start : start + rows]
        counts = G.new_zeros(sel.shape[0], N).scatter_add_(1, sel, G.new_ones(sel.shape))
        gB = (counts @ G.T) / batch_size  # [rows, P], the minibatch mean gradients
        deltas.append(loss_at(objective, theta[None, :] - lr * gB * d[None, :]) - L0)
        lins.append(gB @ (d * gbar))  # ∇LᵀD g_B, mean ∇LᵀD∇L
    delta, lin = torch.cat(deltas), torch.cat(lins)
    cv = delta - lr * (float(gbar @ (d * gbar)) - lin)
    curv = delta + lr * lin
    K = num_samples

    def ms(x: Tensor) -> tuple[float, float]:
        x = x.to(torch.float64)
        return float(x.mean()), float(x.std() / math.sqrt(K))

    out: dict[str, float] = {}
    for key, x in (("", delta), ("cv_", cv), ("curv_", curv)):
        m, s = ms(x)
        out[key + "mean"], out[key + "stderr"] = m, s
    return out


def _hm_trace_stochastic(H: Tensor, M: Tensor, probes: int, seed: int) -> tuple[float, float]:
    """Hutchinson ``Tr(H M)`` on the symmetrised operator ``½(HM + MH)``."""
    op = FunctionOperator(
        lambda V: 0.5 * (H @ (M @ V) + M @ (H @ V)), H.shape[0], H.dtype, symmetric=True
    )
    est = trace(op, probes, method="hutchinson", generator=_gen(seed))
    return float(est.value), float(est.stderr)

"""curvlinops-for-pytorch 3.0.1 runner, with its documented usage and defaults.

``HessianLinearOperator(model, CrossEntropyLoss(), params, [(x, y)])`` (default
``check_deterministic=True``: a few products at construction, in the wall time, not in the
count). Products are counted by wrapping the operator's ``_matmat`` (columns).

* top-k: ARPACK through ``scipy.sparse.linalg.eigsh(H.to_scipy(), k, which="LA")``
  (eigsh's default ``tol=0``, machine precision), as in curvlinops' eigenvalue example.
* trace: ``hutchinson_trace``, ``hutchpp_trace`` and ``xtrace`` with ``num_matvecs=96``,
  Rademacher (default); none reports an error bar.
* density: the Lanczos quadrature behind ``lanczos_approximate_spectrum``:
  ``papyan2020traces.spectrum.fast_lanczos(H, ncv=100)`` (no reorthogonalisation),
  repeated ``budget/100`` times; nodes = Ritz values, weights = squared first components.
  (``lanczos_approximate_spectrum`` itself also spends products on an ``eigsh`` estimate
  of the spectral boundaries and returns a smoothed curve; those are not counted here.)
"""

from __future__ import annotations

import time

import torch
from common import Loaded, product_costs, to_list

LIBRARY = "curvlinops"


def _operator(prob: Loaded):
    from curvlinops import HessianLinearOperator

    params = [p for p in prob.model.parameters() if p.requires_grad]
    H = HessianLinearOperator(prob.model, prob.criterion, params, [(prob.x, prob.y)])
    count = {"columns": 0}
    inner = H._matmat

    def counted(M):
        count["columns"] += int(M[0].shape[-1])
        return inner(M)

    H._matmat = counted
    return H, count


def topk(prob: Loaded, k: int, seed: int) -> dict:
    from scipy.sparse.linalg import eigsh

    t0 = time.perf_counter()
    H, count = _operator(prob)
    setup = time.perf_counter() - t0
    w = eigsh(H.to_scipy(), k=k, which="LA", return_eigenvectors=False)
    return {
        "values": sorted((float(v) for v in w), reverse=True),
        "products": count["columns"],
        "wall_s": time.perf_counter() - t0,
        "setup_s": setup,
    }


def _trace(prob: Loaded, budget: int, seed: int, method: str) -> dict:
    import curvlinops

    fn = {
        "hutchinson": curvlinops.hutchinson_trace,
        "hutch++": curvlinops.hutchpp_trace,
        "xtrace": curvlinops.xtrace,
    }[method]
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    H, count = _operator(prob)
    value = fn(H, num_matvecs=budget)
    return {
        "value": float(value),
        "stderr": None,
        "products": count["columns"],
        "wall_s": time.perf_counter() - t0,
    }


def trace_hutchinson(prob: Loaded, budget: int, seed: int) -> dict:
    return _trace(prob, budget, seed, "hutchinson")


def trace_hutchpp(prob: Loaded, budget: int, seed: int) -> dict:
    return _trace(prob, budget, seed, "hutch++")


def trace_xtrace(prob: Loaded, budget: int, seed: int) -> dict:
    return _trace(prob, budget, seed, "xtrace")


def density(prob: Loaded, budget: int, seed: int) -> dict:
    from curvlinops.papyan2020traces.spectrum import fast_lanczos

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    H, count = _operator(prob)
    nodes, weights = [], []
    for _ in range(max(1, budget // 100)):
        evals, evecs = fast_lanczos(H, 100)
        nodes += to_list(evals)
        weights += to_list(evecs[0, :] ** 2)
    return {
        "nodes": nodes,
        "weights": weights,
        "products": count["columns"],
        "wall_s": time.perf_counter() - t0,
    }


def cost(prob: Loaded, reps: int, block: int = 16) -> dict:
    H, _ = _operator(prob)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(prob.num_params, generator=g, dtype=H.dtype)
    V = torch.randn(prob.num_params, max(block, 1), generator=g, dtype=H.dtype)
    return product_costs(prob, reps, lambda: H @ v, ((lambda: H @ V), block) if block else None)

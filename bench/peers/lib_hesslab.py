"""hesslab runner: thick-restart Lanczos, krylov trace, SLQ density, HVP cost.

Settings are hesslab's defaults (``hesslab.hessian(model, "ce", data)`` with
``mode="auto"``: its first product times the candidate HVP modes, in the wall time but not
in the product count), except the tolerance ``tol=1e-6`` of the issue's target and
``num_steps`` = the product budget for the density (one probe, as its docs recommend).
"""

from __future__ import annotations

import time

import torch
from common import Clock, Loaded, product_costs, to_list

from eigen import Counting  # bench/eigen.py: counts the columns an operator is applied to

LIBRARY = "hesslab"


def _operator(prob: Loaded):
    import hesslab

    return hesslab.hessian(prob.model, "ce", (prob.x, prob.y))


def topk(prob: Loaded, k: int, seed: int) -> dict:
    import hesslab

    t0 = time.perf_counter()
    with Clock() as setup:
        H = _operator(prob)
    C = Counting(H)
    res = hesslab.eigenpairs(C, k, tol=1e-6, generator=torch.Generator().manual_seed(seed))
    wall = time.perf_counter() - t0
    return {
        "values": to_list(res.values),
        "products": C.columns,
        "wall_s": wall,
        "setup_s": setup.seconds,
        "converged": bool(res.all_converged),
        "mode_report": H.mode_report,
    }


def trace(prob: Loaded, budget: int, seed: int) -> dict:
    import hesslab

    t0 = time.perf_counter()
    H = _operator(prob)
    C = Counting(H)
    est = hesslab.trace(C, budget, generator=torch.Generator().manual_seed(seed))
    return {
        "value": est.value,
        "stderr": est.stderr,
        "products": C.columns,
        "wall_s": time.perf_counter() - t0,
    }


def density(prob: Loaded, budget: int, seed: int) -> dict:
    import hesslab

    t0 = time.perf_counter()
    H = _operator(prob)
    C = Counting(H)
    sd = hesslab.spectral_density(
        C, num_steps=budget, num_probes=1, generator=torch.Generator().manual_seed(seed)
    )
    nodes, weights = sd.nodes_and_weights()
    return {
        "nodes": to_list(nodes),
        "weights": to_list(weights),
        "products": C.columns,
        "wall_s": time.perf_counter() - t0,
    }


def cost(prob: Loaded, reps: int, block: int = 16) -> dict:
    H = _operator(prob)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(prob.num_params, 1, generator=g, dtype=H.dtype)
    V = torch.randn(prob.num_params, max(block, 1), generator=g, dtype=H.dtype)
    H.matmat(v)  # the auto mode chooses here (single and block separately)
    if block:
        H.matmat(V)
    blk = ((lambda: H.matmat(V)), block) if block else None
    return product_costs(prob, reps, lambda: H.matmat(v), blk, mode_report=H.mode_report)

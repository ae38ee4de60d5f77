"""hessian-eigenthings 1.0.0a5 runner, with its documented defaults.

``HessianOperator(model, [(x, y)], supervised_loss(CrossEntropyLoss()))`` (default
``method="autograd"``: every product rebuilds the first-order graph, forward pass
included). Products are counted by wrapping ``matvec`` in a ``LambdaOperator``.

* top-k: ``deflated_power_iteration(op, k=k)`` (``max_iter=100``, ``tol=1e-4`` per
  eigenpair) and ``lanczos(op, k=k)`` (``max_iter=2k`` steps, ``tol=1e-4``,
  ``which="LM"``).
* trace: ``trace(op, num_matvecs=96)``: Hutch++ (default), 32 sketch + 32 + 32 products;
  reports a standard error (of the Hutchinson part).
* density: ``spectral_density(op, num_runs=1, lanczos_steps=100)`` at 100 products and the
  defaults ``num_runs=10, lanczos_steps=80`` (800 products); the raw Gauss quadrature
  nodes and weights of every run are scored.
"""

from __future__ import annotations

import time

import torch
from common import Loaded, product_costs, to_list

LIBRARY = "hessian-eigenthings"


def _operator(prob: Loaded):
    import hessian_eigenthings as he

    op = he.HessianOperator(prob.model, [(prob.x, prob.y)], he.supervised_loss(prob.criterion))
    count = {"n": 0}

    def matvec(v):
        count["n"] += 1
        return op.matvec(v)

    return he.LambdaOperator(matvec, op.size, op.device, op.dtype), count


def _topk(prob: Loaded, solver: str, k: int, seed: int) -> dict:
    """Run ``hessian_eigenthings.<solver>(op, k=k, seed=seed)`` and count its products."""
    import hessian_eigenthings as he

    t0 = time.perf_counter()
    op, count = _operator(prob)
    setup = time.perf_counter() - t0
    res = getattr(he, solver)(op, k=k, seed=seed)
    return {
        "values": to_list(res.eigenvalues),
        "products": count["n"],
        "wall_s": time.perf_counter() - t0,
        "setup_s": setup,
        "converged": bool(res.converged.all()),
    }


def topk_power(prob: Loaded, k: int, seed: int) -> dict:
    return _topk(prob, "deflated_power_iteration", k, seed)


def topk_lanczos(prob: Loaded, k: int, seed: int) -> dict:
    return _topk(prob, "lanczos", k, seed)


def trace(prob: Loaded, budget: int, seed: int) -> dict:
    import hessian_eigenthings as he

    t0 = time.perf_counter()
    op, count = _operator(prob)
    res = he.trace(op, num_matvecs=budget, seed=seed)
    return {
        "value": float(res.estimate),
        "stderr": float(res.stderr),
        "products": count["n"],
        "wall_s": time.perf_counter() - t0,
    }


def density(prob: Loaded, budget: int, seed: int) -> dict:
    import hessian_eigenthings as he

    t0 = time.perf_counter()
    op, count = _operator(prob)
    if budget == 800:
        res = he.spectral_density(op, seed=seed)  # defaults: 10 runs x 80 steps
    else:
        res = he.spectral_density(op, num_runs=max(1, budget // 100), lanczos_steps=100, seed=seed)
    return {
        "nodes": to_list(res.raw_eigenvalues),
        "weights": to_list(res.raw_weights),
        "products": count["n"],
        "wall_s": time.perf_counter() - t0,
    }


def cost(prob: Loaded, reps: int, block: int = 0) -> dict:
    """``block`` is ignored: this library multiplies one vector at a time."""
    import hessian_eigenthings as he

    op = he.HessianOperator(prob.model, [(prob.x, prob.y)], he.supervised_loss(prob.criterion))
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(0), dtype=op.dtype)
    return product_costs(prob, reps, lambda: op.matvec(v))

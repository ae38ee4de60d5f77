"""PyHessian 0.1 runner (``pyhessian.hessian``), with its documented defaults.

``hessian(model, criterion, data=(x, y), cuda=False)`` (one batch: the first-order graph is
built once in the constructor and reused by every product). PyHessian draws its vectors
with ``torch.randn`` / ``torch.randint_like`` in the *default* dtype, so the runner sets
``torch.set_default_dtype(float64)`` to match the float64 model. Products are counted by
wrapping ``pyhessian.hessian.hessian_vector_product``.

* top-k: ``eigenvalues(top_n=k)``: power iteration with deflation, ``maxIter=100``,
  ``tol=1e-3`` (relative change of the eigenvalue between iterations).
* trace: ``trace(maxIter=96, tol=0)``: Hutchinson with 96 Rademacher probes (``tol=0``
  disables its early stop so the budget is exactly 96); no error bar is reported.
* density: ``density(iter=100, n_v=budget/100)``: SLQ, 100 Lanczos steps per probe. It calls
  ``torch.eig``, removed from PyTorch (fails). The ``pyhessian (torch.eig shim)`` variant
  substitutes ``torch.linalg.eigh`` for it to show what the method would give.
"""

from __future__ import annotations

import importlib
import time

import torch
from common import Loaded, product_costs

LIBRARY = "pyhessian"


class _Count:
    def __init__(self) -> None:
        self.n = 0


def _module():
    """The module ``pyhessian.hessian`` (its package re-exports the class of that name)."""
    return importlib.import_module("pyhessian.hessian")


def _hessian(prob: Loaded):
    torch.set_default_dtype(next(prob.model.parameters()).dtype)
    ph = _module()

    count = _Count()
    inner = ph.hessian_vector_product

    def counted(gradsH, params, v):
        count.n += 1
        return inner(gradsH, params, v)

    ph.hessian_vector_product = counted
    h = ph.hessian(prob.model, prob.criterion, data=(prob.x, prob.y), cuda=False)
    return h, count


def topk(prob: Loaded, k: int, seed: int) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    h, count = _hessian(prob)
    setup = time.perf_counter() - t0
    values, _ = h.eigenvalues(top_n=k)
    return {
        "values": [float(v) for v in values],
        "products": count.n,
        "wall_s": time.perf_counter() - t0,
        "setup_s": setup,
    }


def trace(prob: Loaded, budget: int, seed: int) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    h, count = _hessian(prob)
    samples = h.trace(maxIter=budget, tol=0.0)
    return {
        "value": float(sum(samples) / len(samples)),
        "stderr": None,
        "products": count.n,
        "wall_s": time.perf_counter() - t0,
    }


def _eig_shim(T, eigenvectors=False):
    """``torch.eig`` (removed in PyTorch 2) for a symmetric ``T``: ([n, 2] values, vectors)."""
    w, V = torch.linalg.eigh(T)
    return torch.stack([w, torch.zeros_like(w)], dim=1), V


def density(prob: Loaded, budget: int, seed: int, shim: bool = False) -> dict:
    if shim:  # torch.eig still exists in PyTorch 2, as a stub that raises
        torch.eig = _eig_shim
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    h, count = _hessian(prob)
    nodes, weights = h.density(iter=100, n_v=max(1, budget // 100))
    return {
        "nodes": [float(v) for row in nodes for v in row],
        "weights": [float(v) for row in weights for v in row],
        "products": count.n,
        "wall_s": time.perf_counter() - t0,
    }


def cost(prob: Loaded, reps: int, block: int = 0) -> dict:
    """``block`` is ignored: this library multiplies one vector at a time."""
    ph = _module()
    h, _ = _hessian(prob)
    g = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in h.params]
    return product_costs(prob, reps, lambda: ph.hessian_vector_product(h.gradsH, h.params, v))

"""BackPACK 1.7.1 runner: exact Hessian diagonal (trace) and its Hessian-vector product.

BackPACK has no eigensolver or density estimator, so it appears in two measures:

* trace: ``DiagHessian`` extension on ``extend(model)`` / ``extend(CrossEntropyLoss())``:
  the exact diagonal in one extended backward pass (no Hessian-vector products; only for
  the layers BackPACK supports), summed.
* cost: ``backpack.hessianfree.hvp.hessian_vector_product(loss, params, v)`` on a loss
  whose forward pass is done once (each call differentiates twice through it).
"""

from __future__ import annotations

import copy
import time

import torch
from common import Loaded, product_costs

LIBRARY = "backpack"


def trace_diag(prob: Loaded, budget: int, seed: int) -> dict:
    from backpack import backpack, extend
    from backpack.extensions import DiagHessian

    t0 = time.perf_counter()
    model = extend(copy.deepcopy(prob.model).eval())
    lossf = extend(prob.criterion)
    loss = lossf(model(prob.x), prob.y)
    with backpack(DiagHessian()):
        loss.backward()
    value = sum(float(p.diag_h.sum()) for p in model.parameters())
    return {
        "value": value,
        "stderr": None,
        "exact": True,
        "products": 0,
        "wall_s": time.perf_counter() - t0,
    }


def cost(prob: Loaded, reps: int, block: int = 0) -> dict:
    """``block`` is ignored: this library multiplies one vector at a time."""
    from backpack.hessianfree.hvp import hessian_vector_product

    params = [p for p in prob.model.parameters() if p.requires_grad]
    loss = prob.criterion(prob.model(prob.x), prob.y)
    g = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    return product_costs(prob, reps, lambda: hessian_vector_product(loss, params, v))

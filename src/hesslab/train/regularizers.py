r"""Differentiable curvature penalties for any training loop.

Two penalties on the Hessian ``H_B = ∇²_θ L_B(θ)`` of the *current minibatch* loss, each
estimated with ``K`` random probes and differentiated through the Hessian-vector products
(double backprop), so ``(L_B + penalty).backward()`` descends both:

* :class:`HessianTracePenalty` (Sankar, Khasbage, Vigneswaran, Balasubramanian, AAAI
  2021, arXiv:2012.03801): ``γ · (1/K) Σᵢ vᵢᵀ H_B vᵢ``, an unbiased Hutchinson estimate of
  ``γ · tr H_B`` (Rademacher or Gaussian ``vᵢ``, ``E[v vᵀ] = I``).
* :class:`WSBoundPenalty` (the "HSR" idea): ``γ · U`` with the Wolkowicz–Styan upper
  bound ``λ_max ≤ U = μ + s √(P−1)``, ``μ = tr H / P``, ``s² = tr H²/P − μ²`` (Wolkowicz &
  Styan, 1980), where ``tr H ≈ (1/K) Σ vᵢᵀHvᵢ`` and ``tr H² ≈ (1/K) Σ ‖Hvᵢ‖²`` use the same
  probes. Lowering ``U`` pushes down ``λ_max`` and narrows the spread of the spectrum.

Both act on all parameters, an explicit subset (names, glob patterns, submodules), or the
middle of the network: ``selection="middle"`` is the paper's rule (of the ``n`` parameter
tensors in model order, those with index in ``[⌊n/4⌋, ⌊3n/4⌋]``, both ends included; the
probes are zero elsewhere, so the penalty is the trace of the diagonal block ``H_SS``),
``selection="middle-layers"`` the same rule over the layers of
:func:`hesslab.layer_groups` (a layer's weight and bias together). On a subset the
penalty is that of the block ``H_SS``, but its gradient reaches every parameter (the
block depends on all of them).

Computation per active step and probe ``v`` (``g = ∇_S L_B`` built with
``create_graph=True``): ``Hv = ∇_S (gᵀv)`` again with ``create_graph=True``; then
``vᵀHv`` (and ``‖Hv‖²``) are ordinary differentiable tensors. The cost is one
forward/backward plus ``K`` double-backward passes, so ``every=`` (the paper's ``freq``)
and ``start_step=`` switch the penalty on only at some steps.

Usage in a training loop::

    penalty = HessianTracePenalty(gamma=1e-3, num_probes=10, selection="middle", seed=0)
    for step, (x, y) in enumerate(loader):
        out = model(x)
        loss = F.cross_entropy(out, y)
        total = loss + penalty(model, (x, y), F.cross_entropy, step, loss=loss)
        opt.zero_grad()
        total.backward()
        opt.step()

Passing ``loss=`` reuses the loop's forward pass (no second forward; BatchNorm running
statistics are updated once). Without it the penalty runs its own forward pass on the
model as it is (train or eval mode, never changed), on copies of the model's buffers
(BatchNorm running statistics stay untouched), so it leaves no state behind besides what
``backward()`` accumulates in ``.grad``.

BatchNorm: ``backward()`` of the penalty is a third derivative of the loss, and torch's
fused training-mode ``batch_norm`` kernel gets it wrong (torch 2.13: a gradient off by
~10%) or refuses it (torch 2.14). The penalty's own forward therefore runs inside
:func:`differentiable_batch_norm` (batch and instance norm from elementary ops, the same
function; in training mode the batch statistics are differentiated as the functions of
the parameters they are). A ``loss=`` whose graph holds the fused training-mode kernel
is refused with a :class:`~hesslab.errors.ConfigurationError` that says to wrap the
loop's forward in :func:`differentiable_batch_norm`; eval-mode BatchNorm is fine.
"""

from __future__ import annotations

import logging

from hesslab.train._norms import differentiable_batch_norm
from hesslab.train.penalty_selection import middle_layer_parameters, middle_parameters
from hesslab.train.probe_penalty import PenaltyRecord
from hesslab.train.trace_penalty import HessianTracePenalty
from hesslab.train.ws_penalty import WSBoundPenalty

__all__ = [
    "HessianTracePenalty",
    "PenaltyRecord",
    "WSBoundPenalty",
    "differentiable_batch_norm",
    "middle_layer_parameters",
    "middle_parameters",
]

logger = logging.getLogger(__name__)

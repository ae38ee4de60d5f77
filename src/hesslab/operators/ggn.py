"""The generalized Gauss–Newton matrix as a linear operator.

``G = sum_b w_b J_b^T (d^2 loss_b / d f^2) J_b`` where ``J_b`` is the Jacobian of the model
outputs ``f`` on batch ``b`` with respect to the parameters (Schraudolph, 2002, "Fast
curvature matrix-vector products for second-order gradient descent"). It is the part of
the Hessian that does not involve second derivatives of the model: ``H = G + R`` with
``R = sum_b w_b sum_c (d loss_b / d f_c) d^2 f_c / d theta^2`` (Sagun et al., 2017).

The loss Hessian is applied in closed form for cross-entropy
(``diag(p) - p p^T`` per point, ``p = softmax(f)``) and mean-squared error (``2 I``, with
the criterion's normalisation), and by automatic differentiation for any other criterion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap

from hesslab.errors import ConfigurationError
from hesslab.losses import LossSpec, ce_item_weights, ce_layout
from hesslab.objective import Objective
from hesslab.operators.curvature import CurvatureOperator
from hesslab.validation import check_targets

__all__ = ["GGNOperator", "ggn", "loss_hessian_product"]


def loss_hessian_product(
    objective: Objective, outputs: Tensor, targets: Tensor
) -> Callable[[Tensor], Tensor]:
    """Return ``U -> (d^2 loss / d f^2) U`` for a batch's outputs ``[N_b, ...]``.

    ``U`` has the outputs' shape; the loss is the objective's criterion with its reduction.
    """
    spec = objective.loss
    if spec.is_ce and (spec.label_smoothing == 0.0 or spec.weight is None):
        return _ce_hessian_product(spec, outputs, targets)
    if spec.kind == "mse":
        scale = 2.0 / outputs.numel() if spec.reduction == "mean" else 2.0
        return lambda U: scale * U

    def generic(U: Tensor) -> Tensor:
        g = grad(lambda o: objective.criterion(o, targets))
        return jvp(g, (outputs.detach(),), (U,))[1]

    return generic


def _ce_hessian_product(spec: LossSpec, outputs: Tensor, targets: Tensor) -> Callable:
    """``U -> sum_items w_item (diag(p) - p p^T) U_item`` for summed cross-entropy.

    ``p = softmax`` of each item's logits, ``w_item`` its class weight (0 if ignored; label
    smoothing leaves the logit Hessian unchanged since the smoothed targets sum to one).
    Never forms a ``V x V`` matrix: memory ``O(items * V)``.
    """
    logits, labels = ce_layout(spec, outputs, targets)
    p = torch.softmax(logits, dim=-1)
    w = ce_item_weights(spec, labels, p.dtype).unsqueeze(-1)
    wp = w * p

    def ce(U: Tensor) -> Tensor:
        Ul, _ = ce_layout(spec, U, targets)
        pu = wp * Ul
        HU = pu - wp * (p * Ul).sum(-1, keepdim=True)
        return _unlayout(spec, HU, U)

    return ce


def _unlayout(spec: LossSpec, HU: Tensor, like: Tensor) -> Tensor:
    """Undo :func:`ce_layout` on a product (zero rows where the layout dropped positions)."""
    if spec.kind == "causal_lm":
        return torch.cat([HU, torch.zeros_like(like[:, -1:])], dim=1)
    if HU.shape != like.shape:  # class dimension moved last from position 1
        return HU.movedim(-1, 1)
    return HU


class GGNOperator(CurvatureOperator):
    """Exact generalized Gauss–Newton products over the full data.

    Needs a criterion loss (``loss_fn(outputs, targets)``): the split into model and loss
    defines ``G``. Products run one batched forward-mode pass (``J V``) and one batched
    reverse pass (``J^T U``) per batch.

    Args:
        objective: the :class:`~hesslab.Objective` (criterion loss).
        autocast: ``"bfloat16"`` or ``"float16"`` runs the model's forward, ``J V`` and
            ``J^T U`` of each batch under :func:`torch.autocast` (float32 parameters only);
            the loss Hessian is applied to float32 outputs, and the batches' products are
            summed in float32. Error against float64: ``bench/results/autocast_error.md``.
    """

    def __init__(self, objective: Objective, *, autocast: str | torch.dtype | None = None) -> None:
        if objective.loss.kind == "custom":
            raise ConfigurationError(
                "the Gauss–Newton matrix needs a criterion loss_fn(outputs, targets) to split "
                "the objective into model and loss; a custom loss_fn(model_fn, batch) has no "
                "such split"
            )
        super().__init__(objective, autocast=autocast)

    def _batch_matmat(self, batch: Any, Vd: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        obj = self.objective
        x, y = obj._split(batch)

        def f(theta: Mapping[str, Tensor]) -> Tensor:
            return obj.forward(theta, x)

        out, pullback = vjp(f, obj.theta)
        low = out.dtype  # lower than float32 under autocast: the loss Hessian runs in float32
        out = out.detach().float() if self.autocast is not None else out.detach()
        y = check_targets(obj.loss.kind, out, y, obj.loss.fn)  # closed forms never read y
        apply_h = loss_hessian_product(obj, out, y)

        def jv(v: Mapping[str, Tensor]) -> Tensor:
            return jvp(f, (obj.theta,), (v,))[1].to(out.dtype)

        K = next(iter(Vd.values())).shape[0]
        if K == 1:
            JV = jv({n: t[0] for n, t in Vd.items()}).unsqueeze(0)
        else:
            JV = vmap(jv)(dict(Vd))
        HJV = torch.stack([apply_h(JV[k]) for k in range(K)]) if K > 1 else apply_h(JV[0])[None]
        HJV = HJV.to(low)  # the pullback's cotangent has the outputs' dtype
        if K == 1:
            return {n: t.unsqueeze(0) for n, t in pullback(HJV[0])[0].items()}
        return vmap(pullback)(HJV)[0]


def ggn(
    model_or_objective: Any,
    loss_fn: Any = None,
    data: Any = None,
    params: Any = None,
    *,
    autocast: str | torch.dtype | None = None,
    **kw: Any,
) -> GGNOperator:
    """The generalized Gauss–Newton matrix of the full-data loss as an operator.

    Same calling convention as :func:`hesslab.hessian` (``autocast`` as there).
    """
    from hesslab.operators.hessian import _objective

    return GGNOperator(_objective(model_or_objective, loss_fn, data, params, kw), autocast=autocast)

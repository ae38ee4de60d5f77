r"""Papyan's class / cross-class decomposition of the Gauss–Newton matrix, as operators.

For a ``C``-class softmax cross-entropy model with logits ``z_i = f(x_i; theta)``,
logit Jacobians ``J_i`` (``C x P``) and probabilities ``p_i = softmax(z_i)``, the
Gauss–Newton term of the Hessian of the mean loss is

.. math::  G = \frac1N \sum_i J_i^\top (\mathrm{diag}\,p_i - p_i p_i^\top) J_i .

Papyan (2019, Sec. 3; 2020, Sec. 2) factors the loss Hessian as
``diag p - p p^T = sum_{c'} p_{c'} (e_{c'} - p)(e_{c'} - p)^T`` (exact because
``sum_{c'} p_{c'} = 1``) and so writes ``G`` as a second moment of ``C`` weighted
"gradient-like" vectors per sample,

.. math::
    \Delta_{i,c'} = \sqrt{p_{i,c'}}\, J_i^\top (e_{c'} - p_i), \qquad
    G = \sum_c \pi_c \,\mathrm{Ave}_{i \in c} \sum_{c'} \Delta_{i,c'} \Delta_{i,c'}^\top ,

(``Delta_{i,c'}`` is ``sqrt(p_{i,c'})`` times the gradient of the loss of sample ``i`` had
its label been ``c'``; ``pi_c = N_c / N`` is the share of class ``c``). Grouping the
vectors by the true class ``c`` of the sample and the logit ``c'`` gives ``C^2`` means and
their two-way (class / cross-class) structure,

.. math::
    \delta_{c,c'} = \mathrm{Ave}_{i \in c}\, \Delta_{i,c'}, \qquad
    \delta_c = \frac1C \sum_{c'} \delta_{c,c'}, \qquad
    \delta = \sum_c \pi_c \delta_c ,

and the exact split into positive semi-definite parts

.. math::
    G = \underbrace{C \sum_c \pi_c \delta_c \delta_c^\top}_{\text{class means, rank} \le C}
      + \underbrace{\sum_c \pi_c \sum_{c'} (\delta_{c,c'} - \delta_c)(\ldots)^\top}
                   _{\text{cross-class, rank} \le C(C-1)}
      + \underbrace{\sum_c \pi_c \mathrm{Ave}_{i\in c} \sum_{c'}
                    (\Delta_{i,c'} - \delta_{c,c'})(\Delta_{i,c'} - \delta_{c,c'})^\top}
                   _{\text{within-class}} ,

with the class-mean part itself ``C delta delta^T`` (the global mean, rank 1) plus
``C sum_c pi_c (delta_c - delta)(delta_c - delta)^T`` (rank ``<= C - 1``). The cross terms
vanish because ``sum_{c'} (delta_{c,c'} - delta_c) = 0`` and ``sum_c pi_c (delta_c - delta)
= 0``. Papyan's finding: the ``C`` (or ``C - 1``) outliers of the spectrum come from the
class means, the ``C(C - 1)`` "mini-bulk" from the cross-class means, and the main bulk
from the within-class variation.

Measured here (tests/test_class_structure.py): a tanh MLP trained on 4 tight Gaussian
classes has 4 outliers whose eigenvectors lie in the span of the class means (fraction
>= 0.98; the class-means part alone carries ~65% of each outlier's eigenvalue, the
cross-class part the rest, in the same directions), then a mini-bulk of
``C(C - 2) = 8`` eigenvalues in the span of the cross-class means, then the bulk; on a
64-32-32-10 ReLU MLP trained on digits, 8 of the top 10 eigenvectors of ``G`` have >= 77%
of their squared norm in the span of the 10 class means and the top 12 have >= 85% in
the span of the class and cross-class means.

Example::

    cs = hesslab.class_structure(hesslab.Objective(model.eval(), "ce", (x, y)))
    top = hesslab.eigenpairs(cs.ggn, 20, "largest")
    subspace_fraction(top.vectors, cs.class_means.range_basis())  # near 1: class outliers

Cost: the ``C^2`` means take ``C^2`` vector–Jacobian products per batch (vmapped ``C`` at
a time) and are stored as ``[C^2, P]``; the mean parts are then low-rank operators
``B diag(w) B^T`` with exact spectra from an ``r x r`` Gram matrix, and the within-class
part costs one ``jvp`` and one ``vjp`` per batch per vector, like ``G`` itself. Nothing
``P x P`` or ``N x P`` is formed.

Tags (see ``shared/docs/PAPERS.md``): the grouping by (true class, logit), the
``sqrt(p)`` weighting, the class / cross-class / within split and the attribution of the
spectral features are [R] (Papyan 2019, 2020); the exact formulas here (the unweighted
mean over ``c'`` for ``delta_c``, the class weights ``pi_c``) are [DER], chosen so that the
parts are positive semi-definite and sum to ``G`` exactly — the full paper text was not
available offline.

References:
    Papyan (2019), "Measurements of Three-Level Hierarchical Structure in the Outliers in
    the Spectrum of Deepnet Hessians", ICML, arXiv:1901.08244.
    Papyan (2020), "Traces of Class/Cross-Class Structure Pervade Deep Learning Spectra",
    JMLR 21(252), arXiv:2008.11865.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from hesslab.errors import ConfigurationError, DataError
from hesslab.objective import Objective
from hesslab.operators.base import LinearOperator
from hesslab.operators.ggn import GGNOperator

__all__ = [
    "ClassStructure",
    "LowRankOperator",
    "WithinClassOperator",
    "class_means",
    "class_structure",
    "subspace_fraction",
]


class LowRankOperator(LinearOperator):
    """``A = B diag(w) B^T`` for a ``[P, r]`` block ``B`` and weights ``w >= 0``.

    Args:
        basis: ``[P, r]`` columns ``b_j``.
        weights: ``[r]`` non-negative weights ``w_j``.
    """

    def __init__(self, basis: Tensor, weights: Tensor) -> None:
        if basis.ndim != 2 or weights.shape != (basis.shape[1],):
            raise ConfigurationError(
                f"need a [P, r] basis and [r] weights, got {tuple(basis.shape)} and "
                f"{tuple(weights.shape)}"
            )
        if bool((weights < 0).any()):
            raise ConfigurationError("LowRankOperator weights must be non-negative")
        super().__init__(basis.shape[0], basis.dtype, basis.device)
        self.basis, self.weights = basis, weights.to(basis.dtype)

    def _matmat(self, V: Tensor) -> Tensor:
        return self.basis @ (self.weights[:, None] * (self.basis.T @ V))

    def gram(self) -> Tensor:
        """``diag(sqrt w) B^T B diag(sqrt w)``: ``r x r``, same non-zero spectrum as ``A``."""
        s = self.weights.sqrt()
        return s[:, None] * (self.basis.T @ self.basis) * s[None, :]

    def eigenvalues(self) -> Tensor:
        """The ``r`` largest eigenvalues of ``A`` exactly (descending; the rest are 0)."""
        M = self.gram().to(torch.float64)
        return torch.linalg.eigvalsh((M + M.T) / 2).flip(0).clamp_min(0.0)

    def rank(self, rtol: float | None = None) -> int:
        """Numerical rank: eigenvalues above ``rtol * lambda_max`` (default ``r P eps``)."""
        ev = self.eigenvalues()
        if rtol is None:
            rtol = max(self.basis.shape) * self.basis.shape[1] * torch.finfo(self.dtype).eps
        return int((ev > rtol * float(ev[0])).sum()) if float(ev[0]) > 0 else 0

    def range_basis(self, rtol: float | None = None) -> Tensor:
        """Orthonormal ``[P, rank]`` basis of the range of ``A``."""
        M = self.gram().to(torch.float64)
        ev, W = torch.linalg.eigh((M + M.T) / 2)
        k = self.rank(rtol)
        W = W[:, ev.argsort(descending=True)[:k]].to(self.dtype)
        Q = self.basis @ (self.weights.sqrt()[:, None] * W)
        return torch.linalg.qr(Q).Q


def _logits_and_pullback(obj: Objective, batch: Any) -> tuple[Any, Any, Tensor, Tensor, Any]:
    x, y = obj._split(batch)

    def f(theta: Mapping[str, Tensor]) -> Tensor:
        return obj.forward(theta, x)

    out, pullback = vjp(f, obj.theta)
    if out.ndim != 2 or y.ndim != 1 or y.is_floating_point():
        raise DataError(
            "the class structure needs logits [N, C] and integer class labels [N]; got "
            f"outputs {tuple(out.shape)} and labels {tuple(y.shape)} {y.dtype}"
        )
    return f, pullback, out.detach(), y, x


def _check_objective(objective: Objective) -> None:
    if not isinstance(objective, Objective):
        raise ConfigurationError(
            f"expected a hesslab.Objective, got {type(objective).__name__}; build one with "
            "hesslab.Objective(model, 'ce', data)"
        )
    if objective.loss.kind != "ce":
        raise ConfigurationError(
            "Papyan's class structure is defined for softmax cross-entropy: build the "
            f"objective with loss 'ce' (got a {objective.loss.kind!r} loss)"
        )


def class_means(objective: Objective, num_classes: int | None = None) -> tuple[Tensor, Tensor]:
    r"""The ``C^2`` means ``delta_{c,c'}`` and the class counts ``N_c``.

    Returns:
        ``([C, C, P] means, [C] counts)``; ``means[c, c']`` averages
        ``sqrt(p_{i,c'}) J_i^T (e_{c'} - p_i)`` over the samples ``i`` of class ``c``.

    Raises:
        DataError: outputs are not ``[N, C]`` logits with labels in ``0..C-1``, or a class
            has no samples.
    """
    _check_objective(objective)
    space = objective.space
    sums: Tensor | None = None
    counts: Tensor | None = None
    C = num_classes
    for batch, _ in objective.batches():
        _, pullback, out, y, _ = _logits_and_pullback(objective, batch)
        if C is None:
            C = out.shape[1]
        if out.shape[1] != C or int(y.min()) < 0 or int(y.max()) >= C:
            raise DataError(
                f"labels must lie in 0..{C - 1} and logits have {C} columns; got logits "
                f"{tuple(out.shape)} and labels in [{int(y.min())}, {int(y.max())}]"
            )
        if sums is None:
            sums = torch.zeros(C, C, space.size, dtype=space.dtype, device=space.device)
            counts = torch.zeros(C, dtype=torch.long, device=y.device)
        p = torch.softmax(out, dim=1)
        eye = torch.eye(C, dtype=p.dtype, device=p.device)
        A = p.sqrt()[:, :, None] * (eye[None] - p[:, None, :])  # [N_b, c', C]
        counts += torch.bincount(y, minlength=C)
        for c in torch.unique(y).tolist():
            U = A * (y == c).to(A.dtype)[:, None, None]  # zero outside class c
            grads = vmap(pullback)(U.permute(1, 0, 2).contiguous())[0]
            sums[c] += space.flatten_block(grads).T
    assert sums is not None and counts is not None
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).reshape(-1).tolist()
        raise DataError(
            f"classes {empty} have no samples in the data; the class structure needs every "
            f"one of the {C} classes (pass num_classes= for the classes present)"
        )
    return sums / counts.to(sums.dtype)[:, None, None], counts


class WithinClassOperator(LinearOperator):
    r"""``G_within = sum_c pi_c Ave_{i in c} sum_{c'} (Delta_{i,c'} - delta_{c,c'})(...)^T``.

    Products are computed directly from the per-sample vectors (one batched ``jvp`` and
    one batched ``vjp`` per batch), not as ``G`` minus the mean parts, so the operator is
    positive semi-definite up to rounding even when it is small next to ``G``.

    Args:
        objective: a cross-entropy :class:`~hesslab.Objective`.
        means: ``[C, C, P]`` class / cross-class means from :func:`class_means`.
    """

    def __init__(self, objective: Objective, means: Tensor) -> None:
        _check_objective(objective)
        super().__init__(objective.space.size, objective.space.dtype, objective.space.device)
        self.objective, self.space = objective, objective.space
        self.C = means.shape[0]
        self._D = means.reshape(self.C * self.C, -1)  # [C^2, P]

    def _batch(self, batch: Any, V: Tensor, Vd: Mapping[str, Tensor]) -> Tensor:
        obj, C = self.objective, self.C
        f, pullback, out, y, _ = _logits_and_pullback(obj, batch)
        p = torch.softmax(out, dim=1)
        sq = p.sqrt()
        JV = vmap(lambda v: jvp(f, (obj.theta,), (v,))[1])(dict(Vd))  # [K, N_b, C]
        a = sq * (JV - (p * JV).sum(-1, keepdim=True))  # Delta_{i,c'}^T v
        m = (self._D @ V).reshape(C, C, -1)[y].permute(2, 0, 1)  # delta_{y_i,c'}^T v
        b = a - m  # [K, N_b, C']
        sb = sq * b
        U = sb - p * sb.sum(-1, keepdim=True)  # sum_{c'} sqrt p (e_{c'} - p) b_{i,c'}
        first = self.space.flatten_block(vmap(pullback)(U)[0])  # [P, K]
        onehot = torch.nn.functional.one_hot(y, C).to(b.dtype)  # [N_b, C]
        coeff = torch.einsum("ic,kid->cdk", onehot, b).reshape(C * C, -1)
        return first - self._D.T @ coeff

    def _matmat(self, V: Tensor) -> Tensor:
        Vd = self.space.unflatten_block(V)
        out = torch.zeros_like(V)
        for batch, _ in self.objective.batches():
            out += self._batch(batch, V, Vd)
        return out / self.objective.num_data


@dataclass(frozen=True, eq=False)
class ClassStructure:
    """Papyan's decomposition ``G = class_means + cross_class + within_class``.

    Attributes:
        ggn: ``G`` itself (:class:`~hesslab.GGNOperator`).
        class_means: ``C sum_c pi_c delta_c delta_c^T`` (rank ``<= C``).
        cross_class: ``sum_c pi_c sum_{c'} (delta_{c,c'} - delta_c)(...)^T``
            (rank ``<= C(C-1)``).
        within_class: the within-class part (:class:`WithinClassOperator`).
        global_mean: ``C delta delta^T``, rank 1; ``class_means = global_mean +
            class_means_centered``.
        class_means_centered: ``C sum_c pi_c (delta_c - delta)(delta_c - delta)^T``
            (rank ``<= C - 1``).
        means: ``[C, C, P]`` the means ``delta_{c,c'}``.
        class_weights: ``[C]`` ``pi_c = N_c / N``.
        num_vjps: vector–Jacobian products spent on the means (``C^2`` per batch).
        seconds: wall time of the construction.
    """

    ggn: LinearOperator
    class_means: LowRankOperator
    cross_class: LowRankOperator
    within_class: WithinClassOperator
    global_mean: LowRankOperator
    class_means_centered: LowRankOperator
    means: Tensor
    class_weights: Tensor
    num_vjps: int
    seconds: float

    @property
    def num_classes(self) -> int:
        """``C``."""
        return int(self.means.shape[0])

    def parts(self) -> dict[str, LinearOperator]:
        """``{"class_means", "cross_class", "within_class"}``: the parts that sum to ``G``."""
        return {
            "class_means": self.class_means,
            "cross_class": self.cross_class,
            "within_class": self.within_class,
        }

    def predicted_ranks(self) -> dict[str, int]:
        """Upper bounds on the ranks: ``C``, ``C - 1``, ``C(C - 1)`` (Papyan 2020)."""
        C = self.num_classes
        return {"class_means": C, "class_means_centered": C - 1, "cross_class": C * (C - 1)}


def class_structure(objective: Objective, num_classes: int | None = None) -> ClassStructure:
    """Decompose the Gauss–Newton matrix of ``objective`` (see the module docstring).

    Args:
        objective: a softmax cross-entropy :class:`~hesslab.Objective` whose model
            returns logits ``[N, C]`` and whose data holds labels ``0..C-1``.
        num_classes: ``C``; default: the number of logits.

    Returns:
        A :class:`ClassStructure` of operators over the objective's parameters.

    Raises:
        ConfigurationError: the loss is not cross-entropy.
        DataError: outputs or labels do not fit, or a class has no samples.
    """
    t0 = time.perf_counter()
    means, counts = class_means(objective, num_classes)
    C, P = means.shape[0], means.shape[2]
    pi = (counts.to(means.dtype) / counts.sum()).to(means.device)
    d_c = means.mean(1)  # [C, P]
    d = pi @ d_c  # [P]
    cross = (means - d_c[:, None, :]).reshape(C * C, P).T
    return ClassStructure(
        ggn=GGNOperator(objective),
        class_means=LowRankOperator(d_c.T.contiguous(), C * pi),
        cross_class=LowRankOperator(cross.contiguous(), pi.repeat_interleave(C)),
        within_class=WithinClassOperator(objective, means),
        global_mean=LowRankOperator(d[:, None], torch.full_like(pi[:1], float(C))),
        class_means_centered=LowRankOperator((d_c - d).T.contiguous(), C * pi),
        means=means,
        class_weights=pi,
        num_vjps=C * C * objective.num_batches,
        seconds=time.perf_counter() - t0,
    )


def subspace_fraction(vectors: Tensor, basis: Tensor) -> Tensor:
    """``||Q^T v_j||^2 / ||v_j||^2`` per column ``v_j``: how much of each lies in ``range(Q)``.

    ``basis`` is orthonormalised here (QR). With ``vectors`` the top eigenvectors of
    ``G`` and ``basis`` :meth:`LowRankOperator.range_basis` of the class-mean part, values
    near 1 say the outliers live in the span of the class means.
    """
    Q = torch.linalg.qr(basis.to(vectors.dtype)).Q
    return (Q.T @ vectors).square().sum(0) / vectors.square().sum(0)


# Short notebook-friendly reprs (key numbers, not the tensors): see hesslab.display.
from hesslab import display as _display  # noqa: E402

_display.attach(ClassStructure, _display.class_structure_summary)

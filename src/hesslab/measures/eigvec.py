"""Eigenvector statistics: localization (IPR), displacement and subspace overlap.

Definitions (PAPERS.md §4, the "eigenvector displacement and localization" line of work;
Li et al., 2019, arXiv:1907.10732 for the H-vs-M overlap):

* **Inverse participation ratio** of a vector ``v in R^P``::

      IPR(v) = sum_i v_i^4 / (sum_i v_i^2)^2

  It is 1 for a vector on a single coordinate and ``1/P`` for a vector spread evenly over
  all ``P`` coordinates; ``1/IPR`` is the "number of participating parameters". For a
  uniformly random unit vector ``E[IPR] = 3/(P+2)`` exactly (:func:`ipr_null`), the null
  model against which localization is judged.
* **Displacement** of a unit eigenvector between two times (sign-invariant)::

      Delta(v_ref, v) = 2 (1 - |<v_ref, v>|)        in [0, 2]

  0 for ``v = +-v_ref``, 2 for orthogonal vectors. For near-degenerate eigenvalues the
  individual vectors are ill-defined and the **subspace form** is used::

      Delta_k(U_ref, U) = 1 - ||U_ref^T U||_F^2 / k    in [0, 1]

  0 for the same span (any rotation inside it), 1 for orthogonal spans.
* **Subspace overlap** ``||U^T W||_F^2 / k`` (e.g. top-``k`` eigenvectors of ``H`` and of
  the gradient second moment ``M``, Li et al., 2019) and **gradient alignment**
  ``||U^T g||^2 / ||g||^2``, the fraction of the gradient's squared norm in ``span(U)``.

All arithmetic is in float64 on the inputs' device; results are Python floats or float64
CPU tensors (one entry per column).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError, OperatorInputError
from hesslab.params import ParamSpace

__all__ = [
    "displacement",
    "gradient_alignment",
    "ipr",
    "ipr_null",
    "layer_ipr",
    "subspace_displacement",
    "subspace_overlap",
]

logger = logging.getLogger(__name__)


def _as64(x: Any, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise OperatorInputError(f"{name} must be a tensor or numpy array, got {type(x).__name__}")
    if x.ndim not in (1, 2) or x.numel() == 0:
        raise OperatorInputError(
            f"{name} must be a non-empty vector [P] or matrix [P, k], got shape {tuple(x.shape)}"
        )
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.float64)
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise OperatorInputError(f"{name} contains NaN or infinite entries")
    return x


def _columns(x: Any, name: str) -> tuple[Tensor, bool]:
    x = _as64(x, name)
    vector = x.ndim == 1
    return (x.unsqueeze(1) if vector else x), vector


def _out(values: Tensor, vector: bool) -> float | Tensor:
    return float(values[0]) if vector else values.cpu()


def _unit_columns(X: Tensor, name: str) -> Tensor:
    norms = X.norm(dim=0)
    if bool((norms == 0).any()):
        raise OperatorInputError(f"{name} has a zero column; eigenvectors must be non-zero")
    return X / norms


def _orthonormal(U: Tensor, name: str) -> Tensor:
    """Orthonormal basis of ``span(U)`` (QR in float64); refuses rank-deficient input."""
    if U.shape[1] > U.shape[0]:
        raise OperatorInputError(
            f"{name} has more columns ({U.shape[1]}) than rows ({U.shape[0]}); pass [P, k] "
            "with k <= P"
        )
    Q, R = torch.linalg.qr(U)
    d = R.diagonal().abs()
    if bool((d <= 1e-12 * max(float(d.max()), 1e-300)).any()):
        raise OperatorInputError(
            f"the columns of {name} are linearly dependent; pass k independent vectors"
        )
    return Q


def ipr(
    v: Tensor | np.ndarray,
    groups: Mapping[str, Any] | None = None,
    *,
    space: ParamSpace | None = None,
) -> float | Tensor | dict[str, float | Tensor]:
    """Inverse participation ratio ``IPR(v) = sum_i v_i^4 / (sum_i v_i^2)^2``.

    Scale-invariant (no normalisation needed). ``1`` for a coordinate vector, ``1/P`` for
    a vector of equal-magnitude entries; ``3/(P+2)`` in expectation for a random unit
    vector (:func:`ipr_null`).

    Args:
        v: a vector ``[P]`` or the columns of ``[P, k]`` (e.g. ``EigenResult.vectors``).
        groups: optional per-layer groups. Either ``{name: index}`` with ``index`` a slice,
            a LongTensor / list of flat indices, or (with ``space``) ``{name: [parameter
            names]}`` as returned by :func:`hesslab.layer_groups`.
        space: the :class:`~hesslab.ParamSpace` of ``v`` (``Objective.space``), needed when
            the groups hold parameter names.

    Returns:
        Without ``groups``: a float (vector input) or a ``[k]`` float64 tensor. With
        ``groups``: ``{group: IPR of v restricted to the group}`` (the restriction is
        renormalised, so each value is the layer's own localization, in ``[1/P_g, 1]``);
        a group where ``v`` vanishes gets NaN.

    Reference:
        The localization measure of the "eigenvector displacement and localization" line
        of work (PAPERS.md §4); Bell & Dean (1970) for the IPR itself.
    """
    X, vector = _columns(v, "v")
    if groups is None:
        sq = X * X
        den = sq.sum(dim=0) ** 2
        if bool((den == 0).any()):
            raise OperatorInputError("v has a zero column; the IPR of the zero vector is undefined")
        return _out((sq * sq).sum(dim=0) / den, vector)
    out: dict[str, float | Tensor] = {}
    P = X.shape[0]
    for name, idx in groups.items():
        index = _group_index(name, idx, space, P)
        sq = X[index] ** 2
        den = sq.sum(dim=0) ** 2
        val = torch.where(den > 0, (sq * sq).sum(dim=0) / den.clamp_min(1e-300), torch.nan)
        out[name] = _out(val, vector)
    return out


def _group_index(name: str, idx: Any, space: ParamSpace | None, P: int) -> Tensor | slice:
    if isinstance(idx, slice):
        return idx
    if isinstance(idx, Sequence) and idx and all(isinstance(i, str) for i in idx):
        if space is None:
            raise ConfigurationError(
                f"group {name!r} lists parameter names; pass space=objective.space so they "
                "can be mapped to flat indices"
            )
        if space.size != P:
            raise ConfigurationError(f"space has P={space.size} entries but v has {P} rows")
        return space.indices(idx)
    index = torch.as_tensor(idx, dtype=torch.long).flatten()
    if index.numel() == 0 or int(index.max()) >= P or int(index.min()) < -P:
        raise ConfigurationError(
            f"group {name!r} must be a non-empty set of flat indices in [0, {P}), a slice, "
            "or parameter names with space="
        )
    return index


def layer_ipr(
    v: Tensor | np.ndarray, space: ParamSpace, groups: Mapping[str, Sequence[str]]
) -> dict[str, float | Tensor]:
    """Per-layer IPR of ``v`` for parameter-name groups.

    Shorthand for ``ipr(v, groups, space=space)``.
    """
    return ipr(v, groups, space=space)  # type: ignore[return-value]


def ipr_null(P: int) -> float:
    """``E[IPR(u)] = 3 / (P + 2)`` for ``u`` uniform on the unit sphere of ``R^P``.

    With ``u = g/||g||``, ``g ~ N(0, I_P)``: ``E[u_i^4] = 3 / (P (P + 2))``, so
    ``E[sum_i u_i^4] = 3/(P+2)`` (close to ``3/P`` for large ``P``). The value a
    delocalized (random) direction has; larger values mean localization.
    """
    if not isinstance(P, (int, np.integer)) or P < 1:
        raise ConfigurationError(f"P must be a positive integer, got {P!r}")
    return 3.0 / (int(P) + 2)


def displacement(v_ref: Tensor | np.ndarray, v: Tensor | np.ndarray) -> float | Tensor:
    """Sign-invariant displacement ``2 (1 - |<v_ref, v>|)`` of unit vectors, columnwise.

    Inputs are normalised to unit length first (so the value is ``2 (1 - |cos angle|)``).

    Args:
        v_ref: ``[P]`` or ``[P, k]``, e.g. eigenvectors at the reference time ``t_w``.
        v: same shape, the eigenvectors at the later time (column ``i`` is compared with
            column ``i`` of ``v_ref``).

    Returns:
        A float in ``[0, 2]`` for vectors, a ``[k]`` float64 tensor for matrices.
    """
    A, vector = _columns(v_ref, "v_ref")
    B, _ = _columns(v, "v")
    if A.shape != B.shape:
        raise OperatorInputError(
            f"v_ref and v must have the same shape, got {tuple(A.shape)} and {tuple(B.shape)}"
        )
    A = _unit_columns(A, "v_ref")
    B = _unit_columns(B.to(A.device), "v")
    cos = (A * B).sum(dim=0).abs().clamp(max=1.0)
    return _out(2.0 * (1.0 - cos), vector)


def _subspace_pair(U: Any, W: Any, nu: str, nw: str) -> tuple[Tensor, Tensor]:
    A, _ = _columns(U, nu)
    B, _ = _columns(W, nw)
    if A.shape[0] != B.shape[0]:
        raise OperatorInputError(
            f"{nu} and {nw} must have the same number of rows P, got {A.shape[0]} and {B.shape[0]}"
        )
    return _orthonormal(A, nu), _orthonormal(B.to(A.device), nw)


def subspace_overlap(U: Tensor | np.ndarray, W: Tensor | np.ndarray) -> float:
    """Overlap ``||U^T W||_F^2 / k`` of two subspaces, ``k = min(k_U, k_W)``.

    Both inputs are orthonormalised (QR) first, so only their spans matter. In ``[0, 1]``:
    1 when the smaller span lies inside the other, 0 for orthogonal spans. For random
    ``k``-dimensional subspaces of ``R^P`` its mean is ``k_W / P`` (with ``k = k_U``).

    Reference: Li, Gu, Zhou, Chen, Banerjee (2019), arXiv:1907.10732 (overlap of the
    top-``k`` eigenspaces of the Hessian ``H`` and the gradient second moment ``M``).
    """
    A, B = _subspace_pair(U, W, "U", "W")
    k = min(A.shape[1], B.shape[1])
    return float((A.T @ B).pow(2).sum() / k)


def subspace_displacement(U_ref: Tensor | np.ndarray, U: Tensor | np.ndarray) -> float:
    """Subspace displacement ``1 - ||U_ref^T U||_F^2 / k`` (``k`` columns each).

    Invariant to rotations (and sign flips) inside either span, so it is the displacement
    to use when eigenvalues are near-degenerate. 0 for the same span, 1 for orthogonal
    spans. Inputs are orthonormalised first.
    """
    A, B = _subspace_pair(U_ref, U, "U_ref", "U")
    if A.shape[1] != B.shape[1]:
        raise OperatorInputError(
            f"U_ref and U must have the same number of columns k, got {A.shape[1]} and {B.shape[1]}"
        )
    return 1.0 - float((A.T @ B).pow(2).sum() / A.shape[1])


def gradient_alignment(g: Tensor | np.ndarray, U: Tensor | np.ndarray) -> float:
    """Fraction ``||U^T g||^2 / ||g||^2`` of the gradient in ``span(U)`` (``U`` orthonormalised).

    In ``[0, 1]``; ``k/P`` on average for a random ``g``. Used to show that the gradient
    lives mostly in the top Hessian eigenspace (Gur-Ari et al., 2018) and in Li et al.
    (2019). A zero gradient gives NaN (logged), since the direction is undefined.
    """
    G, vector = _columns(g, "g")
    if not vector and G.shape[1] != 1:
        raise OperatorInputError(f"g must be one vector [P], got shape {tuple(G.shape)}")
    (A,) = (_orthonormal(_columns(U, "U")[0], "U"),)
    if A.shape[0] != G.shape[0]:
        raise OperatorInputError(f"g has {G.shape[0]} entries but U has {A.shape[0]} rows")
    gg = float(G.pow(2).sum())
    if gg == 0:
        logger.warning("gradient_alignment: the gradient is zero; returning NaN")
        return float("nan")
    return float((A.T @ G.to(A.device)).pow(2).sum()) / gg

"""IPR, displacement, subspace overlap and gradient alignment on hand-made vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hesslab.errors import ConfigurationError, OperatorInputError
from hesslab.measures.eigvec import (
    displacement,
    gradient_alignment,
    ipr,
    ipr_null,
    layer_ipr,
    subspace_displacement,
    subspace_overlap,
)
from hesslab.params import ParamSpace


def _orth(P: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(P, k, generator=g, dtype=torch.float64))[0]


def test_ipr_coordinate_and_uniform_vectors():
    P = 50
    e1 = torch.zeros(P)
    e1[0] = 1.0
    assert ipr(e1) == pytest.approx(1.0)
    assert ipr(3.0 * e1) == pytest.approx(1.0)  # scale invariant
    assert ipr(torch.ones(P)) == pytest.approx(1.0 / P)
    signs = torch.tensor([(-1.0) ** i for i in range(P)])
    assert ipr(signs) == pytest.approx(1.0 / P)
    # two equal entries -> 1/2
    v = torch.zeros(P)
    v[3] = v[7] = -2.0
    assert ipr(v) == pytest.approx(0.5)
    # columnwise
    out = ipr(torch.stack([e1, torch.ones(P)], dim=1))
    assert out.dtype == torch.float64 and out.shape == (2,)
    assert torch.allclose(out, torch.tensor([1.0, 1.0 / P], dtype=torch.float64))
    assert ipr(np.ones(4)) == pytest.approx(0.25)


def test_ipr_per_group():
    space = ParamSpace(
        ("a.weight", "a.bias", "b.weight"),
        (torch.Size([2, 3]), torch.Size([2]), torch.Size([4])),
        torch.float64,
        torch.device("cpu"),
    )
    v = torch.zeros(space.size, dtype=torch.float64)
    v[0] = 1.0  # localized in layer a
    v[8:12] = 0.5  # spread over layer b
    per = layer_ipr(v, space, {"a": ["a.weight", "a.bias"], "b": ["b.weight"]})
    assert per["a"] == pytest.approx(1.0)
    assert per["b"] == pytest.approx(0.25)
    assert ipr(v, {"a": slice(0, 8), "b": torch.arange(8, 12)}) == pytest.approx(per)
    # a group where v vanishes gives NaN
    w = torch.zeros(space.size, dtype=torch.float64)
    w[0] = 1.0
    assert math.isnan(ipr(w, {"b": slice(8, 12)})["b"])
    with pytest.raises(ConfigurationError, match="space="):
        ipr(v, {"a": ["a.weight"]})


def test_ipr_null_matches_random_unit_vectors():
    P, K = 40, 20000
    g = torch.Generator().manual_seed(0)
    X = torch.randn(P, K, generator=g, dtype=torch.float64)
    vals = ipr(X)
    mean, se = float(vals.mean()), float(vals.std() / math.sqrt(K))
    assert ipr_null(P) == pytest.approx(3 / (P + 2))
    assert abs(mean - ipr_null(P)) < 4 * se
    # and it is distinguishable from the naive 1/P and 3/P
    assert abs(mean - 3 / P) > 4 * se and abs(mean - 1 / P) > 4 * se
    with pytest.raises(ConfigurationError):
        ipr_null(0)


def test_displacement_sign_invariant_and_orthogonal():
    v = torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64)
    assert displacement(v, v) == pytest.approx(0.0, abs=1e-15)
    assert displacement(v, -v) == pytest.approx(0.0, abs=1e-15)
    assert displacement(v, 5 * v) == pytest.approx(0.0, abs=1e-15)  # normalised
    w = torch.tensor([2.0, 1.0, 2.0], dtype=torch.float64)  # orthogonal to v
    assert displacement(v, w) == pytest.approx(2.0)
    # 45 degrees: 2 (1 - cos 45)
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([1.0, 1.0])
    assert displacement(a, b) == pytest.approx(2 * (1 - 1 / math.sqrt(2)))
    U = _orth(30, 4, 1)
    d = displacement(U, U * torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64))
    assert d.shape == (4,) and float(d.abs().max()) < 1e-14
    with pytest.raises(OperatorInputError):
        displacement(U, U[:, :2])
    with pytest.raises(OperatorInputError):
        displacement(torch.zeros(3), v)


def test_subspace_forms_rotation_invariant():
    P, k = 40, 4
    U = _orth(P, k, 2)
    R = _orth(k, k, 3)  # a rotation inside the subspace
    assert subspace_displacement(U, U @ R) == pytest.approx(0.0, abs=1e-13)
    assert subspace_overlap(U, U @ R) == pytest.approx(1.0)
    # non-orthonormal spanning set of the same span: inputs are orthonormalised
    assert subspace_displacement(U, U @ (R + 0.3 * torch.eye(k, dtype=torch.float64))) < 1e-12
    # orthogonal complement
    Q = _orth(P, 2 * k, 4)
    A, B = Q[:, :k], Q[:, k:]
    assert subspace_displacement(A, B) == pytest.approx(1.0)
    assert subspace_overlap(A, B) == pytest.approx(0.0, abs=1e-14)
    # half the subspace shared
    C = torch.cat([A[:, :2], B[:, :2]], dim=1)
    assert subspace_overlap(A, C) == pytest.approx(0.5)
    assert subspace_displacement(A, C) == pytest.approx(0.5)
    # the vector form is NOT rotation invariant (that is the point of the subspace form)
    Rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    assert float(displacement(A[:, :2], A[:, :2] @ Rot).min()) == pytest.approx(2.0)
    with pytest.raises(OperatorInputError, match="dependent"):
        subspace_overlap(torch.ones(5, 2), A[:5, :2])


def test_gradient_alignment():
    P = 20
    U = torch.eye(P, dtype=torch.float64)[:, :3]
    g = torch.zeros(P, dtype=torch.float64)
    g[0], g[5] = 3.0, 4.0
    assert gradient_alignment(g, U) == pytest.approx(9 / 25)
    assert gradient_alignment(g, 2 * U) == pytest.approx(9 / 25)  # U orthonormalised
    assert math.isnan(gradient_alignment(torch.zeros(P), U))
    with pytest.raises(OperatorInputError):
        gradient_alignment(g[:5], U)


def test_subspace_overlap_of_unequal_dimensions_uses_the_smaller():
    """``k = min(k_U, k_W)``: a line inside a 3-dimensional span overlaps it fully (1, in
    either order), a line at 45 degrees from it overlaps by ``cos^2 = 1/2``."""
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(20, 3, generator=g, dtype=torch.float64))
    w = U @ torch.tensor([0.6, -0.8, 0.0], dtype=torch.float64)
    assert subspace_overlap(U, w[:, None]) == pytest.approx(1.0, rel=1e-12)
    assert subspace_overlap(w[:, None], U) == pytest.approx(1.0, rel=1e-12)
    x = torch.randn(20, generator=g, dtype=torch.float64)
    x = x - U @ (U.T @ x)
    y = (U[:, 0] + x / x.norm()) / math.sqrt(2)  # 45 degrees from the span
    assert subspace_overlap(U, y[:, None]) == pytest.approx(0.5, rel=1e-12)

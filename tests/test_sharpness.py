"""hesslab.measures.sharpness: ε-sharpness and scale-invariant measures."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hesslab
from hesslab.data import digits
from hesslab.errors import ConfigurationError
from hesslab.measures.sharpness import (
    epsilon_sharpness,
    layer_normalized_sharpness,
    scale_invariant_operator,
    scale_invariant_trace,
)
from hesslab.models import mlp
from hesslab.reparam import rescale
from hesslab.train import fit


def _quadratic(A: torch.Tensor) -> hesslab.Objective:
    """``L(θ) = ½ θᵀAθ`` at ``θ = 0`` as an Objective (a bias-free linear model)."""
    P = A.shape[0]
    L = torch.linalg.cholesky(A)  # A = L Lᵀ: ½‖Lᵀθ‖² = ½ θᵀAθ
    model = nn.Linear(P, 1, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()
    # with f(x) = θᵀx and MSE-sum over rows x_i = L[:, i]: Σ_i (θᵀL_i)² = θᵀ L Lᵀ θ
    x = L.T.contiguous()
    y = torch.zeros(P, 1, dtype=torch.float64)

    def loss(out: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return 0.5 * (out - tgt).square().sum()

    return hesslab.Objective(model, loss, (x, y), reduction="sum")


def _spd(P: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.linspace(0.2, 2.0, P, dtype=torch.float64)
    lam[-1] = 5.0
    return (Q * lam) @ Q.T


def test_quadratic_closed_form():
    A = _spd(12, 0)
    obj = _quadratic(A)
    # the objective is L = (1/N) * ½ θᵀAθ with N = 12 data points
    lam = float(torch.linalg.eigvalsh(A)[-1]) / 12
    for eps in (0.1, 1.0):
        res = epsilon_sharpness(obj, eps, steps=60, generator=torch.Generator().manual_seed(1))
        assert res.loss == 0.0
        assert res.value == pytest.approx(0.5 * eps**2 * lam, rel=1e-6)
        assert res.value <= 0.5 * eps**2 * lam * (1 + 1e-12)
        assert res.distance == pytest.approx(eps, rel=1e-9)
        assert res.num_gradients == res.num_steps + 2
        assert len(res.losses) == res.num_steps + 2
    # without a random start the ascent cannot leave a critical point
    still = epsilon_sharpness(obj, 1.0, steps=5, random_start=False)
    assert still.value == 0.0 and still.info["stopped"] == "zero gradient"


def test_box_variant_closed_form_diagonal():
    # A diagonal, θ = 0: box |δ_j| <= ε, max ½ Σ a_j ε² at a corner
    A = torch.diag(torch.tensor([1.0, 2.0, 3.0, 0.5], dtype=torch.float64))
    obj = _quadratic(A)
    eps = 0.3
    res = epsilon_sharpness(
        obj, eps, box=True, steps=20, generator=torch.Generator().manual_seed(0)
    )
    assert res.value == pytest.approx(0.5 * eps**2 * float(A.trace()) / 4, rel=1e-9)


@pytest.fixture(scope="module")
def trained():
    split = digits(dtype=torch.float64)
    x, y = split.train.x[:300], split.train.y[:300]
    res = fit(
        mlp(64, (12,), 10, seed=0, dtype=torch.float64), (x, y), lr=0.1, momentum=0.9, epochs=20
    )
    return res.model, (x, y)


def test_sharpness_nonnegative_and_increasing(trained):
    model, data = trained
    obj = hesslab.Objective(model, "ce", data)
    vals = []
    for eps in (1e-3, 1e-2, 1e-1):
        res = epsilon_sharpness(obj, eps, steps=8, generator=torch.Generator().manual_seed(0))
        assert res.value >= 0
        assert res.distance <= eps * (1 + 1e-12)
        vals.append(res.value)
    assert vals[0] < vals[1] < vals[2]
    box = epsilon_sharpness(
        obj, 1e-3, box=True, steps=5, generator=torch.Generator().manual_seed(0)
    )
    assert box.value > 0
    with pytest.raises(ConfigurationError):
        epsilon_sharpness(obj, -1.0)
    with pytest.raises(ConfigurationError, match="generator"):
        epsilon_sharpness(obj, 1.0)


def test_invariant_measures_under_rescaling(trained):
    model, data = trained
    obj = hesslab.Objective(model, "ce", data)
    new = rescale(model, [1e2, 1e-2])
    obj2 = hesslab.Objective(new, "ce", data)
    # exact Σθ²H_jj against a dense float64 truth
    H = hesslab.hessian(obj).to_dense()
    th = obj.flat_params()
    truth = float((th.square() * H.diagonal()).sum())
    ex = scale_invariant_trace(obj, method="exact")
    assert ex.value == pytest.approx(truth, rel=1e-10) and ex.stderr == 0.0
    ex2 = scale_invariant_trace(obj2, method="exact")
    assert ex2.value == pytest.approx(truth, rel=1e-8)
    # stochastic with the same seed: invariant to rounding; unbiased within 4 stderr
    st = scale_invariant_trace(obj, method="hutchinson", generator=torch.Generator().manual_seed(5))
    st2 = scale_invariant_trace(
        obj2, method="hutchinson", generator=torch.Generator().manual_seed(5)
    )
    assert st2.value == pytest.approx(st.value, rel=1e-8)
    assert abs(st.value - truth) < 4 * st.stderr
    # λ_max(ΘHΘ) is invariant, λ_max(H) is not
    op, op2 = (scale_invariant_operator(hesslab.hessian(o), o.flat_params()) for o in (obj, obj2))
    lam = float(torch.linalg.eigvalsh(op.to_dense())[-1])
    lam2 = float(torch.linalg.eigvalsh(op2.to_dense())[-1])
    assert lam2 == pytest.approx(lam, rel=1e-8)
    H2 = hesslab.hessian(obj2).to_dense()
    assert float(torch.linalg.eigvalsh(H2)[-1]) > 100 * float(torch.linalg.eigvalsh(H)[-1])
    # per-tensor normalized measures
    a = layer_normalized_sharpness(obj, trace_method="krylov", num_matvecs=30)
    b = layer_normalized_sharpness(obj2, trace_method="krylov", num_matvecs=30)
    sl = obj.space.slices()
    for name, r in a.items():
        block = H[sl[name], sl[name]]
        assert r.lambda_max == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-6)
        assert b[name].normalized_lambda_max == pytest.approx(r.normalized_lambda_max, rel=1e-6)
        assert b[name].normalized_trace == pytest.approx(r.normalized_trace, rel=1e-6)
    w = "fc1.weight"
    assert b[w].lambda_max == pytest.approx(a[w].lambda_max * 1e-4, rel=1e-6)
    assert math.isfinite(a[w].trace_stderr)

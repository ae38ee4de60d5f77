"""Every SpectrumMonitor quantity against a dense computation on a tiny problem.

The reference is independent of hesslab's operators: the Hessian by ``torch.func.hessian``
of the full-data loss, the gradient second moment from per-sample gradients by a Python
loop (:mod:`tests.reference`), eigenpairs by a dense ``eigh``, and each quantity written
out from its documented formula. One test per quantity, so a wrong end of the spectrum,
a truncated eigenvector block or a swapped operator fails by name. Problem: a 6-8-3 tanh
MLP (P = 83) with a spectrum whose top eigenvalues are well separated (checked), solver
tolerance 1e-10, so eigenvector-based quantities agree with the dense ones to ~1e-6.
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from hesslab import HessianOperator, Objective, frobenius_sq, spectral_density, trace
from hesslab.measures.distances import spectrum_w1
from hesslab.models import mlp
from hesslab.train.monitor import SpectrumMonitor, measurement_seed
from tests.reference import dense_hessian, flat_params, per_sample_grads

K = 3
TOL = 1e-10
LAYERS = {"fc1": ["fc1.weight", "fc1.bias"], "out": ["out.weight", "out.bias"]}


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(60, 6, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    return x, y


def _model(shift: float = 0.0):
    model = mlp(6, (8,), 3, activation="tanh", seed=0, dtype=torch.float64)
    if shift:
        with torch.no_grad():
            model.fc1.weight.add_(shift)
    return model.eval()


@functools.cache
def _dense(shift: float = 0.0):
    """Dense H, its eigenpairs (descending), the gradient and the second moment M."""
    model, data = _model(shift), _data()
    H = dense_hessian(model, F.cross_entropy, [data])
    lam, U = torch.linalg.eigh(H)
    lam, U = lam.flip(0), U.flip(1)
    G = per_sample_grads(model, F.cross_entropy, [data])  # [N, P]
    M = G.T @ G / G.shape[0]
    mu, W = torch.linalg.eigh(M)
    return {"H": H, "lam": lam, "U": U, "g": G.mean(0), "M": M, "mu": mu.flip(0), "W": W.flip(1)}


def _measure(quantities, *, model=None, **kw):
    kw = {"k": K, "tol": TOL, "seed": 5, "trace_method": "exact", **kw}
    mon = SpectrumMonitor(_data(), "ce", every=1, quantities=quantities, **kw)
    return mon, mon.measure(_model() if model is None else model, 0)


def test_problem_is_well_conditioned_for_the_comparison():
    d = _dense()
    gaps = -torch.diff(d["lam"][: K + 1])
    assert float(gaps.min()) > 1e-2 * float(d["lam"][0]), d["lam"][: K + 1]
    mgaps = -torch.diff(d["mu"][: K + 1])
    assert float(mgaps.min()) > 1e-2 * float(d["mu"][0]), d["mu"][: K + 1]
    assert bool((d["lam"][:K] > 0).all())


def test_top_k_and_lambda_max():
    d = _dense()
    _, m = _measure(("top_k",))
    for i in range(K):
        assert m.values[f"lambda/{i + 1}"] == pytest.approx(float(d["lam"][i]), rel=1e-9)
        # the error is a residual norm: at least the distance to the true eigenvalue
        assert abs(m.values[f"lambda/{i + 1}"] - float(d["lam"][i])) <= m.errors[
            f"lambda/{i + 1}"
        ] + 1e-12 * float(d["lam"][0])
        assert m.errors[f"lambda/{i + 1}"] <= TOL * float(d["lam"].abs().max()) * 1.01
    assert m.values["lambda_max"] == m.values["lambda/1"]
    _, m1 = _measure(("lambda_max",))
    assert m1.values["lambda_max"] == pytest.approx(float(d["lam"][0]), rel=1e-9)
    assert "lambda/2" not in m1.values  # lambda_max alone solves for one pair


def test_bottom():
    _, m = _measure(("bottom",))
    assert m.values["lambda_min"] == pytest.approx(float(_dense()["lam"][-1]), rel=1e-7)


@pytest.mark.parametrize("method", ["exact", "krylov"])
def test_trace_and_trace_sq(method):
    d = _dense()
    _, m = _measure(("trace", "trace_sq"), trace_method=method, trace_matvecs=30)
    tr, tr2 = float(torch.trace(d["H"])), float((d["H"] ** 2).sum())
    if method == "exact":
        assert m.values["trace"] == pytest.approx(tr, rel=1e-10)
        assert m.values["trace_sq"] == pytest.approx(tr2, rel=1e-10)
        return
    # stochastic: bit-identical to the documented direct calls, within 4 stderr of truth
    op = HessianOperator(Objective(_model(), "ce", _data()))
    for name, fn, truth in (("trace", trace, tr), ("trace_sq", frobenius_sq, tr2)):
        gen = torch.Generator().manual_seed(measurement_seed(5, 0, name))
        direct = fn(op, 30, generator=gen)
        assert m.values[name] == direct.value and m.errors[name] == direct.stderr
        assert abs(m.values[name] - truth) <= 4 * m.errors[name] + 1e-9 * abs(truth)


def test_ws_bounds():
    """Wolkowicz & Styan (1980) with m = tr/P, s^2 = tr(H^2)/P - m^2."""
    d = _dense()
    _, m = _measure(("ws_bounds",))
    P = d["H"].shape[0]
    mean = float(torch.trace(d["H"])) / P
    s = math.sqrt(float((d["H"] ** 2).sum()) / P - mean**2)
    expect = {
        "ws/lambda_max_lower": mean + s / math.sqrt(P - 1),
        "ws/lambda_max_upper": mean + s * math.sqrt(P - 1),
        "ws/lambda_min_lower": mean - s * math.sqrt(P - 1),
        "ws/lambda_min_upper": mean - s / math.sqrt(P - 1),
    }
    for name, v in expect.items():
        assert m.values[name] == pytest.approx(v, rel=1e-9), name
    assert expect["ws/lambda_max_lower"] <= float(d["lam"][0]) <= expect["ws/lambda_max_upper"]


def test_logdet_uses_the_top_r_eigenvalues():
    d = _dense()
    _, m = _measure(("logdet",), logdet_rank=2)
    assert m.values["logdet"] == pytest.approx(float(torch.log(d["lam"][:2]).sum()), rel=1e-9)
    _, m3 = _measure(("logdet",))  # default r = k
    assert m3.values["logdet"] == pytest.approx(float(torch.log(d["lam"][:K]).sum()), rel=1e-9)


def test_effective_rank():
    """(tr H)^2 / tr(H^2); its error by first-order propagation of the two stderrs."""
    d = _dense()
    _, m = _measure(("effective_rank",))
    tr, tr2 = float(torch.trace(d["H"])), float((d["H"] ** 2).sum())
    assert m.values["effective_rank"] == pytest.approx(tr * tr / tr2, rel=1e-9)
    _, m = _measure(("effective_rank",), trace_method="krylov", trace_matvecs=30)
    v, e = m.values, m.errors
    r = v["trace"] ** 2 / v["trace_sq"]
    assert v["effective_rank"] == pytest.approx(r, rel=1e-12)
    rel = math.hypot(2 * e["trace"] / abs(v["trace"]), e["trace_sq"] / v["trace_sq"])
    assert e["trace"] > 0 and e["effective_rank"] == pytest.approx(r * rel, rel=1e-12)
    assert abs(r - tr * tr / tr2) <= 4 * e["effective_rank"]


def _ipr(v: torch.Tensor) -> torch.Tensor:
    return (v**4).sum(0) / (v**2).sum(0) ** 2


def test_ipr_global_and_per_layer():
    d = _dense()
    mon, m = _measure(("ipr",), layer_groups=LAYERS)
    U = d["U"][:, :K]
    P = U.shape[0]
    for i in range(K):
        assert m.values[f"ipr/{i + 1}"] == pytest.approx(float(_ipr(U[:, i])), rel=1e-6)
    assert m.values["ipr_null"] == pytest.approx(3 / (P + 2), rel=1e-12)
    _, names = flat_params(_model())
    sizes = dict(_model().named_parameters())
    start, offsets = 0, {}
    for n in names:
        offsets[n] = (start, start + sizes[n].numel())
        start += sizes[n].numel()
    for layer, params in LAYERS.items():
        idx = torch.cat([torch.arange(*offsets[p]) for p in params])
        ref = _ipr(U[idx])
        for i in range(K):
            assert m.values[f"ipr/{layer}/{i + 1}"] == pytest.approx(float(ref[i]), rel=1e-6)


def test_displacement_against_dense_eigenvectors():
    """disp = 2(1 - |<u_i(t), u_i(t')>|), subdisp = 1 - ||U(t)^T U(t')||_F^2 / k, against
    the previous measurement and against the reference (here the first, t_w = 0)."""
    mon = SpectrumMonitor(
        _data(), "ce", every=1, k=K, tol=TOL, quantities=("displacement",), seed=1
    )
    for step, shift in enumerate((0.0, 0.05, 0.1)):
        m = mon.measure(_model(shift), step)
    U0, U1, U2 = (_dense(s)["U"][:, :K] for s in (0.0, 0.05, 0.1))
    for name, ref in (("prev", U1), ("ref", U0)):
        cos = (ref * U2).sum(0).abs()
        assert float((2 * (1 - cos)).min()) > 1e-4  # the vectors did move
        for i in range(K):
            got = m.values[f"disp_{name}/{i + 1}"]
            assert got == pytest.approx(float(2 * (1 - cos[i])), rel=1e-5)
        sub = 1 - float(((ref.T @ U2) ** 2).sum()) / K
        assert m.values[f"subdisp_{name}"] == pytest.approx(sub, rel=1e-5)
    assert mon.reference[0] == 0


def test_layers_block_lambda_trace_and_w1():
    """Block lambda_max and trace against the dense diagonal block of H; ``w1_to_full``
    equals spectrum_w1 of the SLQ densities of the block and of H drawn with the
    documented seeds (a single probe's rule is a random measure: not a dense quantity)."""
    d = _dense()
    H = d["H"]
    _, m = _measure(("layers",), layer_groups=LAYERS, layer_density=True, density_steps=20)
    _, names = flat_params(_model())
    sizes = {n: p.numel() for n, p in _model().named_parameters()}
    start, offsets = 0, {}
    for n in names:
        offsets[n] = (start, start + sizes[n])
        start += sizes[n]

    def gen(name):
        return torch.Generator().manual_seed(measurement_seed(5, 0, name))

    full = spectral_density(H, 20, generator=gen("density"))
    for layer, params in LAYERS.items():
        idx = torch.cat([torch.arange(*offsets[p]) for p in params])
        Hb = H[idx][:, idx]
        blk = torch.linalg.eigvalsh(Hb)
        assert m.values[f"layer/{layer}/lambda_max"] == pytest.approx(float(blk[-1]), rel=1e-9)
        assert m.values[f"layer/{layer}/trace"] == pytest.approx(float(blk.sum()), rel=1e-9)
        dens = spectral_density(Hb, 20, generator=gen(f"layer/{layer}/density"))
        w1 = spectrum_w1(dens, full)
        assert m.values[f"layer/{layer}/w1_to_full"] == pytest.approx(w1, rel=1e-6, abs=1e-9)


def test_moment_overlap_uses_the_top_moment_eigenvectors():
    """||U_H^T U_M||_F^2 / k with the top-k eigenvectors of H and of M = (1/N) sum g_i g_i^T."""
    d = _dense()
    _, m = _measure(("moment_overlap",))
    U, W = d["U"][:, :K], d["W"][:, :K]
    assert m.values["moment_overlap"] == pytest.approx(float(((U.T @ W) ** 2).sum()) / K, rel=1e-6)
    assert m.values["moment_lambda_max"] == pytest.approx(float(d["mu"][0]), rel=1e-9)
    # the bottom eigenvectors would give a clearly different number
    Wb = d["W"][:, -K:]
    assert abs(float(((U.T @ Wb) ** 2).sum()) / K - m.values["moment_overlap"]) > 1e-3


def test_grad_alignment_uses_all_k_vectors():
    """||U_H^T g||^2 / ||g||^2 over the top-k eigenvectors, g the full-batch gradient."""
    d = _dense()
    _, m = _measure(("grad_alignment",))
    U, g = d["U"][:, :K], d["g"]
    ref = float(((U.T @ g) ** 2).sum() / (g @ g))
    assert m.values["grad_alignment"] == pytest.approx(ref, rel=1e-6)
    assert m.values["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-10)
    top1 = float((U[:, 0] @ g) ** 2 / (g @ g))
    assert abs(ref - top1) > 1e-3 * ref  # the test tells k vectors from one


def test_model_copy_is_unchanged_by_measurement():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    _measure(("top_k", "grad_alignment"), model=model)
    for n, t in model.state_dict().items():
        assert torch.equal(t, before[n])

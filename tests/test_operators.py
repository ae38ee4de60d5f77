"""Every curvature operator against its dense float64 reference."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hesslab
from hesslab import Objective
from hesslab.errors import ConfigurationError, OperatorInputError
from hesslab.operators import (
    DeflatedOperator,
    DenseOperator,
    GGNOperator,
    GradientMomentOperator,
    HessianOperator,
    RestrictedOperator,
)

from .models import MODEL_NAMES, make, split_unequal
from .reference import dense_ggn, dense_hessian, per_sample_grads

RTOL = 1e-10


def _crit(loss: str, classes: int):
    if loss == "ce":
        return nn.CrossEntropyLoss(), lambda o, y: F.cross_entropy(o, y)
    return nn.MSELoss(), lambda o, y: F.mse_loss(o, F.one_hot(y, classes).double())


def _close(A, B, rtol=RTOL):
    scale = max(1.0, float(B.abs().max()))
    err = float((A - B).abs().max())
    assert err <= rtol * scale, f"max abs error {err:.3e} (scale {scale:.3e})"


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("batched", [False, True])
def test_hessian_all_modes_match_dense(name, loss, batched):
    model, x, y, C = make(name)
    crit, ref_crit = _crit(loss, C)
    data = split_unequal(x, y) if batched else (x, y)
    batches = data if batched else [data]
    H_ref = dense_hessian(model, ref_crit, batches)
    obj = Objective(model, "ce" if loss == "ce" else "mse", data)
    for mode in ["forward-over-reverse", "reverse-over-reverse", "reverse-over-reverse-cached"]:
        _close(HessianOperator(obj, mode=mode).to_dense(), H_ref)
    H_auto = HessianOperator(obj)
    _close(H_auto.to_dense(), H_ref)
    assert H_auto.chosen_mode("block") in (*hesslab.operators.HESSIAN_MODES, "columns")
    # the "columns" choice for blocks (single products one after the other)
    H_cols = HessianOperator(obj)
    H_cols.mode_report["single"] = {"mode": "reverse-over-reverse"}
    H_cols.mode_report["block"] = {"mode": "columns"}
    _close(H_cols.to_dense(), H_ref)
    assert H_cols.chosen_mode("block") == "columns"


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_ggn_matches_dense(name, loss):
    model, x, y, C = make(name)
    crit, ref_crit = _crit(loss, C)
    data = split_unequal(x, y)
    G_ref = dense_ggn(model, ref_crit, data)
    G = GGNOperator(Objective(model, crit, data))
    _close(G.to_dense(), G_ref)


def test_ggn_generic_criterion_path():
    """A criterion without a closed form goes through autodiff of the loss Hessian."""
    model, x, y, C = make("tanh_mlp")

    def crit(out, target):
        return nn.functional.nll_loss(nn.functional.log_softmax(out, 1), target)

    data = split_unequal(x, y)
    G = GGNOperator(Objective(model, crit, data))
    assert G.objective.loss.kind == "criterion"
    _close(G.to_dense(), dense_ggn(model, crit, data))


def test_ggn_label_smoothing_closed_form():
    """Label smoothing leaves the logit Hessian diag(p) - pp^T: the closed form applies."""
    model, x, y, C = make("tanh_mlp")
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    data = split_unequal(x, y)
    G = GGNOperator(Objective(model, crit, data))
    assert G.objective.loss.kind == "ce"
    _close(G.to_dense(), dense_ggn(model, crit, data))


def test_ggn_equals_hessian_for_linear_model_with_mse():
    """For a linear model the residual term vanishes: G == H."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    obj = Objective(model, nn.MSELoss(), (x, y))
    _close(GGNOperator(obj).to_dense(), HessianOperator(obj).to_dense())


@pytest.mark.parametrize("name", ["tanh_mlp", "cnn", "bn_eval"])
def test_gradient_moments_match_dense(name):
    model, x, y, C = make(name)
    data = split_unequal(x, y)
    crit = nn.CrossEntropyLoss()
    Gs = per_sample_grads(model, crit, data)  # [N, P]
    N = len(Gs)
    M_ref = Gs.T @ Gs / N
    gbar = Gs.mean(0)
    C_ref = M_ref - torch.outer(gbar, gbar)
    obj = Objective(model, crit, data)
    for cache in (True, False):
        M = GradientMomentOperator(obj, cache=cache)
        _close(M.to_dense(), M_ref)
    _close(GradientMomentOperator(obj, kind="covariance").to_dense(), C_ref)
    B = 4
    MB = GradientMomentOperator(obj, kind="minibatch", batch_size=B).to_dense()
    _close(MB, torch.outer(gbar, gbar) + C_ref / B)
    MB_wo = GradientMomentOperator(obj, kind="minibatch", batch_size=B, replacement=False)
    _close(MB_wo.to_dense(), torch.outer(gbar, gbar) + C_ref * (N - B) / (B * (N - 1)))
    # the mean of per-sample gradients is the full gradient
    _close(GradientMomentOperator(obj).mean_gradient(), obj.gradient())


def test_minibatch_moment_is_the_second_moment_of_minibatch_gradients():
    """M_B (without replacement) equals E[g_B g_B^T] by enumerating all size-2 batches."""
    import itertools

    model, x, y, C = make("tanh_mlp")
    x, y = x[:7], y[:7]
    crit = nn.CrossEntropyLoss()
    Gs = per_sample_grads(model, crit, [(x, y)])
    pairs = list(itertools.combinations(range(7), 2))
    E = sum(torch.outer(Gs[list(p)].mean(0), Gs[list(p)].mean(0)) for p in pairs) / len(pairs)
    obj = Objective(model, crit, (x, y))
    MB = GradientMomentOperator(obj, kind="minibatch", batch_size=2, replacement=False)
    _close(MB.to_dense(), E)


def test_sum_reduction_gives_the_same_objective():
    model, x, y, C = make("tanh_mlp")
    data = split_unequal(x, y)
    H_mean = HessianOperator(Objective(model, nn.CrossEntropyLoss(), data)).to_dense()
    H_sum = HessianOperator(Objective(model, nn.CrossEntropyLoss(reduction="sum"), data))
    _close(H_sum.to_dense(), H_mean)
    G_sum = GGNOperator(Objective(model, nn.CrossEntropyLoss(reduction="sum"), data))
    _close(G_sum.to_dense(), GGNOperator(Objective(model, "ce", data)).to_dense())


def test_dict_batches_with_custom_loss():
    model, x, y, C = make("residual")
    batches = [{"features": xb, "labels": yb} for xb, yb in split_unequal(x, y)]

    @hesslab.batch_loss
    def loss(model_fn, batch):
        return F.cross_entropy(model_fn(batch["features"]), batch["labels"])

    obj = Objective(model, loss, batches)
    ref = dense_hessian(model, F.cross_entropy, split_unequal(x, y))
    _close(HessianOperator(obj).to_dense(), ref)
    # a plain function whose first argument is named model_fn is recognised as well;
    # any other two-argument callable is taken for a criterion(outputs, targets)
    obj2 = Objective(model, lambda model_fn, b: loss(model_fn, b), batches)
    assert obj2.loss.kind == "custom"
    assert Objective(model, lambda o, t: F.cross_entropy(o, t), (x, y)).loss.kind == "criterion"

    def loss2(model_fn, batch):
        return F.cross_entropy(model_fn(batch["features"]), batch["labels"])

    assert Objective(model, loss2, batches).loss.kind == "custom"
    # criterion losses on dict batches use the input/target keys
    obj3 = Objective(model, "ce", batches, input_key="features")
    _close(HessianOperator(obj3).to_dense(), ref)
    # per-sample gradients of a custom loss
    Gs = per_sample_grads(model, F.cross_entropy, split_unequal(x, y))
    _close(GradientMomentOperator(obj).to_dense(), Gs.T @ Gs / len(Gs))


@pytest.mark.parametrize("name", ["relu_mlp", "cnn"])
def test_restricted_blocks_are_slices_of_the_dense_matrix(name):
    model, x, y, C = make(name)
    data = split_unequal(x, y)
    obj = Objective(model, "ce", data)
    H = HessianOperator(obj)
    D = H.to_dense()
    G = GGNOperator(obj)
    DG = G.to_dense()
    sl = obj.space.slices()
    for names in hesslab.layer_groups(model).values():
        idx = torch.cat([torch.arange(sl[n].start, sl[n].stop) for n in names])
        block = H.restrict(names)
        assert block.shape == (len(idx), len(idx))
        _close(block.to_dense(), D[idx][:, idx])
        _close(G.restrict(names).to_dense(), DG[idx][:, idx])
        _close(RestrictedOperator(H, idx).to_dense(), D[idx][:, idx])
    # glob pattern selection at construction equals the restricted block
    first = next(iter(hesslab.layer_groups(model)))
    sub = Objective(model, "ce", data, params=f"{first}.*")
    idx = torch.cat([torch.arange(sl[n].start, sl[n].stop) for n in sub.space.names])
    _close(HessianOperator(sub).to_dense(), D[idx][:, idx])
    # block-diagonal family
    BD = H.block_diagonal().to_dense()
    mask = torch.zeros_like(D, dtype=torch.bool)
    for names in hesslab.layer_groups(model).values():
        idx = torch.cat([torch.arange(sl[n].start, sl[n].stop) for n in names])
        mask[idx.unsqueeze(1), idx.unsqueeze(0)] = True
    _close(BD, torch.where(mask, D, torch.zeros_like(D)))


def test_layer_groups_weights_only():
    model, *_ = make("bn_eval")
    assert hesslab.layer_groups(model) == {
        "fc1": ["fc1.weight", "fc1.bias"],
        "bn": ["bn.weight", "bn.bias"],
        "fc2": ["fc2.weight", "fc2.bias"],
    }
    assert hesslab.layer_groups(model, weights_only=True) == {
        "fc1": ["fc1.weight"],
        "fc2": ["fc2.weight"],
    }


OPERATORS = {
    "hessian": lambda obj: HessianOperator(obj),
    "ggn": lambda obj: GGNOperator(obj),
    "moment": lambda obj: GradientMomentOperator(obj),
    "covariance": lambda obj: GradientMomentOperator(obj, kind="covariance"),
}


@pytest.mark.parametrize("kind", list(OPERATORS))
def test_operator_contract(kind):
    """Symmetry, linearity, matmat == stacked matvec, repeatability, dtype/device kept."""
    model, x, y, C = make("relu_mlp")
    op = OPERATORS[kind](Objective(model, "ce", split_unequal(x, y)))
    P = op.shape[0]
    g = torch.Generator().manual_seed(1)
    u, v = (
        torch.randn(P, generator=g, dtype=torch.float64),
        torch.randn(P, generator=g, dtype=torch.float64),
    )
    Au, Av = op @ u, op @ v
    assert Au.dtype == torch.float64 and Au.device == u.device and Au.shape == (P,)
    assert abs(float(u @ Av - v @ Au)) <= 1e-12 * float(Au.norm() * v.norm())
    a, b = 0.7, -2.3
    _close(op @ (a * u + b * v), a * Au + b * Av)
    V = torch.randn(P, 5, generator=g, dtype=torch.float64)
    AV = op.matmat(V)
    _close(AV, torch.stack([op @ V[:, k] for k in range(5)], 1))
    assert torch.equal(op.matmat(V), AV)  # same result twice, bit for bit
    with pytest.raises(OperatorInputError):
        op @ torch.randn(P + 1, dtype=torch.float64)
    with pytest.raises(OperatorInputError):
        op @ u.float()


@pytest.mark.parametrize("kind", list(OPERATORS))
def test_model_untouched(kind):
    model, x, y, C = make("bn_eval")
    for p in model.parameters():
        p.grad = None
    model.fc2.bias.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    obj = Objective(model, "ce", split_unequal(x, y))
    op = OPERATORS[kind](obj)
    op @ torch.randn(op.shape[0], dtype=torch.float64)
    op.matmat(torch.randn(op.shape[0], 3, dtype=torch.float64))
    obj.gradient()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert [m.training for m in model.modules()] == flags
    assert model.fc2.bias.requires_grad is False
    assert model.fc1.weight.requires_grad is True
    # the frozen bias is not part of the default selection
    assert "fc2.bias" not in obj.space.names


def test_float32_products_and_dtype():
    model, x, y, C = make("tanh_mlp")
    model32 = copy.deepcopy(model).float()
    obj32 = Objective(model32, "ce", (x.float(), y))
    H32 = HessianOperator(obj32)
    assert H32.dtype == torch.float32
    D64 = HessianOperator(Objective(model, "ce", (x, y))).to_dense()
    assert float((H32.to_dense().double() - D64).abs().max()) < 1e-5
    # float64 data fed to a float32 model is cast to the model's dtype
    obj_mixed = Objective(model32, "ce", (x, y))
    assert torch.equal(
        HessianOperator(obj_mixed, mode="fwd-rev").to_dense(),
        HessianOperator(obj32, mode="fwd-rev").to_dense(),
    )


def test_composition_and_scipy():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = A + A.T
    op = DenseOperator(A)
    _close((2.0 * op - op).to_dense(), A)
    _close(hesslab.operators.shift(op, 3.0).to_dense(), A + 3 * torch.eye(6, dtype=torch.float64))
    U = torch.linalg.eigh(A).eigenvectors[:, -2:]
    P = torch.eye(6, dtype=torch.float64) - U @ U.T
    _close(DeflatedOperator(op, U).to_dense(), P @ A @ P)
    # a span that is not invariant under A: P A P differs from P A and from A P
    U = torch.randn(6, 2, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(U)
    P = torch.eye(6, dtype=torch.float64) - Q @ Q.T
    assert float((P @ A @ P - P @ A).abs().max()) > 1e-2
    _close(DeflatedOperator(op, U).to_dense(), P @ A @ P)
    S = op.to_scipy()
    import numpy as np

    v = np.arange(6.0)
    assert np.allclose(S @ v, A.numpy() @ v)
    assert np.allclose(S.matmat(np.eye(6)), A.numpy())
    op2 = hesslab.as_operator(S)
    _close(op2.to_dense(), A)
    with pytest.raises(ConfigurationError):
        hesslab.as_operator("nope")


def test_hessian_convenience_and_errors():
    model, x, y, C = make("tanh_mlp")
    H = hesslab.hessian(model, "ce", (x, y))
    assert isinstance(H, HessianOperator)
    with pytest.raises(ConfigurationError):
        hesslab.hessian(H.objective, "ce")
    with pytest.raises(ConfigurationError):
        HessianOperator(H.objective, mode="magic")
    with pytest.raises(ConfigurationError):
        GGNOperator(Objective(model, hesslab.BatchLoss(lambda f, b: f(b[0]).sum()), (x, y)))

"""Tests of hesslab.train.fit: the small deterministic trainer."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from hesslab.data import TensorData, blobs, digits, gaussian_mixture
from hesslab.errors import ConfigurationError, DataError
from hesslab.models import lenet, mlp, resnet_small
from hesslab.train.fit import FitResult, evaluate, fit


@pytest.fixture(scope="module")
def split():
    return digits()


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_digits_mlp_reaches_sane_accuracy(split):
    model = mlp(64, (32, 32), 10, seed=0)
    before = _params(model)
    res = fit(model, split, lr=0.05, momentum=0.9, batch_size=64, epochs=20, seed=0)
    assert isinstance(res, FitResult)
    assert res.final_test_accuracy > 0.95
    assert res.final_train_accuracy > 0.99
    assert res.steps == 20 * 22 and res.epochs == 20 and res.stopped_by == "epochs"
    # Loss decreases: last epoch's mean batch loss far below the first's.
    losses = res.series("loss")
    assert sum(losses[-22:]) / 22 < 0.1 * sum(losses[:22]) / 22
    assert set(res.history[0]) == {"step", "epoch", "loss", "accuracy", "grad_norm", "lr"}
    # The caller's model is untouched; the returned one is a trained copy in eval mode.
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert model.training and res.model is not model and not res.model.training
    loss, acc = evaluate(res.model, split.test)
    assert loss == pytest.approx(res.final_test_loss) and acc == res.final_test_accuracy
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.steps = 0


def test_deterministic_given_seed(split):
    train = split.train.subset(range(300))
    kw = dict(lr=0.05, momentum=0.9, batch_size=32, epochs=3)
    a = fit(mlp(64, (16,), 10, seed=1), train, seed=5, **kw)
    b = fit(mlp(64, (16,), 10, seed=1), train, seed=5, **kw)
    c = fit(mlp(64, (16,), 10, seed=1), train, seed=6, **kw)
    pa, pb, pc = _params(a.model), _params(b.model), _params(c.model)
    assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(pa, pc, strict=True))
    assert a.history == b.history


def test_gd_is_exact_full_batch_mean():
    torch.manual_seed(0)  # only to show that fit does not depend on the global RNG
    data = gaussian_mixture(num_classes=3, dim=4, num_per_class=20, seed=0).train  # N = 30
    model = mlp(4, (6,), 3, seed=0, dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = data.x.double(), data.y

    def full_loss(p):
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    grads = torch.func.grad(full_loss)(params)
    lr = 0.3
    # Chunks of 7 do not divide 30: unequal chunks must be weighted by their size.
    res = fit(model, data, optimizer="gd", lr=lr, steps=1, chunk_size=7, dtype=torch.float64)
    for name, p in res.model.named_parameters():
        assert torch.allclose(p, params[name] - lr * grads[name], atol=1e-14, rtol=0)
    assert res.history[0]["loss"] == pytest.approx(float(full_loss(params)), rel=1e-13)
    gnorm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads.values()]))
    assert res.history[0]["grad_norm"] == pytest.approx(float(gnorm), rel=1e-12)
    # Two gd steps with chunking == two steps without.
    a = fit(model, data, optimizer="gd", lr=lr, steps=2, chunk_size=7, dtype=torch.float64)
    b = fit(model, data, optimizer="gd", lr=lr, steps=2, chunk_size=None, dtype=torch.float64)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-13, rtol=0)


def test_grad_tol_stops_gd_like_sagun():
    split = blobs(num_classes=2, seed=0)
    model = mlp(2, (10, 5), 2, seed=0)
    res = fit(model, split, optimizer="gd", lr=0.5, steps=5000, grad_tol=1e-2)
    assert res.stopped_by == "grad_tol" and res.converged
    assert res.steps < 5000
    assert res.final_grad_norm <= 1e-2
    # The check happens before the step: the last recorded step still had a larger norm.
    assert res.history[-1]["grad_norm"] > 1e-2
    # For SGD the full-batch norm is checked at the end of each epoch.
    sgd = fit(model, split, lr=0.5, batch_size=25, epochs=2000, grad_tol=2e-2)
    assert sgd.stopped_by == "grad_tol" and sgd.final_grad_norm <= 2e-2
    assert sgd.steps % 4 == 0
    # Not reached: converged is False, stopped by the step budget.
    short = fit(model, split, optimizer="gd", lr=0.1, steps=3, grad_tol=1e-8)
    assert short.converged is False and short.stopped_by == "steps" and short.steps == 3


def test_mse_adam_milestones_callbacks(split):
    train = split.train.subset(range(256))
    calls = []

    def monitor(model, step, info):
        assert not model.training and all(p.grad is None for p in model.parameters())
        calls.append((step, info.get("lr")))
        return step >= 10  # stop early

    res = fit(
        mlp(64, (16,), 10, seed=0),
        train,
        loss="mse",
        optimizer="adam",
        lr=1e-2,
        batch_size=64,
        epochs=5,
        milestones=(1, 2),
        gamma=0.5,
        callbacks=monitor,
    )
    assert res.stopped_by == "callback" and res.steps == 10
    assert [c[0] for c in calls] == list(range(11))
    assert [h["lr"] for h in res.history] == [1e-2] * 4 + [5e-3] * 4 + [2.5e-3] * 2
    assert res.final_test_loss is None  # a TensorData without eval_data
    # The MSE loss is F.mse_loss against one-hot targets.
    out = res.model(train.x).detach()
    ref = F.mse_loss(out, F.one_hot(train.y, 10).float())
    assert res.final_train_loss == pytest.approx(float(ref), rel=1e-5)


def test_evaluations_and_optimizer_factory(split):
    train = split.train.subset(range(200))
    res = fit(
        mlp(64, (8,), 10, seed=0),
        train,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
        epochs=4,
        eval_every=2,
        eval_data=split.test,
    )
    assert [e["epoch"] for e in res.evaluations] == [2, 4]
    assert res.evaluations[-1]["test_accuracy"] == res.final_test_accuracy
    assert res.config["num_train"] == 200


def test_cnns_train_and_batchnorm_ends_in_eval(split):
    image = digits(flat=False)
    small = image.train.subset(range(128))
    for model in (lenet(1, 10, 8, seed=0), resnet_small(1, 10, width=4, seed=0)):
        res = fit(model, small, lr=0.05, momentum=0.9, batch_size=32, epochs=3)
        assert res.final_train_loss < res.history[0]["loss"]
        assert not any(m.training for m in res.model.modules())
    # inplace=True trains the caller's model.
    model = mlp(64, (8,), 10, seed=0)
    res = fit(model, split.train, lr=0.1, steps=2, inplace=True)
    assert res.model is model


def test_regression_targets_and_tuple_input():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    res = fit(mlp(3, (), 1, seed=0), (x, y), loss="mse", optimizer="gd", lr=0.3, steps=200)
    assert res.final_train_loss < 1e-6 and res.final_train_accuracy is None
    with pytest.raises(DataError, match="integer class labels"):
        fit(mlp(3, (), 1, seed=0), TensorData(x, y), loss="ce", steps=1)


def test_fit_validates():
    data = gaussian_mixture(seed=0).train
    model = mlp(2, (3,), 3)
    with pytest.raises(ConfigurationError, match="epochs"):
        fit(model, data)
    with pytest.raises(ConfigurationError, match="optimizer"):
        fit(model, data, optimizer="lbfgs-ish", steps=1)
    with pytest.raises(ConfigurationError, match="loss"):
        fit(model, data, loss="hinge", steps=1)
    with pytest.raises(ConfigurationError, match="batch_size"):
        fit(model, data, batch_size=0, steps=1)

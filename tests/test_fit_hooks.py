"""The hooks of :func:`hesslab.train.fit` the experiments train with: ``penalty``,
``sampling="replacement"``, ``label_noise``, ``project``, ``batch_size=None`` and per-step
callbacks; each checked against a hand-written loop or a hand-computed step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesslab.data import TensorData, gaussian_mixture
from hesslab.errors import ConfigurationError
from hesslab.models import mlp
from hesslab.train import fit
from hesslab.train.regularizers import HessianTracePenalty

F64 = torch.float64


def _regression(n: int = 12, d: int = 3, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    return TensorData(x, x @ torch.tensor([1.0, -2.0, 0.5], dtype=F64) + 0.1)


def _classes(n: int = 40, seed: int = 0) -> TensorData:
    split = gaussian_mixture(4, dim=5, num_per_class=n // 2, seed=seed, dtype=F64)
    return split.train


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class _Recorder(nn.Module):
    """A linear model that records the first input feature of every training forward."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, 1, dtype=F64)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x[:, 0].detach().clone())
        return self.lin(x)


def test_penalty_reproduces_a_hand_computed_step():
    """One full-batch GD step on L + c·L² + γ‖θ‖² (the penalty reads the loss graph)."""
    data, lr, c, gam = _regression(), 0.05, 0.3, 0.2
    model = mlp(3, (), 1, seed=0, dtype=F64)
    steps_seen = []

    def penalty(net, batch, loss_fn, step, *, loss):
        steps_seen.append(step)
        assert batch[0].shape[0] == len(data)
        return c * loss**2 + gam * sum((p**2).sum() for p in net.parameters())

    res = fit(
        model, data, loss="mse", optimizer="gd", lr=lr, steps=1, penalty=penalty,
        chunk_size=None,
    )  # fmt: skip
    names = [name for name, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    out = torch.func.functional_call(model, dict(zip(names, params, strict=True)), data.x)
    loss = F.mse_loss(out.squeeze(-1), data.y)
    term = c * loss**2 + gam * sum((p**2).sum() for p in params)
    grads = torch.autograd.grad(loss + term, params)
    expect = torch.cat([(p - lr * g).reshape(-1) for p, g in zip(params, grads, strict=True)])
    assert torch.allclose(_flat(res.model), expect.detach(), rtol=1e-12, atol=1e-14)
    assert steps_seen == [0]
    assert res.history[0]["penalty"] == pytest.approx(float(term.detach()), rel=1e-12)
    assert res.history[0]["loss"] == pytest.approx(float(loss.detach()), rel=1e-12)


def test_hessian_trace_penalty_plugs_in_bit_identically():
    """fit(penalty=HessianTracePenalty) equals the hand loop sankar2021_reg used to run."""
    data = _classes()
    kw = dict(num_probes=2, gamma=1e-3, every=2, start_step=1)
    ref = mlp(5, (6,), 4, activation="tanh", seed=1, dtype=F64)
    net = copy.deepcopy(ref)
    pen = HessianTracePenalty(seed=3, **kw)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(7)
    step = 0
    for _ in range(2):
        for idx in torch.randperm(len(data), generator=gen).split(8):
            xb, yb = data.x[idx], data.y[idx]
            loss = F.cross_entropy(net(xb), yb)
            obj = loss + pen(net, (xb, yb), F.cross_entropy, step, loss=loss)
            opt.zero_grad(set_to_none=True)
            obj.backward()
            opt.step()
            step += 1
    pen2 = HessianTracePenalty(seed=3, **kw)
    res = fit(ref, data, lr=0.1, momentum=0.9, batch_size=8, epochs=2, seed=7, penalty=pen2)
    assert torch.equal(_flat(res.model), _flat(net))
    assert [r.step for r in pen2.history] == [r.step for r in pen.history] == [1, 3, 5, 7, 9]
    assert all(p.grad is None for p in res.model.parameters())


def test_penalty_full_batch_needs_one_chunk():
    with pytest.raises(ConfigurationError, match="chunk_size=None"):
        fit(
            mlp(3, (), 1, seed=0, dtype=F64), _regression(), loss="mse", optimizer="gd",
            steps=1, chunk_size=5, penalty=lambda *a, **k: torch.zeros(()),
        )  # fmt: skip


def test_sampling_with_replacement_draws_from_the_generator():
    n, B = 10, 4
    x = torch.arange(n, dtype=F64)[:, None].repeat(1, 3)
    data = TensorData(x, torch.zeros(n, dtype=F64))
    model = _Recorder(3)
    res = fit(
        model, data, loss="mse", lr=0.0, batch_size=B, sampling="replacement", epochs=2,
        seed=5, inplace=True,
    )  # fmt: skip
    assert res.steps == 2 * math.ceil(n / B) and res.epochs == 2
    g = torch.Generator().manual_seed(5)
    expect = [torch.randint(0, n, (B,), generator=g).to(F64) for _ in range(res.steps)]
    assert len(model.seen) == res.steps
    assert all(torch.equal(a, b) for a, b in zip(model.seen, expect, strict=True))
    # with replacement, repeated indices within a batch occur (shuffle never repeats)
    assert any(s.unique().numel() < B for s in expect)
    model.seen.clear()
    fit(model, data, loss="mse", lr=0.0, batch_size=B, epochs=1, seed=5, inplace=True)
    assert all(s.unique().numel() == s.numel() for s in model.seen)
    assert torch.equal(torch.cat(model.seen).sort().values, torch.arange(n, dtype=F64))


def test_replacement_sgd_equals_the_hand_loop():
    """li2019's loop: SGD on batches drawn with replacement from a fixed generator."""
    data = _classes()
    ref = mlp(5, (6,), 4, seed=2, dtype=F64)
    net = copy.deepcopy(ref)
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    g = torch.Generator().manual_seed(11)
    for _ in range(13):
        idx = torch.randint(0, len(data), (5,), generator=g)
        opt.zero_grad()
        F.cross_entropy(net(data.x[idx]), data.y[idx]).backward()
        opt.step()
    res = fit(
        ref, data, lr=0.2, batch_size=5, sampling="replacement", steps=13,
        generator=torch.Generator().manual_seed(11),
    )  # fmt: skip
    assert torch.equal(_flat(res.model), _flat(net))


def test_label_noise_is_fresh_gaussian_from_the_generator():
    data, s = _regression(n=6), 0.7
    seen = []

    def loss(out, t):
        seen.append(t.detach().clone())
        return F.mse_loss(out.squeeze(-1), t)

    fit(
        mlp(3, (), 1, seed=0, dtype=F64), data, loss=loss, batch_size=None, steps=3,
        label_noise=s, seed=4, lr=0.01,
    )  # fmt: skip
    g = torch.Generator().manual_seed(4)
    expect = [data.y + s * torch.randn(6, generator=g, dtype=F64) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(seen[:3], expect, strict=True))
    # a callable gets the targets and the generator
    calls = []
    fit(
        mlp(3, (), 1, seed=0, dtype=F64), data, loss="mse", batch_size=None, steps=2,
        label_noise=lambda y, gen: calls.append(gen) or y, lr=0.01,
    )  # fmt: skip
    assert len(calls) == 2 and all(isinstance(c, torch.Generator) for c in calls)
    with pytest.raises(ConfigurationError, match="floating targets"):
        fit(mlp(5, (), 4, seed=0, dtype=F64), _classes(), steps=1, label_noise=0.1)
    with pytest.raises(ConfigurationError, match="label_noise"):
        fit(mlp(3, (), 1, seed=0, dtype=F64), data, loss="mse", steps=1, label_noise=-1.0)


def test_callbacks_see_every_step_and_project_changes_parameters():
    data = _classes()
    model = mlp(5, (6,), 4, seed=3, dtype=F64)
    before = copy.deepcopy(model)
    model.train(False)
    seen, projected = [], []

    def project(net, step):
        assert not torch.is_grad_enabled()
        projected.append(step)
        for p in net.parameters():
            p.clamp_(-0.05, 0.05)

    def cb(net, step, info):
        assert all(p.grad is None for p in net.parameters()) and not net.training
        seen.append((step, info, float(_flat(net).abs().max())))

    res = fit(model, data, lr=0.5, batch_size=7, epochs=3, project=project, callbacks=cb)
    n_steps = 3 * math.ceil(len(data) / 7)
    assert res.steps == n_steps and projected == list(range(1, n_steps + 1))
    assert [s for s, _, _ in seen] == list(range(n_steps + 1))
    assert [i for _, i, _ in seen[1:]] == list(res.history)
    assert all(m <= 0.05 for _, _, m in seen[1:]) and seen[0][2] > 0.05
    assert float(_flat(res.model).abs().max()) <= 0.05
    # the caller's model: untouched, mode kept; no .grad anywhere
    assert torch.equal(_flat(model), _flat(before)) and not model.training
    assert all(p.grad is None for m in (model, res.model) for p in m.parameters())


def test_full_batch_any_optimizer_equals_the_hand_loop():
    """batch_size=None: Adam on the exact full-data loss every step (wei2019's start)."""
    data = _regression()
    ref = mlp(3, (4,), 1, seed=4, dtype=F64)
    net = copy.deepcopy(ref)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        F.mse_loss(net(data.x).squeeze(-1), data.y).backward()
        opt.step()
    res = fit(ref, data, loss="mse", optimizer="adam", lr=1e-2, batch_size=None, steps=5)
    assert torch.equal(_flat(res.model), _flat(net))
    assert res.config["batch_size"] == len(data) and res.epochs == 5
    with pytest.raises(ConfigurationError, match="sampling"):
        fit(ref, data, loss="mse", steps=1, sampling="bootstrap")


def test_inplace_trains_the_callers_model_without_grad():
    data = _classes()
    model = mlp(5, (6,), 4, seed=5, dtype=F64)
    before = _flat(model).clone()
    res = fit(model, data, lr=0.1, batch_size=8, steps=3, inplace=True, label_noise=None)
    assert res.model is model and not torch.equal(_flat(model), before)
    assert all(p.grad is None for p in model.parameters())


def test_lbfgs_gets_a_closure_and_equals_the_hand_loop():
    """One fit update of L-BFGS is one ``step(closure)`` on the full batch (sagun2017)."""
    data = _classes()
    ref = mlp(5, (6,), 4, activation="tanh", seed=6, dtype=F64)
    net = copy.deepcopy(ref)
    kw = dict(lr=1.0, max_iter=7, history_size=5, line_search_fn="strong_wolfe")
    opt = torch.optim.LBFGS(net.parameters(), **kw)

    def closure():
        opt.zero_grad(set_to_none=True)
        value = F.cross_entropy(net(data.x), data.y)
        value.backward()
        return value

    first = [float(opt.step(closure).detach()) for _ in range(2)]
    res = fit(
        ref, data, optimizer=lambda params: torch.optim.LBFGS(params, **kw), batch_size=None,
        steps=2,
    )  # fmt: skip
    assert torch.equal(_flat(res.model), _flat(net))
    assert [h["loss"] for h in res.history] == first
    assert res.final_train_loss < first[0]

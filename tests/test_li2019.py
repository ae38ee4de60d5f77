"""The li2019 reproduction: smoke headline and the exactness of the one-step prediction."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from torch import nn

import hesslab
from hesslab.errors import ConfigurationError
from hesslab.experiments import li2019
from hesslab.objective import batch_loss

from .smoke import run_smoke


class _Quadratic(nn.Module):
    """Per-sample loss ``lᵢ(θ) = ½θᵀAθ − bᵢᵀθ`` (rows of the input are ``bᵢ``)."""

    def __init__(self, A: torch.Tensor, theta: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", A)
        self.theta = nn.Parameter(theta.clone())

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.theta @ self.A @ self.theta - b @ self.theta


def _quadratic(N: int = 6, P: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(P, P, generator=g, dtype=torch.float64)
    A = X @ X.T + 0.5 * torch.eye(P, dtype=torch.float64)
    b = torch.randn(N, P, generator=g, dtype=torch.float64)
    theta = torch.randn(P, generator=g, dtype=torch.float64)
    model = _Quadratic(A, theta)
    loss = batch_loss(lambda model_fn, batch: model_fn(batch[0]).mean())
    obj = hesslab.Objective(model, loss, (b, torch.zeros(N, dtype=torch.float64)))
    L = lambda th: float((0.5 * th @ A @ th - b @ th).mean())  # noqa: E731
    return obj, A, b, theta, L


@pytest.mark.parametrize("replacement", [False, True])
def test_prediction_exact_on_quadratic(replacement):
    """E_B[L(θ − ηDg_B)] − L(θ) by enumerating every minibatch equals the formula."""
    obj, A, b, theta, L = _quadratic()
    N, B, lr = b.shape[0], 3, 0.3
    G = li2019.all_sample_gradients(obj)
    assert torch.allclose(G, (A @ theta)[:, None] - b.T, atol=1e-12)
    M = hesslab.gradient_moment(
        obj, kind="minibatch", batch_size=B, replacement=replacement
    ).to_dense()
    H = hesslab.hessian(obj).to_dense()
    assert torch.allclose(H, A, atol=1e-12)
    gbar = G.mean(1)
    batches = (
        itertools.product(range(N), repeat=B)
        if replacement
        else itertools.combinations(range(N), B)
    )
    batches = list(batches)
    d = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    for pre in (None, d):
        D = torch.ones_like(gbar) if pre is None else pre
        exact = sum(L(theta - lr * D * G[:, list(s)].mean(1)) for s in batches) / len(batches)
        exact -= L(theta)
        pred = li2019.predicted_change(gbar, A, M, lr, pre)
        assert pred == pytest.approx(exact, rel=1e-10, abs=1e-12)


def test_sampled_change_unbiased_on_quadratic():
    obj, A, b, theta, L = _quadratic(N=8, P=3, seed=1)
    G = li2019.all_sample_gradients(obj)
    B, lr = 2, 0.2
    M = hesslab.gradient_moment(obj, kind="minibatch", batch_size=B).to_dense()
    pred = li2019.predicted_change(G.mean(1), A, M, lr)
    s = li2019.sampled_change(obj, G, B, lr, 20000, torch.Generator().manual_seed(0))
    assert abs(s["mean"] - pred) < 4 * s["stderr"]
    assert abs(s["cv_mean"] - pred) < 4 * s["cv_stderr"]
    with pytest.raises(ConfigurationError):
        hesslab.gradient_moment(obj, kind="minibatch", batch_size=0)


def test_sampled_change_chunked_equals_one_chunk(monkeypatch):
    """Chunking the K minibatches (memory bound) changes nothing but the rows per call."""
    obj, A, b, theta, L = _quadratic(N=8, P=3, seed=2)
    G = li2019.all_sample_gradients(obj)
    rows_seen: list[int] = []
    real = li2019.loss_at
    monkeypatch.setattr(
        li2019.onestep, "loss_at", lambda o, t: rows_seen.append(t.shape[0]) or real(o, t)
    )
    budget = 7 * (8 + 2 * 3) * 8  # 7 rows of (N + 2P) float64 numbers
    assert li2019.sampled_chunk_rows(8, 3, 8, budget) == 7
    for kw in ({}, {"precond": torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)}):
        one = li2019.sampled_change(obj, G, 3, 0.2, 50, torch.Generator().manual_seed(0), **kw)
        rows_seen.clear()
        many = li2019.sampled_change(
            obj, G, 3, 0.2, 50, torch.Generator().manual_seed(0), memory_bytes=budget, **kw
        )
        assert rows_seen == [7] * 7 + [1]
        for k, v in one.items():
            assert many[k] == pytest.approx(v, rel=1e-12, abs=1e-15)


def test_full_config_sampled_change_memory_is_bounded():
    """The full size's most memory-hungry step (K = 20,000 minibatches of B = 128 over
    P = 1,540 parameters: K·B·P float64 = 31.5 GB at once) works in chunks within the
    64 MiB bound, a few hundred rows at a time."""
    cfg = li2019.Li2019Config.full()
    dims = [cfg.dim, *cfg.widths, cfg.classes]
    P = sum(a * b + b for a, b in itertools.pairwise(dims))
    N = cfg.classes * cfg.per_class // 2
    B, K = max(cfg.batch_sizes), cfg.pred_samples
    assert K * B * P * 8 > 24 * 2**30  # what the unchunked gather needed
    rows = li2019.sampled_chunk_rows(N, P, 8, li2019.SAMPLED_MEMORY_BYTES)
    assert rows * (N + 2 * P) * 8 <= li2019.SAMPLED_MEMORY_BYTES
    assert 100 <= rows < K  # chunked, and not row by row


def test_loss_at_matches_objective():
    obj, A, b, theta, L = _quadratic()
    thetas = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = li2019.loss_at(obj, thetas)
    assert torch.allclose(got, torch.tensor([L(t) for t in thetas], dtype=torch.float64))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, _one_thread):
    return run_smoke(li2019.SPEC, tmp_path_factory.mktemp("runs"))


def test_smoke_overlap_headline(smoke_run):
    """Top-k(H) and top-k(M_B) overlap far above the random null k/P, every run."""
    _, result, _ = smoke_run
    ov = result["overlap"]
    assert ov["min_end_overlap"] > max(0.5, 10 * ov["null"])
    ends = [row["overlap end"] for row in ov["table"]]
    assert len(ends) >= 3  # the verdict is a share over >= 3 runs
    thr = max(0.5, 5 * ov["null"])
    assert sum(e > thr for e in ends) / len(ends) >= 2 / 3
    for row in ov["table"]:
        assert row["random end"] < 3 * row["k/P"]
    rep = result["repeats"]
    for s in rep["summary"].values():
        assert s["overlap_end_q05"] > max(0.4, 5 * rep["null"])
        assert s["random_end_median"] < 2 * rep["null"]
    v = rep["verdict"]  # share of the 2 x R nets (seeds) above the threshold
    cfg = li2019.Li2019Config.smoke()
    assert v["n"] == len(cfg.repeat_noise_fractions) * cfg.repeats >= 3
    assert v["estimate"] >= 2 / 3 and v["holds"] is True
    assert result["claims"]["overlap_strong"] and result["claims"]["repeats_overlap_strong"]


def test_smoke_prediction_headline(smoke_run):
    """At η = 0.01/λ_max the prediction is within 5% of the sampled mean (and 4 stderr of
    the plain sample mean); Tr(HM_B) by Hutchinson agrees with the exact value."""
    _, result, _ = smoke_run
    for e in result["prediction"]["entries"]:
        p = e["points"][0]
        assert p["kind"] == "SGD"
        assert abs(p["actual_cv"] - p["predicted"]) < 0.05 * abs(p["predicted"])
        assert abs(p["actual"] - p["predicted"]) < 4 * p["actual_se"]
        t, se = e["trace_HM_hutchinson"], e["trace_HM_hutchinson_se"]
        assert abs(t - e["trace_HM_exact"]) < 4 * se
    # the verdict: mean |relative error| over the >= 3 runs below tol by 2 s.e.
    v = result["prediction"]["verdict"]
    rel = result["prediction"]["signed_rel_errors"]
    assert v["n"] == len(rel) >= 3
    tol = li2019.Li2019Config.smoke().pred_rel_tol
    assert v["estimate"] == pytest.approx(tol - sum(abs(r) for r in rel) / len(rel))
    assert v["estimate"] >= 2 * v["stderr"] and v["statistic"] >= 2
    assert v["estimate"] > 0.5 * tol  # the measured margin: mean |error| < tol / 2
    assert result["claims"]["prediction_matches"] is True


def test_smoke_invariance_and_report(smoke_run):
    run, result, calls = smoke_run
    inv = result["invariance"]
    assert inv["runs"] == inv["verdict"]["n"] == 3  # three part-1 models, one seed each
    assert inv["verdict"]["holds"] is True
    assert inv["verdict"]["estimate"] >= 0.99 * li2019.INVARIANCE_TOL  # x = tol − change
    assert inv["trace_verdict"]["estimate"] == pytest.approx(1.0)  # 3/3 runs: tr H moves
    assert inv["max_rel_change"] < 1e-8
    assert inv["trace_ratio"] > 2
    assert inv["loss_rel_change"] < 1e-10
    assert result["claims"]["invariant"]
    assert calls and calls[-1] == pytest.approx(1.0)
    for f in run.figures:
        assert (run.path / f["file"]).stat().st_size > 1000
    assert len(run.claims) >= 5


def test_within_is_strict():
    """``|error| ≤ tol`` over runs: noisy or cancelling errors never confirm it."""
    assert li2019.within([0.01, -0.02, 0.015], 0.05).holds is True
    assert li2019.within([-0.08, 0.08, 0.33, 0.05], 0.1).holds is None  # noisy: undecided
    assert li2019.within([0.3, -0.3, 0.31], 0.1).holds is False  # signs cannot cancel
    assert li2019.within([0.01, 0.02], 0.05).holds is None  # < 3 runs


def test_config_sizes_and_spec():
    smoke, full = li2019.Li2019Config.smoke(), li2019.Li2019Config.full()
    assert full.repeats > smoke.repeats and len(full.batch_sizes) > len(smoke.batch_sizes)
    assert li2019.SPEC.name == "li2019"
    with pytest.raises(dataclasses.FrozenInstanceError):
        smoke.seed = 1  # type: ignore[misc]
    with pytest.raises(ConfigurationError):
        li2019.run(None, dataclasses.replace(smoke, widths=()))  # type: ignore[arg-type]
    for bad in ({"batch_sizes": (4,)}, {"invariance_runs": 2}, {"repeats": 2}):
        with pytest.raises(ConfigurationError, match="at least 3"):
            li2019.run(None, dataclasses.replace(smoke, **bad))  # type: ignore[arg-type]

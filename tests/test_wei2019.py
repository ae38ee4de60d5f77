"""The wei2019 reproduction: toy-valley headline at smoke size, exact toy Hessian."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hesslab.experiments import wei2019
from hesslab.experiments.wei2019 import toy

from .smoke import run_smoke


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, _one_thread):
    return run_smoke(wei2019.SPEC, tmp_path_factory.mktemp("runs"))


def test_toy_hessian_matches_autograd():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, dtype=torch.float64, generator=g)
    H = wei2019.toy_hessian(w)
    for r in range(4):
        ref = torch.autograd.functional.hessian(lambda x: 0.5 * (x.prod() - 1) ** 2, w[r])
        assert torch.allclose(H[r], ref, atol=1e-12)


def test_smoke_toy_headline(smoke_run):
    """Tr H falls under SGD-like noise and not under GD, beyond 3 stderr."""
    _, result, _ = smoke_run
    ch = result["toy"][2]["changes"]
    assert ch["GD"]["trace_change"] == pytest.approx(0.0, abs=1e-9)
    for name in ("SGD", "H-shaped"):
        assert ch[name]["trace_change"] < -3 * ch[name]["trace_change_se"] < 0
        assert ch[name]["trace_change"] < -0.3 * ch[name]["trace_start"]
    iso = ch["isotropic"]
    assert iso["logdet_change"] < -3 * iso["logdet_change_se"]
    claims = result["toy"][2]["claims"]
    assert claims["gd_flat"] and claims["sgd_falls"] and claims["hshaped_falls"]
    assert result["toy"][2]["sgd_prediction_rel_error"] < 0.15


def test_smoke_mlp_and_noise_measurement(smoke_run):
    run, result, calls = smoke_run
    mlp = result["mlp"]
    assert mlp["claims"]["gd_flat"]
    assert mlp["start_grad_norm"] < 1e-3
    trC = mlp["trace_C_B"]
    for t, se in mlp["measured_noise_trace"].values():
        assert abs(t - trC) <= 4 * se + 1e-12
    assert calls and calls[-1] == pytest.approx(1.0)
    for f in run.figures:
        assert (run.path / f["file"]).stat().st_size > 1000
    assert all(math.isfinite(r["trace_start"]) for r in mlp["summary"].values())


def test_config_sizes_and_spec():
    smoke, full = wei2019.Wei2019Config.smoke(), wei2019.Wei2019Config.full()
    assert full.toy_runs > smoke.toy_runs and 3 in full.toy_depths
    assert wei2019.SPEC.name == "wei2019"
    assert dataclasses.is_dataclass(smoke)
    with pytest.raises(dataclasses.FrozenInstanceError):
        smoke.seed = 1  # type: ignore[misc]


def test_diverged_toy_runs_are_counted_not_a_crash():
    """At the full size some noisy toy runs diverge (non-finite iterates; eigvalsh used to
    raise on them): they are counted, parked and excluded from every statistic."""
    cfg = dataclasses.replace(
        wei2019.Wei2019Config.smoke(), toy_runs=200, toy_steps=60, toy_record_every=20,
        toy_lr=0.12, toy_iso_std=4.0,
    )  # fmt: skip
    out = toy.toy_process("isotropic", cfg, 3, seed=0)
    dead = out["diverged"]
    assert 0 < dead[-1] < cfg.toy_runs and list(dead) == sorted(dead)
    for key in ("trace", "trace_se", "logdet", "logdet_se"):
        assert all(math.isfinite(x) for x in out[key])
    r = {"logdet_change": -1.0, "logdet_change_se": 0.1, "runs_kept": 150, "diverged": 50}
    v = toy.decision(r, "logdet_change", 3.0, "falls")
    assert v.holds is True and v.excluded == 50 and "50 non-finite excluded" in v.text

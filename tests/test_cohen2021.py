"""The edge-of-stability reproduction (Cohen et al. 2021)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hesslab.experiments import EXPERIMENTS
from hesslab.experiments.cohen2021 import SPEC, Cohen2021Config, judge_run, run
from hesslab.report.run import RunDir


def test_spec_and_configs():
    assert EXPERIMENTS["cohen2021"] is SPEC and SPEC.arxiv == "2103.00065"
    smoke, full = Cohen2021Config.smoke(), Cohen2021Config.full()
    assert smoke.steps < full.steps and smoke.data == "digits" and full.data == "mnist5k"
    assert len(full.seeds) >= 3 and len(full.lrs) >= 3
    cfg = SPEC.config(smoke=True, overrides=["lrs=[1.0]", "eos_band=(0.9, 1.1)"])
    assert cfg["lrs"] == [1.0] and cfg["eos_band"] == [0.9, 1.1]


def _synthetic(lam, loss, eta=1.0, every=10, diverged=False):
    lam = np.asarray(lam, dtype=float)
    return {
        "eta": eta,
        "steps": np.arange(len(lam)) * every,
        "lambda_max": lam,
        "loss": np.asarray(loss, dtype=float),
        "diverged": diverged,
    }


def test_judge_run_rules_can_fail():
    cfg = Cohen2021Config.smoke()
    rng = np.random.default_rng(0)
    falling = np.linspace(1.0, 0.1, 300) * (1 + 0.1 * rng.random(300))
    # rises from 1.0 to 2.0 = 2/eta at measurement 10, then hovers at 2.05
    eos = _synthetic([1.0 + 0.1 * i for i in range(11)] + [2.05] * 20, falling)
    j = judge_run(eos, cfg)
    assert j["crossed"] and j["cross_step"] == 100 and j["sharpening"]
    assert j["eos"] and j["eos_median"] == pytest.approx(1.025)
    assert j["nonmonotone"] and j["loss_ups"] > 0 and j["loss_drop"] > 0.5
    # keeps rising far past 2/eta: crossed, sharpened, but no edge of stability
    runaway = _synthetic([1.0 + 0.1 * i for i in range(40)], falling)
    assert judge_run(runaway, cfg)["eos"] is False
    # starts above 2/eta: no progressive sharpening
    assert judge_run(_synthetic([2.1] * 30, falling), cfg)["sharpening"] is False
    # never reaches 2/eta; a monotone loss; a diverged run
    never = judge_run(_synthetic([1.0] * 30, falling), cfg)
    assert not never["crossed"] and never["eos"] is None and not never["sharpening"]
    mono = judge_run(_synthetic([2.1] * 30, np.linspace(1.0, 0.1, 300)), cfg)
    assert mono["nonmonotone"] is False
    assert judge_run(_synthetic([1.0, 2.5, np.nan], falling, diverged=True), cfg)["eos"] is False


def _check_statistic(res, cfg):
    """Over seeds, for every eta: >= 2/3 of the runs show sharpening and EoS."""
    for eta in cfg.lrs:
        runs = [r for r in res["per_run"] if r["eta"] == eta]
        assert len(runs) == len(cfg.seeds)
        assert sum(r["sharpening"] is True for r in runs) >= 2 / 3 * len(runs)
        assert sum(r["eos"] is True for r in runs) >= 2 / 3 * len(runs)
        medians = [r["eos_median"] for r in runs if r["eos"] is not None]
        assert 0.9 <= float(np.median(medians)) <= 1.15
    assert res["diverged"] == 0


def test_tiny_run_shows_the_edge_of_stability(tmp_path):
    """Measured: all 3 seeds cross 2/eta = 0.8 at steps 100-120 after sharpening from a
    minimum of 0.39-0.44, then hover at median lambda*eta/2 = 1.07-1.08 (~1 s per run)."""
    cfg = dataclasses.replace(Cohen2021Config.smoke(), lrs=(2.5,), steps=250)
    rd = RunDir.create(tmp_path / "run", "cohen2021", config=SPEC.config(smoke=True))
    seen = []
    res = SPEC.run(rd, cfg, progress=lambda d, f: seen.append(f))
    assert seen[-1] == 1.0 and res["P"] == 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    _check_statistic(res, cfg)
    assert res["claims"]["sharpening"] is True and res["claims"]["eos"] is True
    assert len(rd.figures) == 3 and len(rd.claims) == 3
    rd.finalize()


@pytest.mark.slow
def test_smoke_claims_hold_over_seeds(tmp_path):
    """Measured at smoke size: every eta in (2.5, 2.0, 1.75) crosses 2/eta in 3/3 seeds
    (steps 107 ± 7, 187 ± 19, 287 ± 49) after rising by 0.48-0.63 of it, and hovers at a
    seed-mean median lambda*eta/2 of 1.04-1.06 (24 s of CPU time)."""
    cfg = Cohen2021Config.smoke()
    rd = RunDir.create(tmp_path / "run", "cohen2021", config=SPEC.config(smoke=True))
    res = run(rd, cfg)
    _check_statistic(res, cfg)
    assert res["claims"] == {"sharpening": True, "eos": True, "nonmonotone": True}

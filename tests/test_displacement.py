"""The displacement reproduction (SGD vs Adam eigenvector displacement and IPR)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from hesslab.experiments.displacement import SPEC, DisplacementConfig, run
from hesslab.report.run import RunDir


def test_spec_and_configs():
    assert SPEC.name == "displacement"
    assert SPEC.config_type is DisplacementConfig
    smoke, full = DisplacementConfig.smoke(), DisplacementConfig.full()
    assert smoke.steps < full.steps and smoke.t_w % smoke.every == 0
    cfg = SPEC.config(smoke=True, overrides=["seeds=[4]", "steps=60"])
    assert cfg["seeds"] == [4] and cfg["steps"] == 60


def test_tiny_run_writes_report(tmp_path):
    cfg = dataclasses.replace(
        DisplacementConfig.smoke(), seeds=(0,), steps=60, every=20, t_w=20, k=2, compare_cold=1
    )
    rd = RunDir.create(tmp_path / "run", "displacement", config=SPEC.config(smoke=True))
    seen = []
    res = SPEC.run(rd, cfg, progress=lambda d, f: seen.append(f))
    assert seen[-1] == 1.0
    assert res["P"] == 64 * 16 + 16 + 16 * 10 + 10
    assert res["ipr_null"] == pytest.approx(3 / (res["P"] + 2))
    for opt in ("sgd", "adam"):
        s = res["summary"][opt]
        assert 0 <= s["subdisp_ref_final"] <= 1 and 0 <= s["disp_ref_final"] <= 2
        assert 0 <= s["subdisp_prev_late"] <= 1
        assert res["ipr_null"] < s["ipr_late"] <= 1
        w = res["warm_start"][opt]
        assert w["matvecs_cold"] > 0 and w["max_abs_eigenvalue_diff"] < 1e-6
    assert res["summary"]["sgd"]["ipr_init"] == res["summary"]["adam"]["ipr_init"]
    assert {c["section"] for c in rd.claims} == {
        "1. Displacement of the leading eigenvectors",
        "2. Localization (IPR) of the leading eigenvectors",
    }
    assert len(rd.figures) == 3 and res["all_converged"]
    # one seed never decides a claim: both are undecided, with n = 1 stated
    assert res["claims"] == {"stabilize": None, "localize": None}
    assert all(v["n"] == 1 and v["holds"] is None for v in res["verdicts"].values())
    rd.finalize()


@pytest.mark.slow
def test_smoke_direction_adam_moves_more(tmp_path):
    """Verified on seeds 0-5 at smoke size: Adam's top-k subspace ends farther from its
    t_w position than SGD's in all 6 seeds (0.93 vs 0.82-0.86, seed means of 3). The
    consecutive displacement (Adam > SGD in 4 of 6 seeds) and the IPR direction (Adam more
    localized: 2 of 6 seeds) are NOT robust at smoke size and are not asserted."""
    cfg = DisplacementConfig.smoke()
    rd = RunDir.create(tmp_path / "run", "displacement", config=SPEC.config(smoke=True))
    res = run(rd, cfg)
    s, a = res["summary"]["sgd"], res["summary"]["adam"]
    v = res["verdicts"]["subdisp_ref_final"]
    # the statistic: the paired Adam - SGD mean over 3 seeds is >= 2 s.e. above zero
    assert v["n"] == 3 and v["estimate"] > 2 * v["stderr"] > 0 and v["holds"] is True
    assert res["agreement"]["subdisp_ref_final"] >= 2 / 3
    assert a["subdisp_ref_final"] - s["subdisp_ref_final"] == pytest.approx(v["estimate"])
    assert not math.isnan(a["ipr_late"])

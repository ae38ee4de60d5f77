"""The sankar2021-reg and wsbound-reg reproductions (run from the module's SPECs)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from hesslab.data import digits
from hesslab.errors import ConfigurationError
from hesslab.experiments.sankar2021_reg import (
    SPEC,
    WSBOUND_SPEC,
    Sankar2021RegConfig,
    WSBoundRegConfig,
    plot_variants,
    train_with_penalty,
)
from hesslab.models import lenet
from hesslab.report.run import RunDir
from hesslab.train.regularizers import HessianTracePenalty


def _run(spec, tmp_path, smoke=True, overrides=None):
    cfg = spec.config(smoke=smoke, overrides=overrides)
    run = RunDir.create(tmp_path, spec.name, config=cfg, command=["hesslab"])
    calls = []
    result = spec.run(run, cfg, progress=lambda d, f: calls.append(f))
    run.finalize()
    return run, result, calls


TINY = {"epochs": 2, "start_epoch": 1, "milestones": [1], "trace_matvecs": 6, "every": 4}


def test_tiny_run_writes_report_and_numbers(tmp_path):
    run, result, calls = _run(
        SPEC, tmp_path, overrides={**TINY, "variants": ["none", "middle"], "num_probes": 1}
    )
    assert set(result["summary"]) == {"none", "middle"}
    rows = result["rows"]
    assert [r["variant"] for r in rows] == ["none", "middle"]
    assert rows[0]["penalized_steps"] == 0 and rows[1]["penalized_steps"] == 6  # 21 / 4
    assert rows[1]["penalty_seconds_per_call"] > 0
    for r in rows:
        assert 0 < r["test_accuracy"] <= 1 and r["trace"] > 0 and r["lambda_max"] > 0
    # one seed never decides: both claims of the penalty variant are undecided (n = 1)
    assert result["holds"] is None and result["trace_lower"] == {"middle": None}
    assert result["verdicts"]["middle"]["trace"]["n"] == 1
    assert len(run.figures) == 2 and len(run.claims) == 2
    assert calls and calls[-1] == pytest.approx(1.0)
    json.dumps(result, default=str)
    saved = json.loads((run.path / "results.json").read_text())
    assert saved["status"] == "complete"


def test_tiny_wsbound_run(tmp_path):
    _, result, _ = _run(
        WSBOUND_SPEC, tmp_path, overrides={**TINY, "num_probes": 1, "min_matvecs": 20}
    )
    for r in result["rows"]:
        assert r["ws_upper"] >= r["lambda_max"] - 1e-3 * abs(r["lambda_max"])
        assert r["spread"] == pytest.approx(r["lambda_max"] - r["lambda_min"])


def test_configs_and_errors(tmp_path):
    smoke, full = SPEC.config(smoke=True), SPEC.config(smoke=False)
    assert len(smoke["seeds"]) <= 2 and 3 <= len(full["seeds"]) <= 5
    assert smoke["momentum"] == 0.9 and "gamma" in smoke and "num_probes" in smoke
    assert set(smoke) == {f.name for f in dataclasses.fields(Sankar2021RegConfig)}
    assert set(WSBOUND_SPEC.config()) == {f.name for f in dataclasses.fields(WSBoundRegConfig)}
    assert SPEC.name == "sankar2021-reg" and WSBOUND_SPEC.name == "wsbound-reg"
    run = RunDir.create(tmp_path, "x", config=smoke, command=["x"])
    with pytest.raises(ConfigurationError, match="unknown variant"):
        SPEC.run(run, SPEC.config(smoke=True, overrides={**TINY, "variants": ["none", "xx"]}))
    with pytest.raises(ConfigurationError, match="'none'"):
        SPEC.run(run, SPEC.config(smoke=True, overrides={"variants": ["full"]}))


def test_train_with_penalty_is_deterministic_and_records():
    split = digits(flat=False)

    def once():
        pen = HessianTracePenalty(num_probes=1, every=5, seed=0)
        out = train_with_penalty(
            lenet(1, 10, image_size=8, seed=0), split, penalty=pen, epochs=1, batch_size=128,
            lr=0.02, momentum=0.9, seed=0,
        )  # fmt: skip
        return out, pen

    a, pen = once()
    b, _ = once()
    assert a.epoch_loss == b.epoch_loss and a.penalty_values == b.penalty_values
    assert a.penalty_steps == (0, 5, 10) and a.steps == 11
    assert a.penalty_values == tuple(pen.series("value"))
    assert not a.model.training and all(p.grad is None for p in a.model.parameters())


def test_plot_variants_is_a_figure():
    fig = plot_variants(["none", "full"], {"trace": ([2.0, 1.0], [0.1, 0.2])}, title="t")
    assert fig.axes and fig.axes[-1].get_xlabel() == "variant"


@pytest.mark.slow
def test_smoke_trace_penalty_lowers_trace(tmp_path):
    """Smoke settings over seeds 0-2: the middle-layer penalty lowers the trace, by the
    paired statistic (mean (middle - none) below zero by >= 2 s.e. over the 3 seeds).

    (The full-network penalty's trace, 45.2 vs 46.6 with stderr about 1.2 on seed 0, is
    too close to assert; the 5-seed full size reports its verdict.)
    """
    _, result, _ = _run(SPEC, tmp_path, overrides={"seeds": [0, 1, 2]})
    v = result["verdicts"]["middle"]["trace"]
    assert v["n"] == 3 and v["estimate"] < -2 * v["stderr"] < 0
    assert result["trace_lower"]["middle"] is True


@pytest.mark.slow
def test_smoke_ws_penalty_narrows_range(tmp_path):
    """Smoke settings over seeds 0-2 (narrower on every seed when measured): the paired
    range and bound differences are below zero by >= 2 s.e."""
    _, result, _ = _run(WSBOUND_SPEC, tmp_path, overrides={"seeds": [0, 1, 2]})
    for key in ("spread", "ws_upper"):
        v = result["verdicts"]["ws"][key]
        assert v["n"] == 3 and v["estimate"] < -2 * v["stderr"] < 0
    assert result["holds"] is True

"""The peer benchmark's harness (bench/peers/): scoring, statistics, isolation, reporting.

Needs none of the peer libraries: a missing or failing peer must become a recorded
failure, never a crash of the benchmark.
"""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

PEERS = Path(__file__).resolve().parents[1] / "bench" / "peers"
sys.path.insert(0, str(PEERS))

import harness  # noqa: E402

import hesslab  # noqa: E402


def _load_main():
    spec = importlib.util.spec_from_file_location("peers_main", PEERS / "__main__.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- scoring
def test_wasserstein1_simple_cases():
    assert harness.wasserstein1([0.0], None, [1.0]) == pytest.approx(1.0)
    assert harness.wasserstein1([0.0, 1.0], None, [0.0, 1.0]) == pytest.approx(0.0)
    # half the mass moves by 2
    assert harness.wasserstein1([0.0, 2.0], [1, 1], [0.0, 0.0]) == pytest.approx(1.0)
    # weights are normalised; NaN padding and zero weights are dropped
    assert harness.wasserstein1([1.0, np.nan, 5.0], [2.0, 0.0, 0.0], [1.0]) == 0.0
    with pytest.raises(ValueError):
        harness.wasserstein1([1.0, 2.0], [1.0], [1.0])


def test_wasserstein1_matches_hesslab():
    rng = np.random.default_rng(0)
    xa, wa = rng.normal(size=40), rng.random(40)
    xb = rng.normal(0.3, 2.0, size=300)
    ours = harness.wasserstein1(xa, wa, xb)
    ref = hesslab.wasserstein1(torch.tensor(xa), torch.tensor(wa), torch.tensor(xb))
    assert ours == pytest.approx(ref, rel=1e-12)
    # symmetric, and W1 of a shift is the shift
    assert harness.wasserstein1(xb, None, xa, wa) == pytest.approx(ours, rel=1e-12)
    assert harness.wasserstein1(xb + 0.25, None, xb) == pytest.approx(0.25)


def test_median_ratio_and_errors():
    assert harness.median([3.0, None, 1.0, float("nan"), 2.0]) == 2.0
    assert harness.median([None, float("inf")]) is None
    assert harness.ratio(3.0, 2.0) == 1.5
    assert harness.ratio(None, 2.0) is None and harness.ratio(1.0, 0.0) is None
    truth = [5.0, 4.0, 3.0, 2.0, 1.0]
    # estimates are sorted before comparing; error = max over the k largest
    assert harness.topk_rel_error([4.0 * 1.01, 5.0], truth, 2) == pytest.approx(0.01)
    assert harness.topk_rel_error([5.0], truth, 2) == math.inf
    assert harness.covers(10.0, 1.0, 11.9)
    assert not harness.covers(10.0, 1.0, 12.0)
    assert harness.covers(10.0, None, 10.0) is None
    assert harness.covers(10.0, float("nan"), 10.0) is None


def test_summaries_record_failures_and_ratios():
    ok = {"ok": True, "products": 10, "wall_s": 1.0, "values": [2.0], "peak_rss_mb": 100.0}
    bad = {"ok": False, "error": "ModuleNotFoundError: No module named 'x'", "peak_rss_mb": 90.0}
    rows = {
        "hesslab": harness.summarize_topk(
            [ok, dict(ok, wall_s=3.0), dict(ok, wall_s=2.0)], [2.0], 1
        ),
        "peer": harness.summarize_topk([dict(ok, products=20, values=[1.9]), bad, bad], [2.0], 1),
        "gone": harness.summarize_topk([bad, bad, bad], [2.0], 1),
    }
    assert rows["hesslab"]["wall_s"] == 2.0 and rows["hesslab"]["rel_error"] == 0.0
    assert rows["peer"]["ok_runs"] == 1 and "2/3 runs failed" in rows["peer"]["failure"]
    assert rows["gone"]["products"] is None and "No module named" in rows["gone"]["failure"]
    harness.add_ratios(rows, ["products", "wall_s"])
    assert rows["peer"]["products_vs_hesslab"] == 2.0
    assert rows["gone"]["wall_s_vs_hesslab"] is None

    tr = harness.summarize_trace(
        [
            {"ok": True, "value": 10.5, "stderr": 0.5},
            {"ok": True, "value": 9.0, "stderr": 0.1},
            bad,
        ],
        truth=10.0,
    )
    assert tr["mean_rel_error"] == pytest.approx(0.075) and tr["max_rel_error"] == 0.1
    assert tr["error_bar"] and tr["covered"] == 1 and tr["failure"].startswith("1/3")
    nobar = harness.summarize_trace([{"ok": True, "value": 10.0, "stderr": None}], 10.0)
    assert not nobar["error_bar"] and nobar["covered"] is None

    eigs = np.linspace(-1.0, 3.0, 50)
    dens = harness.summarize_density(
        [
            {"ok": True, "nodes": eigs.tolist(), "weights": None, "products": 5, "wall_s": 0.1},
            {
                "ok": True,
                "nodes": (eigs + 0.4).tolist(),
                "weights": [1.0] * 50,
                "products": 5,
                "wall_s": 0.2,
            },
        ],
        eigs,
    )
    assert dens["w1_over_width"] == pytest.approx(0.05)  # median of 0 and 0.4 / width 4
    assert dens["max_w1_over_width"] == pytest.approx(0.1)
    cost = harness.summarize_cost([{"ok": True, "hvp_over_grad": 2.0, "hvp_s": 0.01}, bad])
    assert cost["hvp_over_grad"] == 2.0 and cost["hvp_ms"] == pytest.approx(10.0)


# --------------------------------------------------------------------------- isolation
def _returns(x):
    return {"value": x, "pid": os.getpid()}


def _raises():
    import a_peer_that_is_not_installed  # noqa: F401

    return {}


def _crashes():
    os.kill(os.getpid(), signal.SIGKILL)


def _sleeps():
    time.sleep(30)
    return {}


def test_run_isolated_success_and_memory():
    out = harness.run_isolated(_returns, 3, timeout=30)
    assert out["ok"] and out["value"] == 3 and out["pid"] != os.getpid()
    assert out["peak_rss_mb"] > 1.0 and out["elapsed_s"] >= 0


def test_run_isolated_missing_peer_is_a_failure_not_a_crash():
    out = harness.run_isolated(_raises, timeout=30)
    assert out["ok"] is False
    assert out["error"].startswith("ModuleNotFoundError")
    assert "a_peer_that_is_not_installed" in out["error"]


def test_run_isolated_crash_and_timeout():
    crash = harness.run_isolated(_crashes, timeout=30)
    assert not crash["ok"] and "SIGKILL" in crash["error"]
    t0 = time.perf_counter()
    slow = harness.run_isolated(_sleeps, timeout=1)
    assert not slow["ok"] and slow["error"].startswith("timeout")
    assert time.perf_counter() - t0 < 20


# --------------------------------------------------------------------------- reporting
def _fake_results():
    top = {
        "hesslab": {"products": 14, "wall_s": 0.3, "rel_error": 1e-9},
        "curvlinops + ARPACK": {"products": 31, "wall_s": 1.2, "rel_error": 1e-15},
        "pyhessian": {
            "products": None,
            "wall_s": None,
            "rel_error": None,
            "failure": "3/3 runs failed: AttributeError: torch has no eig",
        },
    }
    for name, row in top.items():
        row.update(
            runs=3,
            ok_runs=0 if row["products"] is None else 3,
            setup_s=0.1,
            max_rel_error=row["rel_error"],
            peak_rss_mb=300.0,
            library=name,
            settings="defaults",
        )
        row.setdefault("failure", None)
    harness.add_ratios(top, ["products", "wall_s", "rel_error"])
    trace = {
        "hesslab": {
            "mean_rel_error": 1e-3,
            "max_rel_error": 2e-3,
            "error_bar": True,
            "covered": 5,
            "ok_runs": 5,
            "exact": False,
        },
        "x": {
            "mean_rel_error": 1e-2,
            "max_rel_error": 2e-2,
            "error_bar": False,
            "covered": None,
            "ok_runs": 5,
            "exact": False,
        },
        "diag": {
            "mean_rel_error": 1e-16,
            "max_rel_error": 1e-16,
            "error_bar": False,
            "covered": None,
            "ok_runs": 5,
            "exact": True,
        },
    }
    for row in trace.values():
        row.update(runs=5, products=96, wall_s=0.5, peak_rss_mb=None, failure=None, settings="s")
    harness.add_ratios(trace, ["mean_rel_error", "wall_s"])
    dens = {
        "hesslab": {
            "w1_over_width": 3e-4,
            "products": 100,
            "wall_s": 1.0,
            "peak_rss_mb": 310.0,
            "failure": None,
            "settings": "s",
            "runs": 3,
            "ok_runs": 3,
        }
    }
    harness.add_ratios(dens, ["w1_over_width", "wall_s"])
    meta = {
        "command": "python bench/peers --quick",
        "date": "today",
        "cpu": "cpu",
        "cpus": 2,
        "threads": 1,
        "python": "3.11",
        "versions": {"torch": "2"},
        "load_start": "1",
        "load_end": "1",
        "reps": 3,
        "seeds": 5,
        "trace_budget": 96,
        "missing": {},
        "torch_warmup_s": 3.0,
    }
    truth = {
        "description": "MLP",
        "num_params": 3466,
        "num_data": 1347,
        "top_kind": "exact",
        "trace_kind": "exact",
        "trace": 4.97,
        "top": [0.4, 0.39],
    }
    p1 = {
        "truth": truth,
        "baseline_rss_mb": 200.0,
        "topk": {"1": top},
        "trace": trace,
        "density": {"100": dens},
    }
    return {"meta": meta, "problems": {"P1": p1}}


def test_render_and_targets_with_failures(tmp_path):
    main = _load_main()
    results = _fake_results()
    text = main.render(results)
    assert "FAILED: 3/3 runs failed: AttributeError" in text
    assert "| hesslab |" in text and "no error bar" in text and "exact method" in text
    lines = main.targets(results["problems"]["P1"])
    top1 = next(line for line in lines if line.startswith("- top-1"))
    assert "-> met" in top1 and "curvlinops + ARPACK" in top1
    assert any(line.startswith("- trace") and "-> met" in line for line in lines)
    assert any(line.startswith("- density") and "-> met" in line for line in lines)
    main.plot(results, tmp_path / "peers.png")
    assert (tmp_path / "peers.png").stat().st_size > 0

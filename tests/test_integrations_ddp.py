"""The trainer callbacks under the trainers' own DDP (2 gloo processes on CPU, torchrun).

Each rank's monitor measures its shard of the analysis set (``distributed=True``); the
numbers must be those of one process measuring the whole set (float64, ``<= 1e-8``
relative), only rank 0 may log or write, and the weights trained with the callback must be
bit-identical to those trained without it. ``tests/ddp_trainers.py`` is the script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from hesslab.train import SpectrumMonitor

from . import ddp_trainers as script

pytestmark = [
    pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed"),
    pytest.mark.slow,  # 35-55 s each on a loaded 2-core machine (two trainings per rank)
]
ROOT = Path(__file__).resolve().parents[1]


def _torchrun(kind: str, out: Path) -> list[dict]:
    """Run the script in 2 processes; the two ranks' ``rank{r}.pt``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    cmd += ["2", str(ROOT / "tests" / "ddp_trainers.py"), kind, str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _check_ranks(ranks: list[dict], out: Path) -> None:
    """Both ranks measured distributed, with the same numbers; rank 0 alone wrote."""
    r0, r1 = ranks
    assert r0["distributed"] and r1["distributed"] and r0["world"] == r1["world"] == 2
    assert r0["seed"] == r1["seed"] == 0  # rank 0's seed broadcast (rank 1 passed seed=1)
    steps = list(range(script.EVERY, script.STEPS + 1, script.EVERY))
    assert [rec["step"] for rec in r0["records"]] == steps
    for a, b in zip(r0["records"], r1["records"], strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }
    assert (out / "rank0.jsonl").exists() and not (out / "rank1.jsonl").exists()
    written = [json.loads(line) for line in (out / "rank0.jsonl").read_text().splitlines()]
    assert [w["step"] for w in written] == steps
    for r in ranks:  # the callback changed nothing in training, bit for bit
        for name, want in r["plain"].items():
            assert torch.equal(r["weights"][name], want), name


def _check_against_single_process(r0: dict, model: torch.nn.Module, kind: str) -> int:
    """Every number of rank 0 equals one process measuring the whole analysis set."""
    loss = "causal_lm" if kind == "hf" else "ce"
    data = script.analysis(kind)
    data = [{"input_ids": data[0]}] if kind == "hf" else data
    reference = SpectrumMonitor(data, loss, seed=r0["seed"], **script.monitor_kwargs())
    checked = 0
    for (step, state), got in zip(r0["snapshots"], r0["records"], strict=True):
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        model.eval()
        reference.step(model, step)
        want = reference.measurements[-1].record()
        assert got.keys() == want.keys()
        for key, value in want.items():
            if key in ("seconds", "step") or not isinstance(value, float):
                continue
            assert abs(got[key] - value) <= 1e-8 * max(abs(value), 1e-3), (key, got[key], value)
            checked += 1
    return checked


def test_hf_trainer_callback_under_ddp(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    ranks = _torchrun("hf", tmp_path)
    _check_ranks(ranks, tmp_path)
    logged = [[k for k in keys if k.startswith("hessian/")] for keys in ranks[0]["logged"]]
    assert sum(1 for keys in logged if "hessian/lambda/1" in keys) == len(ranks[0]["records"])
    assert not any(k.startswith("hessian/") for keys in ranks[1]["logged"] for k in keys)
    # the trainer's own loss log of every step survives the callback's log at that step
    assert sum(1 for keys in ranks[0]["logged"] if "loss" in keys) == script.STEPS
    assert _check_against_single_process(ranks[0], script.hf_model(), "hf") >= 4


def test_lightning_callback_under_ddp(tmp_path):
    pytest.importorskip("lightning.pytorch")
    ranks = _torchrun("lightning", tmp_path)
    _check_ranks(ranks, tmp_path)
    calls0, calls1 = (r["logged"]["calls"] for r in ranks)
    steps = [rec["step"] for rec in ranks[0]["records"]]
    assert [step for step, _ in calls0] == steps and "hessian/lambda/1" in calls0[0][1]
    assert calls1 == []  # only rank 0 logs
    assert "hessian/trace" in ranks[0]["logged"]["csv"][0]
    assert _check_against_single_process(ranks[0], script.MLP().double(), "lightning") >= 4

"""SpectrumMonitor in a 2-process gloo job against a single-process monitor on all data."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist

from hesslab.errors import ConfigurationError
from hesslab.train.monitor import JsonlSink, SpectrumMonitor

from .gloo import run_gloo, tanh_mlp_shard
from .models import make

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed")

QUANTITIES = (
    "top_k",
    "trace",
    "trace_sq",
    "effective_rank",
    "ipr",
    "displacement",
    "layers",
    "moment_overlap",
    "grad_alignment",
)
STEPS = (0, 1)


def _monitor(data, sinks=(), *, generator=None, seed=11, distributed=True) -> SpectrumMonitor:
    return SpectrumMonitor(
        data,
        "ce",
        every=1,
        quantities=QUANTITIES,
        k=3,
        tol=1e-11,
        trace_matvecs=12,
        sinks=sinks,
        seed=seed,
        generator=generator,
        distributed=distributed,
    )


def _train_step(model: torch.nn.Module) -> None:
    """A deterministic stand-in for an optimizer step (the same on every rank)."""
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(0.05 * torch.cos(torch.arange(p.numel(), dtype=p.dtype) + i).reshape(p.shape))


def _run(monitor: SpectrumMonitor, model: torch.nn.Module) -> list[dict]:
    for step in STEPS:
        monitor.step(model, step)
        _train_step(model)
    monitor.close()
    return [m.record() for m in monitor.measurements]


def _body(rank: int, world: int, out_dir: str) -> None:
    model, data = tanh_mlp_shard(rank, world)
    # rank-dependent generators: the broadcast seed makes the probes agree anyway
    gen = torch.Generator().manual_seed(100 + rank)
    sink = JsonlSink(os.path.join(out_dir, f"rank{rank}.jsonl"))
    monitor = _monitor(data, [sink], generator=gen)
    records = _run(monitor, model)
    matvecs = [m.diagnostics["matvecs"] for m in monitor.measurements]
    out = {"records": records, "seed": monitor.seed, "matvecs": matvecs}
    torch.save(out, os.path.join(out_dir, f"r{rank}.pt"))


def test_monitor_under_two_gloo_processes_matches_single_process(tmp_path):
    run_gloo(_body, tmp_path)
    r0, r1 = torch.load(tmp_path / "r0.pt"), torch.load(tmp_path / "r1.pt")
    # only rank 0 wrote; every rank computed the same numbers
    assert (tmp_path / "rank0.jsonl").exists() and not (tmp_path / "rank1.jsonl").exists()
    assert r0["seed"] == r1["seed"]
    assert r0["records"][0].keys() == r1["records"][0].keys()
    for a, b in zip(r0["records"], r1["records"], strict=True):
        for key in a:
            if key != "seconds":
                assert a[key] == b[key], key
    written = [json.loads(line) for line in (tmp_path / "rank0.jsonl").read_text().splitlines()]
    assert [w["step"] for w in written] == list(STEPS)

    model, x, y, _ = make("tanh_mlp")
    reference = _monitor((x, y), seed=r0["seed"], distributed=False)
    single = _run(reference, model)
    # same product counts per quantity
    assert r0["matvecs"] == [m.diagnostics["matvecs"] for m in reference.measurements]
    assert len(single) == len(r0["records"]) == len(STEPS)
    checked = 0
    for got, ref in zip(r0["records"], single, strict=True):
        assert got.keys() == ref.keys()
        for key, want in ref.items():
            if key in ("seconds", "step") or not isinstance(want, float):
                continue
            have = got[key]
            scale = max(abs(want), 1e-3 if key.endswith("_err") else 1.0)
            tol = 1e-6 if key.endswith("_err") else 1e-10
            assert abs(have - want) <= tol * scale, (key, have, want)
            checked += 1
    assert checked > 40
    assert any(k.startswith("layer/") for k in single[0]) and "disp_prev/1" in single[1]


def test_distributed_monitor_requires_process_group():
    _, x, y, _ = make("tanh_mlp")
    with pytest.raises(ConfigurationError, match="torchrun"):
        SpectrumMonitor((x, y), distributed=True)

"""SpectrumMonitor on an FSDP2-sharded model (2 gloo processes) against one process."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist

from hesslab.errors import ConfigurationError

from .gloo import gloo_results, tanh_mlp_shard
from .models import make

fsdp = pytest.importorskip("torch.distributed.fsdp")
pytestmark = pytest.mark.skipif(
    not (dist.is_available() and hasattr(fsdp, "fully_shard")), reason="no FSDP2"
)
Q = ("lambda_max", "top_k", "bottom", "trace", "trace_sq", "ws_bounds", "effective_rank")
OPTIONS = {"every": 1, "quantities": Q, "k": 3, "tol": 1e-10, "trace_matvecs": 24, "seed": 5}


def _body(rank: int, world: int, out_dir: str) -> None:
    from hesslab.train.monitor import JsonlSink, SpectrumMonitor

    model, data = tanh_mlp_shard(rank, world)
    for layer in (model[0], model[2]):
        fsdp.fully_shard(layer)
    fsdp.fully_shard(model)
    before = [p.to_local().clone() for p in model.parameters()]
    sink = JsonlSink(os.path.join(out_dir, f"m{rank}.jsonl"))
    mon = SpectrumMonitor(data, "ce", **OPTIONS, sharded=True, sinks=[sink])
    for step in range(2):  # the second one warm-started from this rank's shards
        mon.step(model, step)
    mon.close()
    restored = all(
        torch.equal(a, p.to_local()) for a, p in zip(before, model.parameters(), strict=True)
    )
    res = {"m": mon.measurements, "writes": mon.writes, "restored": restored}
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow  # two gloo processes: ~25 s
def test_monitor_on_a_sharded_model_equals_one_process(tmp_path):
    from hesslab.train.monitor import SpectrumMonitor

    ranks = gloo_results(_body, tmp_path)
    model, x, y, _ = make("tanh_mlp")
    ref = SpectrumMonitor((x, y), "ce", **OPTIONS)
    for step in range(2):
        ref.step(model, step)
    for r in ranks:
        assert r["restored"]
        for m, want in zip(r["m"], ref.measurements, strict=True):
            assert set(m.values) == set(want.values)
            for key, v in want.values.items():
                assert abs(m.values[key] - v) <= 1e-10 * max(abs(v), 1.0), key
            assert m.diagnostics["matvecs"] == want.diagnostics["matvecs"]
            assert m.diagnostics["P"] == want.diagnostics["P"]
        assert r["m"][1].diagnostics["warm_started"]
    assert [r["writes"] for r in ranks] == [True, False]  # only rank 0 writes
    lines = (tmp_path / "m0.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["step"] == 0
    assert not (tmp_path / "m1.jsonl").exists() or not (tmp_path / "m1.jsonl").read_text()


def test_sharded_monitor_refuses_quantities_needing_whole_vectors():
    from hesslab.train.monitor import SpectrumMonitor

    with pytest.raises(ConfigurationError, match="not measured on a sharded model"):
        SpectrumMonitor((torch.zeros(2, 3), torch.zeros(2)), quantities=("ipr",), sharded=True)

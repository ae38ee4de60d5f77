"""`hesslab analyze --shard` under torchrun (2 gloo processes) against one plain process."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch.distributed as dist

from .test_distributed import _analyze_argv, _scalar, _single_process_results, _torchrun_cli

fsdp = pytest.importorskip("torch.distributed.fsdp")
pytestmark = pytest.mark.skipif(
    not (dist.is_available() and hasattr(fsdp, "fully_shard")), reason="no FSDP2"
)


def test_shard_outside_torchrun_says_how_to_launch(tmp_path, capsys, monkeypatch):
    from hesslab.cli import main

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main([*_analyze_argv(tmp_path, 4, "eig"), "--shard", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "--shard must run under torchrun" in err and "--nproc_per_node 2" in err


@pytest.mark.slow  # two torchrun workers and a single-process reference: ~30 s
def test_cli_analyze_shard_equals_one_process(tmp_path):
    common = _analyze_argv(tmp_path, 8, "eig,trace,density,layers")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "sharded"
    proc = subprocess.run(
        [*_torchrun_cli(), *common, "--shard", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[:6000]
    (run,) = out.iterdir()  # only rank 0 writes
    a = json.loads((run / "results.json").read_text())
    b = _single_process_results(common, tmp_path / "single", env)
    for name in ("λ top[0]", "λ bottom[0]", "tr H", "tr H²"):
        assert abs(_scalar(a, name) - _scalar(b, name)) <= 1e-9 * abs(_scalar(b, name)), name
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["processes"] == 2 and config["shard"]["route"] == "exact"
    assert config["shard"]["skipped"] == ["layers"]
    assert 0 < config["shard"]["local_size"] < 51  # this rank's part of P = 51

"""Data-parallel operators with gloo on 2 local processes against the single-process ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from hesslab import Objective, eigenpairs, trace
from hesslab.distributed import DistributedOperator, shard_indices
from hesslab.operators import GGNOperator, GradientMomentOperator, HessianOperator

from .gloo import run_gloo, tanh_mlp_shard
from .models import make

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed")


def _body(rank: int, world: int, out_dir: str) -> None:
    model, data = tanh_mlp_shard(rank, world)  # unequal batches inside the shard too
    results = {}
    for name, cls in [("hessian", HessianOperator), ("ggn", GGNOperator)]:
        op = DistributedOperator(cls(Objective(model, "ce", data)))
        results[name] = op.to_dense()
    M = DistributedOperator(GradientMomentOperator(Objective(model, "ce", data)))
    results["moment"] = M.to_dense()
    H = DistributedOperator(HessianOperator(Objective(model, "ce", data)))
    # rank-dependent generator seeds: the broadcast makes the products agree anyway
    res = eigenpairs(H, 3, tol=1e-10, generator=torch.Generator().manual_seed(7))
    results["eig"] = res.values
    results["eig_matvecs"] = res.num_matvecs
    tr = trace(H, 30, generator=torch.Generator().manual_seed(3))
    results["trace"] = (tr.value, tr.stderr)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_process_gloo_matches_single_process(tmp_path):
    run_gloo(_body, tmp_path)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    model, x, y, _ = make("tanh_mlp")
    obj = Objective(model, "ce", (x, y))
    refs = {
        "hessian": HessianOperator(obj).to_dense(),
        "ggn": GGNOperator(obj).to_dense(),
        "moment": GradientMomentOperator(obj).to_dense(),
    }
    for name, ref in refs.items():
        scale = max(1.0, float(ref.abs().max()))
        for r in (r0, r1):
            assert float((r[name] - ref).abs().max()) <= 1e-10 * scale, name
    # every rank ends with the same Krylov results, equal to a single-process run
    assert torch.equal(r0["eig"], r1["eig"]) and r0["trace"] == r1["trace"]
    H = HessianOperator(obj)
    single = eigenpairs(H, 3, tol=1e-10, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(r0["eig"], single.values, rtol=1e-8, atol=0)
    st = trace(H, 30, generator=torch.Generator().manual_seed(3))
    assert abs(r0["trace"][0] - st.value) <= 1e-8 * abs(st.value)


def test_shards_partition_the_data():
    for n, w in [(23, 2), (10, 3), (5, 5), (3, 4)]:
        parts = [list(shard_indices(n, r, w)) for r in range(w)]
        assert [i for part in parts for i in part] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_requires_initialised_process_group():
    from hesslab.errors import ConfigurationError

    model, x, y, _ = make("tanh_mlp")
    with pytest.raises(ConfigurationError, match="torchrun"):
        DistributedOperator(HessianOperator(Objective(model, "ce", (x, y))))


def _torchrun_cli() -> list[str]:
    """``torchrun`` with 2 local processes running ``python -m hesslab.cli``.

    The launcher of *this* interpreter (``python -m torch.distributed.run``, never a
    ``torchrun`` found on ``PATH``, which may belong to another torch), with
    ``--standalone``: the launcher binds a free port itself, so parallel test runs cannot
    race for one picked in advance.
    """
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*run, "--nproc_per_node", "2", "-m", "hesslab.cli"]


def _kill_job(proc) -> None:
    """SIGKILL a torchrun job, launcher and workers at once (a preemption).

    torchrun starts every worker in a session of its own, so killing the launcher's
    process group alone leaves the workers running: they would finish the killed run
    (writing and finally deleting its checkpoints) while the resumed one reads them.
    """
    import signal
    import subprocess
    import time

    found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    workers = [int(p) for p in found.stdout.split()]
    assert len(workers) >= 2, f"torchrun's workers not found: {found.stdout!r}"
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in workers:
        try:
            os.killpg(pid, signal.SIGKILL)  # each worker leads its own process group
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), "a killed worker is still running"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def _single_process_results(common: list[str], out: Path, env: dict) -> dict:
    """``results.json`` of the same command in one plain process (the reference)."""
    import json
    import subprocess

    cmd = [sys.executable, "-m", "hesslab.cli", *common, "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    (run,) = out.iterdir()
    return json.loads((run / "results.json").read_text())


def _scalar(results: dict, name: str) -> float:
    return next(s["value"] for s in results["scalars"] if s["name"] == name)


def _analyze_argv(tmp_path: Path, width: int, what: str, *extra: str) -> list[str]:
    """`hesslab analyze` of a small tanh MLP (written to tmp_path) on the blobs data."""
    model = tmp_path / "m.py"
    model.write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        f"    return torch.nn.Sequential(torch.nn.Linear(2, {width}), torch.nn.Tanh(),"
        f" torch.nn.Linear({width}, 3))\n"
    )
    return [
        "analyze",
        "--model",
        f"{model}:build",
        "--data",
        "blobs",
        "--dtype",
        "float64",
        "--quiet",
        "--what",
        what,
        "--k",
        "3",
        "--k-bottom",
        "1",
        *extra,
    ]


def test_cli_analyze_under_torchrun(tmp_path):
    """`hesslab analyze` under torchrun gives the single-process numbers; rank 0 writes."""
    import json
    import subprocess

    common = _analyze_argv(tmp_path, 8, "eig,trace")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [*_torchrun_cli(), *common, "--out", str(tmp_path / "dist")],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    (dist_run,) = (tmp_path / "dist").iterdir()
    a = json.loads((dist_run / "results.json").read_text())
    b = _single_process_results(common, tmp_path / "single", env)
    for name in ("λ top[0]", "λ bottom[0]", "tr H"):
        assert abs(_scalar(a, name) - _scalar(b, name)) <= 1e-9 * abs(_scalar(b, name)), name
    assert json.loads((dist_run / "config.json").read_text())["config"]["processes"] == 2


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL of a process group")
def test_cli_resume_under_torchrun_after_kill(tmp_path):
    """A torchrun `analyze` killed mid-run resumes with `--resume` on every rank.

    Rank 0 writes the checkpoints; the other rank reads the same files on resume. Were
    the ranks to disagree on which stages are finished, their collectives would not match
    (a hang, caught by the timeout) or the numbers would differ from the reference.
    """
    import json
    import subprocess
    import time

    extra = ("--density-steps", "60", "--density-probes", "40")
    common = _analyze_argv(tmp_path, 16, "eig,trace,density", *extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(*extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*_torchrun_cli(), *common, "--out", str(tmp_path / "dist"), *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    proc = launch()
    deadline = time.monotonic() + 240
    ckpt = None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((tmp_path / "dist").glob("*/checkpoints/density.pt"))
        if runs and len(torch.load(runs[0], weights_only=False)["probes"]) >= 3:
            ckpt = runs[0].parent
            break
        time.sleep(0.05)
    assert ckpt is not None, f"no density checkpoint before the run ended: {proc.poll()}"
    _kill_job(proc)  # preemption: every rank dies at once
    run = ckpt.parent
    assert (ckpt / "eig_top.done.pt").exists() and (ckpt / "trace.done.pt").exists()
    assert not (run / "results.json").exists() or (
        json.loads((run / "results.json").read_text())["status"] != "complete"
    )

    resumed = launch("--resume", str(run))
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err.decode()[-2000:]
    assert not ckpt.exists()  # rank 0 removed the checkpoints once complete
    a = json.loads((run / "results.json").read_text())
    b = _single_process_results(common, tmp_path / "single", env)
    assert a["status"] == "complete"
    names = [s["name"] for s in b["scalars"] if s["name"].startswith(("λ", "tr", "density"))]
    assert "tr H" in names
    for name in names:
        ref = _scalar(b, name)
        assert abs(_scalar(a, name) - ref) <= 1e-8 * max(1.0, abs(ref)), name

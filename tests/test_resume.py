"""Checkpointed Lanczos: a run killed mid-way resumes to bit-identical eigenvalues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from hesslab import eigenpairs
from hesslab.errors import ConfigurationError
from hesslab.operators import FunctionOperator

SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    from hesslab import eigenpairs
    from hesslab.operators import FunctionOperator
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([50.0, 40, 30, 20, 10]), torch.linspace(-1, 1, 395)])
    A = (Q * lam.to(torch.float64)) @ Q.T
    slow = float(sys.argv[2])
    def mm(V):
        time.sleep(slow)
        return A @ V
    op = FunctionOperator(mm, 400)
    res = eigenpairs(op, 8, tol=1e-12, max_basis=24, generator=torch.Generator().manual_seed(1),
                     checkpoint=sys.argv[1])
    torch.save({"values": res.values, "num_matvecs": res.num_matvecs}, sys.argv[1] + ".out")
    """
)


def _run(tmp_path, ckpt, slow, *, kill_after_checkpoint):
    script = tmp_path / "solve.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt), str(slow)])
    if kill_after_checkpoint:
        deadline = time.time() + 120
        while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert ckpt.exists(), "no checkpoint was written before the solver finished"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    assert proc.wait(timeout=300) == 0
    return torch.load(str(ckpt) + ".out")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_run_resumes_bit_identical(tmp_path):
    reference = _run(tmp_path, tmp_path / "ref.ckpt", 0.0, kill_after_checkpoint=False)
    ckpt = tmp_path / "run.ckpt"
    _run(tmp_path, ckpt, 0.02, kill_after_checkpoint=True)
    assert ckpt.exists()
    state = torch.load(ckpt, weights_only=False)
    assert state["num_restarts"] >= 1
    resumed = _run(tmp_path, ckpt, 0.0, kill_after_checkpoint=False)
    assert torch.equal(resumed["values"], reference["values"])
    assert resumed["num_matvecs"] == reference["num_matvecs"]
    assert not ckpt.exists()  # removed after a normal return


def test_checkpoint_from_other_arguments_is_refused(tmp_path):
    A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))

    def stop_after_restart(info):
        if info["num_restarts"] >= 1:
            raise KeyboardInterrupt

    op = FunctionOperator(lambda V: A @ V, 100)
    ckpt = tmp_path / "c.ckpt"
    with pytest.raises(KeyboardInterrupt):
        eigenpairs(
            op,
            3,
            tol=1e-14,
            max_basis=10,
            checkpoint=ckpt,
            callback=stop_after_restart,
            generator=torch.Generator().manual_seed(0),
        )
    assert ckpt.exists()
    with pytest.raises(ConfigurationError, match="same arguments"):
        eigenpairs(op, 4, tol=1e-14, max_basis=10, checkpoint=ckpt)

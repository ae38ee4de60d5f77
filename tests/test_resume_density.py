"""Checkpointed SLQ and resumable ``hesslab analyze``: an interrupted run resumes to the
numbers of an uninterrupted one.

The plain "interrupted SLQ / logdet resumes bit-identically" checks live with every other
resumable solver in test_resume_contract; here: the block-run comparison, refusals,
read-only resumes and ``analyze --resume``'s bookkeeping.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hesslab.cli import main
from hesslab.errors import ConfigurationError
from hesslab.linalg.density import spectral_density
from hesslab.operators import FunctionOperator

from .test_cli import _file_data_argv, _write_model


class _Stop(Exception):
    pass


def _operator(P: int = 120, *, fail_after: int | None = None):
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([30.0, 20.0, 10.0]), torch.linspace(-1, 1, P - 3)])
    A = (Q * lam.to(torch.float64)) @ Q.T
    count = {"columns": 0}

    def mm(V):
        count["columns"] += V.shape[1]
        if fail_after is not None and count["columns"] > fail_after:
            raise _Stop
        return A @ V

    return FunctionOperator(mm, P, dtype=torch.float64), count


def _density(op, ckpt, **kw):
    gen = torch.Generator().manual_seed(7)
    kw = {"num_steps": 15, "num_probes": 4, **kw}
    res = spectral_density(op, generator=gen, checkpoint=ckpt, **kw)
    return res, gen


def test_checkpointed_slq_matches_the_block_run():
    op, _ = _operator()
    plain = spectral_density(op, 15, 1, generator=torch.Generator().manual_seed(1))
    assert plain.num_probes == 1
    multi = spectral_density(op, 15, 3, generator=torch.Generator().manual_seed(1))
    op2, _ = _operator()
    for K, ref in ((1, plain), (3, multi)):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            res = spectral_density(
                op2, 15, K, generator=torch.Generator().manual_seed(1), checkpoint=f"{d}/c.pt"
            )
        if K == 1:
            assert torch.equal(res.nodes, ref.nodes)
        else:
            torch.testing.assert_close(res.nodes, ref.nodes, rtol=0, atol=1e-9)


def test_mismatched_slq_checkpoint_is_refused(tmp_path):
    ckpt = tmp_path / "slq.pt"
    failing, _ = _operator(fail_after=20)
    with pytest.raises(_Stop):
        _density(failing, ckpt)
    assert ckpt.exists()
    op, _ = _operator()
    with pytest.raises(ConfigurationError, match="same arguments"):
        _density(op, ckpt, num_steps=16)
    with pytest.raises(ConfigurationError, match="seeded the same way"):
        spectral_density(op, 15, 4, generator=torch.Generator().manual_seed(8), checkpoint=ckpt)
    assert ckpt.exists()  # refused, not overwritten


# ------------------------------------------------------------------ hesslab analyze --resume
def _analyze_argv(tmp_path, out):
    return [
        *_file_data_argv(tmp_path, _write_model(tmp_path), out),
        "--exact-limit",
        "100",
        "--k",
        "3",
        "--k-bottom",
        "1",
        "--trace-matvecs",
        "24",
        "--density-steps",
        "20",
        "--density-probes",
        "3",
        "--quiet",
    ]


def _numbers(path):
    results = json.loads((path / "results.json").read_text())
    assert results["status"] == "complete"
    scalars = {
        (s["section"], s["name"]): (s["value"], s["stderr"])
        for s in results["scalars"]
        if s["section"] != "Run"
    }
    tables = {(t["section"], t["name"]): t["rows"] for t in results["tables"]}
    with np.load(path / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return scalars, tables, arrays


def _only_dir(out):
    (path,) = [p for p in out.iterdir() if p.is_dir()]
    return path


def test_analyze_resume_after_interruption_gives_the_same_numbers(tmp_path, monkeypatch, capsys):
    import hesslab.linalg.density as density_mod

    ref_out = tmp_path / "ref"
    assert main(_analyze_argv(tmp_path, ref_out)) == 0
    ref = _only_dir(ref_out)
    assert not (ref / "checkpoints").exists()  # removed once complete

    # interrupt the density stage after its first probe (eigenpairs and traces done)
    real = density_mod.lanczos_quadrature
    calls = {"n": 0}

    def interrupting(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(density_mod, "lanczos_quadrature", interrupting)
    out = tmp_path / "runs"
    assert main(_analyze_argv(tmp_path, out)) == 130
    run = _only_dir(out)
    ckpt = run / "checkpoints"
    assert (ckpt / "eig_top.done.pt").exists() and (ckpt / "trace_sq.done.pt").exists()
    assert len(torch.load(ckpt / "density.pt", weights_only=False)["probes"]) == 1
    assert (
        not (run / "results.json").exists()
        or json.loads((run / "results.json").read_text())["status"] != "complete"
    )

    # a conflicting command line is refused and changes nothing
    argv = _analyze_argv(tmp_path, out)
    bad = [*argv[:-1], "--seed", "5", "--quiet", "--resume", str(run)]
    capsys.readouterr()
    assert main(bad) == 2
    assert "other settings" in capsys.readouterr().err
    assert (ckpt / "density.pt").exists()

    # resuming must not recompute the finished stages: the eigensolver is not called
    monkeypatch.setattr(density_mod, "lanczos_quadrature", real)
    import hesslab.quantities as quantities_mod  # analyze's eigensolves go through it

    real_eigenpairs = quantities_mod.eigenpairs
    solved = []

    def no_eigenpairs(*a, **kw):
        solved.append(kw["checkpoint"].path.stem)
        assert kw["checkpoint"].path.stem not in ("eig_top", "eig_bottom"), "finished stage reran"
        return real_eigenpairs(*a, **kw)

    monkeypatch.setattr(quantities_mod, "eigenpairs", no_eigenpairs)
    calls["n"] = 0
    monkeypatch.setattr(density_mod, "lanczos_quadrature", interrupting)  # counts calls
    calls["n"] = -10  # never reaches 2 again
    assert main([*argv, "--resume", str(run)]) == 0
    assert calls["n"] == -10 + 2  # only the two missing probes ran
    assert "ggn_top" in solved  # the later stages did run
    assert not ckpt.exists()
    got_scalars, got_tables, got_arrays = _numbers(run)
    ref_scalars, ref_tables, ref_arrays = _numbers(ref)
    assert got_scalars == ref_scalars
    assert got_tables == ref_tables
    assert got_arrays.keys() == ref_arrays.keys()
    for k in ref_arrays:
        np.testing.assert_array_equal(got_arrays[k], ref_arrays[k], err_msg=k)
    assert (run / "report.html").is_file()

    # resuming a complete run says so
    capsys.readouterr()
    assert main([*argv, "--resume", str(run)]) == 0
    assert "already complete" in capsys.readouterr().out


def test_read_only_checkpoint_resumes_without_writing(tmp_path):
    """What the non-zero ranks of a torchrun job do: resume from rank 0's files, write none."""
    import shutil

    from hesslab.io import Checkpoint
    from hesslab.linalg.lanczos import eigenpairs

    def solve(op, ckpt):
        return eigenpairs(
            op,
            4,
            "largest",
            tol=1e-10,
            generator=torch.Generator().manual_seed(1),
            max_basis=12,
            checkpoint=ckpt,
        )

    ref = solve(_operator()[0], None)
    # an eigensolve and an SLQ run interrupted part-way leave their checkpoints
    eig_file, slq_file = tmp_path / "eig.pt", tmp_path / "slq.pt"
    with pytest.raises(_Stop):
        solve(_operator(fail_after=30)[0], eig_file)
    with pytest.raises(_Stop):
        _density(_operator(fail_after=40)[0], slq_file)
    assert eig_file.exists() and slq_file.exists()
    ro = tmp_path / "ro"
    ro.mkdir()
    for f in (eig_file, slq_file):
        shutil.copy(f, ro / f.name)
    before = {f.name: f.read_bytes() for f in ro.iterdir()}

    op, count = _operator()
    got = solve(op, Checkpoint(ro / "eig.pt", writable=False))
    assert count["columns"] < ref.num_matvecs  # resumed, not restarted
    assert torch.equal(got.values, solve(_operator()[0], eig_file).values)
    assert torch.allclose(got.values, ref.values, rtol=1e-12, atol=0)
    slq_ro, _ = _density(_operator()[0], Checkpoint(ro / "slq.pt", writable=False))
    slq_rw, _ = _density(_operator()[0], slq_file)
    assert torch.equal(slq_ro.nodes, slq_rw.nodes) and torch.equal(slq_ro.weights, slq_rw.weights)
    # nothing written, nothing removed (the writable copies were removed on return)
    assert {f.name: f.read_bytes() for f in ro.iterdir()} == before
    assert not eig_file.exists() and not slq_file.exists()

"""Memory-mapped Krylov basis (``eigenpairs(basis_device="disk")``) against the in-memory one."""

from __future__ import annotations

import os

import pytest
import torch

import hesslab.linalg.basis as basis_mod
import hesslab.linalg.lanczos as lz
from hesslab.errors import ConfigurationError, HesslabError
from hesslab.linalg.lanczos import BasisStorageError, eigenpairs
from hesslab.operators.base import FunctionOperator
from tests.spectra import tiny_mlp_hessian


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spiked(P: int = 300, seed: int = 0) -> torch.Tensor:
    g = gen(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([12.0, 11.5, 11, 10.5, 10, 9.8]), torch.linspace(-1, 9, P - 6)])
    return (Q * lam.to(torch.float64)) @ Q.T


@pytest.mark.parametrize(
    ("k", "block", "which", "chunk"),
    [
        (1, None, "largest", 1),
        (6, None, "largest", 4),
        (4, 3, "smallest", 5),
        (5, 2, "magnitude", None),
    ],
)
def test_disk_basis_matches_in_memory(tmp_path, k, block, which, chunk):
    A = spiked()
    kw = dict(tol=1e-10, max_basis=18, block_size=block)
    mem = eigenpairs(A, k, which, generator=gen(1), **kw)
    on_disk = dict(basis_device="disk", basis_dir=tmp_path, basis_chunk=chunk, **kw)
    disk = eigenpairs(A, k, which, generator=gen(1), **on_disk)
    assert disk.num_restarts > 0  # the restart path ran
    assert disk.num_matvecs == mem.num_matvecs and disk.num_restarts == mem.num_restarts
    assert torch.equal(disk.converged, mem.converged) and disk.all_converged
    assert torch.allclose(disk.values, mem.values, rtol=1e-12, atol=0)
    # same vectors up to sign
    cos = (disk.vectors * mem.vectors).sum(0).abs()
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-9)
    assert disk.vectors.dtype == mem.vectors.dtype and disk.vectors.device == mem.vectors.device
    assert list(tmp_path.iterdir()) == []
    # deterministic within the mode: bit-identical reruns
    again = eigenpairs(A, k, which, generator=gen(1), **on_disk)
    assert torch.equal(again.values, disk.values) and torch.equal(again.vectors, disk.vectors)


def test_disk_basis_on_float32_operator_and_true_residuals(tmp_path):
    A = tiny_mlp_hessian()
    op = FunctionOperator(lambda V: A.to(torch.float32) @ V, A.shape[0], dtype=torch.float32)
    mem = eigenpairs(op, 3, tol=1e-5, generator=gen(2), true_residuals=True)
    disk = eigenpairs(
        op,
        3,
        tol=1e-5,
        generator=gen(2),
        true_residuals=True,
        basis_device="disk",
        basis_dir=tmp_path,
        basis_chunk=2,
    )
    assert disk.num_matvecs == mem.num_matvecs
    # both bases are float32 (the operator's dtype): they agree to float32 rounding
    assert torch.allclose(disk.values, mem.values, rtol=1e-6, atol=0)
    assert disk.info["residual_kind"] == "true" and disk.vectors.dtype == torch.float32


def test_breakdown_continuation_with_disk_basis(tmp_path):
    # rank-2 operator plus a repeated eigenvalue: the Krylov space becomes invariant and
    # random directions orthogonal to the (memory-mapped) basis continue it
    P = 30
    U, _ = torch.linalg.qr(torch.randn(P, P, generator=gen(3), dtype=torch.float64))
    lam = torch.zeros(P, dtype=torch.float64)
    lam[:4] = torch.tensor([5.0, 5.0, 3.0, 1.0])
    A = (U * lam) @ U.T
    mem = eigenpairs(A, 3, tol=1e-10, generator=gen(4))
    disk = eigenpairs(
        A, 3, tol=1e-10, generator=gen(4), basis_device="disk", basis_dir=tmp_path, basis_chunk=3
    )
    assert disk.num_matvecs == mem.num_matvecs
    assert torch.allclose(
        disk.values, torch.tensor([5.0, 5.0, 3.0], dtype=torch.float64), atol=1e-10
    )
    assert torch.allclose(disk.values, mem.values, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("early_unlink", [True, False])
def test_basis_file_removed_on_exception(tmp_path, monkeypatch, early_unlink):
    monkeypatch.setattr(basis_mod, "_UNLINK_EARLY", early_unlink)
    seen: list[list[str]] = []

    def boom(info):
        seen.append(sorted(os.listdir(tmp_path)))
        if len(seen) == 5:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        eigenpairs(
            spiked(), 2, generator=gen(), basis_device="disk", basis_dir=tmp_path, callback=boom
        )
    # during the run the file exists only where it cannot be unlinked early
    assert all((len(files) == 1) != early_unlink for files in seen)
    assert list(tmp_path.iterdir()) == []


def test_basis_file_removed_after_normal_return(tmp_path, monkeypatch):
    monkeypatch.setattr(basis_mod, "_UNLINK_EARLY", False)
    res = eigenpairs(spiked(), 2, generator=gen(), basis_device="disk", basis_dir=tmp_path)
    assert res.all_converged and list(tmp_path.iterdir()) == []


def test_disk_basis_errors(tmp_path):
    with pytest.raises(BasisStorageError, match="basis_dir") as exc:
        eigenpairs(spiked(), 2, basis_device="disk", basis_dir=tmp_path / "missing")
    assert isinstance(exc.value, HesslabError)
    with pytest.raises(ConfigurationError, match="basis_chunk"):
        eigenpairs(spiked(), 2, basis_device="disk", basis_dir=tmp_path, basis_chunk=0)


def test_checkpoint_with_disk_basis_resumes_bit_identical(tmp_path):
    A = spiked(seed=5)
    kw = dict(tol=1e-12, max_basis=16, basis_device="disk", basis_dir=tmp_path / "b", basis_chunk=3)
    (tmp_path / "b").mkdir()
    ref = eigenpairs(A, 5, generator=gen(1), **kw)
    ckpt = tmp_path / "run.ckpt"
    restarts: list[int] = []

    def stop(info):
        restarts.append(info["num_restarts"])
        if info["num_restarts"] == 3 and ckpt.exists():
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        eigenpairs(A, 5, generator=gen(1), checkpoint=ckpt, callback=stop, **kw)
    assert ckpt.exists() and list((tmp_path / "b").iterdir()) == []
    # the checkpoint holds the numbers themselves, loadable without the (gone) mapping
    state = torch.load(ckpt, weights_only=False)
    assert state["V"].shape == (300, 16) and bool(torch.isfinite(state["V"]).all())
    assert float(state["V"].abs().sum()) > 0
    resumed = eigenpairs(A, 5, generator=gen(1), checkpoint=ckpt, **kw)
    assert torch.equal(resumed.values, ref.values) and resumed.num_matvecs == ref.num_matvecs
    assert not ckpt.exists()
    # a disk checkpoint resumes in memory too (same state, in-memory arithmetic)
    with pytest.raises(KeyboardInterrupt):
        eigenpairs(A, 5, generator=gen(1), checkpoint=ckpt, callback=stop, **kw)
    mem = eigenpairs(A, 5, generator=gen(1), checkpoint=ckpt, tol=1e-12, max_basis=16)
    assert torch.allclose(mem.values, ref.values, rtol=1e-12, atol=0)


def test_cpu_basis_is_pinned_only_for_cuda_operators():
    basis = basis_mod.Basis(10, 4, dtype=torch.float64, device=torch.device("cpu"), pin=False)
    assert not basis.Vt.is_pinned()
    res = eigenpairs(spiked(60), 2, generator=gen(), basis_device="cpu")
    assert res.all_converged


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_operator_with_cpu_and_disk_basis(tmp_path):
    A = spiked().cuda()
    mem = eigenpairs(A, 3, tol=1e-10, generator=gen(1))
    cpu = eigenpairs(A, 3, tol=1e-10, generator=gen(1), basis_device="cpu")
    disk = eigenpairs(
        A, 3, tol=1e-10, generator=gen(1), basis_device="disk", basis_dir=tmp_path, basis_chunk=2
    )
    for r in (cpu, disk):
        assert r.num_matvecs == mem.num_matvecs and r.vectors.device.type == "cuda"
        assert torch.allclose(r.values, mem.values, rtol=1e-12, atol=0)


@pytest.mark.parametrize("deflate", [False, True])
def test_quadrature_with_disk_basis_matches_in_memory(tmp_path, deflate):
    A = spiked(120)
    op = lz.as_operator(A)
    V0 = torch.randn(120, 4, generator=gen(6), dtype=torch.float64)
    U = torch.linalg.eigh(A).eigenvectors[:, -2:] if deflate else None
    mem = lz.lanczos_quadrature(op, V0, 25, deflate=U)
    disk = lz.lanczos_quadrature(
        op, V0, 25, deflate=U, basis_device="disk", basis_dir=tmp_path, basis_chunk=4
    )
    assert mem[3].tolist() == disk[3].tolist() and mem[4] == disk[4]
    for a, b in zip(mem[:2], disk[:2], strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("checkpoint", [False, True])
def test_spectral_density_with_disk_basis_matches_in_memory(tmp_path, checkpoint):
    from hesslab.linalg.density import spectral_density

    op = lz.as_operator(spiked(150))
    kw = {"num_steps": 30, "num_probes": 3, "deflate": 2}
    ck = (lambda name: tmp_path / name) if checkpoint else (lambda name: None)
    mem = spectral_density(op, generator=gen(4), checkpoint=ck("mem.pt"), **kw)
    basis_dir = tmp_path / "basis"
    basis_dir.mkdir()
    disk = spectral_density(
        op,
        generator=gen(4),
        basis_device="disk",
        basis_dir=basis_dir,
        basis_chunk=5,
        checkpoint=ck("disk.pt"),
        **kw,
    )
    assert mem.num_matvecs == disk.num_matvecs
    assert torch.equal(mem.steps, disk.steps)
    assert torch.allclose(mem.outliers, disk.outliers, rtol=1e-10, atol=0)
    assert torch.allclose(mem.nodes, disk.nodes, rtol=1e-9, atol=1e-11)
    assert torch.allclose(mem.weights, disk.weights, rtol=1e-9, atol=1e-11)
    assert list(basis_dir.iterdir()) == []

"""Peak memory in every solver's result, and the way out when a Lanczos basis does not fit."""

from __future__ import annotations

import mmap
import time

import numpy as np
import pytest
import torch

import hesslab
from hesslab.errors import MemoryLimitError
from hesslab.linalg import memory
from hesslab.linalg.basis import Basis
from hesslab.operators.base import FunctionOperator

P = 60
_A = torch.diag(torch.linspace(1.0, 2.0, P, dtype=torch.float64))


def _touch_fresh_pages(mbytes: int) -> None:
    """Make ``mbytes`` MiB resident for 10 ms, then give them back.

    The pages come from a fresh anonymous ``mmap`` and are written, so the resident set
    rises by that much whatever the allocator holds: a ``torch.ones`` of the same size may
    be served from free, still resident heap left by earlier tests (glibc coalesces freed
    chunks below its mmap threshold), and then the RSS does not move at all.
    """
    buf = mmap.mmap(-1, mbytes * 2**20)
    np.frombuffer(buf, dtype=np.uint8)[:: mmap.PAGESIZE] = 1  # one write per page
    time.sleep(0.01)  # held long enough for a sampled reading to see it
    buf.close()


def _hungry(mbytes: int) -> FunctionOperator:
    """A diagonal operator whose every product touches ``mbytes`` MiB of fresh pages."""

    def mm(V: torch.Tensor) -> torch.Tensor:
        _touch_fresh_pages(mbytes)
        return _A @ V

    return FunctionOperator(mm, P, dtype=torch.float64, symmetric=True)


@pytest.mark.parametrize(
    "solve",
    [
        lambda A: hesslab.eigenpairs(A, 2, tol=1e-8),
        lambda A: hesslab.trace(A, num_matvecs=12, generator=torch.Generator().manual_seed(0)),
        lambda A: hesslab.spectral_density(
            A, num_steps=10, num_probes=1, generator=torch.Generator().manual_seed(0)
        ),
        lambda A: hesslab.diagonal(A, num_matvecs=8, generator=torch.Generator().manual_seed(0)),
    ],
    ids=["eigenpairs", "trace", "density", "diagonal"],
)
def test_results_carry_the_peak_memory_of_the_call(solve):
    small = solve(_A).peak_memory_bytes
    big = solve(_hungry(64)).peak_memory_bytes
    assert isinstance(small, int) and isinstance(big, int)
    assert big >= 32 * 2**20  # the 64 MiB scratch is seen (allocator slack aside)
    assert small < big


@pytest.mark.parametrize("reading", ["rss-hwm", "rss-sampled"])
def test_each_cpu_reading_sees_a_peak_that_rose_and_fell(monkeypatch, reading):
    """Where ``/proc/self/clear_refs`` is read-only (some CI containers) the sampled
    reading is used: it must see the 64 MiB temporary too, after an earlier, higher
    lifetime peak (which hides it from ``ru_maxrss``)."""
    if memory._rss_bytes() is None:
        pytest.skip("no /proc/self/statm")
    if reading == "rss-sampled":
        monkeypatch.setattr(memory, "_reset_rss_peak", lambda: False)
    elif not memory._reset_rss_peak():
        pytest.skip("/proc/self/clear_refs is not writable here")
    _touch_fresh_pages(160)  # a higher lifetime peak than the call's
    with memory.measure_peak_memory("cpu") as m:
        _hungry(64) @ torch.ones(P, 1, dtype=torch.float64)
    assert m.method == reading
    assert m.bytes >= 32 * 2**20
    res = hesslab.trace(_hungry(64), num_matvecs=4, generator=torch.Generator().manual_seed(0))
    assert res.peak_memory_bytes >= 32 * 2**20


def test_a_nested_call_leaves_the_measurement_to_the_outer_one():
    inner = []

    def mm(V: torch.Tensor) -> torch.Tensor:
        inner.append(hesslab.eigenpairs(_A[:5, :5], 1).peak_memory_bytes)
        return _A @ V

    outer = hesslab.eigenpairs(FunctionOperator(mm, P, symmetric=True), 1, tol=1e-6)
    assert isinstance(outer.peak_memory_bytes, int)
    assert inner and all(b is None for b in inner)
    assert isinstance(hesslab.eigenpairs(_A[:5, :5], 1).peak_memory_bytes, int)


def test_a_basis_that_does_not_fit_offers_the_disk():
    with pytest.raises(MemoryLimitError, match="basis_device='disk'"):
        Basis(2**44, 64, dtype=torch.float64, device=torch.device("cpu"))


def test_the_run_report_records_the_peak_memory(tmp_path):
    import json

    from hesslab.report.run import RunDir

    run = RunDir.create(tmp_path, "mem")
    res = hesslab.trace(_hungry(16), num_matvecs=6, generator=torch.Generator().manual_seed(0))
    run.add_result("Spectrum", "trace", res)
    run.flush()
    text = json.dumps(json.loads((run.path / "results.json").read_text()))
    assert f'"peak_memory_bytes": {res.peak_memory_bytes}' in text

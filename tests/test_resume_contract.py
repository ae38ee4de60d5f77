"""The resume contract, once for everything that resumes: resumed equals uninterrupted.

Every resumable solver (``checkpoint=``) and runner (``hesslab analyze``, ``hesslab
reproduce``) is stopped after a given number of operator products, resumed from what it
left, and compared with an uninterrupted run of the same call: the results are
bit-identical (times and memory aside), the caller's generator ends in the same state, the
resumed run does fewer products (it reuses the saved work) and its checkpoint is gone after
a normal return. (A checkpointed SLQ runs its probes one by one, so it is compared with a
checkpointed run, not with the block run of the same probes, which agrees to ~1e-9 only.)

The refusals (a checkpoint of other arguments, another operator, another seed), read-only
resumes, a SIGKILLed process and the finer bookkeeping of each runner stay in the tests of
each component (``test_resume*.py``, ``test_trace_checkpoint.py``, ``test_reproduce_resume.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from hesslab import eigenpairs, frobenius_sq, trace
from hesslab.cli import main
from hesslab.linalg.density import spectral_density
from hesslab.linalg.logdet import logdet_slq
from hesslab.operators import LinearOperator

from .spectra import Interrupted, StoppingOperator, spiked_matrix
from .test_reproduce_resume import TINY
from .test_resume_density import _analyze_argv, _numbers, _only_dir


def _positive(P: int = 60) -> torch.Tensor:
    return torch.diag(torch.linspace(1.0, 5.0, P, dtype=torch.float64))


@dataclasses.dataclass(frozen=True)
class Case:
    """A resumable solver: ``solve(op, generator, checkpoint)`` on the matrix ``matrix()``.

    ``redo(total, fail_at)``, where known, is the number of products the resumed run makes
    (``None``: "no more than the uninterrupted run", and fewer when stopped at its last one).
    """

    solve: Callable[[Any, torch.Generator, Any], Any]
    matrix: Callable[[], torch.Tensor] = spiked_matrix
    rtol: float = 0.0
    redo: Callable[[int, int], int] | None = None
    plain_equal: bool = True  # a run without checkpoint gives the same result


def _trace_case(fn: Callable[..., Any], method: str, **kw: Any) -> Case:
    def solve(op, generator, checkpoint):
        return fn(op, 24, method=method, generator=generator, checkpoint=checkpoint, **kw)

    # each saved product is read back; one more call checks the first saved column
    return Case(solve, redo=lambda total, fail_at: total - fail_at + 1)


def _eigenpairs(op, generator, checkpoint):
    return eigenpairs(op, 4, tol=1e-12, max_basis=10, generator=generator, checkpoint=checkpoint)


def _density(deflate: int) -> Case:
    steps, probes = 15, 4

    def solve(op, generator, checkpoint):
        return spectral_density(
            op, steps, probes, deflate=deflate, generator=generator, checkpoint=checkpoint
        )

    def redo(total: int, fail_at: int) -> int:
        # one product per step and probe, after the deflation's; finished probes are saved
        # (and the deflation, once done)
        deflation = total - steps * probes
        if fail_at < deflation:
            return total
        return total - deflation - steps * ((fail_at - deflation) // steps)

    return Case(solve, redo=redo, plain_equal=False)  # the plain run is one block of probes


def _logdet(op, generator, checkpoint):
    return logdet_slq(op, 0.0, 10, 3, generator=generator, checkpoint=checkpoint)


SOLVERS = {
    "eigenpairs": Case(_eigenpairs),
    "eigenpairs-smallest": Case(
        lambda op, g, c: eigenpairs(
            op, 1, "smallest", tol=1e-10, max_basis=8, block_size=2, generator=g, checkpoint=c
        )
    ),
    "trace-krylov": _trace_case(trace, "krylov"),
    "trace-hutch++": _trace_case(trace, "hutch++"),
    "trace-xtrace": _trace_case(trace, "xtrace"),
    "trace-hutchinson": _trace_case(trace, "hutchinson", block_size=5),
    "trace-exact": _trace_case(trace, "exact", block_size=16),
    "trace-krylov-adaptive": _trace_case(trace, "krylov", rtol=1e-4, block_size=6),
    "trace-xtrace-adaptive": _trace_case(trace, "xtrace", rtol=1e-4, max_matvecs=80),
    "frobenius_sq-krylov": _trace_case(frobenius_sq, "krylov"),
    "frobenius_sq-hutchinson": _trace_case(frobenius_sq, "hutchinson", block_size=4),
    "spectral_density": _density(0),
    "spectral_density-deflated": _density(2),
    "logdet_slq": Case(_logdet, matrix=_positive),
}

SKIP_FIELDS = {"seconds", "peak_memory_bytes"}  # wall time and memory differ run to run


def _assert_same(got: Any, want: Any, rtol: float, where: str = "result") -> None:
    """Equal field by field (``rtol = 0``: bit-identical), times and memory aside."""
    if dataclasses.is_dataclass(got):
        assert type(got) is type(want), where
        for f in dataclasses.fields(got):
            if f.name not in SKIP_FIELDS:
                _assert_same(getattr(got, f.name), getattr(want, f.name), rtol, f"{where}.{f.name}")
    elif isinstance(got, dict):
        keys = {k for k in got if "seconds" not in str(k)}
        assert keys == {k for k in want if "seconds" not in str(k)}, where
        for k in keys:
            _assert_same(got[k], want[k], rtol, f"{where}[{k!r}]")
    elif isinstance(got, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _assert_same(a, b, rtol, f"{where}[{i}]")
    else:
        _assert_same_leaf(got, want, rtol, where)


def _assert_same_leaf(got: Any, want: Any, rtol: float, where: str) -> None:
    if isinstance(got, torch.Tensor):
        if rtol == 0 or not got.is_floating_point():
            assert torch.equal(got, want), where
        else:
            torch.testing.assert_close(got, want, rtol=rtol, atol=0, msg=where)
    elif isinstance(got, float) and isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), where
    elif isinstance(got, float) and rtol > 0:
        assert got == pytest.approx(want, rel=rtol, abs=0), where
    else:
        assert got == want, where


def _run(case: Case, op, checkpoint):
    generator = torch.Generator().manual_seed(3)
    return case.solve(op, generator, checkpoint), generator


@pytest.mark.parametrize("name", list(SOLVERS))
def test_interrupted_solver_resumes_to_the_uninterrupted_result(tmp_path, name):
    case = SOLVERS[name]
    A = case.matrix()
    folder = tmp_path / "ckpt"
    folder.mkdir()
    ckpt = folder / "state.pt"
    counted = StoppingOperator(A)
    want, want_gen = _run(case, counted, ckpt)  # the same call, not interrupted
    total = counted.calls
    assert total >= 2, "too few products to interrupt"
    assert not list(folder.iterdir())
    if case.plain_equal:
        _assert_same(_run(case, StoppingOperator(A), None)[0], want, case.rtol, "plain run")
    saved = []
    for fail_at in sorted({1, total // 2, total - 1}):
        with pytest.raises(Interrupted):
            _run(case, StoppingOperator(A, fail_at=fail_at), ckpt)
        saved.append(ckpt.exists())  # an eigensolver saves at restarts only
        resumed = StoppingOperator(A)
        got, got_gen = _run(case, resumed, ckpt)
        _assert_same(got, want, case.rtol)
        assert torch.equal(got_gen.get_state(), want_gen.get_state())
        if case.redo is not None:
            assert resumed.calls == case.redo(total, fail_at)
        else:  # the saved work is reused; by the last product some was surely saved
            assert resumed.calls < total if fail_at == total - 1 else resumed.calls <= total
        assert got.seconds > 0
        assert not list(folder.iterdir()), "checkpoint files left after a normal return"
    assert saved[-1], f"nothing saved after {total - 1} of {total} products"


# ---------------------------------------------------------------------------- runners
class _ProductBudget:
    """Counts every operator product in the process; ``KeyboardInterrupt`` at ``fail_at``."""

    def __init__(self, monkeypatch, fail_at: int | None = None) -> None:
        self.calls, self.fail_at = 0, fail_at
        real = LinearOperator.matmat

        def matmat(op, V):
            if self.fail_at is not None and self.calls == self.fail_at:
                raise KeyboardInterrupt
            self.calls += 1
            return real(op, V)

        monkeypatch.setattr(LinearOperator, "matmat", matmat)


def _analyze(tmp_path, out):
    argv = _analyze_argv(tmp_path, out)
    return argv, lambda run: [*argv, "--resume", str(run)]


def _reproduce(name: str, options: list[str]):
    def command(tmp_path, out):
        argv = ["reproduce", name, *options, "--out", str(out)]
        return argv, lambda run: [*argv[:-1], str(tmp_path / "unused"), "--resume", str(run)]

    return command


# dinh2017's two parts (MLP, LeNet) at a few seconds each
DINH_TINY = [
    "--smoke", "--quiet", "--set", "convnet=true", "--set", "epochs=2",
    "--set", "hessian_points=64", "--set", "alphas=[0.1,1,10]",
    "--set", "sharpness_steps=3", "--set", "trace_matvecs=12",
]  # fmt: skip


def _reproduce_numbers(path):
    from .test_reproduce_resume import _results

    status, records, arrays = _results(path)
    assert status == "complete"
    return records, arrays


RUNNERS = {
    "analyze": (_analyze, lambda path: _numbers(path)),
    "reproduce-sagun2017": (_reproduce("sagun2017", TINY), _reproduce_numbers),
    "reproduce-dinh2017": (_reproduce("dinh2017", DINH_TINY), _reproduce_numbers),
}
RUNNER_CASES = [
    pytest.param("analyze", 0.3),
    pytest.param("analyze", 0.8),
    pytest.param("reproduce-sagun2017", 0.3),
    pytest.param("reproduce-sagun2017", 0.8),
    pytest.param("reproduce-dinh2017", 0.7, marks=pytest.mark.slow),  # ~40 s CPU
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each runner's uninterrupted run (once per module): its product count and numbers."""
    cache: dict[str, tuple[int, Any]] = {}

    def get(name: str) -> tuple[int, Any]:
        if name not in cache:
            command, numbers = RUNNERS[name]
            tmp = tmp_path_factory.mktemp(name)
            argv, _ = command(tmp, tmp / "ref")
            with pytest.MonkeyPatch.context() as m:
                budget = _ProductBudget(m)
                assert main(argv) == 0
            cache[name] = (budget.calls, numbers(_only_dir(tmp / "ref")))
        return cache[name]

    return get


@pytest.mark.parametrize(("name", "fraction"), RUNNER_CASES)
def test_interrupted_runner_resumes_to_the_uninterrupted_results(
    tmp_path, monkeypatch, uninterrupted, name, fraction
):
    command, numbers = RUNNERS[name]
    total, want = uninterrupted(name)
    assert total >= 10
    argv, resume = command(tmp_path, tmp_path / "runs")
    with monkeypatch.context() as m:
        _ProductBudget(m, fail_at=int(fraction * total))
        assert main(argv) == 130
    run = _only_dir(tmp_path / "runs")
    assert (run / "checkpoints").exists()
    with monkeypatch.context() as m:
        budget = _ProductBudget(m)
        assert main(resume(run)) == 0
    assert budget.calls < total, "the resumed run redid the saved work"
    assert not (run / "checkpoints").exists()
    _assert_same_records(numbers(run), want)


def _assert_same_records(got, want) -> None:
    *records, arrays = got
    *want_records, want_arrays = want
    assert records == want_records
    assert arrays.keys() == want_arrays.keys()
    for k in want_arrays:
        np.testing.assert_array_equal(arrays[k], want_arrays[k], err_msg=k)

"""trace / frobenius_sq with checkpoint=: refusals, read-only resumes, analyze's trace stage.

That an interrupted estimate resumes bit-identically (every method, the generator's state,
the products reused) is tested with every other resumable solver in test_resume_contract.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hesslab import frobenius_sq, trace
from hesslab.errors import ConfigurationError
from hesslab.io import Checkpoint
from hesslab.operators import LinearOperator

from .spectra import Interrupted, StoppingOperator, spiked_matrix


def _same(a, b) -> None:
    assert a.value == b.value and a.stderr == b.stderr and a.num_matvecs == b.num_matvecs
    if a.samples is None:
        assert b.samples is None
    else:
        assert torch.equal(a.samples, b.samples)


def _interrupted_trace(A, fail_at: int, checkpoint, seed: int = 0, **kw) -> None:
    """A checkpointed ``trace(A, 24)`` stopped at product call ``fail_at``."""
    with pytest.raises(Interrupted):
        trace(
            StoppingOperator(A, fail_at=fail_at),
            24,
            generator=torch.Generator().manual_seed(seed),
            checkpoint=checkpoint,
            **kw,
        )


def test_checkpoint_of_other_arguments_is_refused(tmp_path):
    A = spiked_matrix()
    ckpt = tmp_path / "c"
    _interrupted_trace(A, 1, ckpt)
    with pytest.raises(ConfigurationError, match="num_matvecs"):
        trace(A, 30, generator=torch.Generator().manual_seed(0), checkpoint=ckpt)
    with pytest.raises(ConfigurationError, match="generator"):
        trace(A, 24, generator=torch.Generator().manual_seed(1), checkpoint=ckpt)
    with pytest.raises(ConfigurationError, match="estimator"):
        frobenius_sq(A, 24, generator=torch.Generator().manual_seed(0), checkpoint=ckpt)


def test_another_operator_is_refused(tmp_path):
    A = spiked_matrix()
    ckpt = tmp_path / "c"
    _interrupted_trace(A, 3, ckpt)
    B = spiked_matrix(seed=1)  # same size: the key matches, the products do not
    with pytest.raises(ConfigurationError, match="another operator"):
        trace(B, 24, generator=torch.Generator().manual_seed(0), checkpoint=ckpt)


def test_read_only_checkpoint_resumes_without_writing(tmp_path):
    A = spiked_matrix()
    ref = trace(A, 24, generator=torch.Generator().manual_seed(2))
    path = tmp_path / "c"
    _interrupted_trace(A, 2, path, seed=2)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = trace(
        A, 24, generator=torch.Generator().manual_seed(2), checkpoint=Checkpoint(path, False)
    )
    _same(out, ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written or removed


def test_changed_input_blocks_are_refused(tmp_path):
    """A saved call whose input differs now (e.g. other probes) is not silently replayed."""
    A = spiked_matrix()
    ckpt = tmp_path / "c"
    _interrupted_trace(A, 2, ckpt, method="hutchinson", block_size=4)
    state = torch.load(ckpt, weights_only=False)
    state["calls"][1] = ((60, 4), 0.0, 0.0, 0.0)  # as if the second call had other probes
    torch.save(state, ckpt)
    with pytest.raises(ConfigurationError, match="another input block"):
        trace(
            A,
            24,
            method="hutchinson",
            block_size=4,
            generator=torch.Generator().manual_seed(0),
            checkpoint=ckpt,
        )


def test_analyze_resumes_an_interrupted_trace_stage(tmp_path, monkeypatch):
    """``hesslab analyze`` stopped inside the trace stage: the resume reuses its products."""
    import hesslab.quantities as analysis_mod  # analyze measures through it
    from hesslab.cli import main

    from .test_resume_density import _analyze_argv, _numbers, _only_dir

    real_trace = analysis_mod.trace

    class _Wrapped(LinearOperator):
        def __init__(self, op, fail_at):
            super().__init__(op.shape[0], op.dtype, op.device)
            self.op, self.fail_at, self.calls = op, fail_at, 0

        def _matmat(self, V):
            if self.calls == self.fail_at:
                raise KeyboardInterrupt
            self.calls += 1
            return self.op.matmat(V)

    seen = []

    def wrapped_trace(fail_at):
        def run(op, *a, **kw):
            seen.append(_Wrapped(op, fail_at))
            return real_trace(seen[-1], *a, **kw)

        return run

    monkeypatch.setattr(analysis_mod, "trace", wrapped_trace(None))
    assert main(_analyze_argv(tmp_path, tmp_path / "ref")) == 0
    ref = _only_dir(tmp_path / "ref")
    ref_calls = seen[0].calls  # the whole-model trace's operator calls
    assert ref_calls >= 4

    out = tmp_path / "runs"
    argv = _analyze_argv(tmp_path, out)
    monkeypatch.setattr(analysis_mod, "trace", wrapped_trace(2))
    assert main(argv) == 130
    run = _only_dir(out)
    assert (run / "checkpoints" / "trace.pt").exists()
    seen.clear()
    monkeypatch.setattr(analysis_mod, "trace", wrapped_trace(None))
    assert main([*argv, "--resume", str(run)]) == 0
    # two saved calls read back; one more call checks the first saved column
    assert seen[0].calls == ref_calls - 2 + 1
    got_scalars, got_tables, got_arrays = _numbers(run)
    ref_scalars, ref_tables, ref_arrays = _numbers(ref)
    assert got_scalars == ref_scalars
    assert got_tables == ref_tables
    for k in ref_arrays:
        np.testing.assert_array_equal(got_arrays[k], ref_arrays[k], err_msg=k)
    assert not (run / "checkpoints").exists()

"""SpectrumMonitor: values equal direct computations, warm starts, no mutation, sinks."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from hesslab import HessianOperator, Objective, trace
from hesslab.errors import ConfigurationError
from hesslab.io import read_jsonl
from hesslab.measures.eigvec import ipr, ipr_null
from hesslab.models import mlp
from hesslab.train import fit
from hesslab.train.monitor import (
    QUANTITIES,
    JsonlSink,
    Measurement,
    RunDirSink,
    SpectrumMonitor,
    TensorBoardSink,
    measurement_seed,
)


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(60, 6, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    model = mlp(6, (8,), 3, activation="tanh", seed=seed, dtype=torch.float64)
    return model, (x, y)


def _dense(model, data):
    H = HessianOperator(Objective(model, "ce", data)).to_dense()
    return torch.linalg.eigh(H.to(torch.float64))


def test_values_equal_direct_computation():
    model, data = _problem()
    model.eval()
    mon = SpectrumMonitor(
        data, "ce", every=1, k=3, seed=7, quantities=QUANTITIES, tol=1e-10, trace_matvecs=30
    )
    vals = mon.step(model, 0)
    m = mon.measurements[-1]
    assert isinstance(m, Measurement) and m.step == 0 and vals == m.values
    evals, evecs = _dense(model, data)
    P = evals.numel()
    top = evals.flip(0)[:3]
    for i in range(3):
        assert m.values[f"lambda/{i + 1}"] == pytest.approx(float(top[i]), abs=1e-8)
        assert m.errors[f"lambda/{i + 1}"] < 1e-7
    assert m.values["lambda_max"] == pytest.approx(float(evals[-1]), abs=1e-8)
    assert m.values["lambda_min"] == pytest.approx(float(evals[0]), abs=1e-7)
    # trace: bit-identical to a direct call with the documented seed
    op = HessianOperator(Objective(model, "ce", data))
    gen = torch.Generator().manual_seed(measurement_seed(7, 0, "trace"))
    direct = trace(op, 30, generator=gen)
    assert m.values["trace"] == direct.value and m.errors["trace"] == direct.stderr
    assert abs(m.values["trace"] - float(evals.sum())) < 4 * m.errors["trace"] + 1e-9
    # IPR of the top eigenvectors = IPR of the dense eigenvectors
    dense_ipr = ipr(evecs.flip(1)[:, :3])
    for i in range(3):
        assert m.values[f"ipr/{i + 1}"] == pytest.approx(float(dense_ipr[i]), rel=1e-6)
    assert m.values["ipr_null"] == pytest.approx(ipr_null(P))
    assert {"ipr/fc1/1", "ipr/out/3", "layer/fc1/lambda_max", "layer/out/trace"} <= set(m.values)
    # first measurement is its own reference; no previous one
    assert m.values["subdisp_ref"] == pytest.approx(0.0, abs=1e-12)
    assert "subdisp_prev" not in m.values
    # per-layer block lambda_max against the dense block
    H = op.to_dense().to(torch.float64)
    sl = op.space.slices()
    idx = torch.cat([torch.arange(sl[n].start, sl[n].stop) for n in ("out.weight", "out.bias")])
    blk = torch.linalg.eigvalsh(H[idx][:, idx])
    assert m.values["layer/out/lambda_max"] == pytest.approx(float(blk[-1]), abs=1e-7)
    assert m.values["ws/lambda_max_upper"] >= m.values["lambda_max"] - 1e-6
    assert 0 <= m.values["moment_overlap"] <= 1 and 0 <= m.values["grad_alignment"] <= 1
    assert set(m.diagnostics["matvecs"]) >= {"top_k", "bottom", "trace", "layers", "moment"}


def test_displacement_against_reference_and_previous():
    model, data = _problem(1)
    model.eval()
    mon = SpectrumMonitor(data, every=5, k=2, quantities=("displacement",), reference_step=5)
    assert mon.step(model, 3) is None  # not a measuring step
    mon.step(model, 0)  # before t_w: no reference yet
    assert "disp_ref/1" not in mon.measurements[-1].values
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.fc1.weight.add_(0.3)
    mon.step(moved, 5)
    v = mon.measurements[-1].values
    assert mon.reference[0] == 5
    assert v["disp_ref/1"] == pytest.approx(0.0, abs=1e-12)
    assert v["disp_prev/1"] > 1e-3 and 0 < v["subdisp_prev"] <= 1
    mon.step(model, 10)
    v2 = mon.measurements[-1].values
    assert v2["subdisp_ref"] == pytest.approx(v["subdisp_prev"], abs=1e-6)


def test_warm_start_agrees_with_cold_and_saves_matvecs():
    model, data = _problem(2)
    res = fit(model, data, optimizer="gd", lr=0.5, steps=200)
    mon = SpectrumMonitor(
        data, every=1, k=4, quantities=("top_k",), compare_cold=True, tol=1e-8, seed=3
    )
    fit(res.model, data, optimizer="sgd", lr=0.02, batch_size=20, steps=6, callbacks=[mon])
    s = mon.warm_start_summary()
    assert s["num_compared"] == 6
    assert s["max_abs_eigenvalue_diff"] < 1e-6
    assert s["matvecs_warm"] < s["matvecs_cold"]
    for m in mon.measurements[1:]:
        cold = torch.tensor(m.diagnostics["top_k_cold_values"])
        warm = torch.tensor([m.values[f"lambda/{i}"] for i in range(1, 5)])
        assert torch.allclose(cold, warm, atol=1e-6)


def test_monitor_never_mutates_the_model():
    model, data = _problem(3)
    model.train()
    model.fc1.eval()  # mixed flags must survive
    model.out.bias.requires_grad_(False)
    model.fc1.weight.grad = torch.full_like(model.fc1.weight, 0.25)
    before = copy.deepcopy(model.state_dict())
    flags = {n: m.training for n, m in model.named_modules()}
    mon = SpectrumMonitor(data, every=1, k=2, quantities=QUANTITIES, trace_matvecs=12)
    mon.step(model, 0)
    mon.step(model, 1)
    for n, t in model.state_dict().items():
        assert torch.equal(t, before[n]), n
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert torch.equal(model.fc1.weight.grad, torch.full_like(model.fc1.weight, 0.25))
    assert model.fc1.bias.grad is None and model.out.weight.grad is None
    assert not model.out.bias.requires_grad and model.fc1.weight.requires_grad


def test_sinks_write_parseable_records(tmp_path):
    from hesslab.report.run import RunDir

    model, data = _problem(4)
    model.eval()
    run = RunDir.create(tmp_path / "run", "monitor-test", config={})
    path = tmp_path / "m" / "metrics.jsonl"
    mon = SpectrumMonitor(
        data,
        every=2,
        k=2,
        quantities=("lambda_max", "trace", "logdet", "effective_rank"),
        sinks=[JsonlSink(path, diagnostics=True), RunDirSink(run)],
        trace_matvecs=12,
    )
    res = fit(model, data, optimizer="gd", lr=0.1, steps=4, callbacks=[mon])
    assert res.steps == 4
    assert [m.step for m in mon.measurements] == [0, 2, 4]
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    recs = [json.loads(line) for line in lines]
    assert recs == read_jsonl(path)
    assert recs[1]["step"] == 2 and "lambda_max" in recs[1] and "trace_err" in recs[1]
    assert recs[0]["diagnostics"]["matvecs"]["top_k"] > 0
    logged = run.metrics()
    assert [r["step"] for r in logged] == [0, 2, 4]
    assert logged[2]["lambda_max"] == pytest.approx(mon.measurements[2].values["lambda_max"])


def test_tensorboard_sink_missing_or_working(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigurationError, match="tensorboard"):
            TensorBoardSink(tmp_path)
    else:  # pragma: no cover - tensorboard not installed here
        TensorBoardSink(tmp_path).close()


def test_bad_input_raises():
    _, data = _problem()
    with pytest.raises(ConfigurationError, match="unknown quantities"):
        SpectrumMonitor(data, quantities=("lambda_max", "sharpness"))
    with pytest.raises(ConfigurationError):
        SpectrumMonitor(data, every=0)
    with pytest.raises(ConfigurationError):
        SpectrumMonitor(data, k=0)
    with pytest.raises(ConfigurationError):
        RunDirSink(object())


def test_seeded_measurements_reproducible():
    model, data = _problem(5)
    model.eval()
    a = SpectrumMonitor(data, every=1, quantities=("trace", "lambda_max"), seed=11)
    b = SpectrumMonitor(data, every=1, quantities=("trace", "lambda_max"), seed=11)
    assert a.step(model, 3) == b.step(model, 3)
    c = SpectrumMonitor(data, every=1, quantities=("trace",), generator=torch.Generator())
    assert isinstance(c.seed, int)


def test_plain_loop_with_dropout_needs_eval():
    _, data = _problem()
    net = nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.5), nn.Linear(5, 3)).double()
    mon = SpectrumMonitor(data, every=1, quantities=("lambda_max",))
    with pytest.raises(Exception, match="eval"):
        mon.step(net, 0)
    net.eval()
    assert mon.step(net, 0)["lambda_max"] > 0
    assert not net.training


def test_logdet_refuses_a_zero_eigenvalue():
    # least squares on N = 3 < P = 6: H = 2 X^T X / N has rank 3, so with logdet_rank = 4
    # the 4th eigenvalue is an exact 0 (computed as +-1e-17 by CPU): NaN with the reason,
    # never a finite log(1e-17); rank 3 gives the dense value
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    y = torch.randn(3, 1, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Linear(5, 1).double()
    evals = torch.linalg.eigvalsh(HessianOperator(Objective(model, "mse", (x, y))).to_dense())
    top = evals.flip(0)
    assert float(top[3]) == pytest.approx(0.0, abs=1e-12)
    for rank in (3, 4):
        mon = SpectrumMonitor((x, y), "mse", k=rank, logdet_rank=rank, quantities=("logdet",))
        m = mon.measure(model, 0)
        if rank == 3:
            assert m.values["logdet"] == pytest.approx(float(torch.log(top[:3]).sum()), abs=1e-8)
        else:
            assert m.values["logdet"] != m.values["logdet"]  # NaN
            assert any("not positive within its error bound" in n for n in m.diagnostics["notes"])

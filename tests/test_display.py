"""Short reprs and HTML tables of the result types (hesslab.display)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from hesslab import (
    BoundsResult,
    DenseOperator,
    DiagonalEstimate,
    EigenResult,
    LogdetEstimate,
    Objective,
    SpectralDensity,
    TraceEstimate,
    class_structure,
    eigenpairs,
    spectral_density,
)
from hesslab.measures.sharpness import InvariantEstimate, SharpnessResult
from hesslab.measures.spectrum import OutlierCount
from hesslab.train.monitor import Measurement


def _check(result, *needles):
    text = repr(result)
    assert len(text) < 300 and text.count("\n") <= 1, text
    assert text.startswith(type(result).__name__ + "("), text
    for needle in needles:
        assert needle in text, (needle, text)
    page = result._repr_html_()
    assert "<table>" in page and "</table>" in page
    for needle in needles:
        assert needle.split("=")[-1] in page, (needle, page)
    assert "tensor(" not in text
    return text


def test_trace_and_logdet_show_value_pm_error_and_cost():
    t = TraceEstimate(12.345678, 0.25, 100, 0.5, "hutch++", samples=torch.ones(1000))
    _check(t, "value=12.35 ± 0.25", "method=hutch++", "products=100", "seconds=0.5")
    exact = TraceEstimate(3.0, 0.0, 7, 0.01, "exact")
    assert "±" not in repr(exact) and "value=3" in repr(exact)
    ld = LogdetEstimate(-4.5, 0.125, 40, 1.5, "slq", shift=0.1)
    _check(ld, "value=-4.5 ± 0.125", "shift=0.1", "products=40", "seconds=1.5")
    inv = InvariantEstimate(2.0, 0.5, 9, 0.25, "krylov")
    _check(inv, "value=2 ± 0.5", "products=9")


def test_eigen_result_shows_values_residual_and_converged_count():
    values = torch.arange(100, 0, -1, dtype=torch.float64)
    res = EigenResult(
        values=values,
        vectors=torch.zeros(10_000, 100),
        residual_norms=torch.full((100,), 1e-3),
        converged=torch.arange(100) < 97,
        num_matvecs=1234,
        seconds=2.0,
        method="lanczos",
        which="largest",
        tol=1e-6,
        norm_estimate=100.0,
    )
    _check(res, "100, 99, 98", "…", "converged=97/100", "max residual=0.001", "products=1234")
    # a real one from a solver
    A = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
    _check(eigenpairs(DenseOperator(A), k=3), "20, 19, 18", "converged=3/3")


def test_diagonal_bounds_density_measurement_outliers_sharpness():
    d = DiagonalEstimate(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.1, 0.2, 0.3]), 10, 1.0, "x")
    _check(d, "P=3", "sum=6", "max stderr=0.3")
    b = BoundsResult(1.0, 9.0, -2.0, 0.5, 0.25, 1.5, 50, 12.5, 40.0)
    _check(b, "λ_max in=[1, 9]", "λ_min in=[-2, 0.5]", "P=50")
    A = torch.diag(torch.linspace(0.0, 1.0, 40, dtype=torch.float64))
    sd = spectral_density(DenseOperator(A), num_probes=2, num_steps=8, generator=torch.Generator())
    assert isinstance(sd, SpectralDensity)
    _check(sd, "P=40", "probes=2", "steps=8")
    m = Measurement(7, {"lambda_max": 3.25, "trace": 10.0}, {"trace": 0.5}, seconds=0.75)
    _check(m, "step=7", "lambda_max: 3.25", "trace: 10 ± 0.5", "seconds=0.75")
    oc = OutlierCount(3, 2.5, "gap", torch.ones(3), torch.tensor([9.0, 8.0, 7.0, 1.0]), {})
    _check(oc, "count=3", "threshold=2.5", "values=[9, 8, 7, 1]")
    sh = SharpnessResult(0.125, 0.5, 0.6875, 1e-3, True, 10, 0.01, (0.5,) * 11, 11, 0.2)
    _check(sh, "value=0.125", "eps=0.001", "set=box", "products=11")


def test_class_structure_repr():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3)).double()
    x = torch.randn(12, 2, dtype=torch.float64)
    y = torch.arange(12) % 3
    cs = class_structure(Objective(model, "ce", (x, y)))
    _check(cs, "C=3", "P=9", "class_means≤3")


@pytest.mark.parametrize(
    "cls", [EigenResult, TraceEstimate, DiagonalEstimate, LogdetEstimate, BoundsResult]
)
def test_dataclass_fields_unchanged(cls):
    names = [f.name for f in dataclasses.fields(cls)]
    assert "values" in names or "value" in names or "lambda_max_lower" in names
    assert all(not n.startswith("_repr") for n in names)
    assert cls.__repr__.__module__ == "hesslab.display"


def test_landscape_and_training_results():
    import numpy as np

    from hesslab.landscape import InterpolationResult, Slice1D, Slice2D
    from hesslab.train.fit import FitResult
    from hesslab.train.regularizers import PenaltyRecord

    ts = tuple(float(t) for t in np.linspace(0, 1, 50))
    ir = InterpolationResult(ts, tuple(1 + t for t in ts), None, tuple(3 * t for t in ts), 2.5, 1)
    _check(ir, "points=50", "distance=2.5", "loss=[1, 2]", "max λ_max=3")
    _check(Slice1D((0.0, 1.0), (0.25, 0.75), 1.0, 0.5), "grid=2", "loss=[0.25, 0.75]")
    s2 = Slice2D((0.0, 1.0, 2.0), (0.0, 1.0), np.arange(6.0).reshape(3, 2), 0.5)
    _check(s2, "grid=3×2", "loss=[0, 5]")
    fr = FitResult(nn.Linear(2, 2), ({"loss": 1.0},) * 500, (), 0.125, 0.75, None, None,
                   0.5, 3.0, 500, 10, "epochs", None)  # fmt: skip
    text = _check(fr, "steps=500", "epochs=10", "train loss=0.125", "train acc=0.75")
    assert "test loss" not in text and "Linear" not in text
    pr = PenaltyRecord(4, 2.0, 0.02, 0.5, 2.0, math.nan, 8, 100, 0.25)
    _check(pr, "step=4", "value=2 ± 0.5", "penalty=0.02", "probes=8")


def test_loaded_run_has_a_short_repr_and_an_html_table(tmp_path):
    from hesslab import load_run
    from hesslab.report import RunDir

    with RunDir.create(tmp_path / "run", config={"seed": 0}) as run:
        run.add_scalar("Spectrum", "tr H", 3.3219, stderr=0.74)
        for i in range(9):
            run.add_scalar("Spectrum", f"top[{i}]", 10.0 - i)
        run.log_metrics(0, loss=1.0)
    loaded = load_run(tmp_path / "run")
    text = repr(loaded)
    assert len(text) < 300 and "status='complete'" in text and "10 scalars" in text
    page = loaded._repr_html_()
    assert page.startswith("<table>") and "<b>Run</b>" in page
    assert "Spectrum/tr H</th><td style='text-align:left'>3.322 ± 0.74" in page
    assert "Spectrum/top[6]" in page and "Spectrum/top[7]" not in page  # the first 8
    assert "2 more (run.results_frame())" in page

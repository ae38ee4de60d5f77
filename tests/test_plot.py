"""Tests of hesslab.plot: figures drawn from real (small) hesslab results, headless."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

import hesslab
import hesslab.plot as hplot
from hesslab.errors import DataError
from hesslab.models import mlp
from hesslab.report import RunDir
from hesslab.train.monitor import RunDirSink, SpectrumMonitor

ETA = 0.05


def _operator(P: int = 40, seed: int = 0) -> tuple[hesslab.DenseOperator, torch.Tensor]:
    """A dense symmetric matrix with three outliers over a Gaussian bulk, and its spectrum."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, dtype=torch.float64, generator=g))
    bulk = 0.3 * torch.randn(P - 3, dtype=torch.float64, generator=g)
    ev = torch.cat([torch.tensor([30.0, 12.0, 6.0], dtype=torch.float64), bulk])
    return hesslab.DenseOperator((Q * ev) @ Q.T), torch.sort(ev, descending=True).values


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _vlines(ax) -> list[float]:
    """x positions of the vertical lines (axvline) of an axes."""
    return [
        float(ln.get_xdata()[0])
        for ln in ax.get_lines()
        if len(set(np.asarray(ln.get_xdata(), dtype=float))) == 1 and len(ln.get_xdata()) == 2
    ]


def _hlines(ax) -> list[float]:
    return [
        float(ln.get_ydata()[0])
        for ln in ax.get_lines()
        if len(set(np.asarray(ln.get_ydata(), dtype=float))) == 1 and len(ln.get_ydata()) == 2
    ]


def _labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def test_density_marks_deflated_eigenvalues_as_what_they_are():
    A, ev = _operator()
    dens = hesslab.spectral_density(A, 25, 2, generator=_gen(1), deflate=3)
    fig = hplot.density(dens)
    assert isinstance(fig, Figure) and isinstance(fig.canvas, FigureCanvasAgg)
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel().startswith("density")
    assert "deflated top-3 eigenvalues" in _labels(ax)
    assert "outliers" not in " ".join(_labels(ax))
    marks = sorted(_vlines(ax))
    assert np.allclose(marks, sorted(ev[:3].tolist()), atol=1e-6)
    # the curve is the result's broadened density on its grid (clipped only on the log axis)
    curve = next(ln for ln in ax.get_lines() if ln.get_label() == "SLQ density")
    x, y = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata())
    expect = dens.evaluate(torch.as_tensor(x)).numpy()
    big = expect > 1e-3 * expect.max()
    assert np.allclose(y[big], expect[big], rtol=1e-12)


def test_density_overlays_several_results_and_draws_into_given_axes():
    A, ev = _operator()
    a = hesslab.spectral_density(A, 25, 1, generator=_gen(2))
    b = hesslab.spectral_density(A, 10, 1, generator=_gen(3))
    fig0 = Figure()
    FigureCanvasAgg(fig0)
    ax = fig0.subplots()
    fig = hplot.density({"m=25": a, "m=10": b}, ax, eigenvalues=ev, log_scale=False)
    assert fig is fig0 and len(fig.axes) == 1
    labels = _labels(ax)
    assert {"m=25", "m=10"} <= set(labels)
    assert any(s.startswith("exact eigenvalues (n=40)") for s in labels)
    with pytest.raises(DataError, match="SpectralDensity"):
        hplot.density({"bad": hesslab.eigenpairs(A, 2, generator=_gen(0))})


def test_eigenvalues_has_residual_error_bars_and_dense_values():
    A, ev = _operator()
    res = hesslab.eigenpairs(A, 5, generator=_gen(4))
    fig = hplot.eigenvalues(res)
    ax = fig.axes[0]
    assert "residual" in ax.get_title() and ax.get_xlabel() == "rank"
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()
    half = np.array([abs(s[1][1] - s[0][1]) / 2 for s in segments])
    assert np.allclose(half, res.residual_norms.numpy(), rtol=1e-9, atol=1e-15)
    centers = np.array([(s[1][1] + s[0][1]) / 2 for s in segments])
    assert np.allclose(centers, ev[:5].numpy(), atol=1e-6)


def test_eigenvalue_zero_within_its_residual_is_drawn_as_zero():
    A, _ = _operator()
    res = hesslab.eigenpairs(A, 3, generator=_gen(5))
    values = res.values.clone()
    values[2] = 0.5 * float(res.residual_norms[2]) + 1e-12  # inside its own error bar
    from dataclasses import replace

    res = replace(res, values=values, residual_norms=res.residual_norms.clamp_min(1e-10))
    ax = hplot.eigenvalues(res).axes[0]
    heights = np.asarray(ax.get_lines()[0].get_ydata())  # stem markers
    assert heights[2] == 0.0 and heights[0] == pytest.approx(float(values[0]))


def test_layer_spectra_compares_blocks_and_rejects_mixed_input():
    A, _ = _operator()
    B, _ = _operator(seed=1)
    e = {"fc1": hesslab.eigenpairs(A, 4, generator=_gen(6)), "fc2": hesslab.eigenpairs(B, 4)}
    ax = hplot.layer_spectra(e, title="blocks").axes[0]
    assert ax.get_title() == "blocks" and set(_labels(ax)) == {"fc1", "fc2"}
    d = {
        n: hesslab.spectral_density(op, 12, 1, generator=_gen(7)) for n, op in (("a", A), ("b", B))
    }
    ax = hplot.layer_spectra(d).axes[0]
    assert {"a", "b"} <= set(_labels(ax))
    with pytest.raises(DataError, match="mixed"):
        hplot.layer_spectra({"a": d["a"], "b": e["fc1"]})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, list]:
    """A 6-step SGD run whose monitor writes lambda_max and the trace into a run folder."""
    g = _gen(0)
    x = torch.randn(48, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    model = mlp(5, (6,), 3, activation="tanh", seed=0, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=ETA)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    with RunDir.create(out, config={"seed": 0, "lr": ETA}) as run:
        mon = SpectrumMonitor(
            (x, y), "ce", every=2, k=2, quantities=("lambda_max", "trace"), seed=3,
            trace_matvecs=20, sinks=[RunDirSink(run)],
        )  # fmt: skip
        for step in range(6):
            model.eval()
            mon.step(model, step)
            model.train()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return out, mon.measurements


def test_monitor_series_from_a_run_folder_draws_two_over_eta(tiny_run):
    path, measurements = tiny_run
    fig = hplot.monitor_series(path, "lambda/1", eta=ETA, title="sharpness")
    ax = fig.axes[0]
    assert fig._suptitle is not None and fig._suptitle.get_text() == "sharpness"
    assert ax.get_xlabel() == "step" and "λ" in ax.get_ylabel()
    assert _hlines(ax) == [pytest.approx(2 / ETA)]
    assert any(s.startswith("2/η = 40") for s in _labels(ax))
    curve = ax.get_lines()[0]
    assert list(curve.get_xdata()) == [m.step for m in measurements] == [0, 2, 4]
    assert np.allclose(curve.get_ydata(), [m.values["lambda/1"] for m in measurements])
    # the same picture from the measurements themselves and from the monitor
    for source in (measurements, [m.record() for m in measurements]):
        again = hplot.monitor_series(source, "lambda/1").axes[0].get_lines()[0]
        assert np.allclose(again.get_ydata(), curve.get_ydata())


def test_monitor_series_trace_band_is_plus_minus_stderr(tiny_run):
    path, measurements = tiny_run
    fig = hplot.monitor_series(path, ["lambda_max", "trace"], eta=ETA)
    top, bottom = fig.axes
    assert top.get_ylabel() == "λ_max" and bottom.get_ylabel() == "tr H"
    assert _hlines(top) == [pytest.approx(2 / ETA)] and _hlines(bottom) == []
    bands = [c for c in bottom.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    ys = bands[0].get_paths()[0].vertices[:, 1]
    values = np.array([m.values["trace"] for m in measurements])
    errs = np.array([m.errors["trace"] for m in measurements])
    assert errs.min() > 0
    assert ys.max() == pytest.approx((values + errs).max())
    assert ys.min() == pytest.approx((values - errs).min())
    with pytest.raises(DataError, match="no finite values of 'nope'"):
        hplot.monitor_series(path, "nope")
    with pytest.raises(DataError, match="no metrics"):
        hplot.monitor_series(path / "missing", "trace")


def test_monitor_series_log_axis_leaves_out_values_zero_within_error():
    recs = [
        {"step": 0, "trace": 5.0, "trace_err": 0.5},
        {"step": 1, "trace": 0.2, "trace_err": 0.4},  # zero within its error
        {"step": 2, "trace": 3.0, "trace_err": 0.1},
    ]
    ax = hplot.monitor_series(recs, "trace", log_y=True).axes[0]
    y = np.asarray(ax.get_lines()[0].get_ydata(), dtype=float)
    assert ax.get_yscale() == "log" and math.isnan(y[1]) and y[0] == 5.0 and y[2] == 3.0


def test_import_is_lazy_and_headless(tmp_path):
    """Importing hesslab.plot loads no matplotlib; drawing needs no display nor pyplot."""
    code = (
        "import sys, hesslab.plot as p, torch, hesslab\n"
        "assert 'matplotlib' not in sys.modules\n"
        "r = [{'step': s, 'lambda/1': 1.0 + s} for s in range(3)]\n"
        f"p.monitor_series(r, eta=0.5).savefig(r'{tmp_path / 'x.png'}')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    env["PYTHONPATH"] = str(Path(hplot.__file__).parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG")


def test_density_from_an_analysis_run_folder(tmp_path):
    """A run folder with the arrays `hesslab analyze` stores draws the stored curve."""
    A, ev = _operator()
    dens = hesslab.spectral_density(A, 25, 1, generator=_gen(8))
    grid = dens.grid()
    with RunDir.create(tmp_path / "run") as run:
        run.add_array("density/grid", grid.numpy())
        run.add_array("density/values", dens.evaluate(grid).numpy())
        run.add_array("exact_eigenvalues", ev.flip(0).numpy())
    ax = hplot.density(tmp_path / "run").axes[0]
    assert any(s.startswith("exact eigenvalues (n=40)") for s in _labels(ax))
    stored = next(ln for ln in ax.get_lines() if ln.get_label() == "SLQ density")
    direct = next(
        ln for ln in hplot.density(dens).axes[0].get_lines() if ln.get_label() == "SLQ density"
    )
    assert np.array_equal(stored.get_ydata(), direct.get_ydata())
    empty = RunDir.create(tmp_path / "empty")
    empty.finalize()
    with pytest.raises(DataError, match="no density arrays"):
        hplot.density(tmp_path / "empty")


def _bar_errors(ax) -> np.ndarray:
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = bars[0].lines[2][0].get_segments()
    return np.array([abs(s[1][1] - s[0][1]) / 2 for s in segments])


def test_eigenvalues_and_layer_spectra_from_an_analysis_run_folder(tmp_path):
    """The arrays and table `hesslab analyze` stores draw what the results draw."""
    A, _ = _operator()
    res = hesslab.eigenpairs(A, 5, generator=_gen(4))
    rows = [
        {"layer": "fc1", "P": 10, "λ_max": 3.0, "trace": 5.0, "trace stderr": 0.5},
        {"layer": "fc2", "P": 20, "λ_max": 1.5, "trace": 2.0, "trace stderr": 0.25},
    ]
    with RunDir.create(tmp_path / "run") as run:
        run.add_result("Top and bottom eigenvalues", "λ top", res, max_scalars=0)
        run.add_table("Layerwise Hessians", "per-layer summary", rows)
    ax = hplot.eigenvalues(tmp_path / "run").axes[0]
    assert np.array_equal(_bar_errors(ax), _bar_errors(hplot.eigenvalues(res).axes[0]))
    assert np.allclose(_bar_errors(ax)[3:], res.residual_norms.numpy()[3:], rtol=1e-6)
    assert "5 largest eigenvalues" in ax.get_title() and "5/5 converged" in ax.get_title()
    with pytest.raises(DataError, match="no eigenvalue result named 'λ bottom'"):
        hplot.eigenvalues(tmp_path / "run", name="λ bottom")
    axes = hplot.layer_spectra(tmp_path / "run").axes
    assert len(axes) == 2
    heights = [sorted(p.get_height() for p in ax.patches) for ax in axes]
    assert heights == [[1.5, 3.0], [2.0, 5.0]]
    assert np.allclose(sorted(_bar_errors(axes[1])), [0.25, 0.5])
    RunDir.create(tmp_path / "empty").finalize()
    with pytest.raises(DataError, match="no per-layer summary"):
        hplot.layer_spectra(tmp_path / "empty")

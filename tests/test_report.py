"""Tests of hesslab.report: run folders, plots, the HTML report, progress bars."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from hesslab.errors import ConfigurationError, DataError
from hesslab.io import to_jsonable
from hesslab.linalg.results import (
    BoundsResult,
    DiagonalEstimate,
    EigenResult,
    LogdetEstimate,
    TraceEstimate,
)
from hesslab.report import (
    ProgressCallback,
    RunDir,
    plot_density,
    plot_eigenvalues,
    plot_heatmap,
    plot_layer_summary,
    plot_line_scan,
    plot_quantile_bands,
    plot_series,
    plot_spectra_comparison,
    progress_bar,
    rebuild_report,
)
from hesslab.report.html import format_number, format_value, markdown_to_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _eig(k: int = 4, P: int = 6) -> EigenResult:
    g = torch.Generator().manual_seed(0)
    return EigenResult(
        values=torch.linspace(5.0, 0.5, k, dtype=torch.float64),
        vectors=torch.linalg.qr(torch.randn(P, k, generator=g, dtype=torch.float64))[0],
        residual_norms=torch.full((k,), 1e-8, dtype=torch.float64),
        converged=torch.tensor([True] * (k - 1) + [False]),
        num_matvecs=37,
        seconds=0.25,
        method="lanczos",
        which="largest",
        tol=1e-6,
        norm_estimate=5.0,
        info={"num_steps": 30, "note": "x", "tensor": torch.ones(3)},
    )


def _all_plots() -> dict[str, tuple[str, Figure]]:
    """One figure of every kind, keyed by file name: (caption, figure)."""
    rng = np.random.default_rng(0)
    bulk = np.abs(rng.normal(0, 0.02, 200))
    ev = np.concatenate([bulk, [2.0, 3.5, 5.0]])
    grid = np.linspace(-0.5, 6, 300)
    dens = np.exp(-(grid**2) / 0.01) * 10 + 0.01 * np.exp(-((grid - 3.5) ** 2))
    steps = np.arange(20)
    return {
        "density": (
            "SLQ density with the exact spectrum.",
            plot_density(grid, dens, eigenvalues=ev, outliers=[2.0, 3.5, 5.0]),
        ),
        "eigenvalues": (
            "Top eigenvalues.",
            plot_eigenvalues(torch.tensor([5.0, 3.5, 2.0, 0.01, -0.02]), errors=[0.1] * 5),
        ),
        "comparison": (
            "Hessian vs Gauss-Newton.",
            plot_spectra_comparison({"Hessian": [5, 3.4, 2, 0.1], "GGN": [5.1, 3.5, 2, 0.0]}),
        ),
        "series": (
            "Trace over training.",
            plot_series(
                steps,
                {
                    "trace": (10 - 0.3 * steps, 0.5 + 0 * steps),
                    "lambda_max": 5 - 0.1 * steps,
                    "own_x": (steps[::2], steps[::2] * 0.1, None),
                },
                ylabel="value",
            ),
        ),
        "quantiles": (
            "Loss quantiles over 200 repeats.",
            plot_quantile_bands(steps, rng.normal(size=(200, 20)).cumsum(axis=1)),
        ),
        "quantile_groups": (
            "Two batch sizes.",
            plot_quantile_bands(
                steps, {"B=8": rng.normal(size=(50, 20)), "B=64": rng.normal(size=(50, 20)) + 2}
            ),
        ),
        "layers": (
            "Per-layer trace and top eigenvalue.",
            plot_layer_summary(
                ["fc1.weight", "fc2.weight", "fc3.weight"],
                {"trace": ([3.0, 2.0, 1.0], [0.1, 0.2, 0.1]), "λ_max": [1.0, 0.8, 0.5]},
            ),
        ),
        "line_scan": (
            "Interpolation between small- and large-batch solutions.",
            plot_line_scan(
                np.linspace(-0.25, 1.25, 31),
                {"train": np.linspace(0, 1, 31) ** 2, "test": np.linspace(0, 1, 31) + 0.1},
                secondary={"λ_max": np.linspace(3, 1, 31)},
                secondary_label="λ_max",
            ),
        ),
        "heatmap": (
            "Subspace overlap.",
            plot_heatmap(rng.uniform(size=(3, 4)), ["a", "b", "c", "d"], ["x", "y", "z"]),
        ),
    }


def _build_run(root: Path) -> RunDir:
    """A run folder built with every API call."""
    run = RunDir.create(
        root,
        "full",
        config={"seed": 3, "k": 4, "widths": [10, 5], "lr": 0.1, "activation": torch.nn.ReLU},
        command=["hesslab", "reproduce", "sagun2017", "--smoke", "--out", "runs/a b"],
        title="Every API call",
        description="A run that exercises **every** part of `RunDir`.",
    )
    run.add_text(
        "Spectrum",
        "The spectrum is a *bulk* plus outliers.\n\n- first point\n- second `code` <b>x</b>\n\n"
        "```\nraw <code> block\n```",
    )
    run.add_result("Spectrum", "top eigenvalues", _eig(), save_vectors=True)
    run.add_result(
        "Spectrum",
        "trace",
        TraceEstimate(
            value=12.345678,
            stderr=0.0123,
            num_matvecs=99,
            seconds=1.5,
            method="hutch++",
            samples=torch.arange(5.0),
        ),
    )
    run.add_result(
        "Spectrum",
        "logdet",
        LogdetEstimate(
            value=-3.0,
            stderr=0.0,
            num_matvecs=4,
            seconds=0.1,
            method="eigenpairs",
            rank=2,
            values=torch.tensor([2.0, 1.0]),
        ),
    )
    run.add_result(
        "Bounds",
        "ws",
        BoundsResult(
            lambda_max_lower=1.0,
            lambda_max_upper=9.0,
            lambda_min_lower=-2.0,
            lambda_min_upper=0.1,
            mean=0.5,
            std=1.2,
            dimension=6,
            trace=3.0,
            trace_sq=10.0,
            trace_stderr=0.2,
            lambda_max_upper_interval=(8.0, 10.0),
        ),
    )
    run.add_result(
        "Spectrum",
        "diagonal",
        DiagonalEstimate(
            values=torch.arange(100.0),
            stderr=torch.ones(100),
            num_matvecs=10,
            seconds=0.0,
            method="hutchinson",
        ),
    )
    run.add_scalar("Spectrum", "num_outliers", 3, unit="eigenvalues", gap_ratio=41.5)
    run.add_scalar("Spectrum", "nan value", float("nan"), stderr=float("inf"))
    run.add_scalar("Spectrum", "tiny <value>", 1.23456e-7, stderr=2.3e-9, converged=True)
    run.add_array("density/grid", np.linspace(0, 1, 5))
    run.add_array("density/values", torch.ones(5))
    for name, (caption, fig) in _all_plots().items():
        section = "Spectrum" if name in ("density", "eigenvalues") else "Figures"
        run.add_figure(section, name, fig, caption)
    run.add_claim(
        "Spectrum", "Number of outliers equals k (Sagun et al. 2017)", "3 for k = 3", True
    )
    run.add_claim("Spectrum", "Bulk scales with width", 0.5, holds=np.bool_(False))
    run.add_claim("Bounds", "λ_max within the WS bounds <script>", "undecided", None)
    run.add_table(
        "Spectrum",
        "Outliers by number of classes",
        [{"k": 2, "outliers": 2, "gap": 12.5}, {"k": 3, "outliers": 3, "gap": 8.25, "ok": True}],
        caption="Counted at the largest eigengap.",
    )
    for step in range(5):
        run.log_metrics(step, loss=torch.tensor(1.0 / (step + 1)), trace=10.0 - step)
    run.flush()
    run.finalize()
    return run


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return _build_run(tmp_path_factory.mktemp("runs"))


def test_run_folder_files_exist_and_parse(full_run: RunDir) -> None:
    p = full_run.path
    assert p.name.startswith("full-")
    for name in ("config.json", "results.json", "arrays.npz", "metrics.jsonl", "report.html"):
        assert (p / name).is_file(), name
    config = json.loads((p / "config.json").read_text(), parse_constant=pytest.fail)
    assert config["seed"] == 3 and config["device"] == "cpu"
    assert config["config"]["widths"] == [10, 5]
    assert "ReLU" in config["config"]["activation"]
    for key in ("hesslab", "torch", "python", "numpy", "platform"):
        assert config["environment"][key]
    assert config["command_line"] == "hesslab reproduce sagun2017 --smoke --out 'runs/a b'"
    assert config["created"]

    results = json.loads((p / "results.json").read_text(), parse_constant=pytest.fail)
    assert results["status"] == "complete" and results["seconds"] >= 0
    assert results["sections"] == ["Spectrum", "Bounds", "Figures"]
    names = {(s["section"], s["name"]) for s in results["scalars"]}
    assert ("Spectrum", "top eigenvalues[0]") in names and ("Spectrum", "trace") in names
    assert ("Bounds", "ws.lambda_max_upper") in names and ("Bounds", "ws.trace") in names
    # Large array-valued results are saved as arrays only.
    assert not any(n.startswith("diagonal[") for _, n in names)
    assert len(results["figures"]) == len(_all_plots())
    assert [c["holds"] for c in results["claims"]] == [True, False, None]
    assert results["tables"][0]["columns"] == ["k", "outliers", "gap", "ok"]

    arrays = np.load(p / "arrays.npz")
    assert "Spectrum/top eigenvalues/values" in arrays.files
    assert arrays["Spectrum/top eigenvalues/vectors"].shape == (6, 4)
    assert arrays["Spectrum/diagonal/values"].shape == (100,)
    np.testing.assert_array_equal(arrays["density/values"], np.ones(5))

    metrics = [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(5)) and metrics[1]["loss"] == 0.5

    for fig in results["figures"]:
        assert (p / fig["file"]).read_bytes()[:8] == PNG_MAGIC
    assert not list(p.rglob("*.tmp"))


def test_add_result_maps_fields(full_run: RunDir) -> None:
    top = full_run.scalar("Spectrum", "top eigenvalues[0]")
    assert top["value"] == 5.0 and top["stderr"] is None
    d = top["diagnostics"]
    assert d["num_matvecs"] == 37 and d["method"] == "lanczos" and d["converged"] is True
    assert d["residual_norm"] == pytest.approx(1e-8) and d["num_steps"] == 30
    assert "tensor" not in d
    assert full_run.scalar("Spectrum", "top eigenvalues[3]")["diagnostics"]["converged"] is False
    trace = full_run.scalar("Spectrum", "trace")
    assert (trace["value"], trace["stderr"]) == (12.345678, 0.0123)
    assert trace["diagnostics"]["method"] == "hutch++"
    ws = full_run.scalar("Bounds", "ws.trace")
    assert ws["stderr"] == 0.2
    assert full_run.scalar("Bounds", "ws.lambda_max_upper")["diagnostics"]["interval"] == [8, 10]
    assert full_run.scalar("Spectrum", "logdet")["diagnostics"]["rank"] == 2
    with pytest.raises(KeyError, match="known"):
        full_run.scalar("Spectrum", "nope")


def test_report_embeds_every_figure_and_scalar(full_run: RunDir) -> None:
    page = (full_run.path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(full_run.figures)
    for fig, uri in zip(full_run.figures, uris, strict=True):
        assert base64.b64decode(uri) == (full_run.path / fig["file"]).read_bytes()
        assert html.escape(fig["caption"], quote=False) in page
    for s in full_run.scalars:
        assert html.escape(s["name"]) in page
        assert format_value(s["value"], s["stderr"]).split(" ±")[0].split("e")[0] in page
    # No external resources and no scripts; user text is escaped.
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "tiny &lt;value&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "12.35 ± 0.012" in page  # 4 and 2 significant figures
    assert "1.235×10<sup>−7</sup> ± 2.3×10<sup>−9</sup>" in page
    assert "NaN ± ∞" in page
    assert "2 of 3" not in page and "1 of 3 hold" in page
    command = "hesslab reproduce sagun2017 --smoke --out 'runs/a b'"  # quotes kept in <code>
    assert f"<code>{command}</code>" in page and f'<pre class="cmd">{command}</pre>' in page
    assert '"widths": [' in page  # the config, pretty-printed


def test_rebuild_report_is_identical(full_run: RunDir, tmp_path: Path) -> None:
    copy = tmp_path / full_run.path.name
    shutil.copytree(full_run.path, copy)
    original = (copy / "report.html").read_bytes()
    (copy / "report.html").unlink()
    out = rebuild_report(copy)
    assert out == copy / "report.html"
    assert out.read_bytes() == original
    loaded = RunDir.load(copy)
    assert loaded.status == "complete"
    assert to_jsonable(loaded.scalars) == to_jsonable(full_run.scalars)  # NaN != NaN
    assert math.isnan(loaded.scalar("Spectrum", "nan value")["value"])
    assert loaded.sections == full_run.sections
    assert sorted(loaded.arrays) == sorted(full_run.arrays)
    assert len(loaded.metrics()) == 5


def test_interrupted_run_leaves_complete_files(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        RunDir.create(tmp_path / "run", config={"seed": 0}, command=["x"]) as run,
    ):
        run.add_scalar("A", "before", 1.0)
        run.flush()
        run.add_scalar("A", "after", 2.0)
        raise RuntimeError("boom")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "boom" in results["error"]
    assert "RuntimeError: boom" in (tmp_path / "run" / "report.html").read_text()

    # A run killed before any flush still has its config and loads as incomplete.
    bare = RunDir.create(tmp_path / "bare", config={"seed": 1}, command=["y"])
    bare.add_scalar("A", "x", 1.0)
    loaded = RunDir.load(bare.path)
    assert loaded.status == "incomplete" and loaded.scalars == []
    page = rebuild_report(bare.path).read_text()
    assert "incomplete" in page


def test_create_validates_and_replaces(tmp_path: Path) -> None:
    a = RunDir.create(tmp_path, "same", config={}, command=["c"])
    b = RunDir.create(tmp_path, "same", config={}, command=["c"])
    assert a.path != b.path
    with pytest.raises(ConfigurationError, match="may only contain"):
        RunDir.create(tmp_path, "../evil", config={}, command=["c"])
    with pytest.raises(ConfigurationError, match="not empty"):
        RunDir.create(a.path, config={}, command=["c"])
    again = RunDir.create(a.path, config={"v": 2}, command=["c"], overwrite=True)
    assert again.config == {"v": 2}
    with pytest.raises(DataError, match="not a hesslab run folder"):
        RunDir.load(tmp_path / "nothing")
    run = RunDir.create(tmp_path / "r", config={}, command=["c"])
    run.add_scalar("S", "x", 1.0)
    run.add_scalar("S", "x", 2.0)  # replaces in place
    assert [s["value"] for s in run.scalars] == [2.0]
    with pytest.raises(ConfigurationError, match="single number"):
        run.add_scalar("S", "y", torch.ones(3))
    with pytest.raises(ConfigurationError, match="figure name"):
        run.add_figure("S", "a/b", b"\x89PNG")
    with pytest.raises(ConfigurationError, match="section"):
        run.add_text("", "x")


def test_figures_do_not_touch_pyplot_state() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    figures = _all_plots()  # the run fixture saves them all as PNG
    assert all(isinstance(fig, Figure) for _, fig in figures.values())
    assert plt.get_fignums() == before


def test_pyplot_figures_are_closed(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    run = RunDir.create(tmp_path / "r", config={}, command=["c"])
    fig = plt.figure()
    fig.add_subplot().plot([1, 2])
    run.add_figure("S", "pyplot_fig", fig, "made with pyplot")
    assert fig.number not in plt.get_fignums()


def test_plot_input_validation() -> None:
    with pytest.raises(DataError, match="same length"):
        plot_density([0, 1], [1, 2, 3])
    with pytest.raises(DataError, match="errors must have"):
        plot_eigenvalues([1, 2], errors=[1])
    with pytest.raises(DataError, match="shape"):
        plot_quantile_bands([0, 1, 2], np.zeros((4, 2)))
    with pytest.raises(DataError, match="layers"):
        plot_layer_summary(["a"], {"q": [1, 2]})
    with pytest.raises(DataError, match="two-dimensional"):
        plot_heatmap([1, 2])
    with pytest.raises(DataError, match="empty"):
        plot_series(None, {})


def test_number_formatting_and_markdown() -> None:
    assert format_number(12.345678) == "12.35"
    assert format_number(0.0012346) == "0.001235"
    assert format_number(123456.7) == "123457"
    assert format_number(9.99996) == "10.00"
    assert format_number(1.5e-7) == "1.500e-07"
    assert format_number(42) == "42"
    assert format_number("Infinity") == "∞" and format_number(None) == "–"
    assert format_value(1.0, 0.012345) == "1.000 ± 0.012"
    out = markdown_to_html("# T\n\na **b** *c* `<d>` [e](https://x.org)\n\n1. one\n2. two")
    out = re.sub(r">\s+<", "><", out)
    assert "<h3>T</h3>" in out and "<strong>b</strong>" in out and "<em>c</em>" in out
    assert "<code>&lt;d&gt;</code>" in out and '<a href="https://x.org">e</a>' in out
    assert "<ol><li>one</li><li>two</li></ol>" in out
    assert "javascript" not in markdown_to_html("[x](javascript:alert(1))").split("[")[0]


def test_progress_bar_and_callback() -> None:
    sink = io.StringIO()
    bar = progress_bar(100, "lanczos", enabled=True, unit="matvec", file=sink)
    cb = ProgressCallback(bar, postfix=("residual",))
    cb({"num_matvecs": 10, "residual": 0.5})
    cb({"num_matvecs": 40, "residual": 1e-3})
    cb({"num_matvecs": 30})  # never moves backwards
    assert bar.n == 40
    cb({})  # no count: one step
    assert bar.n == 41
    bar.close()
    assert "lanczos" in sink.getvalue()
    quiet = progress_bar(10, "quiet", file=io.StringIO())  # not a terminal: disabled
    assert quiet.disable
    ProgressCallback(quiet)({"num_matvecs": 5})
    quiet.close()


CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(full_run: RunDir, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            "--window-size=1000,1600",
            f"--screenshot={shot}",
            (full_run.path / "report.html").resolve().as_uri(),
        ]
        try:
            subprocess.run(
                cmd,
                capture_output=True,
                timeout=60,
                check=False,
                env={**os.environ, "HOME": profile},
            )
        except subprocess.TimeoutExpired:
            pytest.skip("chromium did not finish within 60 s")
    assert shot.exists(), "chromium wrote no screenshot"
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 800
    # Non-trivial: many distinct colours, not a blank page.
    assert np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0).shape[0] > 50
    if os.environ.get("HESSLAB_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["HESSLAB_KEEP_SCREENSHOT"])


def test_step_progress_reports_capped_fractions(caplog):
    import logging

    from hesslab.report.progress import StepProgress

    seen = []
    tick = StepProgress(lambda d, f: seen.append((d, f)), 4, logger=logging.getLogger("t"))
    with caplog.at_level(logging.INFO, logger="t"):
        tick("a")
        tick("b", 2.0)
        tick("c", 5.0)  # past the total: capped at 1
    assert seen == [("a", 0.25), ("b", 0.75), ("c", 1.0)]
    assert "b (3/4)" in caplog.text
    StepProgress(None, 0)("no callback, total at least one")


def test_snapshot_and_restore_of_the_records(tmp_path):
    run = RunDir.create(tmp_path / "run", config={"seed": 0}, command=["x"])
    run.add_scalar("A", "kept", 1.0)
    run.add_array("v", np.arange(3.0))
    snap = run.snapshot()
    run.add_scalar("A", "kept", 5.0)  # replaced in place
    run.add_scalar("B", "later", 2.0)
    run.add_claim("B", "a claim", 2.0, True)
    run.restore(snap)
    assert [(s["section"], s["name"], s["value"]) for s in run.scalars] == [("A", "kept", 1.0)]
    assert run.claims == [] and run.sections == ["A"]
    np.testing.assert_array_equal(run.arrays["v"], np.arange(3.0))
    snap["_scalars"].clear()  # the run holds its own copy
    assert len(run.scalars) == 1
    with pytest.raises(ConfigurationError, match="snapshot"):
        run.restore({"scalars": []})


def test_log_axes_ignore_the_sign_of_rounding_zeros() -> None:
    # an exact zero comes out as +1e-17 on one CPU and -1e-17 on another: figures of values
    # on one scale (ranked eigenvalues, per-layer curvatures) must be the same (the residue
    # neither stretches a log axis nor adds negative ticks), while a genuine small value
    # (1e-3 of the top) still counts; a time series keeps its tiny positive values (each
    # carries its own relative error) and only drops non-positive ones
    def axes_of(fig: Figure) -> tuple:
        ax = fig.axes[0]
        return (ax.get_yscale(), tuple(np.round(ax.get_ylim(), 12)), tuple(ax.get_yticks()))

    for zero in (1e-17, -1e-17, 0.0):
        ranked = plot_eigenvalues([10.0, 2.0, zero, -0.5])
        bars = plot_layer_summary(["a", "b", "c"], {"tr": [3.0, zero, 1.0]}, log_y=True)
        got = [axes_of(f) for f in (ranked, bars)]
        if zero == 1e-17:
            want = got
        assert got == want, zero
        series = plot_series(None, {"loss": [1.0, 0.1, 0.01, zero]}, log_y=True)
        assert np.isnan(series.axes[0].lines[0].get_ydata()[-1]) == (zero <= 0)
    ticks = axes_of(plot_eigenvalues([10.0, 2.0, 1e-3, -0.5]))[2]
    assert 1e-3 in ticks and ticks != want[0][2]
    bars = axes_of(plot_layer_summary(["a", "b", "c"], {"tr": [3.0, 1e-6, 1.0]}, log_y=True))
    assert bars[1][0] < 1e-6 < want[1][1][0]

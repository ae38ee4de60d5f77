"""Run folders as data: load_run, the schema version, ``hesslab compare``."""

from __future__ import annotations

import csv
import io
import json
import math
import sys

import numpy as np
import pytest
import torch

import hesslab
from hesslab import DataError, DenseOperator, eigenpairs, trace, wolkowicz_styan
from hesslab.cli import main
from hesslab.report.run import RUN_SCHEMA, RunDir
from hesslab.runs import compare_table, load_run


def _tiny_run(out, name, scale=1.0):
    """A demo-like run: eigenpairs, a trace, bounds, claims, tables, metrics, arrays."""
    A = scale * torch.diag(torch.linspace(0.5, 4.0, 12, dtype=torch.float64))
    op = DenseOperator(A)
    g = torch.Generator().manual_seed(0)
    with RunDir.create(out, config={"seed": 0, "scale": scale, "name": name}) as run:
        run.add_text("Spectrum", "Top eigenvalues.")
        run.add_result("Spectrum", "top", eigenpairs(op, k=3))
        run.add_result("Spectrum", "trace", trace(op, num_matvecs=9, generator=g))
        run.add_result("Bounds", "ws", wolkowicz_styan(op, exact=True))
        run.add_scalar("Misc", "nan value", math.nan, unit="1")
        run.add_claim("Spectrum", "λ_max = 4 scale", measured=f"{4 * scale}", holds=True)
        run.add_table("Misc", "t", [{"a": 1, "b": 2.5}], caption="a table")
        run.add_array("extra", np.arange(6.0).reshape(2, 3))
        for step in range(3):
            run.log_metrics(step, loss=1.0 / (step + 1), lam=scale * step)
    return run


def test_load_run_round_trips_every_field(tmp_path):
    written = _tiny_run(tmp_path / "a", "a")
    run = load_run(written.path)
    cfg = json.loads((written.path / "config.json").read_text())
    res = json.loads((written.path / "results.json").read_text())
    assert cfg["schema"] == RUN_SCHEMA == res["schema"] == run.schema
    assert run.record == cfg and run.config == written.config and run.summary == res
    assert run.status == "complete" and run.name == written.record["name"]
    # scalars: every record, keyed by section/name, non-finite decoded
    assert set(run.results) == {f"{s['section']}/{s['name']}" for s in written.scalars}
    for s in written.scalars:
        got = run.results[f"{s['section']}/{s['name']}"]
        assert set(got) == set(s)
        for k, v in s.items():
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(got[k])
            else:
                assert got[k] == v, k
    assert run.value("Spectrum/top[0]") == pytest.approx(4.0, rel=1e-8)
    assert math.isnan(run.value("Misc/nan value"))
    with pytest.raises(KeyError, match="known"):
        run.value("nope")
    # arrays: lazily, same keys and values
    assert set(run.arrays) == set(written.arrays) and len(run.arrays) == len(written.arrays)
    assert not run.arrays._cache
    for k, v in written.arrays.items():
        np.testing.assert_array_equal(run.arrays[k], v)
    # metrics: a DataFrame with one row per logged record
    pd = pytest.importorskip("pandas")
    assert isinstance(run.metrics, pd.DataFrame)
    assert list(run.metrics["step"]) == [0, 1, 2]
    np.testing.assert_allclose(run.metrics["loss"], [1.0, 0.5, 1 / 3])
    assert "Run(" in repr(run) and "3 metric records" in repr(run)
    frame = run.results_frame()
    assert list(frame.index) == list(run.results)
    assert frame.loc["Spectrum/trace", "stderr"] == run.results["Spectrum/trace"]["stderr"]
    assert bool(frame.loc["Spectrum/top[1]", "converged"]) is True
    assert (
        frame.loc["Spectrum/top[0]", "num_matvecs"]
        == written.scalar("Spectrum", "top[0]")["diagnostics"]["num_matvecs"]
    )
    assert hesslab.load_run is load_run


def test_metrics_without_pandas_are_dicts(tmp_path, monkeypatch):
    written = _tiny_run(tmp_path / "a", "a")
    monkeypatch.setitem(sys.modules, "pandas", None)
    run = load_run(written.path)
    assert run.metrics == written.metrics() and len(run.metrics) == 3
    rows = run.results_frame()
    assert isinstance(rows, list) and rows[0]["key"] == "Spectrum/top[0]"


def test_old_folders_without_schema_load_as_version_0(tmp_path):
    path = _tiny_run(tmp_path / "a", "a").path
    for file in ("config.json", "results.json"):
        doc = json.loads((path / file).read_text())
        del doc["schema"]
        (path / file).write_text(json.dumps(doc))
    run = load_run(path)
    assert run.schema == 0 and run.status == "complete" and "Spectrum/top[0]" in run.results
    doc = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**doc, "schema": RUN_SCHEMA + 1}))
    with pytest.raises(DataError, match="upgrade hesslab"):
        load_run(path)


def test_not_a_run_folder(tmp_path, capsys):
    with pytest.raises(DataError, match="not a hesslab run folder"):
        load_run(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_run(tmp_path / "missing")
    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a hesslab run folder" in err and err.count("\n") == 0


def test_compare_two_runs(tmp_path, capsys):
    a = _tiny_run(tmp_path / "a", "a", scale=1.0).path
    b = _tiny_run(tmp_path / "b", "b", scale=2.0).path
    assert main(["compare", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| quantity | a | b |" and lines[1] == "| --- | --- | --- |"
    top = next(line for line in lines if line.startswith("| Spectrum/top[0] |"))
    assert top.split(" | ")[1:] == ["4", "8 |"]
    assert len(lines) == 2 + len(load_run(a).results)

    assert main(["compare", str(a), str(b), "--format", "csv", "--filter", "spectrum/TRACE"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["quantity", "a", "b"]
    assert [r[0] for r in rows[1:]] == ["Spectrum/trace"]
    va, vb = (float(c.split(" ± ")[0]) for c in rows[1][1:])
    assert vb == pytest.approx(2 * va, rel=1e-6)  # the same probes on twice the matrix

    assert main(["compare", str(a), "--filter", "no-such-quantity"]) == 2
    assert "no scalars matching" in capsys.readouterr().err
    assert "quantity,a" in compare_table([load_run(a)], format="csv")

"""`hesslab.load_run` on the folder a real (small) `hesslab demo` writes: every field back."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import hesslab
from hesslab.cli import main
from hesslab.io import load_npz
from hesslab.runs import RUN_SCHEMA

SMALL = ["--epochs", "2", "--widths", "8", "--what", "eig,trace", "--k", "3", "--k-bottom", "1"]
SMALL += ["--trace-matvecs", "24", "--exact-limit", "0", "--quiet", "--seed", "0"]


def _same(got, want) -> bool:
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    return got == want


def test_load_run_round_trips_every_field_of_a_demo_run(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), *SMALL]) == 0, capsys.readouterr().err
    (folder,) = tmp_path.glob("demo-*")
    run = hesslab.load_run(folder)
    config = json.loads((folder / "config.json").read_text())
    results = json.loads((folder / "results.json").read_text())
    assert run.schema == RUN_SCHEMA == config["schema"] == results["schema"]
    assert run.status == "complete" and run.record == config and run.summary == results
    assert run.config == config["config"] and run.config["command"] == "demo"
    # every scalar, every key of it (non-finite numbers decoded from their JSON strings)
    scalars = results["scalars"]
    assert len(scalars) >= 5 and set(run.results) == {
        f"{s['section']}/{s['name']}" for s in scalars
    }
    for s in scalars:
        got = run.results[f"{s['section']}/{s['name']}"]
        assert set(got) == set(s)
        for key in ("section", "name", "unit", "diagnostics"):
            assert got[key] == s[key], key
        for key in ("value", "stderr"):
            want = s[key]
            want = float(want) if isinstance(want, str) else want  # "nan", "inf"
            assert _same(got[key], want), (key, got[key], want)
    # every array, lazily
    stored = load_npz(folder / "arrays.npz")
    assert set(run.arrays) == set(stored) and len(stored) >= 3
    for key, value in stored.items():
        np.testing.assert_array_equal(run.arrays[key], value)
    # every metric record of the training, in order, every field
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) >= 2
    pd = pytest.importorskip("pandas")
    assert isinstance(run.metrics, pd.DataFrame) and len(run.metrics) == len(lines)
    for i, line in enumerate(lines):
        for key, want in line.items():
            got = run.metrics.iloc[i][key]
            assert _same(got, want) or got == pytest.approx(want, rel=1e-15), (i, key)
    frame = run.results_frame()
    assert list(frame.index) == list(run.results)

"""``hesslab reproduce NAME --resume RUN_DIR``: an interrupted reproduction skips its
finished parts and ends with the results of an uninterrupted run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hesslab.analysis import StageStore
from hesslab.cli import build_parser, main
from hesslab.errors import ConfigurationError
from hesslab.experiments._stages import Parts
from hesslab.experiments.sagun2017 import experiment as sagun2017
from hesslab.report.progress import StepProgress
from hesslab.report.run import RunDir

# sagun2017 at a few seconds: all five parts, tiny sizes
TINY = [
    "--smoke", "--quiet", "--set", "ks=[3]", "--set", "digits=false",
    "--set", "width_sweep=[[8,8],[12,12]]", "--set", "data_sweep=[[3,5.0],[3,2.5]]",
    "--set", "ggn_ks=[3]", "--set", "widths=[10,10]", "--set", "steps=200",
    "--set", "num_per_class=20", "--set", "small_epochs=3", "--set", "large_steps=100",
    "--set", "line_num_per_class=20", "--set", "line_t=[0,1,3]",
]  # fmt: skip
SKIP = {"Timing", "Run"}  # wall times differ from run to run


def _only_dir(out):
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _results(path):
    res = json.loads((path / "results.json").read_text())
    keep = {
        key: [r for r in res[key] if r["section"] not in SKIP]
        for key in ("scalars", "claims", "tables", "figures", "texts")
    }
    keep["sections"] = [s for s in res["sections"] if s not in SKIP]
    with np.load(path / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return res["status"], keep, arrays


def _counting(monkeypatch, name):
    calls = {"n": 0}
    real = getattr(sagun2017, name)

    def counted(*a, **kw):
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(sagun2017, name, counted)
    return calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny reproduction."""
    out = tmp_path_factory.mktemp("ref")
    assert main(["reproduce", "sagun2017", *TINY, "--out", str(out)]) == 0
    return _only_dir(out)


def test_interrupted_reproduction_resumes_to_the_uninterrupted_results(
    reference, tmp_path, monkeypatch, capsys
):
    with monkeypatch.context() as m:

        def interrupted(*a, **kw):
            raise KeyboardInterrupt

        m.setattr(sagun2017, "_part4", interrupted)
        assert main(["reproduce", "sagun2017", *TINY, "--out", str(tmp_path)]) == 130
    run = _only_dir(tmp_path)
    assert json.loads((run / "results.json").read_text())["status"] == "failed"
    done = sorted(p.name for p in (run / "checkpoints").glob("*.done.pt"))
    assert done == ["part1.done.pt", "part2.done.pt", "part3.done.pt"]

    calls = {p: _counting(monkeypatch, f"_{p}") for p in ("part1", "part2", "part3", "part4")}
    argv = ["reproduce", "sagun2017", *TINY, "--out", str(tmp_path / "unused")]
    assert main([*argv, "--resume", str(run)]) == 0
    assert {p: c["n"] for p, c in calls.items()} == {
        "part1": 0,
        "part2": 0,
        "part3": 0,
        "part4": 1,
    }
    assert not (tmp_path / "unused").exists()
    assert not (run / "checkpoints").exists()
    status, resumed, arrays = _results(run)
    ref_status, expected, ref_arrays = _results(reference)
    assert status == ref_status == "complete"
    assert resumed == expected  # scalars, claims, tables, figures, texts: exactly equal
    assert arrays.keys() == ref_arrays.keys()
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], ref_arrays[k])
    # the timing of a loaded part is the one it took when it ran, not ~0
    seconds = {s["name"]: s["value"] for s in RunDir.load(run).scalars if s["section"] == "Timing"}
    assert set(seconds) == {f"part{i} seconds" for i in range(1, 7)}
    assert seconds["part1 seconds"] > 1e-3

    # resuming the complete run does nothing
    capsys.readouterr()
    assert main([*argv, "--resume", str(run)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert sum(c["n"] for c in calls.values()) == 1


def test_resume_with_other_settings_is_refused(reference, monkeypatch):
    calls = _counting(monkeypatch, "_part1")
    args = build_parser().parse_args(
        ["reproduce", "sagun2017", *TINY, "--set", "steps=150", "--resume", str(reference)]
    )
    with pytest.raises(ConfigurationError, match="steps"):
        args.func(args)
    args = build_parser().parse_args(["reproduce", "sagun2017", "--resume", str(reference)])
    with pytest.raises(ConfigurationError, match="ks"):  # full size vs smoke size
        args.func(args)
    assert calls["n"] == 0


def test_fresh_reproduction_removes_its_checkpoints(reference):
    assert not (reference / "checkpoints").exists()
    assert RunDir.load(reference).status == "complete"


def _toy_run(run_dir, store, tick, stop_after=None):
    """Three parts sharing the global torch RNG; each logs a metric and adds records."""
    part = Parts(run_dir, store, tick)
    out = []
    for i in range(3):

        def body(i=i):
            if stop_after is not None and i > stop_after:
                raise KeyboardInterrupt
            x = torch.rand(3, dtype=torch.float64)  # global state left by earlier parts
            run_dir.log_metrics(i, x=float(x[0]))
            run_dir.add_claim("S", f"claim {i}", float(x.sum()), True)
            run_dir.add_array(f"x{i}", x)
            tick(f"part {i}", 2)
            return {"x": x, "model": torch.nn.Linear(2, 2)}

        out.append(part(f"p{i}", body))
    return [o["x"] for o in out]


def test_parts_restore_the_global_rng_records_and_metrics(tmp_path):
    torch.manual_seed(5)
    ref_dir = RunDir.create(tmp_path / "ref", config={"a": 1})
    ref = _toy_run(ref_dir, None, StepProgress(None, 6))
    ref_dir.finalize()
    assert not (tmp_path / "ref" / "checkpoints").exists()

    torch.manual_seed(5)
    run_dir = RunDir.create(tmp_path / "run", config={"a": 1})
    store = StageStore(tmp_path / "run" / "checkpoints", {"a": 1})
    with pytest.raises(KeyboardInterrupt):
        _toy_run(run_dir, store, StepProgress(None, 6), stop_after=0)
    # part 1 had logged its metric before the interruption in another attempt
    run_dir.log_metrics(99, x=0.0)
    torch.manual_seed(123)  # a new process: another global state
    again = RunDir.reopen(tmp_path / "run")
    ticks: list[float] = []
    tick = StepProgress(lambda d, f: ticks.append(f), 6)
    got = _toy_run(again, store, tick)
    again.finalize()
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert again.claims == ref_dir.claims
    assert [m["step"] for m in again.metrics()] == [0, 1, 2]
    assert ticks[0] == pytest.approx(2 / 6) and ticks[-1] == pytest.approx(1.0)
    with pytest.raises(ConfigurationError, match="another configuration"):
        Parts(again, StageStore(store.folder, {"a": 2}))("p0", lambda: None)


def test_every_experiment_accepts_stages():
    """Every experiment runs through the one runner, whose parts are resumable."""
    import inspect

    from hesslab.experiments import EXPERIMENTS, Experiment

    for name, spec in EXPERIMENTS.items():
        assert type(spec).run is Experiment.run, name
        assert "stages" in inspect.signature(spec.run).parameters, name

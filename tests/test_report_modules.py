"""The run-folder modules after the split: scalars per result type, records, stages."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from hesslab.errors import ConfigurationError
from hesslab.linalg.results import BoundsResult, EigenResult, LogdetEstimate, TraceEstimate
from hesslab.report import RunDir
from hesslab.report.records import Records
from hesslab.report.scalars import (
    field_scalars,
    flatten_result,
    guess_scalars,
    indexed_scalars,
    register_scalars,
    value_scalar,
)


def _eig(k: int = 3) -> EigenResult:
    return EigenResult(
        values=torch.tensor([3.0, 2.0, 1.0][:k], dtype=torch.float64),
        vectors=None,
        residual_norms=torch.tensor([1e-9, 2e-9, 3e-9][:k], dtype=torch.float64),
        converged=torch.tensor([True, True, False][:k]),
        num_matvecs=12,
        seconds=0.5,
        method="lanczos",
        which="largest",
        tol=1e-8,
        norm_estimate=3.0,
        info={"num_steps": 9, "label": "x", "vec": torch.ones(2)},
    )


def test_each_result_type_has_its_rule() -> None:
    eig = flatten_result(_eig(), "top")
    assert [s.name for s in eig] == ["top[0]", "top[1]", "top[2]"]
    assert [s.value for s in eig] == [3.0, 2.0, 1.0]
    assert [s.diagnostics["converged"] for s in eig] == [True, True, False]
    assert eig[1].diagnostics["residual_norm"] == pytest.approx(2e-9)
    assert eig[0].diagnostics["num_steps"] == 9 and "vec" not in eig[0].diagnostics
    assert flatten_result(_eig(), "top", max_scalars=2) == []

    tr = TraceEstimate(value=4.0, stderr=0.5, num_matvecs=3, seconds=0.1, method="hutch++")
    (one,) = flatten_result(tr, "tr")
    assert (one.name, one.value, one.stderr, one.diagnostics["method"]) == (
        "tr",
        4.0,
        0.5,
        "hutch++",
    )
    # LogdetEstimate has both ``value`` and ``values``: its rule is the single value.
    ld = LogdetEstimate(
        value=-1.0, stderr=0.0, num_matvecs=2, seconds=0.0, method="eigenpairs",
        values=torch.tensor([2.0, 0.5]),
    )  # fmt: skip
    assert [s.name for s in flatten_result(ld, "logdet")] == ["logdet"]

    b = BoundsResult(
        lambda_max_lower=1.0, lambda_max_upper=2.0, lambda_min_lower=-1.0,
        lambda_min_upper=0.0, mean=0.5, std=0.1, dimension=4, trace=2.0, trace_sq=3.0,
        trace_stderr=0.25, lambda_max_upper_interval=(1.5, 2.5),
    )  # fmt: skip
    by_name = {s.name: s for s in flatten_result(b, "ws")}
    assert "ws.dimension" not in by_name and "ws.trace_stderr" not in by_name
    assert by_name["ws.trace"].stderr == 0.25
    assert by_name["ws.lambda_max_upper"].diagnostics["interval"] == (1.5, 2.5)
    assert by_name["ws.mean"].diagnostics["dimension"] == 4


@dataclasses.dataclass(frozen=True)
class _Unregistered:
    value: float
    stderr: float
    seconds: float


@dataclasses.dataclass(frozen=True)
class _Custom:
    estimate: float
    value: float  # a field the guess would take, but the registered rule does not


def _custom_rule(name, fields, diag, max_scalars):
    return [value_scalar(name, {"value": fields["estimate"]}, diag, max_scalars)[0]]


def test_registry_dispatches_by_type_and_mro() -> None:
    # no rule: the guess, from the fields
    (s,) = flatten_result(_Unregistered(1.0, 0.1, 2.0), "u")
    assert (s.name, s.value, s.stderr, s.diagnostics) == ("u", 1.0, 0.1, {"seconds": 2.0})
    assert [x.name for x in flatten_result({"a": 1.0, "b": "text"}, "m")] == ["m.a"]
    assert guess_scalars("g", {"values": torch.ones(2)}, {}, 8) == indexed_scalars(
        "g", {"values": torch.ones(2)}, {}, 8
    )
    assert field_scalars("f", {"x": 1, "ok": True}, {}, 8)[0].name == "f.x"

    register_scalars(_Custom, _custom_rule)
    (c,) = flatten_result(_Custom(estimate=7.0, value=-1.0), "c")
    assert c.value == 7.0  # the registered rule, not the field named "value"
    with pytest.raises(ConfigurationError, match="class and a rule"):
        register_scalars("not a class", _custom_rule)  # type: ignore[arg-type]

    class MyEigen(EigenResult):
        pass

    sub = MyEigen(**{f.name: getattr(_eig(), f.name) for f in dataclasses.fields(EigenResult)})
    assert [x.name for x in flatten_result(sub, "e")] == ["e[0]", "e[1]", "e[2]"]


def test_records_round_trip_and_snapshot_keys(tmp_path) -> None:
    run = RunDir.create(tmp_path / "r", config={"seed": 0}, command=["x"])
    run.add_result("S", "top", _eig())
    run.add_scalar("S", "nan", math.nan, stderr=math.inf)
    run.add_claim("S", "claim", "measured", True)
    run.flush()
    snap = run.snapshot()
    # the keys parts saved by earlier versions carry
    assert sorted(snap) == sorted(
        f"_{k}"
        for k in (
            "sections",
            "scalars",
            "claims",
            "tables",
            "figures",
            "texts",
            "results",
            "arrays",
        )
    )
    loaded = RunDir.load(run.path)
    assert math.isnan(loaded.scalar("S", "nan")["value"])
    assert loaded.scalar("S", "nan")["stderr"] == math.inf
    assert loaded.scalar("S", "top[2]")["diagnostics"]["converged"] is False
    other = RunDir.create(tmp_path / "o", config={}, command=["x"])
    other.restore(snap)
    assert other.scalars == run.scalars and other.claims == run.claims
    with pytest.raises(ConfigurationError, match="not a RunDir snapshot"):
        Records().restore({"scalars": []})


def test_stages_have_one_home_and_old_names_still_work() -> None:
    import hesslab.analysis
    import hesslab.experiments._stages
    import hesslab.report.run
    import hesslab.stages
    from hesslab.report import folder

    assert hesslab.analysis.StageStore is hesslab.stages.StageStore
    assert hesslab.experiments._stages.Parts is hesslab.stages.Parts
    assert hesslab.report.run.RunDir is folder.RunDir
    assert hesslab.report.run.rebuild_report is folder.rebuild_report
    for name in ("RUN_SCHEMA", "RESULTS_FORMAT", "METRICS_FILE", "CONFIG_FILE", "ARRAYS_FILE"):
        assert hasattr(hesslab.report.run, name), name


def test_stage_store_skips_finished_stages(tmp_path) -> None:
    from hesslab.stages import StageStore

    calls: list[int] = []
    store = StageStore(tmp_path / "ck", {"k": 1})
    assert store.run("a", lambda ckpt: calls.append(1) or 5) == 5
    assert StageStore(tmp_path / "ck", {"k": 1}).run("a", lambda ckpt: calls.append(2) or 6) == 5
    assert calls == [1]
    with pytest.raises(ConfigurationError, match="another configuration"):
        StageStore(tmp_path / "ck", {"k": 2}).load("a")
    assert StageStore(None).run("a", lambda ckpt: ckpt) is None  # no folder: no checkpoint

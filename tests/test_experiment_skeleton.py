"""The one experiment skeleton: Experiment + runner, the (section, claim) claims schema and
the lazy registry."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from hesslab.analysis import StageStore
from hesslab.errors import ConfigurationError
from hesslab.experiments import EXPERIMENTS, Experiment
from hesslab.experiments._base import Context, Part
from hesslab.experiments._claims import claims_by_key, decide, record
from hesslab.report.run import RunDir

S = "1. Section"


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    stop_after: int = -1

    @classmethod
    def smoke(cls) -> ToyConfig:
        return cls(seeds=(0, 1))

    @classmethod
    def full(cls) -> ToyConfig:
        return cls()


def _draw(ctx: Context, i: int) -> torch.Tensor:
    if 0 <= ctx.cfg.stop_after < i:
        raise KeyboardInterrupt
    x = torch.rand(3, dtype=torch.float64)  # the global state left by earlier parts
    ctx.run_dir.log_metrics(i, x=float(x[0]))
    ctx.tick(f"part {i}")
    return x


def _parts(cfg: ToyConfig) -> list[Part]:
    return [Part(f"p{i}", lambda c, i=i: _draw(c, i)) for i in range(len(cfg.seeds))]


def _summary(ctx: Context) -> dict:
    xs = [ctx.results[f"p{i}"] for i in range(len(ctx.cfg.seeds))]
    # two claims of one section, one holds and one does not
    ctx.claim(S, "the draws are below 1", "max < 1", bool(max(float(x.max()) for x in xs) < 1))
    # x[0] + 1 lies in [1, 2): over 3 draws its mean is >= 3 s.e. above 0, whatever they are
    plus_one = [float(x[0]) + 1.0 for x in xs]
    ctx.claim(S, "the draws are negative", "", decide(plus_one, direction="less"))
    return {"xs": xs, "claims": ctx.claims, "parts": sorted(ctx.seconds)}


TOY = Experiment(
    name="toy",
    title="toy",
    paper="nobody",
    arxiv="0000.00000",
    description="a toy",
    config_type=ToyConfig,
    smoke_seconds=1.0,
    full_seconds=1.0,
    parts=_parts,
    summary=_summary,
    steps=lambda cfg: len(cfg.seeds),
)


def test_two_claims_of_one_section_keep_their_own_verdicts(tmp_path):
    """Keyed by section alone (the old sagun2017 result) one verdict replaced the other."""
    run = RunDir.create(tmp_path / "run", config=TOY.config())
    claims = TOY.run(run, TOY.config())["claims"]
    assert set(claims) == {S}
    assert claims[S] == {"the draws are below 1": True, "the draws are negative": False}
    assert len(run.claims) == 2
    json.dumps(claims)  # the schema is JSON-ready


def test_the_same_claim_twice_is_refused(tmp_path):
    run = RunDir.create(tmp_path / "run", config={})
    record(run, S, "a claim", "x", True)
    record(run, "2. Other", "a claim", "x", False)  # another section: fine
    with pytest.raises(ConfigurationError, match="already recorded"):
        record(run, S, "a claim", "y", None)
    assert claims_by_key(run) == {S: {"a claim": True}, "2. Other": {"a claim": False}}


def test_runner_progress_config_and_defaults(tmp_path):
    seen: list[float] = []
    run = RunDir.create(tmp_path / "run", config={})
    out = TOY.run(run, None, progress=lambda d, f: seen.append(f))  # None: smoke size
    assert len(out["xs"]) == 2 and out["parts"] == ["p0", "p1"]
    assert seen == pytest.approx([0.5, 1.0])
    with pytest.raises(ConfigurationError, match="no setting"):
        TOY.run(run, {"nope": 1})
    with pytest.raises(ConfigurationError, match="no setting"):
        TOY.config(overrides=["nope=1"])
    assert TOY.config(overrides=["seeds=[4]"]) == {"seeds": [4], "stop_after": -1}


def test_runner_resume_equals_uninterrupted(tmp_path):
    cfg = TOY.config()
    torch.manual_seed(3)
    ref_dir = RunDir.create(tmp_path / "ref", config=cfg)
    ref = TOY.run(ref_dir, cfg)

    torch.manual_seed(3)
    run_dir = RunDir.create(tmp_path / "run", config=cfg)
    store = StageStore(tmp_path / "run" / "checkpoints", cfg)
    with pytest.raises(KeyboardInterrupt):
        TOY.run(run_dir, {**cfg, "stop_after": 0}, stages=store)
    torch.manual_seed(99)  # a new process: another global state
    again = RunDir.reopen(tmp_path / "run")
    got = TOY.run(again, cfg, stages=store)
    for a, b in zip(got["xs"], ref["xs"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert again.claims == ref_dir.claims
    assert [m["step"] for m in again.metrics()] == [0, 1, 2]


def test_registry_import_is_lazy():
    """Importing the registry (and listing names) imports no paper module."""
    code = (
        "import sys\n"
        "from hesslab.experiments import registry\n"
        "names = list(registry.EXPERIMENTS)\n"
        "papers = [m for m in sys.modules if m.startswith('hesslab.experiments.')\n"
        "          and m.rpartition('.')[2][:1] != '_' and m != 'hesslab.experiments.registry']\n"
        "print(len(names), papers)\n"
        "registry.EXPERIMENTS['sagun2017']\n"
        "print('hesslab.experiments.sagun2017' in sys.modules,\n"
        "      'hesslab.experiments.cohen2021' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{len(EXPERIMENTS)} []", "True False"]


def test_every_registered_experiment_is_one_experiment():
    for name, spec in EXPERIMENTS.items():
        assert isinstance(spec, Experiment), name
        assert spec.name == name
        assert list(spec.parts(spec.config_object(smoke=True))), name

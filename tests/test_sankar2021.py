"""The sankar2021 reproduction (spectra part): smoke run, helpers, config and SPEC."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from hesslab.errors import ConfigurationError, HesslabError
from hesslab.experiments import sankar2021
from hesslab.report.run import RunDir

from .smoke import run_smoke


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, _one_thread):
    return run_smoke(sankar2021.SPEC, tmp_path_factory.mktemp("runs"))


def test_smoke_distances_finite_positive(smoke_run):
    _, result, _ = smoke_run
    assert set(result["models"]) == {"lenet", "mlp"}
    seeds = [p for m in result["models"].values() for p in m["seeds"]]
    assert [p["seed"] for p in seeds] == [0, 1, 2] * 2
    for m in seeds:
        L = len(m["layers"])
        E = len(m["epochs"])
        assert m["epochs"] == list(range(E)) and E == 4
        for k in sankar2021.METRICS:
            d = np.asarray(m["distances"][k])
            assert d.shape == (E, L)
            assert np.all(np.isfinite(d)) and np.all(d > 0)
        for series in (*m["lmax"].values(), *m["trace"].values()):
            assert all(math.isfinite(v) for v in series)
        # every layer block is smaller than the full Hessian and its λ_max no larger
        # (a principal submatrix: Cauchy interlacing)
        for n in m["layers"]:
            assert m["layer_sizes"][n] < m["P"]
            for lb, lf in zip(m["lmax"][n], m["lmax"]["full"], strict=True):
                assert lb <= lf * (1 + 1e-6)


def test_smoke_layers_are_weights_in_depth_order(smoke_run):
    _, result, _ = smoke_run
    assert result["models"]["lenet"]["layers"] == ["conv1", "conv2", "fc1", "fc2", "out"]
    assert result["models"]["mlp"]["layers"] == ["fc1", "fc2", "fc3", "fc4", "out"]
    assert result["models"]["lenet"]["layer_sizes"]["conv1"] == 6 * 1 * 3 * 3


def test_smoke_lmax_matches_eigenpairs(smoke_run):
    _, result, _ = smoke_run
    for p in (p for mod in result["models"].values() for p in mod["seeds"]):
        c = p["lmax_check"]
        assert c["agrees"]
        assert abs(c["slq"] - c["lanczos"]) <= 1e-6 * c["lanczos"]


def test_smoke_report_complete(smoke_run):
    run, result, calls = smoke_run
    names = {f["name"] for f in run.figures}
    for model in ("lenet", "mlp"):
        for fig in (
            "distance_vs_depth",
            "densities_epoch0",
            "densities_epoch3",
            "full_density",
            "lmax",
            "trace",
        ):
            assert f"{model}_{fig}" in names
    for f in run.figures:
        assert (run.path / f["file"]).stat().st_size > 1000
    claims = [c["claim"] for c in run.claims]
    assert len(claims) == 2 * 4  # per model: two metrics, trend, λ_max check
    assert sum("code's variant" in c for c in claims) == 2
    assert {t["name"] for t in run.tables} >= {
        "lenet distances",
        "lenet trends",
        "mlp distances",
        "mlp trends",
    }
    assert calls and calls[-1] == pytest.approx(1.0)
    for name, claims_m in result["claims"].items():
        assert set(claims_m) == {
            "middle_closest_w1",
            "middle_closest_sankar",
            "trend_decreases",
            "lmax_check",
        }, name
    assert (run.path / "metrics.jsonl").stat().st_size > 0
    assert {f"{m} seeds" for m in ("lenet", "mlp")} <= {t["name"] for t in run.tables}


def _rule(share: float) -> bool | None:
    return True if share >= 2 / 3 else (False if share <= 1 / 3 else None)


def test_smoke_claims_are_statistics_over_seeds(smoke_run):
    """Each claim is the share of the 3 training seeds that agree (>= 2/3 holds)."""
    _, result, _ = smoke_run
    for name, m in result["models"].items():
        L = len(m["layers"])
        for k in sankar2021.METRICS:
            v = m["verdicts"][f"middle_closest_{k}"]
            amins = [p["distance_summary"][k]["argmin_index"] for p in m["seeds"]]
            share = sum(0 < a < L - 1 for a in amins) / len(amins)
            assert v["n"] == len(m["seeds"]) == 3
            assert v["estimate"] == pytest.approx(share)
            assert (
                m["middle_closest"][k]
                is _rule(share)
                is result["claims"][name][f"middle_closest_{k}"]
            )
        shares = [p["trend_decreasing"] / p["trend_series"] for p in m["seeds"]]
        t = m["verdicts"]["trend_decreases"]
        assert t["n"] == 3 and t["estimate"] == pytest.approx(sum(x > 0.5 for x in shares) / 3)
        assert m["trend_holds"] is _rule(t["estimate"])
        assert m["lmax_holds"] is True  # every seed's SLQ λ_max agrees with Lanczos


def test_spearman():
    x = np.arange(6.0)
    assert sankar2021.spearman(x, x**3) == pytest.approx(1.0)
    assert sankar2021.spearman(x, -np.exp(x)) == pytest.approx(-1.0)
    assert math.isnan(sankar2021.spearman([1.0, 2.0], [2.0, 1.0]))
    # ties get average ranks: matches the Pearson correlation of the average ranks
    assert sankar2021.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(
        np.corrcoef([0, 1.5, 1.5, 3], [0, 1, 2, 3])[0, 1]
    )
    with pytest.raises(ConfigurationError):
        sankar2021.spearman([1.0, 2.0, 3.0], [1.0, 2.0])


def test_trend_window():
    e = np.arange(6)
    v = np.array([1.0, 10.0, 8.0, 6.0, 5.0, 4.0])  # warm-up rise, then decrease
    t = sankar2021._trend(e, v, start=1)
    assert t["decreases"] and t["spearman"] == pytest.approx(-1.0)
    assert t["ratio_last_init"] == pytest.approx(4.0)
    assert not sankar2021._trend(e, v, start=0)["decreases"]  # 4 > 1 from init


def test_plots_are_pure():
    import matplotlib.pyplot as plt

    fig = sankar2021.plot_distance_vs_depth(
        ["a", "b", "c"], [0, 1], {"w1": [[0.3, 0.1, 0.2], [0.2, 0.1, 0.3]]}
    )
    assert len(fig.axes) == 1
    plt.close(fig)
    x = np.linspace(0, 1, 50)
    fig = sankar2021.plot_layer_densities({"full": (x, np.ones(50)), "a": (x, 2 * x)})
    plt.close(fig)
    with pytest.raises(ConfigurationError):
        sankar2021.plot_layer_densities({})


def test_config_sizes_spec_and_validation(tmp_path):
    smoke, full = sankar2021.Sankar2021Config.smoke(), sankar2021.Sankar2021Config.full()
    assert full.epochs > smoke.epochs and full.num_steps == 128 and full.grid_points == 1024
    assert full.per_class == 10 and full.momentum == 0.9 and full.lr == 1e-2
    assert len(full.seeds) >= 3 and len(smoke.seeds) >= 3
    assert sankar2021.SPEC.name == "sankar2021"
    with pytest.raises(dataclasses.FrozenInstanceError):
        smoke.seed = 1  # type: ignore[misc]
    run = RunDir.create(tmp_path / "r", config={}, command=["x"])
    for bad in (
        {"models": ("resnet",)},
        {"w1_normalize": "none"},
        {"dtype": "float16"},
        {"seeds": (0, 1)},
        {"seeds": (0, 0, 1)},
    ):
        with pytest.raises(HesslabError):
            sankar2021.run(run, dataclasses.replace(smoke, **bad))
    with pytest.raises(AttributeError):
        sankar2021.NOT_THERE  # noqa: B018


@pytest.mark.slow
def test_vit_option(tmp_path):
    """The transformer option: the zoo's ViT, its weight layers in depth order (3 seeds, ~16 s)."""
    cfg = dataclasses.replace(
        sankar2021.Sankar2021Config.smoke(),
        models=("vit",),
        vit_depth=1,
        vit_dim=8,
        epochs=1,
        per_class=2,
        num_steps=8,
        trace_matvecs=4,
        grid_points=128,
        batch_size=128,
    )
    run = RunDir.create(tmp_path / "r", config={}, command=["x"])
    m = sankar2021.run(run, cfg)["models"]["vit"]["seeds"][0]
    assert m["layers"] == [
        "embed.proj",
        *(f"blocks.0.{n}" for n in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc", "mlp.proj")),
        "head",
    ]
    d = np.asarray(m["distances"]["w1"])
    assert d.shape == (2, 8) and np.all(np.isfinite(d)) and np.all(d > 0)
    for n in m["layers"]:  # blocks are principal submatrices (Cauchy interlacing)
        for lb, lf in zip(m["lmax"][n], m["lmax"]["full"], strict=True):
            assert lb <= lf * (1 + 1e-6)


@pytest.mark.slow
def test_resume_per_seed_parts(tmp_path):
    """One part per (network, seed) and one deciding over the seeds: interrupted during
    seed 1 and resumed from the store, the claims equal an uninterrupted run's (~24 s
    on a loaded 2-core machine)."""
    from hesslab.stages import StageStore

    cfg = sankar2021.SPEC.config(
        smoke=True,
        overrides={"models": ["mlp"], "epochs": 1, "per_class": 2, "num_steps": 8,
                   "trace_matvecs": 4, "grid_points": 64, "batch_size": 512},
    )  # fmt: skip
    ref_dir = RunDir.create(tmp_path / "ref", config=cfg, command=["x"])
    ref = sankar2021.run(ref_dir, cfg)
    assert [p.name for p in sankar2021._parts(sankar2021.SPEC.resolve(cfg))] == [
        "mlp_seed0",
        "mlp_seed1",
        "mlp_seed2",
        "mlp",
    ]

    def stop(desc: str, frac: float) -> None:
        if "seed 1" in desc:
            raise KeyboardInterrupt

    run_dir = RunDir.create(tmp_path / "run", config=cfg, command=["x"])
    store = StageStore(tmp_path / "run" / "checkpoints", cfg)
    with pytest.raises(KeyboardInterrupt):
        sankar2021.run(run_dir, cfg, progress=stop, stages=store)
    again = RunDir.reopen(tmp_path / "run")
    got = sankar2021.run(again, cfg, stages=store)
    assert again.claims == ref_dir.claims
    assert got["models"]["mlp"]["verdicts"] == ref["models"]["mlp"]["verdicts"]

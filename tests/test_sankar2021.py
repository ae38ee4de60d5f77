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
    for m in result["models"].values():
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
    for m in result["models"].values():
        c = m["lmax_check"]
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
    # "middle closest" is decided by the share of epochs >= 1 with an interior arg-min
    for m in result["models"].values():
        for summary in m["distance_summary"].values():
            v = summary["verdict"]
            assert v["n"] >= 3 and v["estimate"] == pytest.approx(summary["interior_fraction"])
            want = True if v["estimate"] >= 2 / 3 else (False if v["estimate"] <= 1 / 3 else None)
            assert summary["middle_closest"] is want


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
    assert sankar2021.SPEC.name == "sankar2021"
    with pytest.raises(dataclasses.FrozenInstanceError):
        smoke.seed = 1  # type: ignore[misc]
    run = RunDir.create(tmp_path / "r", config={}, command=["x"])
    for bad in ({"models": ("resnet",)}, {"w1_normalize": "none"}, {"dtype": "float16"}):
        with pytest.raises(HesslabError):
            sankar2021.run(run, dataclasses.replace(smoke, **bad))
    with pytest.raises(AttributeError):
        sankar2021.NOT_THERE  # noqa: B018


@pytest.mark.slow
def test_vit_option(tmp_path):
    """The transformer option: the zoo's ViT, its weight layers in depth order (~12 s CPU)."""
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
    m = sankar2021.run(run, cfg)["models"]["vit"]
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

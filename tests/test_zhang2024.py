"""The zhang2024 reproduction (block heterogeneity) and the JS distance it uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hesslab.errors import ConfigurationError
from hesslab.experiments import get_experiment, zhang2024
from hesslab.measures import spectrum_js

from .smoke import run_smoke

# --------------------------------------------------------------------------------------
# the distance


def test_spectrum_js_is_a_bounded_symmetric_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, generator=g, dtype=torch.float64)
    b = 0.5 * torch.randn(200, generator=g, dtype=torch.float64) + 0.3
    c = torch.rand(200, generator=g, dtype=torch.float64) * 2
    assert spectrum_js(a, a) == 0.0
    dab, dba = spectrum_js(a, b), spectrum_js(b, a)
    assert dab == pytest.approx(dba, abs=1e-12)
    assert 0.05 < dab < 1.0
    # far apart point masses are disjoint: distance 1
    assert spectrum_js(torch.zeros(3), torch.full((3,), 50.0)) == pytest.approx(1.0, abs=1e-9)
    # shapes only: rescaling one spectrum is invisible with normalize="scale"
    assert spectrum_js(a, 7.0 * a, normalize="scale") < 1e-6  # sqrt of a rounding error
    assert spectrum_js(a, 7.0 * a) > 0.3
    # the grid is fixed per pair, so the triangle inequality is only approximate here
    assert spectrum_js(a, c) <= dab + spectrum_js(b, c) + 0.05
    with pytest.raises(ConfigurationError):
        spectrum_js(a, b, grid=1)
    with pytest.raises(ConfigurationError):
        spectrum_js(a, b, sigma_rel=0.0)


def test_decide_rule():
    assert zhang2024.decide([0.3, 0.31, 0.29])["holds"] is True
    assert zhang2024.decide([-0.3, -0.31, -0.29])["holds"] is False
    assert zhang2024.decide([0.3, -0.2, 0.1])["holds"] is None  # within 2 s.e. of zero
    one = zhang2024.decide([0.3])
    assert one["holds"] is None and math.isnan(one["se"])
    d = zhang2024.decide([1.0, 2.0, 3.0])
    assert d["mean"] == 2.0 and d["se"] == pytest.approx(1 / math.sqrt(3))
    with pytest.raises(ConfigurationError):
        zhang2024.decide([0.1, math.inf])


def test_config_and_registry():
    spec = get_experiment("zhang2024")
    assert spec.arxiv == "2402.16788"
    cfg = spec.config_object(smoke=True, overrides=["seeds=[4,5,6]", "normalize=scale"])
    assert cfg.seeds == (4, 5, 6) and cfg.normalize == "scale"
    with pytest.raises(ConfigurationError):
        zhang2024._validate(zhang2024.Zhang2024Config(points=("later",)))
    with pytest.raises(ConfigurationError):
        zhang2024._validate(zhang2024.Zhang2024Config(seeds=()))


# --------------------------------------------------------------------------------------
# the smoke run


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, _one_thread):
    return run_smoke(zhang2024.SPEC, tmp_path_factory.mktemp("runs"))


def test_smoke_claim_over_seeds(smoke_run):
    """The transformer's blocks are farther apart than the CNN's, over 3 seeds, with a margin.

    Measured (smoke size): mean D = 0.31 ± 0.014 (s.e.) at initialization and
    0.18 ± 0.019 after training; the test asks for well under half of that.
    """
    _, result, _ = smoke_run
    for point, floor in (("init", 0.1), ("trained", 0.05)):
        r = result["points"][point]
        assert r["num_seeds"] == 3
        assert r["holds"] is True
        assert r["mean"] - 2 * r["se"] > floor
        assert min(r["per_seed"]["gpt"]) > max(r["per_seed"]["cnn"])


def test_smoke_report(smoke_run):
    run, result, calls = smoke_run
    names = {f["name"] for f in run.figures}
    assert names == {f"js_{m}_{p}" for m in ("gpt", "cnn") for p in ("init", "trained")}
    for f in run.figures:
        assert (run.path / f["file"]).stat().st_size > 1000
    assert len(run.claims) == 2
    assert all(c["holds"] is True for c in run.claims)
    assert calls and calls[-1] == pytest.approx(1.0)
    arrays = np.load(run.path / "arrays.npz")
    js = arrays["js_gpt_init_seed0"]
    assert js.shape == (11, 11)  # one-block GPT: tok, pos, 8 in the block, ln_f
    assert np.allclose(js, js.T) and np.all(np.diag(js) == 0)
    assert np.all((js >= 0) & (js <= 1))
    assert arrays["js_cnn_init_seed0"].shape == (5, 5)

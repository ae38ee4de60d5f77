"""count_outliers and effective_rank on synthetic (Sagun et al. 2017-like) spectra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hesslab.errors import ConfigurationError
from hesslab.measures.spectrum import OutlierCount, count_outliers, effective_rank


def sagun_like(k: int, P: int = 2000, seed: int = 0) -> torch.Tensor:
    """k outliers spread over a decade above a bulk near 0 (with negative values)."""
    g = torch.Generator().manual_seed(seed)
    outliers = torch.logspace(1, 0, k, dtype=torch.float64) * (
        1 + 0.1 * torch.rand(k, generator=g, dtype=torch.float64)
    )
    bulk = 0.05 * torch.rand(P - k, generator=g, dtype=torch.float64) ** 3
    bulk -= 0.01 * torch.rand(P - k, generator=g, dtype=torch.float64) ** 2
    v = torch.cat([outliers, bulk])
    return v[torch.randperm(P, generator=g)]


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10, 20])
@pytest.mark.parametrize("seed", [0, 1])
def test_gap_counts_classes(k, seed):
    v = sagun_like(k, seed=seed)
    r = count_outliers(v, method="gap")
    assert isinstance(r, OutlierCount) and r.method == "gap"
    assert r.count == k and int(r) == k
    top = torch.sort(v, descending=True).values
    assert float(top[k]) < r.threshold < float(top[k - 1])
    # top-k eigenvalues only (as from eigenpairs), with a few bulk values included
    assert count_outliers(top[: k + 5], method="gap").count == k
    assert count_outliers(top[: k + 5].numpy(), method="gap").count == k


@pytest.mark.parametrize("k", [2, 5, 10])
def test_edge_counts_classes_on_compact_bulk(k):
    g = torch.Generator().manual_seed(k)
    bulk = 0.02 * torch.randn(1000, generator=g, dtype=torch.float64)  # compact bulk
    v = torch.cat([torch.linspace(5.0, 1.0, k, dtype=torch.float64), bulk])
    r = count_outliers(v, method="edge")
    assert r.count == k and r.method == "edge"
    assert r.threshold == pytest.approx(float(bulk.median()) + 10 * 1.4826 * 0.0135, rel=0.3)


def test_no_outliers():
    g = torch.Generator().manual_seed(0)
    flat = 1.0 + 0.1 * torch.rand(500, generator=g, dtype=torch.float64)
    assert count_outliers(flat).count == 0
    assert count_outliers(-torch.ones(10)).count == 0


def test_a_near_miss_refusal_is_uncertain():
    """Widest gap 1.85 (below min_ratio 2, within the margin 1.25): count 0, but the
    plausible range reaches the count that gap would give; a flat spectrum stays 0-0."""
    v = torch.tensor([1.0, 0.95, 0.9, 0.85, 0.8, 0.8 / 1.85, 0.4, 0.38, 0.36, 0.35])
    r = count_outliers(v, method="gap")
    assert (r.count, r.low, r.high) == (0, 0, 5)
    assert r.text == "0 (plausible 0-5) (no eigengap ≥ 2; widest 1.85)"
    assert r.info["widest_ratio"] == pytest.approx(1.85)
    assert count_outliers(v, method="gap", margin=1.0).high == 0
    flat = count_outliers(torch.ones(10) + 0.01 * torch.arange(10.0), method="gap")
    assert (flat.count, flat.high) == (0, 0)


def test_density_input():
    v = sagun_like(4, P=400)
    nodes, weights = v, torch.full_like(v, 1.0 / 400)
    assert count_outliers((nodes, weights), method="edge", dimension=400).count == 4

    class Density:
        def __init__(self):
            self.nodes, self.weights, self.dimension = nodes, weights, 400

    assert count_outliers(Density(), method="gap").count == 4
    with pytest.raises(ConfigurationError):
        count_outliers((nodes, weights))  # no dimension


def test_effective_rank():
    v = torch.tensor([2.0, 2.0, 2.0, 0.0, 0.0])
    assert effective_rank(v) == pytest.approx(3.0)
    assert effective_rank(v, method="participation") == pytest.approx(3.0)
    assert effective_rank(v, method="threshold") == 3.0
    # negative eigenvalues: |lambda| by default, clipped on request
    w = np.array([4.0, -4.0, 1e-9])
    assert effective_rank(w) == pytest.approx(2.0, rel=1e-6)
    assert effective_rank(w, negative="clip") == pytest.approx(1.0, rel=1e-6)
    # entropy rank of a geometric spectrum lies between 1 and n and is not an integer
    g = 0.5 ** torch.arange(10, dtype=torch.float64)
    e = effective_rank(g)
    assert 1.0 < e < 10.0 and not math.isclose(e, round(e))
    assert effective_rank(g, method="participation") < e  # dominated by the top value
    assert effective_rank(torch.zeros(4)) == 0.0


def test_effective_rank_treats_rounding_zeros_as_zero():
    # 1000 exact zeros computed as +-1e-17 (a sign per CPU): the threshold rank with a tiny
    # rtol is the 2 nonzero values for either sign pattern, and an all-noise spectrum is
    # rank 0 given its error bound; a genuine 1e-9 still counts
    signs = torch.randint(0, 2, (1000,), generator=torch.Generator().manual_seed(0)) * 2 - 1
    for noise in (1e-17 * signs, -1e-17 * signs, torch.zeros(1000)):
        v = torch.cat([torch.tensor([5.0, 1.0], dtype=torch.float64), noise.double()])
        assert effective_rank(v, method="threshold", rtol=1e-30) == 2.0
        assert effective_rank(v, method="entropy") == pytest.approx(
            effective_rank(v[:2], method="entropy"), rel=1e-14
        )
        assert effective_rank(noise.double(), method="participation", atol=1e-15) == 0.0
    w = torch.tensor([5.0, 1.0, 1e-9], dtype=torch.float64)
    assert effective_rank(w, method="threshold", rtol=1e-12) == 3.0
    with pytest.raises(ConfigurationError, match="atol"):
        effective_rank(w, atol=-1.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: count_outliers(torch.tensor([])),
        lambda: count_outliers(torch.tensor([1.0, float("nan")])),
        lambda: count_outliers(torch.ones(3), method="kde"),
        lambda: count_outliers(torch.ones(3), method="gap", min_ratio=0.5),
        lambda: count_outliers(torch.ones(3), kappa=0.5),
        lambda: count_outliers((torch.ones(3), torch.ones(3))),  # a density without P
        lambda: count_outliers(torch.ones(3), method="density", margin=0.5),
        lambda: count_outliers("abc"),
        lambda: effective_rank(torch.ones(3), method="x"),
        lambda: effective_rank(torch.ones(3), negative="x"),
    ],
)
def test_bad_input(call):
    with pytest.raises(ConfigurationError):
        call()


def test_threshold_rank_counts_strictly_above_rtol_times_max():
    """``"threshold"``: the number of ``w_i > rtol * max w`` (strict: equality is not counted)."""
    v = torch.tensor([1.0, 0.5, 1e-3, 1e-4, -0.25], dtype=torch.float64)
    assert effective_rank(v, method="threshold", rtol=1e-3) == 3.0  # 1, 0.5, |-0.25|
    assert effective_rank(v, method="threshold", rtol=1e-3, negative="clip") == 2.0
    assert effective_rank(v, method="threshold", rtol=5e-4) == 4.0


def test_near_equal_gaps_give_one_count_under_rounding():
    """Two gaps of nearly equal width (top value apart from 4 more outliers, those apart
    from the bulk): the count is the number above the lower gap, 5, for every rounding."""
    g = torch.Generator().manual_seed(0)
    base = torch.cat(
        [
            torch.tensor([80.0, 10.0, 9.5, 9.0, 8.5], dtype=torch.float64),
            torch.rand(50, generator=g, dtype=torch.float64),  # bulk below 1
        ]
    )
    counts = set()
    for seed in range(20):
        noise = torch.randn(base.shape, generator=torch.Generator().manual_seed(seed))
        r = count_outliers(base * (1 + 1e-9 * noise.double()), method="gap")
        counts.add((r.count, r.low, r.high))
    assert counts == {(5, 1, 5)}
    assert count_outliers(base, method="gap").text == "5 (plausible 1-5)"
    # one clear gap: no range
    clear = count_outliers(torch.cat([base[1:5], base[5:]]), method="gap")
    assert (clear.count, clear.low, clear.high) == (4, 4, 4) and clear.text == "4"


def test_values_zero_within_their_error_are_zero():
    v = torch.tensor([5.0, 2e-17, -3e-17, 0.0], dtype=torch.float64)
    r = count_outliers(v, method="gap")
    assert r.count == 1 and bool((r.values[1:] == 0).all())
    # a Ritz value below its residual is zero; a residual makes a gap uncertain
    r = count_outliers(
        torch.tensor([4.0, 1.0, 0.5]), errors=torch.tensor([0.0, 0.0, 0.6]), method="gap"
    )
    assert float(r.values[-1]) == 0.0
    three = torch.tensor([4.0, 1.9, 0.1])
    tight = count_outliers(three, errors=torch.zeros(3), method="gap")
    loose = count_outliers(three, errors=torch.tensor([0, 0.2, 0]), method="gap")
    assert tight.low == tight.high == 2  # 1.9/0.1 = 19 is the only gap >= 2.1 of 4/1.9
    assert loose.low <= tight.count <= loose.high
    with pytest.raises(ConfigurationError):
        count_outliers(torch.ones(3), errors=torch.ones(2))
    with pytest.raises(ConfigurationError):
        count_outliers(torch.ones(3), margin=0.5)


# -- the "density" rule (the default): bulk edge from the eigenvalue counting function


def planted(k: int, seed: int, P: int = 400) -> torch.Tensor:
    """A Marchenko–Pastur bulk (``X Xᵀ``, ``X`` of ``P x 2P`` entries of variance
    ``1/2P``: edge ``(1 + 1/√2)² ≈ 2.91``) plus ``k`` spikes planted between 4 and 12
    (beyond the BBP threshold, so they leave the bulk), dense float64."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(P, 2 * P, generator=g, dtype=torch.float64) / (2 * P) ** 0.5
    A = X @ X.T
    if k:
        Q, _ = torch.linalg.qr(torch.randn(P, k, generator=g, dtype=torch.float64))
        A = A + Q @ torch.diag(torch.linspace(4.0, 12.0, k, dtype=torch.float64)) @ Q.T
    return (A + A.T) / 2


@pytest.mark.parametrize("k", [0, 1, 3, 8])
def test_density_rule_counts_planted_spikes_on_the_exact_spectrum(k):
    ev = torch.linalg.eigvalsh(planted(k, seed=k))
    r = count_outliers(ev)
    assert r.method == "density" and (r.count, r.low, r.high) == (k, k, k)
    top = torch.sort(ev, descending=True).values
    if k:
        assert float(top[k]) < r.threshold < float(top[k - 1])
    else:
        assert r.threshold == float(top[0])  # no edge gap: the edge is the top value
    assert r.info["edge_stderr"] == 0.0  # exact: no probe uncertainty
    assert count_outliers(top[:30], dimension=400).count == k  # a Lanczos top-30 of P
    if k == 0:
        assert "no gap ≥ 8 local spacings" in r.text


@pytest.mark.parametrize(("k", "num_probes"), [(0, 1), (3, 1), (5, 3), (8, 2)])
def test_density_rule_on_slq_counts_k_in_95_percent_of_probe_seeds(k, num_probes):
    """SLQ of a planted spectrum, 20 probe seeds: the count is k in >= 95% of them (all
    20 when measured) and the range holds k in as many; the edge lies in the gap."""
    from hesslab.linalg.density import spectral_density

    A = planted(k, seed=10 + k)
    ev = torch.linalg.eigvalsh(A).flip(0)
    hits = inside = in_gap = 0
    for seed in range(20):
        d = spectral_density(A, 60, num_probes, generator=torch.Generator().manual_seed(seed))
        r = count_outliers(d)
        hits += r.count == k
        inside += r.low <= k <= r.high
        in_gap += float(ev[k]) < r.threshold < float(ev[k - 1]) if k else r.count == 0
        assert len(r.info["probe_counts"]) == num_probes
    assert hits >= 19 and inside >= 19 and in_gap >= 19


def test_density_rule_pools_probes_and_reports_their_spread():
    from hesslab.linalg.density import spectral_density

    d = spectral_density(planted(4, seed=3), 60, 4, generator=torch.Generator().manual_seed(0))
    r = count_outliers(d)
    assert r.count == 4 and r.info["num_probes"] == 4
    assert math.isfinite(r.info["edge_stderr"]) and math.isfinite(r.info["count_stderr"])
    assert min(r.info["probe_counts"]) >= r.low and max(r.info["probe_counts"]) <= r.high
    nodes, weights = d.nodes_and_weights()  # the pooled measure as a (nodes, weights) pair
    assert count_outliers((nodes, weights), dimension=d.dimension).count == 4

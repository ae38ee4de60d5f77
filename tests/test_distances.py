"""spectrum_w1 and the Sankar et al. density-value variant against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from hesslab.errors import ConfigurationError
from hesslab.linalg import spectral_density
from hesslab.measures.distances import as_measure, sankar_density_distance, spectrum_w1


def _spectrum(P: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.gamma(0.5, 0.1, P - 3), [5.0, 7.0, 9.0]])


def test_spectrum_w1_raw_matches_scipy():
    a, b = _spectrum(200, 0), _spectrum(150, 1) * 1.3
    assert spectrum_w1(a, b, normalize=None) == pytest.approx(wasserstein_distance(a, b))
    assert spectrum_w1(a, a, normalize=None) == pytest.approx(0.0, abs=1e-15)


def test_spectrum_w1_normalized_axes():
    a, b = _spectrum(200, 0), _spectrum(150, 1)
    na = (a - a.min()) / (a.max() - a.min())
    nb = (b - b.min()) / (b.max() - b.min())
    assert spectrum_w1(a, b) == pytest.approx(wasserstein_distance(na, nb))
    # shift and positive scaling do not change the "width" distance
    assert spectrum_w1(a, 10 * b + 3) == pytest.approx(spectrum_w1(a, b))
    # "scale" keeps zero fixed: invariant to scaling, not to shifting
    assert spectrum_w1(a, 10 * b, normalize="scale") == pytest.approx(
        wasserstein_distance(a / np.abs(a).max(), b / np.abs(b).max())
    )
    assert spectrum_w1(a, b + 3, normalize="scale") != pytest.approx(
        spectrum_w1(a, b, normalize="scale")
    )
    with pytest.raises(ConfigurationError):
        spectrum_w1(a, b, normalize="bogus")


def test_spectrum_w1_accepts_densities():
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(120, 120, generator=g, dtype=torch.float64))[0]
    lam = torch.as_tensor(_spectrum(120, 2))
    A = Q @ torch.diag(lam) @ Q.T
    dens = spectral_density(A, 120, 1, generator=torch.Generator().manual_seed(1))
    nodes, w = dens.nodes_and_weights()
    direct = wasserstein_distance(nodes.numpy(), lam.numpy(), u_weights=w.numpy())
    assert spectrum_w1(dens, lam, normalize=None) == pytest.approx(direct, rel=1e-9)
    # a full-length Lanczos run recovers the spectrum: the distance is small
    assert spectrum_w1(dens, lam) < 0.05
    x, wx = as_measure((nodes, 2 * w))
    assert float(wx.sum()) == pytest.approx(1.0)


def test_sankar_variant_is_scipy_on_density_values():
    a, b = _spectrum(100, 0), _spectrum(100, 1) * 2
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    width = hi - lo
    grid = np.linspace(lo - 0.05 * width, hi + 0.05 * width, 1024)
    sigma = 0.01 * width

    def phi(x):
        z = (grid[:, None] - x[None, :]) / sigma
        return np.exp(-0.5 * z**2).sum(1) / (len(x) * sigma * np.sqrt(2 * np.pi))

    direct = wasserstein_distance(phi(a), phi(b))
    got = sankar_density_distance(a, b, grid=1024, sigma=sigma)
    assert got == pytest.approx(direct, rel=1e-9)
    assert sankar_density_distance(a, b, grid=grid, sigma=sigma) == pytest.approx(direct)
    l1 = sankar_density_distance(a, b, grid=grid, sigma=sigma, method="l1")
    assert l1 == pytest.approx(np.trapezoid(np.abs(phi(a) - phi(b)), grid), rel=1e-9)
    # the documented blind spot: a mirrored spectrum has the same density values
    m = -a + a.max() + a.min()
    assert sankar_density_distance(a, m, grid=2048) < 0.02 * sankar_density_distance(a, b)
    assert spectrum_w1(a, m) > 0.1
    with pytest.raises(ConfigurationError):
        sankar_density_distance(a, b, sigma=-1.0)


def test_scale_normalization_divides_by_the_largest_magnitude():
    """``"scale"``: ``x -> x / max|x|``, also when the extreme eigenvalue is negative."""
    a = torch.tensor([-10.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    b = torch.tensor([-3.0, 0.0, 1.0, 4.0], dtype=torch.float64)
    expect = wasserstein_distance((a / 10.0).numpy(), (b / 4.0).numpy())
    assert spectrum_w1(a, b, normalize="scale") == pytest.approx(expect, rel=1e-12)

"""hesslab.landscape: interpolation, slices, filter-normalized directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hesslab
from hesslab.errors import ConfigurationError
from hesslab.landscape import (
    filter_normalized_direction,
    interpolate,
    plot_interpolation,
    plot_slice_1d,
    plot_slice_2d,
    slice_1d,
    slice_2d,
)
from hesslab.models import lenet, mlp
from hesslab.reparam import rescale


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=g)
    a = mlp(6, (8,), 3, seed=0, dtype=torch.float64)
    b = mlp(6, (8,), 3, seed=1, dtype=torch.float64)
    return a, b, (x, y)


def test_interpolate_endpoints(setup):
    a, b, data = setup
    obj = hesslab.Objective(a, "ce", data)
    before = {k: v.clone() for k, v in b.state_dict().items()}
    res = interpolate(
        obj, a, b, [0.0, 0.5, 1.0], lambda_max=True, generator=torch.Generator().manual_seed(0)
    )
    la = hesslab.Objective(a, "ce", data).value()
    lb = hesslab.Objective(b, "ce", data).value()
    assert res.loss[0] == pytest.approx(la, rel=1e-12)
    assert res.loss[2] == pytest.approx(lb, rel=1e-12)
    x, y = data
    acc_b = float((b(x).argmax(1) == y).double().mean())
    assert res.accuracy[2] == pytest.approx(acc_b)
    Hb = hesslab.hessian(b, "ce", data).to_dense()
    assert res.lambda_max[2] == pytest.approx(float(torch.linalg.eigvalsh(Hb)[-1]), rel=1e-6)
    assert res.distance > 0
    for k, v in b.state_dict().items():
        assert torch.equal(v, before[k])
    # the midpoint is the loss at the averaged parameters
    mid = {
        n: 0.5 * (pa + pb) for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True)
    }
    assert res.loss[1] == pytest.approx(obj.at(mid).value(), rel=1e-12)
    fig = plot_interpolation(res)
    assert fig.axes
    with pytest.raises(ConfigurationError):
        interpolate(obj, a, mlp(6, (9,), 3), [0.0])


def test_slices_match_direct_evaluation(setup):
    a, _, data = setup
    obj = hesslab.Objective(a, "ce", data)
    g = torch.Generator().manual_seed(1)
    d1 = filter_normalized_direction(obj, g)
    d2 = filter_normalized_direction(a, g)
    s1 = slice_1d(obj, d1, [-1.0, 0.0, 0.5])
    theta = obj.flat_params()
    assert s1.loss[1] == pytest.approx(obj.value(), rel=1e-12)
    assert s1.loss[0] == pytest.approx(obj.at(theta - d1).value(), rel=1e-12)
    s2 = slice_2d(obj, d1, d2, ([-0.5, 0.0, 0.5], [0.0, 1.0]))
    assert s2.loss.shape == (3, 2)
    assert s2.loss[1, 0] == pytest.approx(obj.value(), rel=1e-12)
    assert s2.loss[2, 1] == pytest.approx(obj.at(theta + 0.5 * d1 + d2).value(), rel=1e-12)
    assert plot_slice_1d({"random": s1}).axes
    assert plot_slice_2d(s2).axes


def test_filter_normalization():
    net = lenet(1, 10, image_size=8, seed=0, channels=(3, 4), hidden=(6, 5))
    d = filter_normalized_direction(net, torch.Generator().manual_seed(0))
    obj = hesslab.Objective(net, "ce", (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)))
    parts = obj.space.unflatten(d)
    for name, p in net.named_parameters():
        if p.ndim <= 1:
            assert torch.count_nonzero(parts[name]) == 0
        else:
            dn = parts[name].reshape(p.shape[0], -1).norm(dim=1)
            pn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            assert torch.allclose(dn, pn, rtol=1e-5)
    # same seed -> identical; a rescaled net gets the rescaled direction (scale invariance)
    again = filter_normalized_direction(net, torch.Generator().manual_seed(0))
    assert torch.equal(d, again)
    big = rescale(net, {"conv1": 10.0, "conv2": 0.1})
    db = hesslab.Objective(big, "ce", (torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)))
    pb = db.space.unflatten(filter_normalized_direction(big, torch.Generator().manual_seed(0)))
    assert torch.allclose(pb["conv1.weight"], 10.0 * parts["conv1.weight"], rtol=1e-5)
    assert np.isfinite(d.numpy()).all()


def test_log_slice_ignores_rounding_zeros():
    # a perfect fit's loss is 0 or +1e-33 by CPU: on the log colour scale it is a blank cell
    # either way, not log10(1e-300) = -300 (or -33) stretching the scale over the others
    from hesslab.landscape import Slice2D

    a = b = (-1.0, 0.0, 1.0)
    loss = np.array([[2.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 3.0]])
    lows = []
    for zero in (0.0, 1e-33, -1e-33):
        loss[1, 1] = zero
        fig = plot_slice_2d(Slice2D(a=a, b=b, loss=loss.copy(), seconds=0.0), log=True)
        cbar = fig.axes[-1]
        lows.append(min(cbar.get_ylim()))
    assert lows[0] == lows[1] == lows[2] > -1.0  # log10 of the smallest nonzero loss, 1

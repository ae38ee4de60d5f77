"""hesslab.reparam: function-preserving rescalings (Dinh et al., 2017)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

import hesslab
from hesslab.errors import ConfigurationError
from hesslab.models import lenet, mlp
from hesslab.reparam import parameter_scales, rescale, rescale_pair, scalable_layers
from hesslab.train import fit


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs().max() / b.abs().max()).detach())


def _bn_net() -> nn.Sequential:
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 4, 3, padding=1)),
                ("bn1", nn.BatchNorm2d(4)),
                ("act1", nn.ReLU()),
                ("pool", nn.AvgPool2d(2)),
                ("conv2", nn.Conv2d(4, 6, 3, padding=1)),
                ("act2", nn.LeakyReLU(0.1)),
                ("flat", nn.Flatten()),
                ("fc", nn.Linear(6 * 16, 5)),
                ("bn2", nn.BatchNorm1d(5)),
                ("act3", nn.ReLU()),
                ("out", nn.Linear(5, 3)),
            ]
        )
    ).double()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g, dtype=torch.float64))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g, dtype=torch.float64))
            bn.weight.copy_(torch.randn(bn.num_features, generator=g, dtype=torch.float64))
    return net.eval()


def test_mlp_outputs_preserved_exactly():
    net = mlp(10, (8, 7, 6), 3, seed=1, dtype=torch.float64)
    x = torch.randn(50, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for alphas in ([1e3, 1.0, 1e-2, 0.1], [0.5, 4.0, 0.25, 2.0]):
        new = rescale(net, alphas)
        assert _rel(new(x), net(x)) < 1e-10
        assert (new.fc1.weight - alphas[0] * net.fc1.weight).abs().max() == 0
        assert torch.allclose(new.fc2.bias, alphas[0] * alphas[1] * net.fc2.bias)
    pair = rescale_pair(net, 1, 1e-3)
    assert _rel(pair(x), net(x)) < 1e-10
    assert torch.allclose(pair.fc2.weight, 1e-3 * net.fc2.weight)
    assert torch.allclose(pair.fc3.weight, 1e3 * net.fc3.weight)


def test_convnet_outputs_preserved_exactly():
    net = lenet(1, 10, image_size=8, seed=2, channels=(4, 6), hidden=(12, 10)).double()
    x = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert scalable_layers(net) == ["conv1", "conv2", "fc1", "fc2", "out"]
    new = rescale(net, {"conv1": 1e2, "conv2.weight": 1e-3, "fc2": 30.0, "out": 1 / 3.0})
    assert _rel(new(x), net(x)) < 1e-10
    # the weights did change: layer l is scaled by alpha_l, its bias by the running product
    expect = {"conv1": (1e2, 1e2), "conv2": (1e-3, 1e-1), "fc1": (1.0, 1e-1)}
    expect.update({"fc2": (30.0, 3.0), "out": (1 / 3.0, 1.0)})
    for layer, (a_w, a_b) in expect.items():
        old, now = getattr(net, layer), getattr(new, layer)
        torch.testing.assert_close(now.weight, a_w * old.weight, rtol=1e-14, atol=0)
        torch.testing.assert_close(now.bias, a_b * old.bias, rtol=1e-14, atol=0)


def test_batchnorm_eval_absorbs_scale():
    net = _bn_net()
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # conv1 before bn1 and fc before bn2 can be scaled alone (BN-invariance);
    # conv2 -> fc is a pair with product 1 before bn2 is not required (bn2 absorbs it)
    new = rescale(net, {"conv1": 1e3, "conv2": 1e-2, "fc": 7.0, "out": 1.0})
    assert _rel(new(x), net(x)) < 1e-10
    # the stated rule: running_mean x c, running_var x c^2, eps x c^2
    assert torch.allclose(new.bn1.running_mean, 1e3 * net.bn1.running_mean)
    assert torch.allclose(new.bn1.running_var, 1e6 * net.bn1.running_var)
    assert new.bn1.eps == pytest.approx(1e6 * net.bn1.eps)
    c = 1e-2 * 7.0
    assert torch.allclose(new.bn2.running_var, c * c * net.bn2.running_var)
    # without the eps rule the output would differ (the test can fail)
    wrong = rescale(net, {"conv1": 1e3})
    wrong.bn1.eps = net.bn1.eps
    assert _rel(wrong(x), net(x)) > 1e-8


def test_batchnorm_train_mode_refused():
    net = _bn_net().train()
    with pytest.raises(ConfigurationError, match="bn1"):
        rescale(net, {"conv1": 2.0})


def test_refuses_non_homogeneous_and_bad_factors():
    net = mlp(5, (4, 4), 2, activation="tanh", seed=0)
    with pytest.raises(ConfigurationError, match=r"act1.*Tanh"):
        rescale(net, [2.0, 0.5, 1.0])
    # a tanh that sees an unscaled input is harmless
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rescale(net, [1.0, 1.0, 1.0])(x), net(x))
    for act in (nn.Sigmoid(), nn.GELU(), nn.Softmax(dim=1)):
        bad = nn.Sequential(nn.Linear(3, 3), act, nn.Linear(3, 2))
        with pytest.raises(ConfigurationError, match=type(act).__name__):
            rescale(bad, [3.0, 1 / 3.0])
    relu = mlp(5, (4,), 2, seed=0)
    with pytest.raises(ConfigurationError, match="multiply to"):
        rescale(relu, [2.0, 2.0])
    with pytest.raises(ConfigurationError, match="positive"):
        rescale(relu, [-1.0, -1.0])
    with pytest.raises(ConfigurationError, match="entries"):
        rescale(relu, [1.0])
    with pytest.raises(ConfigurationError, match="nope"):
        rescale(relu, {"nope": 2.0})
    with pytest.raises(ConfigurationError, match="Sequential"):
        rescale(hesslab.models.resnet_small(), [1.0])
    with pytest.raises(ConfigurationError, match="0 <= i"):
        rescale_pair(relu, 1, 2.0)


def test_input_model_untouched():
    net = mlp(6, (5,), 3, seed=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    new = rescale_pair(net, 0, 100.0)
    assert new is not net
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert not torch.equal(new.fc1.weight, net.fc1.weight)


def _flat_scales(obj: hesslab.Objective, scales: dict[str, float]) -> torch.Tensor:
    return torch.cat(
        [
            torch.full((n,), scales[name], dtype=torch.float64)
            for name, n in zip(obj.space.names, obj.space.numels, strict=True)
        ]
    )


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_curvature_transforms_as_dinv_h_dinv(curvature):
    """∇²L(Dθ) = D⁻¹∇²L(θ)D⁻¹: exact everywhere because θ ↦ Dθ is linear and L∘D = L.

    Checked at a non-critical point (so a wrong 'critical points only' derivation would
    not matter) and at a near-critical point reached by float64 gradient descent."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    net = mlp(4, (5,), 3, seed=0, dtype=torch.float64)
    op = hesslab.hessian if curvature == "hessian" else hesslab.ggn
    alphas = [1e2, 1e-2]
    for trained in (False, True):
        if trained:
            res = fit(net, (x, y), optimizer="gd", lr=0.5, steps=3000, grad_tol=1e-7, inplace=False)
            net = res.model
        obj = hesslab.Objective(net, "ce", (x, y))
        new = rescale(net, alphas)
        obj2 = hesslab.Objective(new, "ce", (x, y))
        d = _flat_scales(obj, parameter_scales(net, alphas))
        assert torch.allclose(obj2.flat_params(), d * obj.flat_params())
        H = op(obj).to_dense()
        H2 = op(obj2).to_dense()
        expect = H / d[:, None] / d[None, :]
        assert float((H2 - expect).abs().max() / expect.abs().max()) < 1e-9
        # the gradient transforms as D⁻¹∇L
        assert torch.allclose(obj2.gradient(), obj.gradient() / d, rtol=1e-8, atol=1e-14)
        # and the spectrum really moves
        assert float(torch.linalg.eigvalsh(H2)[-1]) > 50 * float(torch.linalg.eigvalsh(H)[-1])

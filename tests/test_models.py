"""Tests of hesslab.models: shapes, seeded initialisation, torch.func compatibility."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp, vmap

from hesslab.data import digits
from hesslab.errors import ConfigurationError
from hesslab.models import MODELS, build_model, init_parameters, lenet, mlp, resnet_small

# name -> (constructor, input shape)
CASES = {
    "mlp-digits": (lambda seed=0, **k: mlp(64, (32, 32), 10, seed=seed, **k), (1, 8, 8)),
    "mlp-tanh": (lambda seed=0, **k: mlp(2, (5,), 3, "tanh", seed=seed, **k), (2,)),
    "lenet-8": (lambda seed=0, **k: lenet(1, 10, 8, seed=seed, **k), (1, 8, 8)),
    "lenet-28": (lambda seed=0, **k: lenet(1, 10, 28, seed=seed, **k), (1, 28, 28)),
    "lenet-32": (lambda seed=0, **k: lenet(3, 10, 32, seed=seed, **k), (3, 32, 32)),
    "resnet-8": (lambda seed=0, **k: resnet_small(1, 10, width=4, seed=seed, **k), (1, 8, 8)),
    "resnet-32": (
        lambda seed=0, **k: resnet_small(3, 10, width=4, num_blocks=(1, 2), seed=seed, **k),
        (3, 32, 32),
    ),
}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_shape_and_dtype(name):
    make, shape = CASES[name]
    out_dim = 3 if name == "mlp-tanh" else 10
    model = make().eval()
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (5, out_dim)
    m64 = make(dtype=torch.float64).eval()
    assert all(p.dtype == torch.float64 for p in m64.parameters())
    assert m64(x.double()).dtype == torch.float64


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_seed_same_weights_and_global_rng_untouched(name):
    make, _ = CASES[name]
    before = torch.random.get_rng_state()
    a, b, c = _state(make(seed=3)), _state(make(seed=3)), _state(make(seed=4))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("name", sorted(CASES))
def test_functional_call_and_jvp(name):
    make, shape = CASES[name]
    model = make().eval()
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    ref = model(x)

    def f(p):
        return functional_call(model, (p, buffers), (x,))

    assert torch.allclose(f(params), ref)
    tangents = {k: torch.ones_like(v) for k, v in params.items()}
    out, dout = jvp(f, (params,), (tangents,))
    assert torch.allclose(out, ref) and dout.shape == ref.shape
    # vmap over the batch gives the same outputs as the batched call.
    single = vmap(lambda xi: functional_call(model, (params, buffers), (xi[None],))[0])(x)
    assert torch.allclose(single, ref, atol=1e-6)


def test_no_inplace_activations():
    for make, _ in CASES.values():
        for m in make().modules():
            assert not getattr(m, "inplace", False)


def test_layer_names_and_param_counts():
    net = mlp(64, (32, 32), 10)
    assert [n for n, _ in net.named_parameters()] == [
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "out.weight",
        "out.bias",
    ]
    assert sum(p.numel() for p in net.parameters()) == 3466
    assert lenet(1, 10, 28).fc1.in_features == 256  # Sankar et al.'s LeNet on MNIST
    assert lenet(3, 10, 32).fc1.in_features == 400  # classic LeNet-5
    assert lenet(1, 10, 8).fc1.in_features == 64
    names = [n for n, _ in resnet_small(3, 10).named_parameters()]
    assert names[0] == "stem.conv.weight" and names[-1] == "fc.bias"
    assert any(n.startswith("stage2.0.shortcut.conv") for n in names)
    assert not mlp(3, (4,), 2, bias=False).fc1.bias


@torch.no_grad()
def test_inits():
    g = torch.Generator().manual_seed(0)
    net = mlp(100, (200,), 10, init=0.1)
    assert abs(float(net.fc1.weight.std()) - 0.1) < 0.005
    assert abs(float(net.fc1.bias.std()) - 0.1) < 0.03
    default = mlp(100, (200,), 10)
    assert float(default.fc1.weight.abs().max()) <= 0.1  # U(-1/sqrt(100), 1/sqrt(100))
    kaiming = mlp(100, (200,), 10, init="kaiming")
    assert abs(float(kaiming.fc1.weight.std()) - (2 / 100) ** 0.5) < 0.01
    assert float(kaiming.fc1.bias.abs().max()) == 0
    seen = []
    init_parameters(net, lambda name, t, gen: (seen.append(name), t.fill_(1.0)), generator=g)
    assert seen == ["fc1.weight", "fc1.bias", "out.weight", "out.bias"]
    assert bool((net.fc1.weight == 1).all())
    r = resnet_small(1, 10, width=4)
    assert torch.equal(r.stem.bn.running_var, torch.ones(4))
    with pytest.raises(ConfigurationError, match="init"):
        mlp(2, (3,), 2, init="bogus")
    with pytest.raises(ConfigurationError, match="activation"):
        mlp(2, (3,), 2, activation="swish-ish")


def test_device_independent_weights_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu, gpu = mlp(8, (4,), 2, seed=1), mlp(8, (4,), 2, seed=1, device="cuda")
    assert all(
        torch.equal(a, b.cpu()) for a, b in zip(cpu.parameters(), gpu.parameters(), strict=True)
    )


def test_build_model_infers_sizes():
    flat, image = digits(), digits(flat=False)
    net = build_model("mlp", flat, widths=(16,), seed=2)
    assert net.fc1.in_features == 64 and net.out.out_features == 10
    assert torch.equal(net.fc1.weight, mlp(64, (16,), 10, seed=2).fc1.weight)
    cnn = build_model("lenet", image)
    assert cnn(image.train.x[:3]).shape == (3, 10)
    res = build_model("resnet-small", image.train, width=4)
    assert res.eval()(image.train.x[:3]).shape == (3, 10)
    with pytest.raises(ConfigurationError, match="image inputs"):
        build_model("lenet", flat)
    with pytest.raises(ConfigurationError, match="unknown model"):
        build_model("vgg")
    with pytest.raises(ConfigurationError, match="bad options"):
        build_model("mlp", flat)  # widths missing
    assert set(MODELS) == {"mlp", "lenet", "resnet_small", "gpt", "vit"}

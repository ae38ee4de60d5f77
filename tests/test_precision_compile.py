"""Hessian products under autocast (bf16 / fp16) and compiled with torch.compile."""

from __future__ import annotations

import copy

import pytest
import torch

from hesslab import Objective
from hesslab.errors import ConfigurationError
from hesslab.operators import GGNOperator, GradientMomentOperator, HessianOperator

from .models import make, split_unequal

# the relative error ||Hv - H_64 v|| / ||H_64 v|| these tests allow (measured on the test
# models: bfloat16 5e-3..1e-1 (the CNN), float16 7e-4..9e-4; bench/autocast_error.py
# measures the zoo models: 5e-2..8e-2 for bfloat16, 1e-2..3e-2 for float16)
AUTOCAST_ERROR = {"bfloat16": 0.2, "float16": 0.05}


def _pair(name):
    model, x, y, _ = make(name)
    data64 = split_unequal(x, y)
    data32 = [(xb.float(), yb) for xb, yb in data64]
    return Objective(model, "ce", data64), copy.deepcopy(model).float(), data32


@pytest.mark.parametrize("name", ["tanh_mlp", "cnn", "residual"])
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
@pytest.mark.parametrize("mode", ["reverse-over-reverse", "forward-over-reverse"])
def test_autocast_products_are_within_their_stated_error(name, precision, mode):
    obj64, m32, data32 = _pair(name)
    V = torch.randn(
        obj64.space.size, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    ref = HessianOperator(obj64, mode=mode) @ V
    H = HessianOperator(Objective(m32, "ce", data32), mode=mode, autocast=precision)
    out = H @ V.float()
    assert out.dtype == torch.float32  # the batches' products summed in float32
    err = ((out.double() - ref).norm(dim=0) / ref.norm(dim=0)).max().item()
    assert err <= AUTOCAST_ERROR[precision]
    # autocast did lower the precision: far above float32's error
    assert err > 1e-5


@pytest.mark.parametrize("name", ["tanh_mlp", "cnn"])
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
@pytest.mark.parametrize(
    "build",
    [
        lambda obj, **kw: GGNOperator(obj, **kw),
        lambda obj, **kw: GradientMomentOperator(obj, kind="covariance", **kw),
    ],
    ids=["ggn", "gradient-covariance"],
)
def test_autocast_ggn_and_moments_within_the_stated_error(name, precision, build):
    obj64, m32, data32 = _pair(name)
    V = torch.randn(
        obj64.space.size, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    ref = build(obj64) @ V
    op = build(Objective(m32, "ce", data32), autocast=precision)
    out = op @ V.float()
    assert out.dtype == torch.float32
    err = ((out.double() - ref).norm(dim=0) / ref.norm(dim=0)).max().item()
    assert 1e-5 < err <= AUTOCAST_ERROR[precision]
    # a block of the operator keeps the setting
    names = [n for n, _ in m32.named_parameters()][:2]
    assert op.restrict(names).autocast == op.autocast


def test_autocast_needs_float32_and_a_known_dtype():
    obj64, m32, data32 = _pair("tanh_mlp")
    with pytest.raises(ConfigurationError, match="float32"):
        HessianOperator(obj64, autocast="bfloat16")
    with pytest.raises(ConfigurationError, match="autocast must be"):
        HessianOperator(Objective(m32, "ce", data32), autocast="int8")
    with pytest.raises(ConfigurationError, match="float32"):
        GGNOperator(obj64, autocast="float16")
    with pytest.raises(ConfigurationError, match="float32"):
        GradientMomentOperator(obj64, autocast="bfloat16")


def _compile_works() -> bool:
    try:
        torch.compile(lambda t: t * 2, backend="aot_eager")(torch.ones(2))
    except Exception:  # any failure means: not available here
        return False
    return True


@pytest.mark.slow  # ~35 s on 2 CPU cores: tracing the product (dynamo + AOT autograd)
def test_compiled_product_gives_the_same_numbers():
    if not _compile_works():
        pytest.skip("torch.compile is unavailable")
    obj64, _, _ = _pair("tanh_mlp")
    V = torch.randn(
        obj64.space.size, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    ref = HessianOperator(obj64, mode="forward-over-reverse") @ V
    # aot_eager traces the product as inductor does but skips code generation (seconds,
    # not minutes, on a small CPU)
    H = HessianOperator(obj64, compile="aot_eager")
    assert H.mode == "forward-over-reverse"
    torch.testing.assert_close(H @ V, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H @ V[:, :1], ref[:, :1], rtol=1e-10, atol=1e-12)
    with pytest.raises(ConfigurationError, match="compile"):
        HessianOperator(obj64, compile=True, mode="reverse-over-reverse")

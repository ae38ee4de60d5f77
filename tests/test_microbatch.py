"""Micro-batched objectives (``max_batch_size=``) equal unsplit ones, for every loss kind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hesslab import (
    BatchLoss,
    ConfigurationError,
    GGNOperator,
    GradientMomentOperator,
    HessianOperator,
    Objective,
)
from tests.attention_ref import TinyGPT

TOL = 1e-12


def _rel(A, B):
    return float((A - B).norm() / B.norm())


def _mlp_case(loss):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(9, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (9,))
    if loss == "ce":
        y[[1, 6]] = -100
    if loss == "mean-custom":

        def fn(model_fn, batch):
            return nn.functional.cross_entropy(model_fn(batch[0]), batch[1])

        loss = BatchLoss(fn)
    return model, loss, [(x[:7], y[:7]), (x[7:], y[7:])]


def _lm_case():
    torch.manual_seed(0)
    model = TinyGPT().double().eval()
    ids = torch.randint(0, 7, (5, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    mask[3, 2:] = 0
    return model, "causal_lm", [{"input_ids": ids, "attention_mask": mask}]


CASES = {
    "ce": lambda: _mlp_case("ce"),
    "mse": lambda: _mlp_case("mse"),
    "mean-custom": lambda: _mlp_case("mean-custom"),
    "causal_lm": _lm_case,
}


@pytest.mark.parametrize("name", list(CASES))
def test_micro_batches_give_the_unsplit_operators(name):
    model, loss, data = CASES[name]()
    whole = Objective(model, loss, data)
    split = Objective(model, loss, data, max_batch_size=2)
    assert len(list(split.batches())) > len(list(whole.batches()))
    assert abs(split.value() - whole.value()) < TOL
    assert _rel(split.gradient(), whole.gradient()) < TOL
    for mode in ("forward-over-reverse", "reverse-over-reverse"):
        H1 = HessianOperator(whole, mode=mode).to_dense()
        assert _rel(HessianOperator(split, mode=mode).to_dense(), H1) < TOL
    if name != "mean-custom":
        assert _rel(GGNOperator(split).to_dense(), GGNOperator(whole).to_dense()) < TOL
    M1 = GradientMomentOperator(whole).to_dense()
    assert _rel(GradientMomentOperator(split).to_dense(), M1) < TOL


def test_micro_batches_are_not_cached_by_default():
    model, loss, data = CASES["ce"]()
    H = HessianOperator(Objective(model, loss, data[:1], max_batch_size=2))
    assert not H.cache_graph


def test_bad_max_batch_size():
    model, loss, data = CASES["ce"]()
    with pytest.raises(ConfigurationError, match="max_batch_size"):
        Objective(model, loss, data, max_batch_size=0)

"""The Objective: exact full-data mean, parameter selection, determinism check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hesslab
from hesslab import Objective
from hesslab.errors import DataError, NonDeterminismError, ParameterSelectionError

from .models import make, split_unequal


def test_full_loss_is_exact_mean_over_points_with_unequal_batches():
    model, x, y, C = make("tanh_mlp")
    full = float(F.cross_entropy(model(x), y).detach())
    for data in [(x, y), split_unequal(x, y), DataLoader(TensorDataset(x, y), batch_size=7)]:
        obj = Objective(model, "ce", data)
        assert obj.num_data == len(x)
        assert abs(obj.value() - full) < 1e-14
    # sum reduction: the objective is still the mean
    obj = Objective(model, nn.CrossEntropyLoss(reduction="sum"), split_unequal(x, y))
    assert abs(obj.value() - full) < 1e-14
    # gradient too
    g = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    ref = torch.cat([t.reshape(-1) for t in g])
    assert torch.allclose(obj.gradient(), ref, rtol=0, atol=1e-14)


def test_mse_one_hot_targets():
    model, x, y, C = make("tanh_mlp")
    obj = Objective(model, "mse", (x, y))
    ref = float(F.mse_loss(model(x), F.one_hot(y, C).double()).detach())
    assert abs(obj.value() - ref) < 1e-14


def test_parameter_selection():
    model, x, y, C = make("relu_mlp")
    assert Objective(model, "ce", (x, y), params="2.*").space.names == ("2.weight", "2.bias")
    assert Objective(model, "ce", (x, y), params="2").space.names == ("2.weight", "2.bias")
    assert Objective(model, "ce", (x, y), params=model[4]).space.names == ("4.weight", "4.bias")
    assert Objective(model, "ce", (x, y), params=["*.weight"]).space.size == 4 * 6 + 6 * 5 + 5 * 3
    with pytest.raises(ParameterSelectionError, match="matches no parameter"):
        Objective(model, "ce", (x, y), params="layers.9.*")
    with pytest.raises(ParameterSelectionError):
        Objective(model, "ce", (x, y), params=nn.Linear(2, 2))


def test_at_and_restrict():
    model, x, y, C = make("tanh_mlp")
    obj = Objective(model, "ce", (x, y))
    theta = obj.flat_params()
    moved = obj.at(theta * 0.5)
    assert abs(moved.value() - obj.value()) > 1e-6
    assert torch.equal(obj.flat_params(), theta)  # the original is unchanged
    sub = obj.restrict("0.*")
    assert sub.space.names == ("0.weight", "0.bias")
    assert abs(sub.value() - obj.value()) < 1e-15


def test_snapshot_is_independent_of_later_training():
    model, x, y, C = make("tanh_mlp")
    obj = Objective(model, "ce", (x, y))
    sub = Objective(model, "ce", (x, y), params="2.*")  # the first layer is frozen
    v0, s0 = obj.value(), sub.value()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert obj.value() == v0
    assert sub.value() == s0


def test_determinism_check_batchnorm_train():
    model, x, y, C = make("bn_eval")
    model.train()
    with pytest.raises(NonDeterminismError, match=r"model\.eval"):
        Objective(model, "ce", (x, y))
    Objective(model, "ce", (x, y), check_determinism=False)  # allowed when asked


def test_determinism_check_dropout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    with pytest.raises(NonDeterminismError, match="dropout"):
        Objective(model, "ce", (x, y))
    Objective(model.eval(), "ce", (x, y))


def test_determinism_check_functional_randomness():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x + torch.randn_like(x))

    model = Noisy().double()
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    with pytest.raises(NonDeterminismError, match="differ"):
        Objective(model, "ce", (x, y))


def test_determinism_check_shuffled_loader():
    model, x, y, C = make("tanh_mlp")
    loader = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True)
    with pytest.raises(NonDeterminismError, match="shuffle=False"):
        Objective(model, "ce", loader)
    Objective(model, "ce", DataLoader(TensorDataset(x, y), batch_size=5))


def test_data_errors():
    model, x, y, C = make("tanh_mlp")
    with pytest.raises(DataError, match="single-use"):
        Objective(model, "ce", ((x[i : i + 5], y[i : i + 5]) for i in range(0, 20, 5)))
    with pytest.raises(DataError, match="no data points"):
        Objective(model, "ce", [])
    with pytest.raises(DataError):
        Objective(model, "ce", x)
    with pytest.raises(hesslab.ConfigurationError):
        Objective(model, "hinge", (x, y))


def test_errors_are_hesslab_errors():
    for cls in (DataError, NonDeterminismError, ParameterSelectionError):
        assert issubclass(cls, hesslab.HesslabError)

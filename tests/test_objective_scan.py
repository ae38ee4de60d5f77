"""The data scan at construction: at most one pass, and a cheap determinism check."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from hesslab import HessianOperator, NonDeterminismError, Objective


class CountingDataset(Dataset):
    """A map-style dataset that counts item reads (a disk-backed data set's decoding)."""

    def __init__(self, n=40, augment=False):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g, dtype=torch.float64)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.reads, self.augment = 0, augment

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        x = self.x[i] + (0.01 * torch.randn(3, dtype=torch.float64) if self.augment else 0)
        return x, self.y[i]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_construction_reads_the_data_at_most_once(loss):
    ds = CountingDataset()
    loader = DataLoader(ds, batch_size=4)
    obj = Objective(_model(), loss, loader)
    passes = ds.reads / len(ds)
    # mse: sizes from the sampler, no pass; ce: one pass for the item counts; plus the
    # determinism check's first 4 batches twice (and one forward batch)
    assert passes <= (0 if loss == "mse" else 1) + 3 * 4 * 4 / len(ds) + 1e-12
    assert obj.num_data == 40 and obj.batch_sizes == (4,) * 10
    ds.reads = 0
    H = HessianOperator(obj, mode="reverse-over-reverse")
    H @ torch.ones(obj.space.size, dtype=torch.float64)
    assert ds.reads == len(ds)  # one product streams the data once


def test_loader_sizes_with_a_ragged_last_batch_match_the_data():
    ds = CountingDataset(n=10)
    whole = Objective(_model(), "mse", (ds.x, ds.y))
    obj = Objective(_model(), "mse", DataLoader(ds, batch_size=4))
    assert obj.batch_sizes == (4, 4, 2)
    assert abs(obj.value() - whole.value()) < 1e-12
    dropped = Objective(_model(), "mse", DataLoader(ds, batch_size=4, drop_last=True))
    assert dropped.num_data == 8 and len(list(dropped.batches())) == 2


def test_cheap_check_still_catches_shuffling_augmentation_bn_and_dropout():
    ds = CountingDataset()
    with pytest.raises(NonDeterminismError, match="shuffles"):
        Objective(_model(), "ce", DataLoader(ds, batch_size=4, shuffle=True))
    with pytest.raises(NonDeterminismError, match="changed between two passes"):
        Objective(_model(), "mse", DataLoader(CountingDataset(augment=True), batch_size=4))
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    with pytest.raises(NonDeterminismError, match="BatchNorm"):
        Objective(bn, "ce", DataLoader(ds, batch_size=4))
    drop = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double()
    with pytest.raises(NonDeterminismError, match="dropout"):
        Objective(drop, "ce", DataLoader(ds, batch_size=4))
    # without the check, shuffled data is accepted
    Objective(_model(), "ce", DataLoader(ds, batch_size=4, shuffle=True), check_determinism=False)


def test_tensor_dataset_loader_equals_the_tensors():
    ds = CountingDataset()
    loader = DataLoader(TensorDataset(ds.x, ds.y), batch_size=7)
    a = HessianOperator(Objective(_model(), "ce", loader)).to_dense()
    b = HessianOperator(Objective(_model(), "ce", (ds.x, ds.y))).to_dense()
    assert float((a - b).norm() / b.norm()) < 1e-12


def test_pin_memory_is_a_no_op_on_cpu_and_refused_when_forced():
    from hesslab import ConfigurationError
    from hesslab.batches import pin_batches

    ds = CountingDataset()
    data = [(ds.x[:20], ds.y[:20]), (ds.x[20:], ds.y[20:])]
    assert pin_batches(data, torch.device("cpu"), None) is data
    assert pin_batches(data, torch.device("cpu"), False) is data
    with pytest.raises(ConfigurationError, match="CUDA"):
        Objective(_model(), "ce", data, pin_memory=True)
    obj = Objective(_model(), "ce", data)
    assert obj._data is data


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_batches_give_the_same_products_on_cuda():
    ds = CountingDataset()
    data = [(ds.x[:20], ds.y[:20]), (ds.x[20:], ds.y[20:])]
    model = _model().cuda()
    pinned = Objective(model, "ce", data, device="cuda")
    assert all(t.is_pinned() for b in pinned._data for t in b)
    with pytest.raises(Exception, match="DataLoader"):
        Objective(model, "ce", DataLoader(TensorDataset(ds.x, ds.y)), pin_memory=True)
    plain = Objective(model, "ce", data, device="cuda", pin_memory=False)
    v = torch.randn(HessianOperator(plain).shape[0], 1, dtype=torch.float64, device="cuda")
    assert torch.equal(HessianOperator(pinned) @ v, HessianOperator(plain) @ v)

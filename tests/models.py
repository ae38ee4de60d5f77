"""Small float64 test models covering the layer types the operators must handle."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, d)
        self.fc2 = nn.Linear(d, d)

    def forward(self, x):
        return x + self.fc2(torch.tanh(self.fc1(x)))


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(3 * 3 * 3, classes)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class BNNet(nn.Module):
    def __init__(self, d_in: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, 6)
        self.bn = nn.BatchNorm1d(6)
        self.fc2 = nn.Linear(6, classes)

    def forward(self, x):
        return self.fc2(torch.tanh(self.bn(self.fc1(x))))


def make(name: str, seed: int = 0):
    """Return ``(model, x, y_class, classes)`` in float64 with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classes = 3
    if name == "tanh_mlp":
        m = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, classes))
        x = torch.randn(23, 4, generator=g)
    elif name == "relu_mlp":
        m = nn.Sequential(
            nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, classes)
        )
        x = torch.randn(23, 4, generator=g)
    elif name == "cnn":
        m = TinyCNN(classes)
        x = torch.randn(13, 1, 6, 6, generator=g)
    elif name == "bn_eval":
        m = BNNet(4, classes)
        with torch.no_grad():
            m.bn.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.bn.running_var.uniform_(0.5, 1.5, generator=g)
        m.eval()
        x = torch.randn(17, 4, generator=g)
    elif name == "residual":
        m = nn.Sequential(nn.Linear(4, 5), ResidualBlock(5), nn.Linear(5, classes))
        x = torch.randn(19, 4, generator=g)
    else:
        raise KeyError(name)
    m = m.double()
    x = x.double()
    y = torch.randint(0, classes, (len(x),), generator=g)
    return m, x, y, classes


MODEL_NAMES = ["tanh_mlp", "relu_mlp", "cnn", "bn_eval", "residual"]


def split_unequal(x, y, sizes=(4, 6)):
    """Split into batches of the given sizes plus the remainder (unequal batches)."""
    out, i = [], 0
    for s in sizes:
        out.append((x[i : i + s], y[i : i + s]))
        i += s
    out.append((x[i:], y[i:]))
    return out

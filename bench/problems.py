"""Benchmark problems shared by the scripts in bench/: small nets trained briefly on digits.

Each problem is trained with a fixed seed so every run (and every library) sees the same
weights. ``P1``: MLP 64-32-32-10 (~3.5k parameters); ``P2``: MLP 64-256-256-10 (~85k);
``P3``: LeNet-style CNN on 8x8 digits; ``P4``: small ResNet with BatchNorm (eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hesslab import data as hdata
from hesslab import models
from hesslab.train.fit import fit

P4_POINTS = 512  # the data P4's curvature is taken over (it is trained on all of them)


@dataclass
class Problem:
    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    description: str

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def make_problem(name: str, *, dtype: torch.dtype = torch.float64, steps: int = 300) -> Problem:
    """Build and briefly train problem ``P1``..``P4`` (deterministic)."""
    image = name in ("P3", "P4")
    split = hdata.digits(flat=not image, seed=0)
    if name == "P1":
        model, desc = models.mlp(64, [32, 32], 10, seed=0), "MLP 64-32-32-10 on digits"
    elif name == "P2":
        model, desc = models.mlp(64, [256, 256], 10, seed=0), "MLP 64-256-256-10 on digits"
    elif name == "P3":
        model, desc = models.lenet(1, 10, image_size=8, seed=0), "LeNet-style CNN on 8x8 digits"
    elif name == "P4":
        model = models.resnet_small(1, 10, seed=0)
        desc = "small ResNet with BatchNorm (eval) on 8x8 digits"
    else:
        raise KeyError(name)
    res = fit(
        model,
        split.train,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        batch_size=64,
        steps=steps,
        seed=0,
    )
    trained = res.model.eval().to(dtype)
    x, y = split.train.x.to(dtype), split.train.y
    if name == "P4":  # float64 convolutions: ~2 s per product on all 1,347 points on a CPU
        x, y = x[:P4_POINTS], y[:P4_POINTS]
        desc += f" (first {P4_POINTS} training points)"
    return Problem(name, trained, x, y, desc)

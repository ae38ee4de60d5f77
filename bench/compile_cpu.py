"""``HessianOperator(compile=True)`` against the eager modes on the CPU (seconds per column).

Digits MLP (64-32-32-10, 512 points) and LeNet-5 (28x28, 128 images), float32, one
thread; per variant the first product (compiling, for the compiled one) and the median
of 5 later products per column, for single products and 8-column blocks.

    PYTHONPATH=src .venv/bin/python bench/compile_cpu.py
"""

from __future__ import annotations

import statistics
import time

import torch

from hesslab import Objective
from hesslab.models import lenet, mlp
from hesslab.operators import HessianOperator

VARIANTS = {
    "eager forward-over-reverse": {"mode": "forward-over-reverse"},
    "eager reverse-over-reverse-cached": {"mode": "reverse-over-reverse-cached"},
    "compiled forward-over-reverse (inductor)": {"compile": True},
}


def main() -> None:
    """Print one row per model, block width and variant."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 1, 8, 8, generator=g), torch.randint(0, 10, (512,), generator=g)
    xl = torch.randn(128, 1, 28, 28, generator=g)
    problems = {
        "digits-mlp": (mlp(64, (32, 32), 10), (x, y)),
        "lenet": (lenet(), (xl, torch.randint(0, 10, (128,), generator=g))),
    }
    print("| model | K | variant | first product (s) | later (ms/column) |")
    print("|---|---|---|---|---|")
    for name, (model, data) in problems.items():
        obj = Objective(model, "ce", data)
        for K in (1, 8):
            V = torch.randn(obj.space.size, K, generator=g)
            for label, kw in VARIANTS.items():
                H = HessianOperator(obj, **kw)
                t0 = time.perf_counter()
                H @ V
                first = time.perf_counter() - t0
                later = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    H @ V
                    later.append(time.perf_counter() - t0)
                ms = statistics.median(later) / K * 1e3
                print(f"| {name} | {K} | {label} | {first:.2f} | {ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()

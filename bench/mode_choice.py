"""What the automatic product mode's choice costs, in products of the chosen mode.

For each model and dtype, a fresh :class:`hesslab.operators.HessianOperator` (process memo
cleared) applies one column (``single``) or an 8-column block (``block``; its choice
includes the single one's). The cost is ``(first product - later product) / later
product``: the extra time of the first product, which times the modes, in units of one
product of the chosen mode (median of 3 later products). The second cost subtracts the
first product of a fresh operator with the chosen mode fixed instead of a later product
(what a first product costs anyway, e.g. the cached mode's graph building).

    PYTHONPATH=src .venv/bin/python bench/mode_choice.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hesslab import Objective
from hesslab.models import gpt, lenet, mlp
from hesslab.operators import HessianOperator, clear_mode_memo


def _problems(dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 1, 8, 8, generator=g, dtype=dtype)
    digits = (mlp(64, (32, 32), 10, dtype=dtype), "ce", (x, torch.randint(0, 10, (512,))))
    xl = torch.randn(128, 1, 28, 28, generator=g, dtype=dtype)
    le = (lenet(dtype=dtype), "ce", (xl, torch.randint(0, 10, (128,), generator=g)))
    ids = torch.randint(0, 30, (16, 64), generator=g)
    lm = (gpt(dtype=dtype).eval(), "causal_lm", (ids, ids))
    return {"digits-mlp": digits, "lenet": le, "gpt-zoo": lm}


def _cost(model, loss, data, K: int) -> tuple[float, float, str, dict]:
    clear_mode_memo()
    H = HessianOperator(Objective(model, loss, data))
    V = torch.randn(H.shape[0], K, dtype=H.dtype, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    H.matmat(V)
    first = time.perf_counter() - t0
    later = []
    for _ in range(3):
        t0 = time.perf_counter()
        H.matmat(V)
        later.append(time.perf_counter() - t0)
    kind = "single" if K == 1 else "block"
    prod = statistics.median(later)
    chosen = H.chosen_mode(kind)
    fixed = HessianOperator(Objective(model, loss, data), mode=H.chosen_mode("single"))
    t0 = time.perf_counter()
    fixed.matmat(V)
    fixed_first = time.perf_counter() - t0
    timings = H.mode_report[kind]["seconds_per_column"]
    return (first - prod) / prod, (first - fixed_first) / prod, chosen, timings


def main() -> None:
    """Print one row per model, dtype and kind: the choice's cost and the chosen mode."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(
        "| model | dtype | kind | choice cost (products) | over a fixed mode's first product "
        "| chosen | s/column per candidate |"
    )
    print("|---|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.float64):
        for name, (model, loss, data) in _problems(dtype).items():
            for K in (1, 8):
                runs = [_cost(model, loss, data, K) for _ in range(args.repeats)]
                cost = statistics.median(r[0] for r in runs)
                over = statistics.median(r[1] for r in runs)
                secs = {m: f"{s:.2e}" for m, s in runs[-1][3].items()}
                kind = "single" if K == 1 else "block"
                cells = (f"{cost:.2f}", f"{over:.2f}", runs[-1][2], str(secs))
                row = (name, str(dtype)[6:], kind, *cells)
                print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

"""Error of Hessian-vector products under autocast (and float32) against float64.

For each model (zoo digits MLP, LeNet, GPT) the same weights in float64 and float32; the
relative error ``||H v - H_64 v|| / ||H_64 v||`` of the float32 product, and of the
bfloat16 / float16 autocast products (float32 parameters, fp32 sum over batches), for 4
Gaussian vectors: median and max. Each mode of the product is run.

    PYTHONPATH=src .venv/bin/python bench/autocast_error.py
"""

from __future__ import annotations

import copy
import statistics

import torch

from hesslab import Objective
from hesslab.models import gpt, lenet, mlp
from hesslab.operators import HessianOperator


def _problems() -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 8, 8, generator=g, dtype=torch.float64)
    yield_ = {"digits-mlp": (mlp(64, (32, 32), 10, dtype=torch.float64), "ce", x)}
    yield_["lenet"] = (lenet(dtype=torch.float64), "ce", torch.randn(64, 1, 28, 28, generator=g))
    ids = torch.randint(0, 30, (8, 64), generator=g)
    yield_["gpt-zoo"] = (gpt(dtype=torch.float64).eval(), "causal_lm", ids)
    return yield_


def main() -> None:
    """Print one row per model and precision: median and max relative error."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    print("| model | P | mode | precision | median rel. error | max rel. error |")
    print("|---|---|---|---|---|---|")
    for name, (m64, loss, x) in _problems().items():
        if x.is_floating_point():
            x = x.double()
            y = torch.randint(0, 10, (len(x),), generator=g)
            data64, data32 = (
                [(x[:32], y[:32]), (x[32:], y[32:])],
                [(x[:32].float(), y[:32]), (x[32:].float(), y[32:])],
            )
        else:
            data64 = data32 = [(x[:4], x[:4]), (x[4:], x[4:])]
        m32 = copy.deepcopy(m64).float()
        H64 = HessianOperator(Objective(m64, loss, data64), mode="reverse-over-reverse")
        V = torch.randn(H64.shape[0], 4, dtype=torch.float64, generator=g)
        ref = H64 @ V
        for mode in ("reverse-over-reverse", "forward-over-reverse"):
            for prec in (None, "bfloat16", "float16"):
                H = HessianOperator(Objective(m32, loss, data32), mode=mode, autocast=prec)
                out = (H @ V.float()).double()
                err = ((out - ref).norm(dim=0) / ref.norm(dim=0)).tolist()
                row = (name, str(H.shape[0]), mode, prec or "float32")
                print(
                    "| " + " | ".join(row) + f" | {statistics.median(err):.1e} | {max(err):.1e} |"
                )


if __name__ == "__main__":
    main()

"""Error of Hessian-vector products under autocast (and float32) against float64.

For each model (zoo digits MLP, LeNet, GPT) the same weights in float64 and float32; the
relative error ``||H v - H_64 v|| / ||H_64 v||`` of the float32 product, and of the
bfloat16 / float16 autocast products (float32 parameters, fp32 sum over batches), for 4
Gaussian vectors: median and max. Each mode of the product is run.

    PYTHONPATH=src .venv/bin/python bench/autocast_error.py [--large]

``--operator ggn`` / ``--operator moments`` measure the generalized Gauss–Newton
products / the gradient covariance instead of the Hessian (one mode: they have one).

``--large`` measures instead the issue-14 sizes, reverse-over-reverse only: the CIFAR
ResNet-18 (:func:`hesslab.models.resnet_small`, width 64, blocks (2, 2, 2, 2), 11.2M
parameters, 4 random 32x32 images in 2 batches) and a Hugging Face GPT-2 from a
``GPT2Config`` (4 layers x 256, vocabulary 2048, 3.7M parameters, 4 random sequences of 64
tokens).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from hesslab import Objective
from hesslab.models import gpt, lenet, mlp
from hesslab.operators import GGNOperator, GradientMomentOperator, HessianOperator

#: operator name -> builder(objective, mode, autocast)
OPERATORS = {
    "hessian": lambda obj, mode, prec: HessianOperator(obj, mode=mode, autocast=prec),
    "ggn": lambda obj, mode, prec: GGNOperator(obj, autocast=prec),
    "moments": lambda obj, mode, prec: GradientMomentOperator(
        obj, kind="covariance", autocast=prec
    ),
}


def _problems() -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 8, 8, generator=g, dtype=torch.float64)
    yield_ = {"digits-mlp": (mlp(64, (32, 32), 10, dtype=torch.float64), "ce", x)}
    yield_["lenet"] = (lenet(dtype=torch.float64), "ce", torch.randn(64, 1, 28, 28, generator=g))
    ids = torch.randint(0, 30, (8, 64), generator=g)
    yield_["gpt-zoo"] = (gpt(dtype=torch.float64).eval(), "causal_lm", ids)
    return yield_


def _large() -> dict:
    from hesslab.models import resnet_small

    g = torch.Generator().manual_seed(0)
    out = {
        "resnet18-cifar": (
            resnet_small(3, 10, width=64, num_blocks=(2, 2, 2, 2), dtype=torch.float64).eval(),
            "ce",
            torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64),
        )
    }
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:  # the table says which models ran
        return out
    cfg = GPT2Config(n_embd=256, n_layer=4, n_head=4, vocab_size=2048, n_positions=64)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(cfg).double().eval()
    out["hf-gpt2-4x256"] = (lm, "causal_lm", torch.randint(0, 2048, (4, 64), generator=g))
    return out


def _data(name: str, x: torch.Tensor, g: torch.Generator) -> tuple[list, list]:
    """Two batches in float64 and float32 (token ids: the same batches)."""
    h = min(32, len(x) // 2)
    if not x.is_floating_point():
        if name.startswith("hf-"):  # Hugging Face: dict batches with labels
            data = [{"input_ids": x[:h], "labels": x[:h]}, {"input_ids": x[h:], "labels": x[h:]}]
            return data, data
        data = [(x[:h], x[:h]), (x[h:], x[h:])]
        return data, data
    x = x.double()
    y = torch.randint(0, 10, (len(x),), generator=g)
    return [(x[:h], y[:h]), (x[h:], y[h:])], [(x[:h].float(), y[:h]), (x[h:].float(), y[h:])]


def main() -> None:
    """Print one row per model and precision: median and max relative error."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="ResNet-18 and HF GPT-2 sizes")
    ap.add_argument("--operator", default="hessian", choices=sorted(OPERATORS))
    args = ap.parse_args()
    build = OPERATORS[args.operator]
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    print("| model | P | mode | precision | median rel. error | max rel. error |")
    print("|---|---|---|---|---|---|")
    problems = _large() if args.large else _problems()
    one_mode = args.large or args.operator != "hessian"
    modes = ("reverse-over-reverse",) if one_mode else None
    for name, (m64, loss, x) in problems.items():
        data64, data32 = _data(name, x, g)
        m32 = copy.deepcopy(m64).float()
        H64 = build(Objective(m64, loss, data64), "reverse-over-reverse", None)
        V = torch.randn(H64.shape[0], 4, dtype=torch.float64, generator=g)
        ref = H64 @ V
        for mode in modes or ("reverse-over-reverse", "forward-over-reverse"):
            for prec in (None, "bfloat16", "float16"):
                H = build(Objective(m32, loss, data32), mode, prec)
                out = (H @ V.float()).double()
                err = ((out - ref).norm(dim=0) / ref.norm(dim=0)).tolist()
                row = (name, str(H.shape[0]), mode if args.operator == "hessian" else args.operator)
                row += (prec or "float32",)
                print(
                    "| " + " | ".join(row) + f" | {statistics.median(err):.1e} | {max(err):.1e} |"
                )


if __name__ == "__main__":
    main()

"""Scale: hesslab on ResNet-18, ViT-tiny and a GPT-2-style model (issue 14's benchmark).

Skeleton with hesslab's own rows only (the peers' rows, PyHessian 0.1, curvlinops 3.0.1,
hessian-eigenthings 1.0.0a5, are not written yet). Per model: ``P``, one product's cost
per column and over one gradient, the top-1 eigenvalue at ``tol=1e-3`` (wall, products,
value, residual) and the peak memory of that eigensolve (``EigenResult.peak_memory_bytes``:
CUDA allocated memory, or the CPU resident set beyond the call's start).

Models: ResNet-18 (CIFAR form: :func:`hesslab.models.resnet_small` with width 64 and
blocks (2, 2, 2, 2), 11.2M parameters; torchvision does not import with the pinned
torch), ViT-tiny (``dim=192, depth=12, heads=3`` on 32x32, 5.5M) and a GPT (``dim=512,
depth=10``, about 32M). ``--smoke`` shrinks every model and data set (seconds, for a check
that the script runs).

    PYTHONPATH=src .venv/bin/python bench/scale.py --smoke
    PYTHONPATH=src .venv/bin/python bench/scale.py --models resnet18 --images 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hesslab import Objective, eigenpairs
from hesslab.models import gpt, resnet_small, vit
from hesslab.operators import HessianOperator


def _problem(name: str, smoke: bool, n: int, dtype: torch.dtype) -> tuple:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 32, 32, generator=g, dtype=dtype)
    labels = torch.randint(0, 10, (n,), generator=g)
    if name == "resnet18":
        width, blocks = (8, (1, 1, 1, 1)) if smoke else (64, (2, 2, 2, 2))
        model = resnet_small(3, 10, width=width, num_blocks=blocks, dtype=dtype)
        return model.eval(), "ce", (images, labels)
    if name == "vit":
        dim, depth, heads = (32, 2, 2) if smoke else (192, 12, 3)
        model = vit(3, 10, 32, dim=dim, depth=depth, num_heads=heads, mlp_ratio=4, dtype=dtype)
        return model.eval(), "ce", (images, labels)
    dim, depth, seq = (32, 2, 32) if smoke else (512, 10, 128)
    vocab = 50 if smoke else 8192
    model = gpt(vocab, max_len=seq, dim=dim, depth=depth, num_heads=8 if not smoke else 2)
    ids = torch.randint(0, vocab, (max(1, n // 8), seq), generator=g)
    return model.to(dtype).eval(), "causal_lm", (ids, ids)


def _seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _row(name: str, args: argparse.Namespace) -> str:
    model, loss, data = _problem(name, args.smoke, args.images, args.dtype)
    obj = Objective(model, loss, data)
    H = HessianOperator(obj)
    v = torch.randn(H.shape[0], 1, dtype=H.dtype, generator=torch.Generator().manual_seed(1))
    H @ v  # chooses the product mode
    product = _seconds(lambda: H @ v)
    gradient = _seconds(obj.gradient)
    res = eigenpairs(H, 1, tol=1e-3, generator=torch.Generator().manual_seed(2))
    mem = res.peak_memory_bytes
    cells = (
        name,
        f"{H.shape[0]:,}",
        f"{product:.3f}",
        f"{product / gradient:.2f}",
        f"{res.values[0].item():.5g}",
        f"{res.residual_norms[0].item():.1e}",
        str(res.num_matvecs),
        f"{res.seconds:.1f}",
        "-" if mem is None else f"{mem / 2**20:.0f}",
    )
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    """Print hesslab's table (markdown)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "vit", "gpt"])
    ap.add_argument("--images", type=int, default=512, help="data points (GPT: /8 sequences)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--smoke", action="store_true", help="tiny models and data")
    args = ap.parse_args()
    args.dtype = getattr(torch, args.dtype)
    if args.smoke:
        args.images = min(args.images, 16)
    print(
        "| model | P | product (s/column) | product / gradient | top-1 (tol 1e-3) "
        "| residual | products | wall (s) | peak memory (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        print(_row(name, args), flush=True)


if __name__ == "__main__":
    main()

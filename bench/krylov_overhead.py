"""Krylov overhead: vector work outside the operator products, as a fraction of product time.

Run: ``python bench/krylov_overhead.py`` (defaults: P = 11M float32 for the eigensolves,
the product costing 0.23 s per column, the ResNet-18 figure of issue 14 at P = 11.2M).
Not a test; prints a table (``--out FILE`` also writes it as markdown).

The operator is ``A = diag(d)`` (a few outliers over a bulk in ``[-1, 1]``, so every
solver has a known answer), whose ``_matmat`` does the diagonal product and then sleeps
until ``cost * (P / 11.2M)`` seconds per column have passed: the product costs what a real
model's would, but does not occupy the (shared) CPU, so everything else the solver does is
what the table measures. ``overhead (wall) = (wall - product time) / product time``,
product time measured inside ``_matmat``; ``overhead (CPU)`` is the process CPU time
outside the products over the nominal product time, which other processes on a shared
machine disturb less (they slow the wall clock, and a sleeping product oversleeps).
The vector work scales with ``P`` like the product cost does,
so the fraction hardly depends on ``P``; the small projected problems (``eigh`` of an
``m x m`` matrix) do not, so a smaller ``P`` over-states the fraction. ``--P-trace`` /
``--P-density`` set a smaller ``P`` for trace and density, whose bases of ~100 vectors do
not fit in a few GiB at P = 11M (96 float32 vectors at 11M are 4.2 GB, twice that for
trace's ``Q`` and ``A Q``).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from hesslab.linalg import eigenpairs, spectral_density, trace
from hesslab.operators.base import LinearOperator

#: Seconds per product column of the ResNet-18 of issue 14 (P = 11.2M, float32, CPU).
RESNET_COST = 0.23
RESNET_P = 11_200_000


class TimedDiagonal(LinearOperator):
    """``diag(d)`` whose products take ``cost`` seconds per column (sleeping the rest)."""

    def __init__(self, d: torch.Tensor, cost: float) -> None:
        super().__init__(d.numel(), d.dtype, d.device)
        self.d, self.cost = d, cost
        self.product_seconds = 0.0
        self.product_cpu = 0.0
        self.columns = 0

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        t0, c0 = time.perf_counter(), time.process_time()
        Y = self.d[:, None] * V
        left = self.cost * V.shape[1] - (time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)
        self.product_seconds += time.perf_counter() - t0
        self.product_cpu += time.process_time() - c0
        self.columns += V.shape[1]
        return Y


def spectrum(P: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Bulk uniform in [-1, 1] plus the outliers 10, 9, 8, 7, 6, 5.5."""
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(P, generator=g, dtype=torch.float64) * 2 - 1
    d[:6] = torch.tensor([10.0, 9.0, 8.0, 7.0, 6.0, 5.5], dtype=torch.float64)
    return d.to(dtype)


def run_case(name: str, P: int, dtype: torch.dtype, cost: float, fn) -> dict:
    d = spectrum(P, dtype)
    op = TimedDiagonal(d, cost * P / RESNET_P)
    t0, c0 = time.perf_counter(), time.process_time()
    err = fn(op)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 - op.product_cpu
    prod = op.product_seconds
    nominal = op.cost * op.columns
    del op, d
    return {
        "case": name,
        "P": P,
        "products": None,
        "wall": wall,
        "product_s": prod,
        "overhead": (wall - prod) / prod,
        "cpu_overhead": cpu / nominal,
        "error": err,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--P", type=int, default=11_000_000, help="P of the eigensolves")
    ap.add_argument("--P-trace", type=int, default=1_000_000)
    ap.add_argument("--P-density", type=int, default=1_000_000)
    ap.add_argument("--cost", type=float, default=RESNET_COST, help="s/column at P=11.2M")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--only", default="", help="comma list of cases (top1,top5,trace,density)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    truth = torch.tensor([10.0, 9.0, 8.0, 7.0, 6.0], dtype=torch.float64)

    def top(k: int):
        def fn(op):
            r = eigenpairs(
                op, k, tol=1e-3, max_basis=24, generator=torch.Generator().manual_seed(0)
            )
            fn.products = r.num_matvecs
            return float((r.values.cpu().double() - truth[:k]).abs().max() / 10.0)

        return fn

    def tr(op):
        r = trace(op, 96, generator=torch.Generator().manual_seed(0))
        tr.products = r.num_matvecs
        exact = float(op.d.double().sum())
        return abs(r.value - exact) / abs(exact)

    def dens(op):
        r = spectral_density(op, 100, 1, generator=torch.Generator().manual_seed(0))
        dens.products = r.num_matvecs
        exact = float((op.d.double() ** 2).mean())
        return abs(r.moment(2) - exact) / exact

    cases = {
        "top1": ("top-1 eigenpair, tol 1e-3", args.P, top(1)),
        "top5": ("top-5 eigenpairs, tol 1e-3", args.P, top(5)),
        "trace": ("trace, 96 products (krylov)", args.P_trace, tr),
        "density": ("SLQ density, 100 products", args.P_density, dens),
    }
    only = [c for c in args.only.split(",") if c] or list(cases)
    rows = []
    for key in only:
        name, P, fn = cases[key]
        row = run_case(name, P, dtype, args.cost, fn)
        row["products"] = fn.products
        rows.append(row)
        print(
            f"{row['case']:<30} P={row['P']:>10,} products={row['products']:>4} "
            f"wall={row['wall']:7.2f}s products={row['product_s']:7.2f}s "
            f"overhead={100 * row['overhead']:6.1f}% (cpu {100 * row['cpu_overhead']:6.1f}%) "
            f"err={row['error']:.1e}",
            flush=True,
        )
    lines = [
        f"Krylov overhead, {args.dtype}, product {args.cost} s/column at P=11.2M "
        f"(scaled by P), torch {torch.__version__}, {torch.get_num_threads()} threads",
        "",
        "| case | P | products | wall (s) | in products (s) | overhead (wall) "
        "| overhead (CPU) | rel. error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['P']:,} | {r['products']} | {r['wall']:.2f} | "
            f"{r['product_s']:.2f} | {100 * r['overhead']:.1f}% | "
            f"{100 * r['cpu_overhead']:.1f}% | {r['error']:.1e} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")
    assert all(math.isfinite(r["overhead"]) for r in rows)


if __name__ == "__main__":
    main()

"""How many products any Krylov method needs for lambda_1 of P1 to 1e-6 (issue 5, top-1).

Exact arithmetic stand-in: plain Lanczos with full reorthogonalisation in float64 on P1's
dense Hessian (the same trained model as ``bench/peers``), from several random starting
vectors and from the full-batch gradient. Prints, per start, the relative error of the
largest Ritz value after each product and the first product count reaching 1e-6. Lanczos
is optimal among Krylov methods for the largest Rayleigh quotient, so no method that only
multiplies by H (power iteration, ARPACK, hesslab) gets there in fewer products from the
same start.

    .venv/bin/python bench/top1_floor.py [--steps 16] [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hesslab
from problems import make_problem


def lanczos_errors(A: torch.Tensor, q: torch.Tensor, lam1: float, steps: int) -> list[float]:
    """Relative error of the largest Ritz value after 1..steps products."""
    Q = [q / q.norm()]
    alpha: list[float] = []
    beta: list[float] = []
    errs = []
    for _ in range(steps):
        w = A @ Q[-1]
        alpha.append(float(w @ Q[-1]))
        B = torch.stack(Q, 1)
        for _ in range(2):
            w = w - B @ (B.T @ w)
        T = torch.diag(torch.tensor(alpha, dtype=torch.float64))
        if beta:
            off = torch.tensor(beta, dtype=torch.float64)
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        errs.append(abs(float(torch.linalg.eigvalsh(T)[-1]) - lam1) / abs(lam1))
        b = float(w.norm())
        beta.append(b)
        Q.append(w / b)
    return errs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    prob = make_problem("P1", dtype=torch.float64)
    H = hesslab.hessian(prob.model, "ce", (prob.x, prob.y))
    A = H.to_dense()
    A = 0.5 * (A + A.T)
    ev = torch.linalg.eigvalsh(A).flip(0)
    lam1 = float(ev[0])
    print(
        f"P1: P = {A.shape[0]}, lambda_1 = {lam1:.6f}, lambda_2 = {float(ev[1]):.6f} "
        f"(gap {float((ev[0] - ev[1]) / ev[0]):.2%}), "
        f"{int((ev < -1e-10 * lam1).sum())} eigenvalues below -1e-10 lambda_1"
    )
    starts = {}
    for s in range(args.seeds):
        g = torch.Generator().manual_seed(s)
        starts[f"random {s}"] = torch.randn(A.shape[0], generator=g, dtype=torch.float64)
    params = list(prob.model.parameters())
    loss = torch.nn.functional.cross_entropy(prob.model(prob.x), prob.y)
    starts["gradient"] = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)])
    print("| start | first product count with rel. error <= 1e-6 | error after 10 products |")
    print("|---|---|---|")
    for name, q in starts.items():
        errs = lanczos_errors(A, q.to(A.dtype), lam1, args.steps)
        hit = next((i + 1 for i, e in enumerate(errs) if e <= 1e-6), None)
        print(f"| {name} | {hit if hit else f'> {args.steps}'} | {errs[9]:.1e} |")


if __name__ == "__main__":
    main()

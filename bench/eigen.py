"""Top-k eigenpairs: hesslab's thick-restart Lanczos against ARPACK (scipy eigsh).

Run: ``python bench/eigen.py`` (Hessian of the trained 64-32-32-10 MLP on digits, problem
``P1`` of ``bench/problems.py``, P = 3,466) or ``python bench/eigen.py --synthetic`` (a
dense spiked spectrum of the same size). ``--smoke`` runs one seed; ``--block`` adds the
block-size study behind :func:`hesslab.linalg.lanczos.auto_block_size`.

Both solvers get the same operator; ARPACK sees it through ``op.to_scipy()``. Counted:
operator columns (a block of ``K`` counts ``K``) and wall time to convergence. The
tolerances differ in meaning: hesslab stops when ``||Hv - theta v|| <= tol * ||H||_est``
for every wanted pair; ARPACK when ``||Hv - theta v|| <= tol * |theta|`` (Ritz estimates),
stricter for the smaller wanted values. So the table reports the achieved true relative
residual ``max_i ||Hv_i - theta_i v_i|| / |lambda_1|`` of both (computed afterwards, not
counted), and ARPACK with ``tol=0`` (machine precision) as well. Writes the table to
``bench/results/eigen.md`` (``eigen_synthetic.md`` with ``--synthetic``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hesslab.linalg.lanczos import eigenpairs
from hesslab.operators.base import DenseOperator, LinearOperator


def real_operator(dtype: torch.dtype) -> tuple[LinearOperator, str]:
    """Hessian of the trained P1 MLP, or raise ImportError when hesslab.hessian is missing."""
    import hesslab
    from problems import make_problem

    prob = make_problem("P1", dtype=dtype)
    H = hesslab.hessian(prob.model, "ce", (prob.x, prob.y))
    return H, f"Hessian of {prob.description} (P={prob.num_params}, {dtype})"


def synthetic_operator(P: int = 3466, seed: int = 0) -> tuple[LinearOperator, str]:
    """Dense ``Q diag(lam) Q^T``: 10 outliers over a bulk concentrated near 0."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(P, generator=g, dtype=torch.float64)
    lam = 0.05 * u**4 - 0.005 * torch.rand(P, generator=g, dtype=torch.float64) ** 2
    lam[:10] = torch.tensor([1.0, 0.8, 0.65, 0.5, 0.4, 0.33, 0.27, 0.22, 0.18, 0.15])
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    A = (Q * lam) @ Q.T
    return DenseOperator(0.5 * (A + A.T)), f"synthetic spiked spectrum (P={P}, float64)"


class Counting(LinearOperator):
    """Wraps an operator and counts the columns it is applied to."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(op.shape[0], op.dtype, op.device)
        self.op, self.columns = op, 0

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.columns += V.shape[1]
        return self.op.matmat(V)


def true_rel_residual(op: LinearOperator, values, vectors, lam1: float) -> float:
    X = torch.as_tensor(np.asarray(vectors)).to(dtype=op.dtype, device=op.device)
    vals = torch.as_tensor(np.asarray(values), dtype=torch.float64)
    AX = op.matmat(X).to(torch.float64).cpu()
    R = AX - X.to(torch.float64).cpu() * vals
    return float(torch.linalg.vector_norm(R, dim=0).max()) / abs(lam1)


def run_arpack(op: LinearOperator, k: int, tol: float, seed: int):
    from scipy.sparse.linalg import eigsh

    counted = Counting(op)
    A = counted.to_scipy()
    v0 = np.random.default_rng(seed).standard_normal(op.shape[0])
    t0 = time.perf_counter()
    w, U = eigsh(A, k=k, which="LA", tol=tol, v0=v0)
    seconds = time.perf_counter() - t0
    order = np.argsort(-w)
    return w[order], U[:, order], counted.columns, seconds


def run_hesslab(op: LinearOperator, k: int, tol: float, seed: int, block_size=None):
    counted = Counting(op)
    t0 = time.perf_counter()
    res = eigenpairs(
        counted, k, tol=tol, generator=torch.Generator().manual_seed(seed), block_size=block_size
    )
    seconds = time.perf_counter() - t0
    assert counted.columns == res.num_matvecs
    return res, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", action="store_true", help="dense synthetic operator")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--ks", default="1,5")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="one seed")
    ap.add_argument("--block", action="store_true", help="add the block-size study")
    args = ap.parse_args()
    seeds = 1 if args.smoke else args.seeds
    dtype = getattr(torch, args.dtype)

    if args.synthetic:
        op, desc = synthetic_operator()
    else:
        try:
            op, desc = real_operator(dtype)
        except ImportError as err:  # hesslab.hessian or bench/problems missing
            print(f"(no model Hessian: {err}; using --synthetic)", file=sys.stderr)
            op, desc = synthetic_operator()
            args.synthetic = True
    P = op.shape[0]
    op.matmat(torch.randn(P, 1, dtype=op.dtype, device=op.device))  # warm-up (mode choice)
    ref = eigenpairs(op, 1, tol=1e-12, generator=torch.Generator().manual_seed(123))
    lam1 = float(ref.values[0])

    lines = [
        f"Top-k eigenpairs, hesslab vs ARPACK: {desc}; tol={args.tol:g}; "
        f"median over {seeds} seed(s); {platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        "",
        "| k | solver | matvecs | seconds | achieved rel. residual | matvecs / ARPACK |"
        " time / ARPACK |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in [int(s) for s in args.ks.split(",")]:
        names = ("arpack", "arpack tol=0", "hesslab")
        runs: dict[str, list[tuple[int, float, float]]] = {n: [] for n in names}
        for seed in range(seeds):  # interleaved, so load from other processes hits all alike
            for name in names:
                if name == "hesslab":
                    res, sec = run_hesslab(op, k, args.tol, seed)
                    mv, vals, vecs = res.num_matvecs, res.values.numpy(), res.vectors.cpu()
                else:
                    tol = 0.0 if name.endswith("tol=0") else args.tol
                    vals, vecs, mv, sec = run_arpack(op, k, tol, seed)
                runs[name].append((mv, sec, true_rel_residual(op, vals, vecs, lam1)))
        rows = {
            n: (
                statistics.median(r[0] for r in runs[n]),
                statistics.median(r[1] for r in runs[n]),
                max(r[2] for r in runs[n]),
            )
            for n in names
        }
        a_mv, a_s, _ = rows["arpack"]
        for name, (mv, sec, res) in rows.items():
            lines.append(
                f"| {k} | {name} | {mv:g} | {sec:.3f} | {res:.1e} | {mv / a_mv:.2f} | "
                f"{sec / a_s:.2f} |"
            )

    if args.block:
        lines += block_study(op, seeds, args.tol)

    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    name = "eigen_synthetic.md" if args.synthetic else "eigen.md"
    if not args.smoke:
        (out / name).write_text(text)


def block_study(op: LinearOperator, seeds: int, tol: float) -> list[str]:
    """Columns and block products to convergence per block size, and modeled cost.

    Cost model: a product of ``K`` columns costs ``1 + rho (K - 1)`` single products
    (``rho = 0.4``: CPU neural-net HVPs, 2.5x cheaper per column in large blocks;
    ``rho = 0.1``: GPU). The measured seconds per product of this operator are listed too.
    """
    P = op.shape[0]
    lines = ["", "Seconds per product of K columns (this operator, median of 5):", ""]
    per = {}
    for K in (1, 2, 4, 8):
        V = torch.randn(P, K, dtype=op.dtype, device=op.device)
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            op.matmat(V)
            ts.append(time.perf_counter() - t0)
        per[K] = statistics.median(ts)
    lines.append(" | ".join(f"K={K}: {per[K] * 1e3:.1f} ms" for K in per))
    lines += [
        "",
        "| k | b | columns | block products | modeled cost rho=0.4 (CPU) | rho=0.1 (GPU) |"
        " measured cost (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in (1, 5, 10, 20):
        for b in (1, 2, 4, 8):
            cols, prods = [], []
            for seed in range(seeds):
                res = eigenpairs(
                    op, k, tol=tol, block_size=b, generator=torch.Generator().manual_seed(seed)
                )
                cols.append(res.num_matvecs)
                prods.append(-(-res.num_matvecs // b))
            c, p = statistics.median(cols), statistics.median(prods)
            lines.append(
                f"| {k} | {b} | {c:g} | {p:g} | {p * (1 + 0.4 * (b - 1)):.1f} | "
                f"{p * (1 + 0.1 * (b - 1)):.1f} | {p * per[b]:.2f} |"
            )
    return lines


if __name__ == "__main__":
    main()

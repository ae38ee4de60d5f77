"""Train one benchmark problem, save it, and compute its ground truth (run as a script).

``python bench/peers/prepare.py P1 OUTDIR`` writes ``OUTDIR/P1.pt`` (the trained float64
model and the data: every library loads these same weights) and ``OUTDIR/P1_truth.json``:

* ``P1`` (P = 3,466): the dense float64 Hessian (single-column products, then
  ``torch.linalg.eigvalsh``): all eigenvalues, trace = their sum.
* ``P2``-``P4``: the top eigenvalues from a long float64 thick-restart Lanczos run
  (``hesslab.eigenpairs(k=8, tol=1e-10)``: every wanted pair has residual
  ``<= 1e-10 ||H||``), cross-checked against ARPACK (``eigsh(tol=0)``) on the same operator.
  Trace: BackPACK's exact ``DiagHessian`` where it supports the model, checked against a
  high-budget estimate (``hesslab.trace(..., method="krylov")`` with ``--trace-matvecs``
  products); otherwise that estimate itself, labelled as such with its standard error.

Runs in a fresh interpreter, so the benchmark's orchestrator never does numerical work
before it forks its measurement children.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/ (problems.py)


def backpack_trace(model, x, y) -> float:
    """Exact Hessian trace from BackPACK's DiagHessian (raises where unsupported)."""
    import copy

    from backpack import backpack, extend
    from backpack.extensions import DiagHessian

    m = extend(copy.deepcopy(model).eval())
    lossf = extend(torch.nn.CrossEntropyLoss())
    loss = lossf(m(x), y)
    with backpack(DiagHessian()):
        loss.backward()
    return float(sum(p.diag_h.sum() for p in m.parameters()))


def _dense_truth(H) -> dict:
    """All eigenvalues of the dense float64 Hessian (P1): the exact top and trace."""
    D = H.to_dense(chunk_size=1)  # single columns are the fastest products on CPU
    asym = float((D - D.T).abs().max() / D.abs().max())
    eigs = torch.linalg.eigvalsh(0.5 * (D + D.T)).numpy()
    return dict(
        eigs=eigs.tolist(),
        top=sorted(eigs.tolist(), reverse=True)[:10],
        trace=float(eigs.sum()),
        trace_kind="exact (sum of dense eigenvalues)",
        trace_stderr=0.0,
        top_kind="exact (dense float64 eigvalsh)",
        asymmetry=asym,
    )


def _top_truth(H) -> dict:
    """The top-8 eigenvalues from a long float64 Lanczos run, checked by ARPACK."""
    import hesslab

    truth: dict = {}
    res = hesslab.eigenpairs(
        H, 8, tol=1e-10, max_matvecs=5000, generator=torch.Generator().manual_seed(12345)
    )
    top = res.values.tolist()
    lam1 = abs(top[0])
    rel_res = (res.residual_norms / lam1).tolist()
    truth.update(
        top=top,
        top_kind=(
            f"float64 thick-restart Lanczos, {res.num_matvecs} products, max residual "
            f"{max(rel_res):.1e} |lambda_1|"
        ),
        top_residuals=rel_res,
        top_products=res.num_matvecs,
        top_converged=bool(res.all_converged),
    )
    try:  # independent check of the top 5 by ARPACK at machine precision
        from scipy.sparse.linalg import eigsh

        w = np.sort(eigsh(H.to_scipy(), k=5, which="LA", tol=0, return_eigenvectors=False))
        w = w[::-1]
        truth["arpack_top5"] = w.tolist()
        truth["arpack_max_rel_diff"] = float(np.max(np.abs(w - np.array(top[:5])) / lam1))
    except Exception as exc:
        truth["arpack_error"] = f"{type(exc).__name__}: {exc}"
    return truth


def _trace_truth(H, prob, trace_matvecs: int) -> dict:
    """A high-budget trace estimate, replaced by BackPACK's exact trace where it agrees."""
    import hesslab

    truth: dict = {}
    est = hesslab.trace(H, trace_matvecs, generator=torch.Generator().manual_seed(54321))
    truth.update(
        trace=est.value,
        trace_stderr=est.stderr,
        trace_kind=(
            f"estimate: hesslab krylov with {est.num_matvecs} products, "
            f"rel. stderr {est.stderr / abs(est.value):.1e}"
        ),
        trace_estimate=est.value,
        trace_estimate_stderr=est.stderr,
    )
    try:
        exact = backpack_trace(prob.model, prob.x, prob.y)
        z = abs(exact - est.value) / est.stderr if est.stderr > 0 else float("inf")
        truth["trace_backpack"] = exact
        truth["trace_backpack_z"] = z
        if z < 4:
            truth.update(
                trace=exact,
                trace_stderr=0.0,
                trace_kind=(
                    "exact: BackPACK DiagHessian (float64), within "
                    f"{z:.1f} stderr of a {est.num_matvecs}-product hesslab estimate"
                ),
            )
    except Exception as exc:
        truth["trace_backpack_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return truth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("problem")
    ap.add_argument("outdir")
    ap.add_argument("--trace-matvecs", type=int, default=384)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-truth", action="store_true", help="train and save only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import hesslab
    from problems import make_problem

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prob = make_problem(args.problem, dtype=torch.float64)
    train_s = time.perf_counter() - t0
    torch.save(
        {
            "name": prob.name,
            "description": prob.description,
            "model": prob.model,
            "x": prob.x,
            "y": prob.y,
        },
        out / f"{prob.name}.pt",
    )
    H = hesslab.hessian(prob.model, "ce", (prob.x, prob.y))
    P = prob.num_params
    truth: dict = {
        "problem": prob.name,
        "description": prob.description,
        "num_params": P,
        "num_data": int(prob.x.shape[0]),
        "dtype": "float64",
        "train_s": train_s,
    }
    t0 = time.perf_counter()
    if args.no_truth:
        truth.update(top=None, top_kind="not computed", trace=None, trace_kind="not computed")
    elif args.problem == "P1":
        truth.update(_dense_truth(H))
    else:
        truth.update(_top_truth(H))
        truth.update(_trace_truth(H, prob, args.trace_matvecs))
    truth["truth_s"] = time.perf_counter() - t0
    (out / f"{prob.name}_truth.json").write_text(json.dumps(truth))
    print(
        f"prepared {prob.name} (P={P}) in {train_s:.1f} s + truth {truth['truth_s']:.1f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()

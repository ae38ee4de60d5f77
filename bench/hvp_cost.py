"""Per-vector cost of a Hessian-vector product relative to one gradient, for each mode.

Run: ``python bench/hvp_cost.py`` (``--quick`` for fewer repeats). Prints a markdown
table and writes it to ``bench/results/hvp_cost.md``. Ratios, not seconds, are the
result: ``cost = seconds per product column / seconds per full-data gradient``.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

from common import interleaved_times

from hesslab import Objective
from hesslab.operators import HESSIAN_MODES, HessianOperator
from problems import make_problem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()
    reps = 5 if args.quick else 15
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    for pname in ("P1", "P3"):
        prob = make_problem(pname, dtype=dtype, steps=100)
        obj = Objective(prob.model, "ce", (prob.x, prob.y))
        P = obj.space.size
        g = torch.Generator().manual_seed(0)
        for K in (1, 16):
            V = torch.randn(P, K, generator=g).to(dtype)
            ops = {m: HessianOperator(obj, mode=m, cache_graph=True) for m in HESSIAN_MODES}
            auto = HessianOperator(obj)
            auto.matmat(V)  # makes the choice
            chosen = auto.chosen_mode("single" if K == 1 else "block")
            fns = {m: (lambda op=op, V=V: op.matmat(V)) for m, op in ops.items()}
            fns["auto"] = lambda auto=auto, V=V: auto.matmat(V)
            fns["gradient"] = obj.gradient
            secs = interleaved_times(fns, reps)
            costs = {m: secs[m] / K / secs["gradient"] for m in [*HESSIAN_MODES, "auto"]}
            best = min(costs[m] for m in HESSIAN_MODES)
            rows.append((prob.description, P, K, costs, chosen, costs["auto"] / best))
    head = "| problem | P | K | " + " | ".join(HESSIAN_MODES) + " | auto (choice) | auto / best |"
    lines = [
        f"HVP cost per column relative to one full-data gradient ({args.dtype}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__})",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for desc, P, K, costs, chosen, ratio in rows:
        cells = " | ".join(f"{costs[m]:.2f}" for m in HESSIAN_MODES)
        lines.append(
            f"| {desc} | {P} | {K} | {cells} | {costs['auto']:.2f} ({chosen}) | {ratio:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "results" / "hvp_cost.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()

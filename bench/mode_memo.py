"""What the automatic mode's process memo saves a SpectrumMonitor (seconds per measurement).

A digits MLP (64-32-32-10, 1,000 points, float64) trained by SGD; a
:class:`hesslab.train.SpectrumMonitor` measures ``lambda_max``, ``trace`` and per-layer
``layers`` at every step. Each measurement builds new Hessian operators (the full one and
one per layer block). With the memo (the default) only the first measurement times the
product modes; "no memo" forgets the choices before every operator, as before the memo
existed. Each variant runs in its own process, alternating, ``--repeats`` times; the table
shows the median over repeats of the mean seconds per measurement after the first.

    .venv/bin/python bench/mode_memo.py [--steps 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time


def _child(variant: str, steps: int) -> list[float]:
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    from hesslab.train import SpectrumMonitor

    torch.set_num_threads(1)
    hmod = importlib.import_module("hesslab.operators.hessian")
    if variant == "no memo":
        init = hmod.HessianOperator.__init__

        def forgetful(self, *a, **k):
            hmod.clear_mode_memo()
            init(self, *a, **k)

        hmod.HessianOperator.__init__ = forgetful
    X, y = load_digits(return_X_y=True)
    x = torch.tensor(X[:1000] / 16.0, dtype=torch.float64)
    y = torch.tensor(y[:1000])
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)
    ).double()
    monitor = SpectrumMonitor(
        (x, y), "ce", every=1, quantities=("lambda_max", "trace", "layers"), k=1
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seconds = []
    for step in range(steps):
        model.eval()
        t0 = time.perf_counter()
        monitor.step(model, step)
        seconds.append(time.perf_counter() - t0)
        model.train()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.steps)))
        return
    later: dict[str, list[float]] = {"memo": [], "no memo": []}
    first: dict[str, list[float]] = {"memo": [], "no memo": []}
    for _ in range(args.repeats):
        for variant in later:
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant, "--steps", str(args.steps)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            secs = json.loads(out.strip().splitlines()[-1])
            first[variant].append(secs[0])
            later[variant].append(statistics.mean(secs[1:]))
    print("| variant | first measurement (s) | later measurements (s, mean) | later / memo |")
    print("|---|---|---|---|")
    base = statistics.median(later["memo"])
    for variant in later:
        med = statistics.median(later[variant])
        print(
            f"| {variant} | {statistics.median(first[variant]):.3f} | {med:.3f} | "
            f"{med / base:.2f} |"
        )


if __name__ == "__main__":
    main()

"""Child-side helpers shared by the per-library runners: the saved problem, timing, counts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class Loaded:
    """A benchmark problem as every library sees it: the same trained weights and data."""

    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    num_params: int

    @property
    def criterion(self) -> nn.Module:
        return nn.CrossEntropyLoss()  # mean reduction, as hesslab's "ce"


def load_problem(path: str | Path, threads: int | None = None) -> Loaded:
    """Load a problem saved by ``prepare.py`` (model in eval mode, float64)."""
    if threads:
        torch.set_num_threads(int(threads))
    d = torch.load(path, weights_only=False)
    model = d["model"].eval()
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    P = sum(p.numel() for p in model.parameters())
    return Loaded(d["name"], model, d["x"], d["y"], P)


class Clock:
    """``with Clock() as c: ...`` then ``c.seconds``."""

    def __enter__(self) -> Clock:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0


def gradient_fn(prob: Loaded):
    """A plain PyTorch full-data gradient, the unit of the product-cost ratios."""
    params = [p for p in prob.model.parameters() if p.requires_grad]
    crit = prob.criterion

    def grad() -> None:
        loss = crit(prob.model(prob.x), prob.y)
        torch.autograd.grad(loss, params)

    return grad


def interleaved_times(fns: dict[str, Any], reps: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable, timed interleaved A B C A B C after warm-up."""
    import statistics

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def product_costs(
    prob: Loaded, reps: int, hvp: Any, block: tuple[Any, int] | None = None, **extra: Any
) -> dict:
    """The ``cost`` result of every adapter: a product's seconds over a gradient's.

    ``hvp()`` multiplies one vector, ``block = (fn, K)`` (optional) a block of ``K``
    columns; all are timed interleaved with :func:`gradient_fn` (:func:`interleaved_times`).

    Returns:
        ``{"grad_s", "hvp_s", "hvp_over_grad", "block_over_grad" (per column, or None),
        **extra}``.
    """
    fns = {"grad": gradient_fn(prob), "hvp": hvp}
    if block is not None:
        fns["block"] = block[0]
    secs = interleaved_times(fns, reps)
    return {
        "grad_s": secs["grad"],
        "hvp_s": secs["hvp"],
        "hvp_over_grad": secs["hvp"] / secs["grad"],
        "block_over_grad": secs["block"] / block[1] / secs["grad"] if block else None,
        **extra,
    }


def to_list(x: Any) -> list[float]:
    if isinstance(x, torch.Tensor):
        return [float(v) for v in x.detach().cpu().flatten()]
    return [float(v) for v in x]


def warm_torch() -> float:
    """Pay PyTorch's one-time per-process costs with plain torch, before any fork.

    The first ``torch.autograd.grad`` of a process imports ``torch.fx`` / sympy lazily and the
    first ``torch.func`` transform sets up functorch: together 3-4 s on the benchmark
    machine, a property of PyTorch, not of any library. The orchestrator runs this
    (single-threaded, so no OpenMP thread team exists when it forks) and every child
    inherits the warm state. Library-neutral: plain autograd (double backward, batched
    grads, ``backward(create_graph=True)``), ``torch.func`` (jvp of grad, vmap, jacrev) and
    small dense linear algebra on a tiny conv/BatchNorm/linear model.

    Returns:
        Seconds spent.
    """
    import warnings

    from torch.func import functional_call, grad, jacrev, jvp, vmap

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    m = (
        nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1),
            nn.BatchNorm2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8, 3),
            nn.Tanh(),
            nn.Linear(3, 2),
        )
        .double()
        .eval()
    )
    x = torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1])
    crit = nn.CrossEntropyLoss()
    params = list(m.parameters())
    loss = crit(m(x), y)
    gr = torch.autograd.grad(loss, params, create_graph=True)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    torch.autograd.grad(gr, params, grad_outputs=v, retain_graph=True)
    V = [torch.stack([a, a]) for a in v]
    torch.autograd.grad(gr, params, grad_outputs=V, is_grads_batched=True, retain_graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crit(m(x), y).backward(create_graph=True)
    for p in params:
        p.grad = None
    named = {k: t.detach() for k, t in m.named_parameters()}
    tang = dict(zip(named, v, strict=True))

    def f(p):
        return crit(functional_call(m, p, (x,)), y)

    jvp(grad(f), (named,), (tang,))
    vmap(lambda t: jvp(grad(f), (named,), (t,))[1])(
        {k: torch.stack([t, t]) for k, t in tang.items()}
    )
    jvp(jacrev(f), (named,), (tang,))
    A = torch.randn(4, 4, generator=g, dtype=torch.float64)
    A = A + A.T
    torch.linalg.eigh(A)
    torch.linalg.eigvalsh(A)
    torch.linalg.qr(A)
    return time.perf_counter() - t0

"""Reproduction of Wei & Schwab (2019), arXiv:1910.00195.

"How noise affects the Hessian spectrum in overparameterized neural networks": near a
degenerate valley of minima, SGD-like noise (covariance ``C ∝ H``) drifts the weights
along the valley towards smaller ``Tr H``; isotropic noise drifts them towards smaller
``log det`` of the Hessian's non-degenerate block; plain GD does not move.

Theory (docs/PAPERS.md §1 [DER]). With ``θ = (u along the valley, v across it)``,
``L ≈ ½ vᵀ H(u) v`` and ``dθ = −∇L dt + √η C^{1/2} dW``, the drift along the valley is
``−(η/4B) ∂_u Tr H`` for ``C = H/B`` and ``−(ησ²/4) ∂_u log det H_nondeg`` for
``C = σ² P_nondeg``.

Part 1, toy valley ``L(w) = ½(w₁w₂ − 1)²`` (and ``½(w₁w₂w₃ − 1)²`` at full size), many
independent runs vectorised as an ``[R, d]`` parameter tensor, started ON the valley at
an unbalanced point. Exact Hessian: with ``p = Πwᵢ``, ``r = p − 1``, ``vᵢ = ∂p/∂wᵢ``:
``H = v vᵀ + r ∇²p``; on the valley ``H = v vᵀ`` has one non-zero eigenvalue
``λ = ‖v‖² = Tr H`` (``w₁² + w₂²`` for depth 2; note ``Tr H = w₁² + w₂²`` holds off the
valley too). Four processes:

* **GD** (``torch.optim.SGD`` on the exact loss): the gradient vanishes on the valley:
  ``Tr H`` stays exactly put.
* **SGD with label noise** (``torch.optim.SGD`` on ``½(p − 1 − s ε)²`` with a fresh
  ``ε ~ N(0, 1)`` each step, i.e. a non-realizable online regression): the gradient noise
  ``s ε v`` has covariance ``s² v vᵀ = s² H`` on the valley and persists there (the
  PITFALL of PAPERS.md: a realizable problem would have no noise at zero loss). Depth 2
  exactly: ``D = w₁² − w₂²`` obeys ``ΔD = −η²(r − sε)² D``; with the stationary spread of
  ``r`` (``Var r = ηλ s² / (2 − ηλ)``) this gives the prediction
  ``dD/dk = −2η²s² D / (2 − ηλ)``, ``λ = Tr H = √(D² + 4)`` on the valley: ``Tr H`` falls
  towards the balanced minimum ``2``.
* **GD + H-shaped noise** (:class:`~hesslab.train.optim.HessianShapedNoiseGD` with a
  ``noise_fn`` drawing ``ξ ~ N(0, s² v vᵀ)``): the same covariance by injection; on this
  toy it is the label-noise process with Gaussian noise decoupled from the drift.
* **GD + isotropic noise** (:class:`~hesslab.train.optim.NoisyGD`, ``convention="sgd"``:
  ``θ ← θ − η g + η σ ξ``, ``C = σ² I``): on the valley ``E[ΔD] = −η² r² D ≈ 0``, so
  ``E[D]`` is (nearly) a martingale and ``E[Tr H] = E[√(D² + 4)]`` does NOT fall (it rises
  by Jensen and by the off-valley spread), while ``D`` diffuses with variance
  ``4η²σ² λ`` per step, which gives ``E[Δ log λ] < 0``: isotropic noise lowers the
  mean ``log det`` of the (here 1-D) non-degenerate block, not the mean trace. On this toy
  the two theories are told apart by *mean of λ* vs *mean of log λ*.

Part 2, an MLP on digits. The data set is made NON-realizable on purpose: ``n`` digits
inputs, each twice, with targets ``onehot ± s·e`` (``e ~ N(0, I₁₀)`` fixed, antithetic),
MSE loss. The minimum has ``f(xᵢ) = onehot(yᵢ)``, loss ``mean(s² e²)`` and per-sample
gradients that do NOT vanish there, so minibatch SGD keeps its noise; the network is
overparameterised (``P > n·10``), so the minima form a degenerate manifold. Trained to
the minimum (Adam, then full-batch GD to ``‖∇L‖`` ≈ 1e-6), then continued with (a) GD,
(b) minibatch SGD with batch ``B`` (with replacement), (c) GD + isotropic noise of the
same total power (``σ² = tr C_B / P``, ``"sgd"`` convention), (d) GD + Gaussian noise
with covariance ``C_B`` from per-sample gradients
(:class:`~hesslab.train.optim.HessianShapedNoiseGD`). Tracked: exact ``Tr H`` and
``Σ_{i≤r} log λᵢ`` of the dense Hessian (``eigenpairs(method="auto")``: dense up to
``P = 2000``; otherwise :func:`hesslab.trace` with its stderr and
:func:`hesslab.logdet`). The injected noise covariance is measured (trace of the
empirical covariance of many draws vs ``tr C_B``).

Claims are decided with standard errors over runs (:mod:`hesslab.experiments._claims`):
"falls" holds only when the mean decrease exceeds ``z_holds`` (3) standard errors over
at least 3 runs, and does not hold when the mean rises by as much; one MLP run per
process (the smoke size) leaves the MLP claims undecided. Toy runs that diverge
(non-finite, or ``|w| ≥`` :data:`DIVERGED_ABS`) are excluded from the statistics from
the step they diverge, and counted in the table and in every claim (at the full size, 2
of the 4,000 depth-3 isotropic runs).

Run: ``hesslab reproduce wei2019 --smoke`` (toy depth 2 plus a short MLP part, under a
minute on 2 cores) or ``hesslab reproduce wei2019`` (see :data:`FULL_SECONDS`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hesslab.data import balanced_subset, digits
from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments._claims import (
    Verdict,
    add_claim,
    decide,
    decide_equal,
    decide_estimate,
    record,
)
from hesslab.linalg.lanczos import use_dense
from hesslab.models import mlp
from hesslab.objective import Objective
from hesslab.operators import hessian
from hesslab.quantities import Settings, measure
from hesslab.report import plots
from hesslab.report.run import RunDir
from hesslab.train import fit
from hesslab.train.optim import HessianShapedNoiseGD, NoisyGD, SGDNoiseSampler

__all__ = [
    "FULL_SECONDS",
    "SMOKE_SECONDS",
    "SPEC",
    "Wei2019Config",
    "run",
    "toy_hessian",
]

logger = logging.getLogger(__name__)

#: Measured wall time of the smoke size, one thread, on a loaded 2-core machine (45-54 s
#: wall, about 20 s CPU).
SMOKE_SECONDS = 50.0
#: Wall time of the full size: a full run here (results/wei2019) took 103 s CPU with one
#: thread (985 s wall with the 2 cores shared ~9 ways); the toy part alone 132 s wall.
FULL_SECONDS = 110.0

S1 = "1. Toy degenerate valley"
S2 = "2. MLP on digits (non-realizable)"
S3 = "3. Injected noise covariance"

OPTIMIZERS = ("GD", "SGD", "isotropic", "H-shaped")


@dataclass(frozen=True)
class Wei2019Config:
    """Every knob of the reproduction. Build with :meth:`smoke` or :meth:`full`.

    Attributes:
        seed: seed of everything (toy runs, data, init, noise).
        toy_depths: depths ``d`` of the product valleys ``½(Πwᵢ − 1)²``.
        toy_runs: ``R`` independent runs per process (vectorised).
        toy_steps: steps per run.
        toy_lr: ``η`` of every toy process.
        toy_label_noise: ``s``, label-noise std (SGD) and H-shaped noise scale.
        toy_iso_std: ``σ`` of the isotropic noise (``"sgd"`` convention, ``C = σ² I``);
            ``None``: ``σ² = s² Tr H(w₀) / d``, the same total power as the SGD noise at the
            start.
        toy_record_every: steps between recorded points.
        mlp: run part 2.
        mlp_per_class: digits inputs per class (each used twice).
        mlp_target_noise: ``s`` of the antithetic target perturbation.
        mlp_widths: hidden widths.
        mlp_activation: hidden activation (smooth ``tanh`` keeps the Hessian continuous).
        mlp_train_steps: Adam steps to the minimum (then ``mlp_polish_steps`` of GD).
        mlp_polish_steps: full-batch GD steps at ``mlp_lr`` after Adam.
        mlp_lr: learning rate of all continued processes.
        mlp_batch: ``B`` of SGD and of the H-shaped noise.
        mlp_steps: continued steps per process.
        mlp_measure: number of measurements over the continued steps (plus the start).
        mlp_runs: independent continuations per process (noise seeds).
        mlp_logdet_rank: ``r`` of ``Σ_{i≤r} log λᵢ``.
        dense_max: largest ``P`` for the dense Hessian of part 3's cosine(H, C_B) (the
            tracked ``Tr H`` and logdet follow ``eigenpairs(method="auto")``).
        noise_draws: draws used to measure the injected covariance.
        z_holds: a change "holds" when it exceeds this many standard errors.
        dtype: ``"float64"`` (default) or ``"float32"``.
    """

    seed: int = 0
    toy_depths: tuple[int, ...] = (2,)
    toy_runs: int = 1000
    toy_steps: int = 2000
    toy_lr: float = 0.05
    toy_label_noise: float = 0.5
    toy_iso_std: float | None = None
    toy_record_every: int = 50
    mlp: bool = True
    mlp_per_class: int = 2
    mlp_target_noise: float = 0.5
    mlp_widths: tuple[int, ...] = (8,)
    mlp_activation: str = "tanh"
    mlp_train_steps: int = 1500
    mlp_polish_steps: int = 500
    mlp_lr: float = 0.5
    mlp_batch: int = 2
    mlp_steps: int = 300
    mlp_measure: int = 3
    mlp_runs: int = 1
    mlp_logdet_rank: int = 10
    dense_max: int = 2000
    noise_draws: int = 400
    z_holds: float = 3.0
    dtype: str = "float64"

    @classmethod
    def smoke(cls) -> Wei2019Config:
        """Toy depth 2 (1,000 runs x 2,000 steps) and a short MLP part (about 20 s CPU)."""
        return cls()

    @classmethod
    def full(cls) -> Wei2019Config:
        """Depths 2 and 3, 4,000 runs x 5,000 steps; MLP 64-16-10 on 30 inputs, 4 runs."""
        return cls(
            toy_depths=(2, 3),
            toy_runs=4000,
            toy_steps=5000,
            toy_record_every=100,
            mlp_per_class=3,
            mlp_widths=(16,),
            mlp_train_steps=3000,
            mlp_polish_steps=2000,
            mlp_batch=4,
            mlp_steps=3000,
            mlp_measure=10,
            mlp_runs=4,
            noise_draws=2000,
        )


# ---------------------------------------------------------------------------------------
# helpers


def _dtype(cfg: Wei2019Config) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[cfg.dtype]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _mean_se(x: Tensor) -> tuple[float, float]:
    x = x.to(torch.float64)
    return float(x.mean()), float(x.std() / math.sqrt(x.numel())) if x.numel() > 1 else 0.0


def _others(w: Tensor, skip: tuple[int, ...]) -> Tensor:
    """``Π_{k ∉ skip} w[:, k]`` (``[R]``), without dividing."""
    out = torch.ones(w.shape[0], dtype=w.dtype, device=w.device)
    for k in range(w.shape[1]):
        if k not in skip:
            out = out * w[:, k]
    return out


def toy_hessian(w: Tensor) -> Tensor:
    """Exact Hessians ``[R, d, d]`` of ``L(w) = ½(Πᵢ wᵢ − 1)²`` at ``w`` (``[R, d]``).

    ``H = v vᵀ + (p − 1) ∇²p`` with ``p = Πwᵢ``, ``vᵢ = Π_{k≠i} w_k`` and
    ``(∇²p)ᵢⱼ = Π_{k≠i,j} w_k`` (``i ≠ j``), ``0`` on the diagonal.
    """
    R, d = w.shape
    p = _others(w, ())
    v = torch.stack([_others(w, (i,)) for i in range(d)], 1)
    H = v[:, :, None] * v[:, None, :]
    for i in range(d):
        for j in range(d):
            if i != j:
                H[:, i, j] += (p - 1) * _others(w, (i, j))
    return H


def _toy_start(depth: int, dtype: torch.dtype) -> Tensor:
    """An unbalanced point on the valley: ``(4, 1/4)``, ``(4, 1/2, 1/2)``, ..."""
    rest = 0.25 ** (1.0 / (depth - 1))
    return torch.tensor([4.0] + [rest] * (depth - 1), dtype=dtype)


def _toy_stats(w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-run ``Tr H`` and ``log λ_max(H)`` (the non-degenerate block is 1-D)."""
    H = toy_hessian(w.detach())
    tr = H.diagonal(dim1=1, dim2=2).sum(1)
    lmax = torch.linalg.eigvalsh(H)[:, -1]
    return tr, torch.log(lmax.clamp_min(torch.finfo(H.dtype).tiny))


#: A toy run counts as diverged once an iterate is non-finite or exceeds this in size.
DIVERGED_ABS = 1e6


def _alive(w: Tensor, alive: Tensor, w0: Tensor) -> Tensor:
    """Update the mask of runs that never diverged; park diverged runs at ``w0``.

    A diverged run keeps no say in any statistic (the count is reported); parking it at
    the finite start keeps the vectorised arithmetic (and ``eigvalsh``) finite.
    """
    with torch.no_grad():
        ok = torch.isfinite(w).all(1) & (w.abs() < DIVERGED_ABS).all(1)
        alive = alive & ok
        if not bool(alive.all()):
            w[~alive] = w0
    return alive


def _toy_optimizer(name, w, lr, iso, g, R, depth, s) -> torch.optim.Optimizer:
    if name == "GD" or name == "SGD":
        return torch.optim.SGD([w], lr=lr)
    if name == "isotropic":
        return NoisyGD([w], lr=lr, noise_std=iso, generator=g, convention="sgd")

    def noise_fn(step: int, theta: Tensor) -> Tensor:
        wt = theta.view(R, depth)
        v = torch.stack([_others(wt, (i,)) for i in range(depth)], 1)
        z = torch.randn(R, 1, generator=g, dtype=wt.dtype)
        return (s * v * z).reshape(-1)  # Cov = s² v vᵀ per run

    return HessianShapedNoiseGD([w], lr=lr, noise_fn=noise_fn, convention="sgd")


class _Valley(torch.nn.Module):
    """``R`` independent copies of the toy valley: ``forward`` is ``Πᵢ wᵢ`` per run (``[R]``).

    The input is only a placeholder (one row per run): :func:`hesslab.train.fit` trains
    it full batch with the summed loss :func:`_valley_loss` against targets ``1``.
    """

    def __init__(self, w0: Tensor, runs: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w0.repeat(runs, 1))

    def forward(self, x: Tensor) -> Tensor:
        return _others(self.w, ())


def _valley_loss(out: Tensor, target: Tensor) -> Tensor:
    """``½ Σ_r (Πw_r − t_r)²``, the sum of the runs' toy losses."""
    return 0.5 * ((out - target) ** 2).sum()


def _toy_process(name: str, cfg: Wei2019Config, depth: int, seed: int) -> dict[str, np.ndarray]:
    """One process on ``R`` independent copies of the toy valley; records over time.

    Trained by :func:`hesslab.train.fit` (full batch; label-noise SGD is ``label_noise``
    on the targets). Runs that diverge (non-finite or ``|w| ≥`` :data:`DIVERGED_ABS`) are
    parked at the start after every update (fit's ``project``) and dropped from the
    statistics from then on; ``"diverged"`` counts them (at each record).
    """
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    R, lr, s = cfg.toy_runs, cfg.toy_lr, cfg.toy_label_noise
    w0 = _toy_start(depth, dtype)
    g = _gen(seed)
    tr0 = float(toy_hessian(w0[None]).diagonal(dim1=1, dim2=2).sum())
    iso = cfg.toy_iso_std if cfg.toy_iso_std is not None else s * math.sqrt(tr0 / depth)
    state = {"alive": torch.ones(R, dtype=torch.bool)}
    steps, tr_m, ld_m, dd, dead = [], [], [], [], []

    def park(net: torch.nn.Module, step: int) -> None:
        state["alive"] = _alive(net.w, state["alive"], w0)

    def record(net: torch.nn.Module, k: int, info: dict[str, Any]) -> None:
        if k % cfg.toy_record_every == 0 or k == cfg.toy_steps:
            alive, w = state["alive"], net.w.detach()
            tr, ld = _toy_stats(w[alive])
            steps.append(k)
            for lst, x in ((tr_m, tr), (ld_m, ld)):
                lst.append(_mean_se(x))
            dd.append(float((w[alive][:, 0] ** 2 - w[alive][:, 1] ** 2).mean()))
            dead.append(R - int(alive.sum()))

    fit(
        _Valley(w0, R), (torch.zeros(R, 1, dtype=dtype), torch.ones(R, dtype=dtype)),
        loss=_valley_loss, batch_size=None, steps=cfg.toy_steps, generator=g,
        optimizer=lambda params: _toy_optimizer(name, params[0], lr, iso, g, R, depth, s),
        label_noise=s if name == "SGD" else None, project=park, callbacks=record,
        chunk_size=None,
    )  # fmt: skip
    return {
        "steps": np.asarray(steps, dtype=np.float64),
        "trace": np.asarray([x[0] for x in tr_m]),
        "trace_se": np.asarray([x[1] for x in tr_m]),
        "logdet": np.asarray([x[0] for x in ld_m]),
        "logdet_se": np.asarray([x[1] for x in ld_m]),
        "D": np.asarray(dd),
        "diverged": np.asarray(dead),
        "iso_std": np.asarray(iso),
    }


def _label_noise_prediction(cfg: Wei2019Config, steps: np.ndarray) -> np.ndarray:
    """Depth-2 prediction of ``Tr H(k)`` under label-noise SGD (module docstring)."""
    lr, s = cfg.toy_lr, cfg.toy_label_noise
    w0 = _toy_start(2, torch.float64)
    D = float(w0[0] ** 2 - w0[1] ** 2)
    out, k = [], 0
    for target in steps:
        while k < target:
            lam = math.sqrt(D * D + 4)
            D -= 2 * lr**2 * s**2 * D / max(2 - lr * lam, 1e-3)
            k += 1
        out.append(math.sqrt(D * D + 4))
    return np.asarray(out)


def _change(m: np.ndarray, se: np.ndarray) -> tuple[float, float]:
    """End minus start and its stderr (runs independent; start is deterministic or not)."""
    return float(m[-1] - m[0]), float(math.hypot(se[-1], se[0]))


def _decision(r: dict[str, Any], key: str, z: float, direction: str) -> Verdict:
    """The verdict on the change ``r[key]`` (mean over the runs that did not diverge)."""
    delta, se, n, bad = r[key], r[key + "_se"], r["runs_kept"], r["diverged"]
    if direction == "falls":
        return decide_estimate(
            delta, se, n, direction="less", z=z, excluded=bad, what=f"Δ {key.split('_')[0]}"
        )
    if direction == "flat":
        return decide_equal(delta, se, n, tol=1e-9, z=z, excluded=bad, what="Δ trace")
    raise ValueError(direction)


def _toy_claims(
    run_dir: RunDir, depth: int, rec: dict[str, dict[str, Any]], z: float
) -> tuple[dict[str, bool | None], dict[str, dict[str, Any]]]:
    """The four toy claims at ``depth``, each decided over the runs (``z`` s.e.)."""
    gd, sgd, hs, iso = rec["GD"], rec["SGD"], rec["H-shaped"], rec["isotropic"]
    verdicts = {
        "gd_flat": _decision(gd, "trace_change", z, "flat"),
        "sgd_falls": _decision(sgd, "trace_change", z, "falls"),
        "hshaped_falls": _decision(hs, "trace_change", z, "falls"),
        "iso_logdet_falls": _decision(iso, "logdet_change", z, "falls"),
    }
    texts = {
        "gd_flat": f"depth {depth}: under GD Tr H stays flat on the valley",
        "sgd_falls": f"depth {depth}: SGD (label noise, C ∝ H) lowers Tr H (Wei & Schwab 2019)",
        "hshaped_falls": f"depth {depth}: GD + H-shaped noise behaves like SGD (lowers Tr H)",
        "iso_logdet_falls": f"depth {depth}: isotropic noise lowers log det of the "
        "non-degenerate block",
    }
    measured = {
        "gd_flat": "Δ Tr H",
        "sgd_falls": f"Δ Tr H (from {sgd['trace_start']:.4g})",
        "hshaped_falls": "Δ Tr H",
        "iso_logdet_falls": "Δ mean log λ",
    }
    for key, v in verdicts.items():
        add_claim(run_dir, S1, texts[key], v, measured[key])
    return {k: v.holds for k, v in verdicts.items()}, {k: v.as_dict() for k, v in verdicts.items()}


# ---------------------------------------------------------------------------------------
# part 1


def _part1(cfg: Wei2019Config, run_dir: RunDir, tick: Callable[[str], None]) -> dict[str, Any]:
    run_dir.add_text(
        S1,
        "Toy valley L(w) = ½(Π wᵢ − 1)², started on the valley at an unbalanced point "
        f"({cfg.toy_runs} independent runs per process, lr {cfg.toy_lr}, label-noise std "
        f"{cfg.toy_label_noise}). Exact 2x2 / dxd Hessians. Bands are ± 1 stderr over runs. "
        "SGD = label-noise SGD (fresh Gaussian target noise each step: non-realizable, "
        "the noise persists on the valley); H-shaped = injected Gaussian noise with "
        "covariance s² v vᵀ (= s² H on the valley); isotropic = NoisyGD (C = σ² I).",
    )
    out: dict[str, Any] = {}
    z = cfg.z_holds
    for depth in cfg.toy_depths:
        res = {
            name: _toy_process(name, cfg, depth, cfg.seed + 101 * i + 7 * depth)
            for i, name in enumerate(OPTIMIZERS)
        }
        tick(f"toy depth {depth}")
        steps = res["GD"]["steps"]
        series_tr = {n: (r["trace"], r["trace_se"]) for n, r in res.items()}
        series_ld = {n: (r["logdet"], r["logdet_se"]) for n, r in res.items()}
        pred = None
        if depth == 2:
            pred = _label_noise_prediction(cfg, steps)
            series_tr["SGD prediction (D ODE)"] = pred
        run_dir.add_figure(
            S1,
            f"toy_d{depth}_trace",
            plots.plot_series(steps, series_tr, title=f"Tr H, depth {depth}", ylabel="mean Tr H"),
            caption="Mean Tr H over runs vs steps (± stderr). Expected: GD flat, SGD and "
            "H-shaped fall, isotropic does not fall.",
        )
        run_dir.add_figure(
            S1,
            f"toy_d{depth}_logdet",
            plots.plot_series(
                steps,
                series_ld,
                title=f"log λ (non-degenerate block), depth {depth}",
                ylabel="mean log λ_max(H)",
            ),
            caption="Mean log of the non-zero Hessian eigenvalue vs steps (± stderr). "
            "Expected: isotropic noise lowers it although it does not lower the mean Tr H.",
        )
        rows, rec = [], {}
        for n, r in res.items():
            dtr, dtr_se = _change(r["trace"], r["trace_se"])
            dld, dld_se = _change(r["logdet"], r["logdet_se"])
            tr_a, tr_b = float(r["trace"][0]), float(r["trace"][-1])
            rec[n] = {
                "trace_change": dtr,
                "trace_change_se": dtr_se,
                "logdet_change": dld,
                "logdet_change_se": dld_se,
                "trace_start": tr_a,
                "trace_end": tr_b,
                "diverged": int(r["diverged"][-1]),
                "runs_kept": cfg.toy_runs - int(r["diverged"][-1]),
            }
            rows.append(
                {
                    "process": n,
                    "Tr H start": tr_a,
                    "Tr H end": tr_b,
                    "Δ Tr H": dtr,
                    "± se": dtr_se,
                    "Δ log λ": dld,
                    "± se ": dld_se,
                    "diverged runs": int(r["diverged"][-1]),
                }
            )
            run_dir.add_array(f"toy_d{depth}_{n}_trace", r["trace"])
            run_dir.add_array(f"toy_d{depth}_{n}_logdet", r["logdet"])
        run_dir.add_array(f"toy_d{depth}_steps", steps)
        run_dir.add_table(
            S1,
            f"toy depth {depth}",
            rows,
            caption="Start and end of each process; Δ = end − start; ± = s.e. over the "
            f"runs that did not diverge (diverged runs, non-finite or |w| ≥ {DIVERGED_ABS:g}, "
            "are excluded from every statistic from the step they diverge; their count is "
            "the last column).",
        )
        claims, verdicts = _toy_claims(run_dir, depth, rec, z)
        f = lambda r, k: f"{r[k]:+.4g} ± {r[k + '_se']:.2g}"  # noqa: E731
        iso = rec["isotropic"]
        run_dir.add_text(
            S1,
            f"Depth {depth}: isotropic noise also lowers the mean Tr H here (Δ = "
            f"{f(iso, 'trace_change')}): along a 1-D valley with a rank-1 non-degenerate "
            "block, λ and log λ are minimised at the same (balanced) point, so the two "
            "theories predict the same direction; only the rate differs (the off-valley "
            "spread of r = Πw − 1 gives E[ΔD] = −η² E[r²] D for D = w₁² − w₂²). Separating "
            "Tr H from log det needs a higher-rank non-degenerate block (the MLP part).",
        )
        entry: dict[str, Any] = {
            "changes": rec,
            "claims": claims,
            "verdicts": verdicts,
            "diverged": {n: r["diverged"] for n, r in rec.items()},
            "iso_std": float(res["isotropic"]["iso_std"]),
        }
        if pred is not None:
            meas = float(res["SGD"]["trace"][-1])
            rel = abs(meas - pred[-1]) / pred[-1]
            entry["sgd_prediction_end"], entry["sgd_prediction_rel_error"] = float(pred[-1]), rel
            run_dir.add_scalar(S1, "label-noise SGD: predicted final Tr H", pred[-1])
            run_dir.add_scalar(
                S1, "label-noise SGD: measured final Tr H", meas, res["SGD"]["trace_se"][-1]
            )
            record(
                run_dir,
                S1,
                "depth 2: the D-ODE prediction dD/dk = −2η²s²D/(2 − ηλ) gives the mean "
                "Tr H under label-noise SGD (within 15%)",
                f"predicted {pred[-1]:.4g}, measured {meas:.4g} (rel. diff {rel:.1%})",
                rel < 0.15,
            )
        out[depth] = entry
    return out


# ---------------------------------------------------------------------------------------
# part 2


def _mlp_data(cfg: Wei2019Config) -> tuple[Tensor, Tensor]:
    dtype = _dtype(cfg)
    train = digits(dtype=dtype, seed=cfg.seed).train
    sub = balanced_subset(train, cfg.mlp_per_class, seed=cfg.seed)
    y = F.one_hot(sub.y, 10).to(dtype)
    e = cfg.mlp_target_noise * torch.randn(y.shape, generator=_gen(cfg.seed + 1), dtype=dtype)
    return torch.cat([sub.x, sub.x]), torch.cat([y + e, y - e])


def _measure(cfg: Wei2019Config, model: torch.nn.Module, data, seed: int) -> dict[str, float]:
    """``Tr H``, ``Σ_{i≤r} log λᵢ`` and ``λ_max`` of the MSE Hessian at ``model``.

    The top ``r`` eigenvalues come from ``eigenpairs(method="auto")``: dense ``eigh`` for
    small ``P`` (then the trace is exact too: ``P`` unit-vector products, stderr 0), else
    Lanczos (then the trace is the Krylov estimate with its stderr).
    """
    H = hessian(model, "mse", data)
    r = min(cfg.mlp_logdet_rank, H.shape[0])
    s = Settings(k=r, tol=1e-8, method="auto", return_vectors=False, num_matvecs=96)
    top = measure("top_k", H, s, _gen(seed + 1))
    method = "exact" if top.method == "dense" else "krylov"
    t = measure("trace", H, s.replace(trace_method=method), _gen(seed))
    ld = measure("logdet", H, s.replace(given={"top_k": top}))
    return {
        "trace": t.value,
        "trace_se": t.stderr,
        "logdet": ld.value,
        "lambda_max": float(ld.values.max()),
    }


def _train_to_minimum(cfg: Wei2019Config, data) -> torch.nn.Module:
    """Full-batch Adam (lr 1e-2), then full-batch GD polish at ``mlp_lr`` (MSE)."""
    model = mlp(
        64, cfg.mlp_widths, 10, activation=cfg.mlp_activation, seed=cfg.seed, dtype=_dtype(cfg)
    )
    common = dict(loss="mse", batch_size=None, chunk_size=None)
    res = fit(model, data, optimizer="adam", lr=1e-2, steps=cfg.mlp_train_steps, **common)
    res = fit(res.model, data, optimizer="gd", lr=cfg.mlp_lr, steps=cfg.mlp_polish_steps, **common)
    return res.model


_MEASURED = ("trace", "trace_se", "logdet", "lambda_max")


def _continue_optimizer(
    cfg: Wei2019Config, model: torch.nn.Module, data, name: str, g, iso_std: float
) -> Callable[[list], torch.optim.Optimizer]:
    """The factory ``params -> optimizer`` of one continuation process."""
    lr, B = cfg.mlp_lr, cfg.mlp_batch
    if name in ("GD", "SGD"):
        return lambda params: torch.optim.SGD(params, lr=lr)
    if name == "isotropic":
        return lambda params: NoisyGD(
            params, lr=lr, noise_std=iso_std, generator=g, convention="sgd"
        )
    obj = Objective(model, "mse", data, check_determinism=False)
    return lambda params: HessianShapedNoiseGD(
        params, lr=lr, batch_size=B, objective=obj, generator=g
    )


def _continue(
    cfg: Wei2019Config,
    start: torch.nn.Module,
    data,
    name: str,
    seed: int,
    iso_std: float,
    measure_at: set[int],
) -> dict[str, list[float]]:
    """Continue ``mlp_steps`` updates of one process from ``start``, measured by a callback.

    Trained by :func:`fit`: SGD draws batches with replacement, the others are full batch.

    A run whose weights turn non-finite records NaN from then on (fit stops it at the
    first non-finite loss; the remaining records are NaN, counted by the claims).
    """
    import copy

    x, y = data
    model = copy.deepcopy(start)  # trained in place: the H-shaped noise reads its objective
    g = _gen(seed)
    rec: dict[str, list[float]] = {key: [] for key in ("step", *_MEASURED, "loss")}
    state = {"diverged": False}

    def measure(net: torch.nn.Module, k: int, info: dict[str, Any] | None = None) -> None:
        if k not in measure_at:
            return
        finite = all(bool(torch.isfinite(p).all()) for p in net.parameters())
        state["diverged"] = state["diverged"] or not finite
        bad = state["diverged"]
        m = dict.fromkeys(_MEASURED, math.nan) if bad else _measure(cfg, net, data, seed + k)
        rec["step"].append(k)
        for key in _MEASURED:
            rec[key].append(m[key])
        with torch.no_grad():
            rec["loss"].append(math.nan if bad else float(F.mse_loss(net(x), y)))

    sgd = name == "SGD"
    res = fit(
        model, data, loss="mse", optimizer=_continue_optimizer(cfg, model, data, name, g, iso_std),
        batch_size=cfg.mlp_batch if sgd else None, sampling="replacement",
        steps=cfg.mlp_steps, generator=g, callbacks=measure, chunk_size=None, inplace=True,
    )  # fmt: skip
    state["diverged"] = state["diverged"] or res.stopped_by == "diverged"
    for k in sorted(measure_at):
        if k > res.steps:
            measure(model, k)
    return rec


def _mlp_claims(
    run_dir: RunDir,
    summary: dict[str, Any],
    changes: dict[str, dict[str, np.ndarray]],
    z: float,
) -> tuple[dict[str, bool | None], dict[str, dict[str, Any]]]:
    """The MLP claims, each a statistic over the noise seeds (``z`` s.e., ≥ 3 seeds).

    GD is deterministic (one run is its whole distribution): its claim is a relative
    change below 1e-3.
    """
    gd = summary["GD"]
    gd_rel = abs(gd["trace_change"]) / max(abs(gd["trace_start"]), 1e-300)
    verdicts: dict[str, Verdict] = {
        "sgd_falls": decide(changes["SGD"]["trace_change"], rule="mean", direction="less", z=z),
        "hshaped_falls": decide(
            changes["H-shaped"]["trace_change"], rule="mean", direction="less", z=z
        ),
        "iso_logdet_falls": decide(
            changes["isotropic"]["logdet_change"], rule="mean", direction="less", z=z
        ),
    }
    record(
        run_dir,
        S2,
        "MLP: GD at the minimum keeps Tr H flat (relative change < 1e-3)",
        f"relative change {gd_rel:.2g} (GD is deterministic: one run) → "
        f"{'holds' if gd_rel < 1e-3 else 'does not hold'} [relative change < 1e-3]",
        gd_rel < 1e-3,
    )
    add_claim(run_dir, S2, "MLP: SGD lowers Tr H", verdicts["sgd_falls"], "Δ Tr H")
    add_claim(
        run_dir, S2, "MLP: GD + H-shaped noise lowers Tr H like SGD", verdicts["hshaped_falls"],
        "Δ Tr H",
    )  # fmt: skip
    add_claim(
        run_dir, S2, "MLP: isotropic noise lowers the top-r log det", verdicts["iso_logdet_falls"],
        "Δ log det",
    )  # fmt: skip
    claims = {"gd_flat": gd_rel < 1e-3, **{k: v.holds for k, v in verdicts.items()}}
    return claims, {k: v.as_dict() for k, v in verdicts.items()}


def _part2(cfg: Wei2019Config, run_dir: RunDir, tick: Callable[[str], None]) -> dict[str, Any]:
    data = _mlp_data(cfg)
    x, y = data
    t0 = time.perf_counter()
    start = _train_to_minimum(cfg, data)
    obj = Objective(start, "mse", data)
    P, N = obj.space.size, obj.num_data
    grad_norm = float(obj.gradient().norm())
    loss0 = obj.value()
    tick("MLP trained to the minimum")
    sampler = SGDNoiseSampler(obj, cfg.mlp_batch)
    S = sampler.factor_matrix()
    trC = float((S * S).sum())
    iso_std = math.sqrt(trC / P)
    run_dir.add_text(
        S2,
        f"Digits, {cfg.mlp_per_class} inputs per class, each twice with antithetic target "
        f"perturbations ±{cfg.mlp_target_noise}·e (N = {N}, non-realizable: per-sample "
        f"gradients persist at the minimum). MLP 64-{'-'.join(map(str, cfg.mlp_widths))}-10 "
        f"({cfg.mlp_activation}), P = {P}, MSE. At the start: loss {loss0:.6g} (the "
        f"minimum is mean(s²e²) = {float(((y[: N // 2] - y[N // 2 :]) ** 2).mean() / 4):.6g}), "
        f"‖∇L‖ = {grad_norm:.2g}. Continued {cfg.mlp_steps} steps with lr {cfg.mlp_lr}: GD; "
        f"SGD (batch {cfg.mlp_batch}, with replacement); GD + isotropic noise with "
        f"σ² = tr C_B / P = {iso_std**2:.3g} ('sgd' convention: same total noise power as "
        "SGD); GD + Gaussian noise with covariance C_B from per-sample gradients "
        f"(HessianShapedNoiseGD). {cfg.mlp_runs} independent noise seed(s) per process.",
    )
    every = max(1, cfg.mlp_steps // max(1, cfg.mlp_measure))
    measure_at = set(range(0, cfg.mlp_steps + 1, every)) | {0, cfg.mlp_steps}
    runs: dict[str, list[dict[str, list[float]]]] = {n: [] for n in OPTIMIZERS}
    for n_i, name in enumerate(OPTIMIZERS):
        reps = 1 if name == "GD" else cfg.mlp_runs
        for rep in range(reps):
            runs[name].append(
                _continue(cfg, start, data, name, cfg.seed + 1000 * n_i + rep, iso_std, measure_at)
            )
        tick(f"MLP {name}")
    steps = np.asarray(runs["GD"][0]["step"], dtype=np.float64)
    summary: dict[str, Any] = {}
    changes: dict[str, dict[str, np.ndarray]] = {}
    s_tr, s_ld = {}, {}
    for name, reps in runs.items():
        tr = np.asarray([r["trace"] for r in reps])
        ld = np.asarray([r["logdet"] for r in reps])
        est = np.asarray([r["trace_se"] for r in reps])
        d_tr = tr[:, -1] - tr[:, 0]
        d_ld = ld[:, -1] - ld[:, 0]
        changes[name] = {"trace_change": d_tr, "logdet_change": d_ld}
        ok = np.isfinite(d_tr) & np.isfinite(d_ld)
        R = int(ok.sum())
        tr, ld, est = tr[ok], ld[ok], est[ok]
        tr_m, ld_m = tr.mean(0), ld.mean(0)
        tr_se = np.sqrt((tr.std(0, ddof=1) ** 2 if R > 1 else 0.0) / R + (est**2).mean(0) / R)
        ld_se = ld.std(0, ddof=1) / np.sqrt(R) if R > 1 else np.zeros_like(ld_m)
        s_tr[name], s_ld[name] = (tr_m, tr_se), (ld_m, ld_se)
        d_tr, d_ld = d_tr[ok], d_ld[ok]
        summary[name] = {
            "trace_start": float(tr_m[0]),
            "trace_end": float(tr_m[-1]),
            "trace_change": float(d_tr.mean()),
            "trace_change_se": float(d_tr.std(ddof=1) / math.sqrt(R)) if R > 1 else float("nan"),
            "logdet_change": float(d_ld.mean()),
            "logdet_change_se": float(d_ld.std(ddof=1) / math.sqrt(R)) if R > 1 else float("nan"),
            "final_loss": float(np.nanmean([r["loss"][-1] for r in reps])),
            "runs": R,
            "diverged": int((~ok).sum()),
        }
        run_dir.add_array(f"mlp_{name}_trace", tr)
        run_dir.add_array(f"mlp_{name}_logdet", ld)
    run_dir.add_array("mlp_steps", steps)
    run_dir.add_figure(
        S2,
        "mlp_trace",
        plots.plot_series(
            steps,
            s_tr,
            title="MLP: Tr H",
            ylabel="Tr H (exact)" if use_dense(P, cfg.mlp_logdet_rank) else "Tr H (krylov)",
        ),
        caption="Tr H vs steps per optimizer (mean ± stderr over noise seeds). "
        "Expected: GD flat, SGD and H-shaped fall.",
    )
    run_dir.add_figure(
        S2,
        "mlp_logdet",
        plots.plot_series(
            steps,
            s_ld,
            title=f"MLP: Σ log λ over the top {cfg.mlp_logdet_rank}",
            ylabel="top-r log det",
        ),
        caption="log det of the top-r block vs steps. Expected: isotropic noise lowers it.",
    )
    run_dir.add_table(S2, "MLP changes", [{"process": n, **v} for n, v in summary.items()])
    z = cfg.z_holds
    claims, verdicts = _mlp_claims(run_dir, summary, changes, z)

    # ---- part 3: the injected noise, measured at the start point
    K = cfg.noise_draws
    g = _gen(cfg.seed + 77)
    idx = torch.randint(0, N, (K, cfg.mlp_batch), generator=g)
    G = sampler.gradients()
    gbar = G.mean(1, keepdim=True)
    sgd_noise = G[:, idx].mean(-1) - gbar  # [P, K] actual minibatch-gradient noise
    shaped = sampler.sample(num_samples=K, generator=g)
    iso = iso_std * torch.randn(P, K, generator=g, dtype=G.dtype)

    def emp_trace(X: Tensor) -> tuple[float, float]:
        q = (X - X.mean(1, keepdim=True)).pow(2).sum(0)
        return float(q.mean() * K / (K - 1)), float(q.std() / math.sqrt(K))

    rows = []
    meas = {}
    for label, X in (("SGD minibatch", sgd_noise), ("H-shaped", shaped), ("isotropic", iso)):
        t, se = emp_trace(X)
        meas[label] = (t, se)
        rows.append(
            {
                "noise": label,
                "measured tr Cov": t,
                "± se": se,
                "theory tr": trC,
                "rel. diff": abs(t - trC) / trC,
            }
        )
    # alignment of the covariances with H: tr(H C) / (‖H‖_F ‖C‖_F)
    A = hessian(start, "mse", data).to_dense().to(torch.float64) if P <= cfg.dense_max else None
    if A is not None:
        C = (S @ S.T).to(torch.float64)
        cos = float((A * C).sum() / (A.norm() * C.norm()))
        run_dir.add_scalar(S3, "cosine(H, C_B) (Frobenius)", cos)
    run_dir.add_table(
        S3,
        "injected noise covariance",
        rows,
        caption=f"Trace of the empirical covariance of {K} draws at the start "
        "point vs tr C_B from dense per-sample gradients.",
    )
    ok = all(abs(t - trC) <= z * se for t, se in meas.values())
    record(
        run_dir,
        S3,
        "the injected noise has the intended total power tr C_B (all three)",
        "; ".join(f"{k}: {t:.4g} ± {se:.2g}" for k, (t, se) in meas.items()) + f" vs {trC:.4g}",
        ok,
    )
    return {
        "summary": summary,
        "claims": claims,
        "verdicts": verdicts,
        "P": P,
        "N": N,
        "trace_C_B": trC,
        "measured_noise_trace": {k: list(v) for k, v in meas.items()},
        "start_loss": loss0,
        "start_grad_norm": grad_norm,
        "seconds": time.perf_counter() - t0,
    }


def _parts(cfg: Wei2019Config) -> list[Part]:
    """The toy valley, then (optionally) the MLP part with the injected-noise check."""
    toy = Part("toy", lambda c: _part1(c.cfg, c.run_dir, c.tick))
    return [toy, Part("mlp", lambda c: _part2(c.cfg, c.run_dir, c.tick))] if cfg.mlp else [toy]


def _summary(ctx: Context) -> dict[str, Any]:
    """The parts' wall times.

    Returns:
        ``{"toy": {depth: {"changes": {process: {...}}, "claims": {...}}}, "mlp": {...} |
        None, "seconds": {...}, "config": {...}}``.
    """
    seconds = ctx.record_part_seconds()
    return {
        "toy": ctx.results["toy"],
        "mlp": ctx.results.get("mlp"),
        "seconds": seconds,
        "config": asdict(ctx.cfg),
    }


#: The registry entry (``hesslab.experiments.EXPERIMENTS[...]`` imports this module on access).
SPEC = Experiment(
    name="wei2019",
    title="How noise shapes the Hessian in a degenerate valley (Wei & Schwab 2019)",
    paper=(
        "Wei, Schwab (2019), How noise affects the Hessian spectrum in overparameterized "
        "neural networks"
    ),
    arxiv="1910.00195",
    description=(
        "Toy valleys ½(Πwᵢ − 1)² started on the valley and an MLP on a non-realizable digits "
        "subset at its minimum, continued with GD, SGD (label noise / minibatches), GD + "
        "isotropic noise and GD + minibatch-covariance (H-shaped) noise: Tr H falls under "
        "SGD-like noise, log det of the non-degenerate block under isotropic noise, GD stays."
    ),
    config_type=Wei2019Config,
    smoke_seconds=SMOKE_SECONDS,
    full_seconds=FULL_SECONDS,
    parts=_parts,
    summary=_summary,
    steps=lambda cfg: len(cfg.toy_depths) + (5 if cfg.mlp else 0),
)

#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size): the toy valley and the MLP
#: part. Reference: Wei & Schwab (2019), "How noise affects the Hessian spectrum in
#: overparameterized neural networks", arXiv:1910.00195.
run = SPEC.run

"""The edge of stability under full-batch gradient descent (Cohen et al. 2021).

Claims ([R] in PAPERS.md, "Beyond the seeds"): under full-batch gradient descent with step
size ``eta``,

1. *progressive sharpening*: the sharpness ``lambda_max`` of the training-loss Hessian
   rises during training until it reaches ``2 / eta``;
2. *edge of stability*: it then stops rising and hovers at (just above) ``2 / eta``;
3. meanwhile the training loss keeps decreasing over long times, but non-monotonically.

Setup. The authors' code ([CODE], locuslab/edge-of-stability) trains fully connected tanh
and ReLU networks (and convnets) on a 5,000-image subset of CIFAR-10 with MSE and
cross-entropy, and measures the top Hessian eigenvalues by Lanczos every ``eig_freq``
steps. CIFAR-10 is not available offline, so the full configuration here trains a tanh MLP
784-64-64-10 on a class-balanced subset of real MNIST (``mnist5k``, 500 images, 50 per
class; needs ``pip install 'hesslab[mnist]'``) with the MSE loss (mean over points and
outputs, one-hot targets) by full-batch GD (:func:`hesslab.train.fit` with
``optimizer="gd"``) at three step sizes; the smoke configuration uses scikit-learn's
digits (always installed), a 64-32-32-10 tanh MLP and 300 points. A
:class:`~hesslab.train.monitor.SpectrumMonitor` measures ``lambda_max`` (Lanczos,
warm-started from the previous top eigenvector, relative residual ``tol``) every ``every``
steps. Every choice is a config field; ``--set data=digits`` etc. vary it.

Verdict rules (fixed before the full run; each run is one (eta, seed) pair; runs that
diverge are counted and reported, and count as not confirming):

* progressive sharpening holds for a run when ``lambda_max`` reaches ``2 / eta`` within
  the step budget and its minimum before that first crossing is at most
  ``(1 - ps_rise) * 2 / eta`` (it *rose* by at least ``ps_rise`` of the threshold);
* edge of stability holds for a run when, over the measurements after the first
  crossing (at least ``min_after`` of them, else the run is undecided), the median of
  ``lambda_max * eta / 2`` lies in ``eos_band``;
* non-monotone decrease holds for a run when, after the first crossing, the loss goes up
  at some steps and the mean loss over the last tenth of the steps is below the mean over
  the first tenth;
* a claim *holds* when, for every ``eta``, at least ``agree`` of the seeds confirm it; it
  *does not hold* when fewer than ``1 - agree`` of all runs confirm it; otherwise it is
  undecided.

Run: ``hesslab reproduce cohen2021 --smoke`` (24 s of CPU time; 86 s wall measured on 2
busy cores) or ``hesslab reproduce cohen2021`` (1,370 s measured on 2 busy cores; the
claims table, figures and wall time of that run are in ``results/cohen2021/``: all three
claims hold).

References:
    Cohen, Kaur, Li, Kolter, Talwalkar (2021), "Gradient Descent on Neural Networks
    Typically Occurs at the Edge of Stability", ICLR, arXiv:2103.00065.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hesslab.data import balanced_subset, load_data
from hesslab.errors import ConfigurationError
from hesslab.experiments._base import Context, Experiment, Part, config_dtype
from hesslab.experiments._claims import record
from hesslab.models import mlp
from hesslab.report import plots
from hesslab.report.run import RunDir
from hesslab.train import fit
from hesslab.train.monitor import SpectrumMonitor

__all__ = ["FULL_SECONDS", "SMOKE_SECONDS", "SPEC", "Cohen2021Config", "judge_run", "run"]

logger = logging.getLogger(__name__)

#: Measured wall time of the smoke config: 86 s on 2 cores shared with other jobs (load
#: average ~12; 24 s of CPU time), one torch thread.
SMOKE_SECONDS = 86.0
#: Measured wall time of the full config: 1,370 s on 2 cores shared with other jobs (load
#: average ~14), one torch thread; results/cohen2021/ (a quiet machine should be faster).
FULL_SECONDS = 1370.0

PAPER = (
    "Cohen, Kaur, Li, Kolter, Talwalkar (2021), Gradient Descent on Neural Networks "
    "Typically Occurs at the Edge of Stability"
)
S0 = "0. Setup"
S1 = "1. Progressive sharpening"
S2 = "2. Edge of stability: λ_max hovers at 2/η"
S3 = "3. The loss keeps decreasing, non-monotonically"
S4 = "4. Runs and cost"


@dataclass(frozen=True)
class Cohen2021Config:
    """Every knob of the reproduction. Build with :meth:`smoke` or :meth:`full`.

    Attributes:
        seeds: seeds of the initialisation and of the training subset.
        data: bundled data set (``"mnist5k"`` or ``"digits"``; flat inputs).
        per_class: training points per class (the Hessian is over the same points).
        widths: hidden widths of the MLP.
        activation: hidden activation (the authors use tanh and ReLU).
        loss: ``"mse"`` (one-hot targets, mean over points and outputs) or ``"ce"``.
        lrs: the step sizes ``eta`` of full-batch gradient descent.
        steps: GD steps per run.
        every: measure ``lambda_max`` every this many steps.
        tol: relative residual tolerance of the Lanczos eigensolver.
        ps_rise: progressive-sharpening rule: the minimum of ``lambda_max`` before the
            first crossing is at most ``(1 - ps_rise) * 2 / eta``.
        eos_band: edge-of-stability rule: the median of ``lambda_max * eta / 2`` after
            the first crossing lies in this interval.
        min_after: measurements after the first crossing needed to judge the EoS rule.
        agree: fraction of seeds (per ``eta``) that must confirm a claim.
        dtype: ``"float32"`` or ``"float64"``.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    data: str = "mnist5k"
    per_class: int = 50
    widths: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    loss: str = "mse"
    lrs: tuple[float, ...] = (0.25, 0.2, 0.18)
    steps: int = 2500
    every: int = 20
    tol: float = 1e-3
    ps_rise: float = 0.15
    eos_band: tuple[float, float] = (0.8, 1.2)
    min_after: int = 5
    agree: float = 2 / 3
    dtype: str = "float32"

    @classmethod
    def smoke(cls) -> Cohen2021Config:
        """Small: digits, 300 points, MLP 64-32-32-10 (P = 3,466), 500 steps, 3 seeds."""
        return cls(
            data="digits",
            per_class=30,
            widths=(32, 32),
            lrs=(2.5, 2.0, 1.75),
            steps=500,
            every=10,
        )

    @classmethod
    def full(cls) -> Cohen2021Config:
        """Full: mnist5k, 500 points, MLP 784-64-64-10 (P = 55,050), 2,500 steps, 3 seeds."""
        return cls()


def _run_one(cfg: Cohen2021Config, eta: float, seed: int) -> dict[str, Any]:
    """One GD run at step size ``eta``: λ_max every ``every`` steps and the loss every step."""
    dtype = config_dtype(cfg)
    split = load_data(cfg.data, dtype=dtype, seed=seed)
    train = balanced_subset(split.train, cfg.per_class, seed=seed)
    num_classes = int(split.num_classes or 0)
    model = mlp(train.x.shape[1], cfg.widths, num_classes, cfg.activation, seed=seed, dtype=dtype)
    mon = SpectrumMonitor(
        (train.x, train.y),
        cfg.loss,
        every=cfg.every,
        quantities=("lambda_max",),
        k=1,
        tol=cfg.tol,
        seed=seed,
    )
    res = fit(
        model,
        train,
        loss=cfg.loss,
        optimizer="gd",
        lr=eta,
        steps=cfg.steps,
        seed=seed,
        callbacks=[mon],
        dtype=dtype,
    )
    lam = np.array([m.values["lambda_max"] for m in mon.measurements], dtype=float)
    return {
        "eta": eta,
        "seed": seed,
        "steps": np.array([m.step for m in mon.measurements]),
        "lambda_max": lam,
        "loss": np.array(res.series("loss"), dtype=float),  # loss before update t+1
        "diverged": res.stopped_by == "diverged" or not bool(np.isfinite(lam).all()),
        "final_loss": float(res.final_train_loss),
        "final_grad_norm": float(res.final_grad_norm),
        "final_accuracy": res.final_train_accuracy,
        "matvecs": int(sum(m.diagnostics["matvecs"].get("top_k", 0) for m in mon.measurements)),
        "converged": all(m.diagnostics["converged"].get("top_k", True) for m in mon.measurements),
        "P": int(mon.measurements[0].diagnostics["P"]),
        "seconds": float(res.seconds),
    }


def judge_run(r: dict[str, Any], cfg: Cohen2021Config) -> dict[str, Any]:
    """The three per-run verdicts and the numbers behind them (see the module docstring).

    Returns:
        ``{"crossed", "cross_step", "ps_rise", "sharpening", "eos_median", "above",
        "eos", "loss_ups", "loss_drop", "nonmonotone"}``; verdicts are ``True``/``False``
        or ``None`` when undecided (too few measurements after the crossing).
    """
    thr = 2.0 / r["eta"]
    lam, steps, loss = r["lambda_max"], r["steps"], r["loss"]
    out: dict[str, Any] = dict.fromkeys(
        ("cross_step", "ps_rise", "eos_median", "above", "loss_ups", "loss_drop"), math.nan
    )
    finite = np.isfinite(lam)
    hits = np.nonzero(finite & (lam >= thr))[0]
    out["crossed"] = bool(hits.size) and not r["diverged"]
    if not out["crossed"]:
        out.update(sharpening=False, eos=None if not r["diverged"] else False, nonmonotone=False)
        return out
    j = int(hits[0])
    out["cross_step"] = int(steps[j])
    out["ps_rise"] = float((thr - lam[: j + 1].min()) / thr)
    out["sharpening"] = bool(out["ps_rise"] >= cfg.ps_rise)
    after = lam[j + 1 :]
    if after.size >= cfg.min_after:
        ratio = after * r["eta"] / 2.0
        out["eos_median"] = float(np.median(ratio))
        out["above"] = float((ratio >= 1.0).mean())
        lo, hi = cfg.eos_band
        out["eos"] = bool(lo <= out["eos_median"] <= hi)
    else:
        out["eos"] = None
    tail = loss[int(steps[j]) :]
    if tail.size >= 20:
        tenth = max(tail.size // 10, 1)
        out["loss_ups"] = int((np.diff(tail) > 0).sum())
        out["loss_drop"] = float(1.0 - tail[-tenth:].mean() / tail[:tenth].mean())
        out["nonmonotone"] = bool(out["loss_ups"] > 0 and out["loss_drop"] > 0)
    else:
        out["nonmonotone"] = None
    return out


def _verdict(flags: dict[float, list[bool | None]], agree: float) -> tuple[bool | None, str]:
    """Claim verdict over seeds: every eta has >= agree confirming; see module docstring."""
    per_eta = {eta: sum(f is True for f in fs) / len(fs) for eta, fs in flags.items()}
    pooled = [f is True for fs in flags.values() for f in fs]
    text = ", ".join(f"η = {eta:g}: {frac:.0%}" for eta, frac in per_eta.items())
    if all(frac >= agree - 1e-9 for frac in per_eta.values()):
        return True, text
    if sum(pooled) / len(pooled) < 1.0 - agree - 1e-9:
        return False, text
    return None, text


def _mean_se(values: list[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    if a.size == 1:
        return float(a[0]), math.nan
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))


def _band(runs: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[Any, Any, Any]:
    """``(steps, seed mean, stderr)`` of a measured series (runs cut to the shortest)."""
    n = min(len(r[key]) for r in runs)
    arr = np.stack([r[key][:n] * scale for r in runs])
    se = arr.std(0, ddof=1) / math.sqrt(len(runs)) if len(runs) > 1 else None
    return runs[0]["steps"][:n], arr.mean(0), se


def _figures(run_dir: RunDir, cfg: Cohen2021Config, runs: dict[float, list[dict]]) -> None:
    series: dict[str, Any] = {}
    for eta, rs in runs.items():
        x, m, se = _band(rs, "lambda_max")
        series[f"λ_max, η = {eta:g}"] = (x, m, se)
        series[f"2/η = {2 / eta:.3g}"] = (x, np.full(len(x), 2 / eta), None)
    fig = plots.plot_series(
        None,
        series,
        title="Sharpness during full-batch GD",
        ylabel="λ_max of the training-loss Hessian",
    )
    run_dir.add_figure(S1, "sharpness", fig, "Seed mean ± stderr of λ_max; flat lines: 2/η.")
    norm = {f"η = {eta:g}": _band(rs, "lambda_max", eta / 2) for eta, rs in runs.items()}
    norm["stability threshold"] = (norm[next(iter(norm))][0], None, None)
    x0 = norm["stability threshold"][0]
    norm["stability threshold"] = (x0, np.ones(len(x0)), None)
    fig = plots.plot_series(
        None, norm, title="λ_max · η / 2 (1 = edge of stability)", ylabel="λ_max η / 2"
    )
    run_dir.add_figure(S2, "sharpness_normalised", fig, "Seed mean ± stderr.")
    loss = {}
    for eta, rs in runs.items():
        r = rs[0]
        loss[f"η = {eta:g} (seed {r['seed']})"] = (np.arange(len(r["loss"])), r["loss"], None)
    fig = plots.plot_series(
        None, loss, title="Training loss (first seed)", ylabel="loss", log_y=True
    )
    run_dir.add_figure(S3, "loss", fig, "Every step; the spikes after the crossing are EoS.")


def _report(
    run_dir: RunDir, cfg: Cohen2021Config, runs: dict[float, list[dict]], judged: dict
) -> dict[str, Any]:
    rows = []
    for eta, rs in runs.items():
        js = judged[eta]
        rows.append(
            {
                "η": eta,
                "2/η": 2 / eta,
                "seeds": len(rs),
                "diverged": sum(r["diverged"] for r in rs),
                "crossed 2/η": sum(j["crossed"] for j in js),
                "first crossing step": _mean_se([j["cross_step"] for j in js])[0],
                "λ_max at step 0": _mean_se([float(r["lambda_max"][0]) for r in rs])[0],
                "rise before crossing / (2/η)": _mean_se([j["ps_rise"] for j in js])[0],
                "median λη/2 after": _mean_se([j["eos_median"] for j in js])[0],
                "± (stderr over seeds)": _mean_se([j["eos_median"] for j in js])[1],
                "fraction above 2/η": _mean_se([j["above"] for j in js])[0],
                "loss increases after": _mean_se([j["loss_ups"] for j in js])[0],
                "final loss": _mean_se([r["final_loss"] for r in rs])[0],
                "final ‖∇L‖": _mean_se([r["final_grad_norm"] for r in rs])[0],
            }
        )
    run_dir.add_table(S2, "per step size", rows, caption="Means over seeds.")
    out = {}
    for section, key, claim in (
        (S1, "sharpening", "Progressive sharpening: λ_max rises until it reaches 2/η"),
        (S2, "eos", "Edge of stability: after reaching 2/η, λ_max hovers at 2/η"),
        (S3, "nonmonotone", "The loss keeps decreasing over long times, non-monotonically"),
    ):
        holds, _ = _verdict({eta: [j[key] for j in js] for eta, js in judged.items()}, cfg.agree)
        text = "; ".join(_measured(key, eta, js) for eta, js in judged.items())
        record(run_dir, section, claim, f"{text} (rule: {_rule(key, cfg)})", holds)
        out[key] = holds
    return out


def _pm(values: list[float], fmt: str = ".3g") -> str:
    m, se = _mean_se(values)
    return f"{m:{fmt}}" if not np.isfinite(se) else f"{m:{fmt}} ± {se:{fmt}}"


def _measured(key: str, eta: float, js: list[dict[str, Any]]) -> str:
    """One η's measurement behind a claim: seeds confirming and the numbers (mean ± se)."""
    n_ok = sum(j[key] is True for j in js)
    head = f"η = {eta:g}: {n_ok}/{len(js)} seeds"
    if key == "sharpening":
        return (
            f"{head}, rise {_pm([j['ps_rise'] for j in js])} of 2/η before the first "
            f"crossing at step {_pm([j['cross_step'] for j in js], '.0f')}"
        )
    if key == "eos":
        return (
            f"{head}, median λη/2 after it {_pm([j['eos_median'] for j in js])}, "
            f"{_pm([j['above'] for j in js], '.2f')} of the measurements above 2/η"
        )
    return (
        f"{head}, loss up at {_pm([j['loss_ups'] for j in js], '.0f')} steps and down "
        f"{_pm([100 * j['loss_drop'] for j in js], '.0f')}% (first to last tenth)"
    )


def _rule(key: str, cfg: Cohen2021Config) -> str:
    per_run = {
        "sharpening": f"per run, min λ_max before the first crossing ≤ {1 - cfg.ps_rise:g}·2/η",
        "eos": f"per run, median λη/2 after the first crossing in "
        f"[{cfg.eos_band[0]:g}, {cfg.eos_band[1]:g}] over ≥ {cfg.min_after} measurements",
        "nonmonotone": "per run, the loss goes up at some step after the first crossing and "
        "its last tenth is below its first tenth",
    }[key]
    return (
        f"{per_run}; holds when ≥ {cfg.agree:.0%} of the seeds of every η confirm; "
        "numbers are mean ± standard error over seeds"
    )


def _check(cfg: Cohen2021Config) -> None:
    if not cfg.lrs or len(cfg.seeds) < 1 or any(eta <= 0 for eta in cfg.lrs):
        raise ConfigurationError("cohen2021 needs positive step sizes lrs and at least one seed")


def _one(ctx: Context, eta: float, seed: int) -> dict[str, Any]:
    r = _run_one(ctx.cfg, eta, seed)
    ctx.tick(f"η = {eta:g}, seed {seed}")
    return r


def _parts(cfg: Cohen2021Config) -> list[Part]:
    """One part per (step size, seed) run."""
    return [
        Part(f"eta{eta:g}_seed{seed}", lambda c, eta=eta, seed=seed: _one(c, eta, seed))
        for eta in cfg.lrs
        for seed in cfg.seeds
    ]


def _setup_text(cfg: Cohen2021Config, P: int) -> str:
    return (
        f"{PAPER} (arXiv:2103.00065). Full-batch GD on {cfg.per_class} points per class of "
        f"{cfg.data} ({cfg.per_class * 10} points), MLP {P} parameters (hidden "
        f"{list(cfg.widths)}, {cfg.activation}), {cfg.loss} loss, {cfg.dtype}; step sizes "
        f"{list(cfg.lrs)}, {cfg.steps} steps, λ_max every {cfg.every} steps (Lanczos, "
        f"relative residual {cfg.tol:g}, warm-started), seeds {list(cfg.seeds)}. "
        f"Rules: sharpening = minimum λ_max before the first crossing ≤ {1 - cfg.ps_rise:g}·2/η; "
        f"EoS = median λ_max·η/2 after it in [{cfg.eos_band[0]:g}, {cfg.eos_band[1]:g}] "
        f"(≥ {cfg.min_after} measurements); a claim holds when ≥ {cfg.agree:.0%} of the seeds "
        "of every η confirm it."
    )


def _summary(ctx: Context) -> dict[str, Any]:
    """Judge every run, write the figures, table and claims.

    Returns:
        ``{"claims": {"sharpening", "eos", "nonmonotone"}, "per_run": [...],
        "diverged": int, "P": int, "seconds": float}``.
    """
    cfg, run_dir = ctx.cfg, ctx.run_dir
    t_report = time.perf_counter()
    runs: dict[float, list[dict[str, Any]]] = {}
    for eta in cfg.lrs:
        runs[eta] = [ctx.results[f"eta{eta:g}_seed{seed}"] for seed in cfg.seeds]
    judged = {eta: [judge_run(r, cfg) for r in rs] for eta, rs in runs.items()}
    first = runs[cfg.lrs[0]][0]
    run_dir.add_text(S0, _setup_text(cfg, first["P"]))
    _figures(run_dir, cfg, runs)
    claims = _report(run_dir, cfg, runs, judged)
    all_runs = [r for rs in runs.values() for r in rs]
    diverged = sum(r["diverged"] for r in all_runs)
    # each part's wall time when it ran (also for parts loaded on --resume) + the report
    seconds = sum(ctx.seconds.values()) + time.perf_counter() - t_report
    run_dir.add_scalar(S4, "diverged runs", diverged, total=len(all_runs))
    run_dir.add_scalar(S4, "Hessian-vector products", sum(r["matvecs"] for r in all_runs))
    run_dir.add_scalar(S4, "seconds", seconds, unit="s", note="sum of the runs' wall times")
    per_run = [
        {
            "eta": r["eta"],
            "seed": r["seed"],
            "final_loss": r["final_loss"],
            "final_grad_norm": r["final_grad_norm"],
            "lanczos_converged": r["converged"],
            **j,
        }
        for rs, js in zip(runs.values(), judged.values(), strict=True)
        for r, j in zip(rs, js, strict=True)
    ]
    return {
        "claims": claims,
        "per_run": per_run,
        "diverged": diverged,
        "P": first["P"],
        "seconds": seconds,
    }


SPEC = Experiment(
    name="cohen2021",
    title="The edge of stability under full-batch gradient descent (Cohen et al. 2021)",
    paper=PAPER,
    arxiv="2103.00065",
    description=(
        "Full-batch GD at several step sizes η on a tanh MLP (real MNIST 500-image subset; "
        "digits at smoke size), λ_max tracked by the spectrum monitor: progressive "
        "sharpening up to 2/η, then λ_max hovering at 2/η while the loss keeps falling "
        "non-monotonically; verdicts over seeds by stated rules."
    ),
    config_type=Cohen2021Config,
    smoke_seconds=SMOKE_SECONDS,
    full_seconds=FULL_SECONDS,
    parts=_parts,
    summary=_summary,
    steps=lambda cfg: len(cfg.lrs) * len(cfg.seeds),
    check=_check,
)

#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size): trains by full-batch GD at
#: each step size and seed (one resumable part each), tracks λ_max, judges the claims.
run = SPEC.run

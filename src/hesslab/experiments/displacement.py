"""Eigenvector displacement and localization under SGD vs Adam (PAPERS.md §4).

Claim (the papers citing Dinh et al. 2017 on eigenvector dynamics, [R] in PAPERS.md §4):
*SGD stabilizes the leading Hessian directions; Adam reorganizes them more and localizes
them on few parameters (higher IPR).*

Setup (the paper's text was not available offline; every choice is a config field): an
MLP on scikit-learn digits (a class-balanced training subset, standardised inputs), the
same initialisation for both optimizers, trained by minibatch SGD and by Adam. A
:class:`~hesslab.train.monitor.SpectrumMonitor` measures the top-``k`` eigenpairs of the
full-subset Hessian every ``every`` steps (Lanczos, warm-started from the previous
measurement), and from them:

* displacement against the reference time ``t_w``: vector form
  ``Delta_i = 2(1 - |<v_i(t_w), v_i(t)>|)`` and subspace form
  ``1 - ||U(t_w)^T U(t)||_F^2 / k`` (the one the claim is judged on: the top
  eigenvalues are often close, so individual vectors swap);
* displacement between consecutive measurements (same two forms);
* IPR ``sum_i v_i^4 / (sum_i v_i^2)^2`` of the top-``k`` eigenvectors, against two null
  models: a uniformly random unit vector (``E IPR = 3/(P+2)``) and the top eigenvectors
  of the Hessian at initialisation (step 0, shared by both optimizers).

Verdict rules (fixed before looking at the numbers; both optimizers share each seed's
initialisation, so the seeds pair them): "SGD stabilizes / Adam reorganizes" holds when
the paired Adam − SGD difference of the final subspace displacement from ``t_w`` **and**
that of the consecutive subspace displacement after ``t_w`` are both positive by at
least ``z_holds`` (2) standard errors of the seed mean over ≥ 3 seeds; it does not hold
when either is negative by as much; otherwise it is undecided. "Adam localizes": the
same rule on the paired difference of the mean IPR of the top-``k`` eigenvectors after
``t_w``. The fraction of seeds that agree is reported beside each
(:func:`hesslab.experiments._claims.decide`, rule ``"paired"``).

Run: ``hesslab reproduce displacement --smoke`` (about 30-50 s on 2 CPU cores) or
``hesslab reproduce displacement``.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from hesslab.data import balanced_subset, digits
from hesslab.experiments._base import Context, Experiment, Part, config_dtype
from hesslab.experiments._claims import Verdict, add_claim, all_of, decide, record
from hesslab.measures.eigvec import ipr_null
from hesslab.models import mlp
from hesslab.report import plots
from hesslab.report.run import RunDir
from hesslab.train import fit
from hesslab.train.monitor import SpectrumMonitor

__all__ = ["FULL_SECONDS", "SMOKE_SECONDS", "SPEC", "DisplacementConfig", "run"]

logger = logging.getLogger(__name__)

#: Measured wall time of the smoke config (one torch thread, quiet machine).
SMOKE_SECONDS = 40.0
#: Wall time of the full config: 26 s measured on 2 cores (issue 19); a full run here
#: (results/displacement) took 49 s CPU with one thread (643 s wall, 2 cores shared ~9 ways).
FULL_SECONDS = 50.0

S1 = "1. Displacement of the leading eigenvectors"
S2 = "2. Localization (IPR) of the leading eigenvectors"
S3 = "3. Tracking cost"


@dataclass(frozen=True)
class DisplacementConfig:
    """Every knob of the reproduction. Build with :meth:`smoke` or :meth:`full`.

    Attributes:
        seeds: seeds (initialisation, data subset and batch order).
        widths: hidden widths of the ReLU MLP (64 inputs, 10 classes).
        activation: hidden activation.
        per_class: training points per class (the Hessian uses the same points;
            ``0``: all 1,347 training points).
        optimizers: optimizers compared (``"sgd"``, ``"adam"``).
        sgd_lr: SGD learning rate.
        sgd_momentum: SGD momentum.
        adam_lr: Adam learning rate.
        batch_size: minibatch size of both.
        steps: training steps.
        every: measure every this many steps.
        t_w: reference time of the displacement (a measuring step).
        k: number of leading eigenvectors.
        tol: relative residual tolerance of Lanczos.
        compare_cold: solve every n-th measurement also from a cold start (0: never),
            to report the warm-start saving.
        z_holds: a paired Adam − SGD difference decides a claim when its seed mean is
            this many standard errors from zero (:func:`hesslab.experiments._claims.decide`).
        dtype: ``"float64"`` (eigenvectors accurate to ``tol``) or ``"float32"``.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    widths: tuple[int, ...] = (32, 32)
    activation: str = "relu"
    per_class: int = 0
    optimizers: tuple[str, ...] = ("sgd", "adam")
    sgd_lr: float = 0.05
    sgd_momentum: float = 0.0
    adam_lr: float = 1e-3
    batch_size: int = 32
    steps: int = 2000
    every: int = 100
    t_w: int = 200
    k: int = 5
    tol: float = 1e-6
    compare_cold: int = 4
    z_holds: float = 2.0
    dtype: str = "float64"

    @classmethod
    def smoke(cls) -> DisplacementConfig:
        """Small: P = 1,210 (one hidden layer of 16), 300 points, 300 steps, 3 seeds."""
        return cls(
            seeds=(0, 1, 2),
            widths=(16,),
            per_class=30,
            steps=300,
            every=30,
            t_w=60,
            k=4,
            tol=1e-5,
            compare_cold=3,
        )

    @classmethod
    def full(cls) -> DisplacementConfig:
        """Full: P = 3,466 (hidden 32, 32), all training points, 2,000 steps, 3 seeds."""
        return cls()


def _run_one(cfg: DisplacementConfig, seed: int, opt: str, train: Any) -> dict[str, Any]:
    dtype = config_dtype(cfg)
    model = mlp(64, cfg.widths, 10, activation=cfg.activation, seed=seed, dtype=dtype)
    mon = SpectrumMonitor(
        (train.x.to(dtype), train.y),
        "ce",
        every=cfg.every,
        quantities=("top_k", "ipr", "displacement"),
        k=cfg.k,
        seed=seed,
        reference_step=cfg.t_w,
        tol=cfg.tol,
        compare_cold=cfg.compare_cold if cfg.compare_cold > 0 else False,
    )
    kw: dict[str, Any] = {"lr": cfg.adam_lr} if opt == "adam" else {"lr": cfg.sgd_lr}
    if opt == "sgd":
        kw["momentum"] = cfg.sgd_momentum
    res = fit(
        model,
        train,
        optimizer=opt,
        batch_size=cfg.batch_size,
        steps=cfg.steps,
        seed=seed,
        callbacks=[mon],
        dtype=dtype,
        **kw,
    )
    k = cfg.k
    steps = np.array([m.step for m in mon.measurements])

    def series(key: str) -> np.ndarray:
        return np.array([m.values.get(key, math.nan) for m in mon.measurements])

    ipr_k = np.stack([series(f"ipr/{i + 1}") for i in range(k)], axis=1)
    disp_ref = np.stack([series(f"disp_ref/{i + 1}") for i in range(k)], axis=1)
    P = mon.measurements[0].diagnostics["P"]
    return {
        "steps": steps,
        "subdisp_ref": series("subdisp_ref"),
        "subdisp_prev": series("subdisp_prev"),
        "disp_ref_mean": _nanmean(disp_ref, axis=1),
        "ipr_mean": ipr_k.mean(axis=1),
        "lambda_max": series("lambda_max"),
        "P": P,
        "final_train_loss": res.final_train_loss,
        "final_train_accuracy": res.final_train_accuracy,
        "warm": mon.warm_start_summary(),
        "converged": all(m.diagnostics["converged"].get("top_k", True) for m in mon.measurements),
    }


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmean`` that returns NaN for all-NaN slices without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def _nanse(a: np.ndarray, axis: int) -> np.ndarray:
    """Standard error of the mean over ``axis`` (NaN where undefined), without warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        n = np.sum(~np.isnan(a), axis=axis)
        return np.nanstd(a, axis=axis, ddof=1) / np.sqrt(np.maximum(n, 1))


def _mean_se(x: list[float]) -> tuple[float, float]:
    a = np.asarray(x, dtype=float)
    if a.size < 2:
        return float(a.mean()), math.nan
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))


def _train(ctx: Context, seed: int, opt: str) -> dict[str, Any]:
    """One training run (optimizer, seed) with the spectrum monitor."""
    cfg = ctx.cfg
    train = digits(seed=seed, dtype=config_dtype(cfg)).train
    if cfg.per_class > 0:
        train = balanced_subset(train, cfg.per_class, seed=seed)
    out = _run_one(cfg, seed, opt, train)
    ctx.tick(f"{opt}, seed {seed}")
    return out


def _parts(cfg: DisplacementConfig) -> list[Part]:
    """One part per (seed, optimizer) training run."""
    return [
        Part(f"{opt}_seed{seed}", lambda c, seed=seed, opt=opt: _train(c, seed, opt))
        for seed in cfg.seeds
        for opt in cfg.optimizers
    ]


_SEED_KEYS = ("subdisp_ref_final", "subdisp_prev_late", "ipr_late", "ipr_init", "acc")


def _per_seed(cfg: DisplacementConfig, runs: dict, late: np.ndarray) -> dict[str, list[float]]:
    """``{opt: {quantity: [per-seed value]}}`` of the headline quantities."""
    per_seed = {}
    for opt in cfg.optimizers:
        rows: dict[str, list[float]] = {key: [] for key in _SEED_KEYS}
        rows["disp_ref_final"] = []
        for seed in cfg.seeds:
            r = runs[opt][seed]
            rows["subdisp_ref_final"].append(float(r["subdisp_ref"][-1]))
            rows["disp_ref_final"].append(float(r["disp_ref_mean"][-1]))
            rows["subdisp_prev_late"].append(float(_nanmean(r["subdisp_prev"][late], 0)))
            rows["ipr_late"].append(float(np.mean(r["ipr_mean"][late])))
            rows["ipr_init"].append(float(r["ipr_mean"][0]))
            rows["acc"].append(float(r["final_train_accuracy"] or math.nan))
        per_seed[opt] = rows
    return per_seed


def _seed_means(per_seed: dict) -> dict[str, dict[str, float]]:
    summary = {}
    for opt, rows in per_seed.items():
        summary[opt] = {key: _mean_se(v)[0] for key, v in rows.items()}
        summary[opt].update({f"{key}_se": _mean_se(v)[1] for key, v in rows.items()})
    return summary


def _setup_text(cfg: DisplacementConfig, P: int) -> str:
    return (
        f"MLP 64-{'-'.join(map(str, cfg.widths))}-10 ({cfg.activation}, P = {P}) on digits "
        f"({'all' if cfg.per_class == 0 else cfg.per_class} training points per class), "
        f"{cfg.steps} steps, batch {cfg.batch_size}; SGD lr {cfg.sgd_lr} (momentum "
        f"{cfg.sgd_momentum}), Adam lr {cfg.adam_lr}; top-{cfg.k} Hessian eigenvectors every "
        f"{cfg.every} steps, reference t_w = {cfg.t_w}; seeds {list(cfg.seeds)}. Subspace "
        "displacement 1 - ||U(t_w)^T U(t)||_F^2 / k is the headline (near-degenerate top "
        "eigenvalues make single vectors swap); the vector form 2(1 - |<v_i(t_w), v_i(t)>|) "
        "averaged over i is shown alongside. A random k-subspace has displacement "
        f"1 - k/P = {1 - cfg.k / P:.4f} from a fixed one."
    )


def _band(cfg: DisplacementConfig, runs: dict, key: str) -> dict[str, tuple[Any, Any]]:
    """``{opt: (seed mean, stderr)}`` of a tracked series."""
    out = {}
    for opt in cfg.optimizers:
        arr = np.stack([runs[opt][sd][key] for sd in cfg.seeds])
        se = _nanse(arr, 0) if len(cfg.seeds) > 1 else np.zeros(arr.shape[1])
        out[opt] = (_nanmean(arr, 0), se)
    return out


def _figures(run_dir: RunDir, cfg: DisplacementConfig, runs: dict, steps, null: float) -> None:
    band = functools.partial(_band, cfg, runs)
    fig = plots.plot_series(
        steps,
        {f"{o} (vs t_w)": v for o, v in band("subdisp_ref").items()}
        | {f"{o} (consecutive)": v for o, v in band("subdisp_prev").items()},
        title="Subspace displacement of the top eigenvectors",
        ylabel="1 - ||U^T U'||_F^2 / k",
    )
    run_dir.add_figure(S1, "subspace_displacement", fig, "Seed mean +- stderr.")
    fig = plots.plot_series(
        steps,
        band("disp_ref_mean"),
        title="Vector displacement from t_w (mean over the top k)",
        ylabel="2(1 - |<v(t_w), v(t)>|)",
    )
    run_dir.add_figure(S1, "vector_displacement", fig, "Seed mean +- stderr.")
    ipr_series = band("ipr_mean")
    ipr_series["null 3/(P+2)"] = (np.full(len(steps), null), np.zeros(len(steps)))
    fig = plots.plot_series(
        steps,
        ipr_series,
        title="IPR of the top eigenvectors",
        ylabel="mean IPR over top k",
        log_y=True,
    )
    run_dir.add_figure(S2, "ipr", fig, "Seed mean +- stderr; dashed: random-vector null.")


def _table(run_dir: RunDir, cfg: DisplacementConfig, summary: dict, null: float, P: int) -> None:
    rows = []
    for opt in cfg.optimizers:
        sm = summary[opt]
        rows.append(
            {
                "optimizer": opt,
                "final subspace displacement vs t_w": sm["subdisp_ref_final"],
                "final vector displacement vs t_w": sm["disp_ref_final"],
                "consecutive subspace displacement (after t_w)": sm["subdisp_prev_late"],
                "IPR top-k (after t_w)": sm["ipr_late"],
                "IPR top-k at init": sm["ipr_init"],
                "IPR / null": sm["ipr_late"] / null,
                "train accuracy": sm["acc"],
            }
        )
    run_dir.add_table(S1, "summary", rows, caption="Means over seeds.")
    run_dir.add_scalar(S2, "ipr_null", null, formula="3/(P+2)", P=P)
    for opt in cfg.optimizers:
        for key in ("subdisp_ref_final", "subdisp_prev_late", "ipr_late", "ipr_init"):
            run_dir.add_scalar(
                S1 if key.startswith("subdisp") else S2,
                f"{opt} {key}",
                summary[opt][key],
                stderr=summary[opt][f"{key}_se"],
                seeds=len(cfg.seeds),
            )


def _warm_start(run_dir: RunDir, cfg: DisplacementConfig, runs: dict) -> dict[str, dict]:
    """The warm-start savings of the tracking, per optimizer (section 3)."""
    warm = {
        opt: {
            "matvecs_warm": sum(runs[opt][sd]["warm"]["matvecs_warm"] for sd in cfg.seeds),
            "matvecs_cold": sum(runs[opt][sd]["warm"]["matvecs_cold"] for sd in cfg.seeds),
            "max_abs_eigenvalue_diff": max(
                runs[opt][sd]["warm"]["max_abs_eigenvalue_diff"] for sd in cfg.seeds
            ),
        }
        for opt in cfg.optimizers
    }
    for opt, w in warm.items():
        w["saving"] = 1 - w["matvecs_warm"] / w["matvecs_cold"] if w["matvecs_cold"] else math.nan
        run_dir.add_scalar(
            S3,
            f"{opt} warm-start saving",
            w["saving"],
            matvecs_warm=w["matvecs_warm"],
            matvecs_cold=w["matvecs_cold"],
            max_abs_eigenvalue_diff=w["max_abs_eigenvalue_diff"],
        )
    run_dir.add_text(
        S3,
        "Top-k Lanczos warm-started from the previous measurement's eigenvectors vs a cold "
        "random start on the same Hessian (every "
        f"{cfg.compare_cold}-th measurement): the saving is 1 - warm/cold products.",
    )
    return warm


def _verdicts(cfg: DisplacementConfig, per_seed: dict) -> dict[str, Verdict]:
    """Paired Adam − SGD verdicts over the seeds (none without both optimizers)."""
    if not ("adam" in per_seed and "sgd" in per_seed):
        return {}
    return {
        key: decide(per_seed["adam"][key], per_seed["sgd"][key], rule="paired", z=cfg.z_holds)
        for key in ("subdisp_ref_final", "subdisp_prev_late", "ipr_late")
    }


def _summary(ctx: Context) -> dict[str, Any]:
    """Judge the claims over the seeds and write the report.

    Returns:
        ``{"summary": {opt: {"subdisp_ref_final", "subdisp_prev_late", "ipr_late",
        "ipr_init", "disp_ref_final"} (seed means)}, "per_seed": {...}, "ipr_null": float,
        "claims": {"stabilize": bool, "localize": bool}, "agreement": {...},
        "warm_start": {...}, "seconds": float}``.
    """
    cfg, run_dir = ctx.cfg, ctx.run_dir
    runs = {o: {sd: ctx.results[f"{o}_seed{sd}"] for sd in cfg.seeds} for o in cfg.optimizers}
    ctx.tick("report")
    any_run = next(iter(runs[cfg.optimizers[0]].values()))
    P = int(any_run["P"])
    null = ipr_null(P)
    steps = any_run["steps"]
    per_seed = _per_seed(cfg, runs, steps > cfg.t_w)
    summary = _seed_means(per_seed)
    verdicts = _verdicts(cfg, per_seed)
    stabilize = localize = None
    if verdicts:
        stabilize = all_of(verdicts["subdisp_ref_final"], verdicts["subdisp_prev_late"])
        localize = verdicts["ipr_late"].holds
    run_dir.add_text(S1, _setup_text(cfg, P))
    _figures(run_dir, cfg, runs, steps, null)
    _table(run_dir, cfg, summary, null, P)
    if verdicts:
        _claims(run_dir, verdicts, stabilize, summary, null, cfg.k)
    warm = _warm_start(run_dir, cfg, runs)
    seconds = ctx.elapsed()
    run_dir.add_scalar(S3, "seconds", seconds, unit="s")
    return {
        "summary": summary,
        "per_seed": per_seed,
        "ipr_null": null,
        "P": P,
        "claims": {"stabilize": stabilize, "localize": localize},
        "verdicts": {k: v.as_dict() for k, v in verdicts.items()},
        "agreement": {k: v.agree / max(v.n, 1) for k, v in verdicts.items()},
        "warm_start": warm,
        "all_converged": all(runs[o][sd]["converged"] for o in cfg.optimizers for sd in cfg.seeds),
        "seconds": seconds,
    }


def _claims(
    run_dir: RunDir,
    verdicts: dict[str, Verdict],
    stabilize: bool | None,
    summary: dict[str, dict[str, float]],
    null: float,
    k: int,
) -> None:
    """The two claims, each decided by paired Adam − SGD differences over the seeds."""
    a, s = summary["adam"], summary["sgd"]
    v1, v2, v3 = (verdicts[x] for x in ("subdisp_ref_final", "subdisp_prev_late", "ipr_late"))
    record(
        run_dir,
        S1,
        "SGD stabilizes the leading Hessian directions; Adam reorganizes them more "
        "(larger displacement from t_w and between measurements).",
        f"subspace displacement vs t_w at the end: Adam {a['subdisp_ref_final']:.3f} vs SGD "
        f"{s['subdisp_ref_final']:.3f}, Adam − SGD {v1.text}; consecutive after t_w: Adam "
        f"{a['subdisp_prev_late']:.3f} vs SGD {s['subdisp_prev_late']:.3f}, Adam − SGD "
        f"{v2.text}; both must hold",
        stabilize,
    )
    add_claim(
        run_dir,
        S2,
        "Adam localizes the leading eigenvectors (higher IPR than SGD).",
        v3,
        f"mean IPR of the top {k} after t_w: Adam {a['ipr_late']:.4f} vs SGD "
        f"{s['ipr_late']:.4f}; at init {s['ipr_init']:.4f}; random null {null:.5f}; "
        "Adam − SGD",
    )


SPEC = Experiment(
    name="displacement",
    title="Eigenvector displacement and localization: SGD vs Adam",
    paper=(
        "Eigenvector displacement and localization (SGD vs Adam, MLPs); a paper citing "
        "Dinh, Pascanu, Bengio, Bengio (2017), see docs/PAPERS.md §4"
    ),
    arxiv="",
    description=(
        "Top Hessian eigenvectors of an MLP on digits tracked through SGD and Adam "
        "training: displacement from a reference time t_w and between measurements "
        "(vector and subspace forms), and their IPR against the random-vector null 3/(P+2) "
        "and the Hessian at initialisation."
    ),
    config_type=DisplacementConfig,
    smoke_seconds=SMOKE_SECONDS,
    full_seconds=FULL_SECONDS,
    parts=_parts,
    summary=_summary,
    steps=lambda cfg: len(cfg.seeds) * len(cfg.optimizers) + 1,
)

#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size): trains with each optimizer
#: and seed (one resumable part each), tracks the top eigenvectors, judges the claims.
run = SPEC.run

"""Parts 2 and 3 of wei2019: an MLP at a non-realizable minimum, and the injected noise.

See the package docstring for the set-up; :func:`part2` runs both (part 3 measures the
noise injected at part 2's start point).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hesslab.data import balanced_subset, digits
from hesslab.experiments._base import config_dtype as dtype_of
from hesslab.experiments._claims import Verdict, add_claim, decide, record
from hesslab.experiments.wei2019.config import OPTIMIZERS, S2, S3, Wei2019Config, gen
from hesslab.linalg.lanczos import use_dense
from hesslab.models import mlp
from hesslab.objective import Objective
from hesslab.operators import hessian
from hesslab.quantities import Settings, measure
from hesslab.report import plots
from hesslab.report.run import RunDir
from hesslab.train import fit
from hesslab.train.optim import HessianShapedNoiseGD, NoisyGD, SGDNoiseSampler


def _mlp_data(cfg: Wei2019Config) -> tuple[Tensor, Tensor]:
    dtype = dtype_of(cfg)
    train = digits(dtype=dtype, seed=cfg.seed).train
    sub = balanced_subset(train, cfg.mlp_per_class, seed=cfg.seed)
    y = F.one_hot(sub.y, 10).to(dtype)
    e = cfg.mlp_target_noise * torch.randn(y.shape, generator=gen(cfg.seed + 1), dtype=dtype)
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
    top = measure("top_k", H, s, gen(seed + 1))
    method = "exact" if top.method == "dense" else "krylov"
    t = measure("trace", H, s.replace(trace_method=method), gen(seed))
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
        64, cfg.mlp_widths, 10, activation=cfg.mlp_activation, seed=cfg.seed, dtype=dtype_of(cfg)
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
    g = gen(seed)
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


# ---------------------------------------------------------------------------------------
# part 2, in steps


def _describe(cfg: Wei2019Config, run_dir: RunDir, data, start: dict[str, float]) -> None:
    """The set-up paragraph (``start``: ``P``, ``N``, loss, gradient norm, ``iso_std``)."""
    y, N = data[1], int(start["N"])
    run_dir.add_text(
        S2,
        f"Digits, {cfg.mlp_per_class} inputs per class, each twice with antithetic target "
        f"perturbations ±{cfg.mlp_target_noise}·e (N = {N}, non-realizable: per-sample "
        f"gradients persist at the minimum). MLP 64-{'-'.join(map(str, cfg.mlp_widths))}-10 "
        f"({cfg.mlp_activation}), P = {int(start['P'])}, MSE. At the start: loss "
        f"{start['loss']:.6g} (the minimum is mean(s²e²) = "
        f"{float(((y[: N // 2] - y[N // 2 :]) ** 2).mean() / 4):.6g}), "
        f"‖∇L‖ = {start['grad_norm']:.2g}. Continued {cfg.mlp_steps} steps with lr "
        f"{cfg.mlp_lr}: GD; SGD (batch {cfg.mlp_batch}, with replacement); GD + isotropic "
        f"noise with σ² = tr C_B / P = {start['iso_std'] ** 2:.3g} ('sgd' convention: same "
        "total noise power as SGD); GD + Gaussian noise with covariance C_B from per-sample "
        f"gradients (HessianShapedNoiseGD). {cfg.mlp_runs} independent noise seed(s) per "
        "process.",
    )


def _run_processes(
    cfg: Wei2019Config, start: torch.nn.Module, data, iso_std: float, tick: Callable[[str], None]
) -> dict[str, list[dict[str, list[float]]]]:
    """Every continuation: one GD run, ``mlp_runs`` noise seeds of each other process."""
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
    return runs


def _se(x: np.ndarray, R: int) -> float:
    return float(x.std(ddof=1) / math.sqrt(R)) if R > 1 else float("nan")


def _summarise(
    run_dir: RunDir, name: str, reps: list[dict[str, list[float]]]
) -> tuple[dict[str, Any], dict[str, np.ndarray], tuple[Any, Any], tuple[Any, Any]]:
    """One process over its seeds: summary row, changes, and ``(mean, se)`` series."""
    tr = np.asarray([r["trace"] for r in reps])
    ld = np.asarray([r["logdet"] for r in reps])
    est = np.asarray([r["trace_se"] for r in reps])
    d_tr = tr[:, -1] - tr[:, 0]
    d_ld = ld[:, -1] - ld[:, 0]
    changes = {"trace_change": d_tr, "logdet_change": d_ld}
    ok = np.isfinite(d_tr) & np.isfinite(d_ld)
    R = int(ok.sum())
    tr, ld, est = tr[ok], ld[ok], est[ok]
    tr_m, ld_m = tr.mean(0), ld.mean(0)
    tr_se = np.sqrt((tr.std(0, ddof=1) ** 2 if R > 1 else 0.0) / R + (est**2).mean(0) / R)
    ld_se = ld.std(0, ddof=1) / np.sqrt(R) if R > 1 else np.zeros_like(ld_m)
    d_tr, d_ld = d_tr[ok], d_ld[ok]
    summary = {
        "trace_start": float(tr_m[0]),
        "trace_end": float(tr_m[-1]),
        "trace_change": float(d_tr.mean()),
        "trace_change_se": _se(d_tr, R),
        "logdet_change": float(d_ld.mean()),
        "logdet_change_se": _se(d_ld, R),
        "final_loss": float(np.nanmean([r["loss"][-1] for r in reps])),
        "runs": R,
        "diverged": int((~ok).sum()),
    }
    run_dir.add_array(f"mlp_{name}_trace", tr)
    run_dir.add_array(f"mlp_{name}_logdet", ld)
    return summary, changes, (tr_m, tr_se), (ld_m, ld_se)


def _mlp_figures(
    cfg: Wei2019Config, run_dir: RunDir, steps: np.ndarray, P: int, s_tr: dict, s_ld: dict
) -> None:
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


def _emp_trace(X: Tensor) -> tuple[float, float]:
    """Trace of the empirical covariance of the columns of ``X`` and its s.e."""
    K = X.shape[1]
    q = (X - X.mean(1, keepdim=True)).pow(2).sum(0)
    return float(q.mean() * K / (K - 1)), float(q.std() / math.sqrt(K))


def _noise_check(
    cfg: Wei2019Config,
    run_dir: RunDir,
    start: torch.nn.Module,
    data,
    sampler: SGDNoiseSampler,
    S: Tensor,
    iso_std: float,
) -> tuple[float, dict[str, tuple[float, float]]]:
    """Part 3: the injected noise's total power (and alignment with H) at the start point.

    ``S`` is the sampler's factor (``C_B = S Sᵀ``).

    Returns:
        ``(tr C_B, {noise: (measured trace, s.e.)})``.
    """
    trC = float((S * S).sum())
    K, z = cfg.noise_draws, cfg.z_holds
    g = gen(cfg.seed + 77)
    idx = torch.randint(0, data[0].shape[0], (K, cfg.mlp_batch), generator=g)
    G = sampler.gradients()
    P = S.shape[0]
    gbar = G.mean(1, keepdim=True)
    sgd_noise = G[:, idx].mean(-1) - gbar  # [P, K] actual minibatch-gradient noise
    shaped = sampler.sample(num_samples=K, generator=g)
    iso = iso_std * torch.randn(P, K, generator=g, dtype=G.dtype)
    rows, meas = [], {}
    for label, X in (("SGD minibatch", sgd_noise), ("H-shaped", shaped), ("isotropic", iso)):
        t, se = _emp_trace(X)
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
    if P <= cfg.dense_max:
        A = hessian(start, "mse", data).to_dense().to(torch.float64)
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
    record(
        run_dir,
        S3,
        "the injected noise has the intended total power tr C_B (all three)",
        "; ".join(f"{k}: {t:.4g} ± {se:.2g}" for k, (t, se) in meas.items()) + f" vs {trC:.4g}",
        all(abs(t - trC) <= z * se for t, se in meas.values()),
    )
    return trC, meas


def part2(cfg: Wei2019Config, run_dir: RunDir, tick: Callable[[str], None]) -> dict[str, Any]:
    """Parts 2 and 3: train to the minimum, continue each process, check the noise."""
    data = _mlp_data(cfg)
    t0 = time.perf_counter()
    start = _train_to_minimum(cfg, data)
    obj = Objective(start, "mse", data)
    P, N = obj.space.size, obj.num_data
    grad_norm = float(obj.gradient().norm())
    loss0 = obj.value()
    tick("MLP trained to the minimum")
    sampler = SGDNoiseSampler(obj, cfg.mlp_batch)
    S = sampler.factor_matrix()
    iso_std = math.sqrt(float((S * S).sum()) / P)
    info = {"P": P, "N": N, "loss": loss0, "grad_norm": grad_norm, "iso_std": iso_std}
    _describe(cfg, run_dir, data, info)
    runs = _run_processes(cfg, start, data, iso_std, tick)
    steps = np.asarray(runs["GD"][0]["step"], dtype=np.float64)
    summary: dict[str, Any] = {}
    changes: dict[str, dict[str, np.ndarray]] = {}
    s_tr, s_ld = {}, {}
    for name, reps in runs.items():
        summary[name], changes[name], s_tr[name], s_ld[name] = _summarise(run_dir, name, reps)
    run_dir.add_array("mlp_steps", steps)
    _mlp_figures(cfg, run_dir, steps, P, s_tr, s_ld)
    run_dir.add_table(S2, "MLP changes", [{"process": n, **v} for n, v in summary.items()])
    claims, verdicts = _mlp_claims(run_dir, summary, changes, cfg.z_holds)
    trC, meas = _noise_check(cfg, run_dir, start, data, sampler, S, iso_std)
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

"""Reproduction of Dinh, Pascanu, Bengio, Bengio (2017), arXiv:1703.04933.

"Sharp Minima Can Generalize For Deep Nets": for a ReLU network the rescaling
``T_α(θ₁, θ₂) = (αθ₁, α⁻¹θ₂)`` of two consecutive layers leaves the function unchanged,
but moves every usual flatness measure — ``λ_max(H)``, ``tr(H)``, Keskar's
ε-sharpness — by orders of magnitude, because ``∇²L(T_αθ) = D⁻¹∇²L(θ)D⁻¹`` with
``D = diag(αI, α⁻¹I)``. So flatness in this sense cannot by itself explain generalization.

What is measured, for ``α`` over several orders of magnitude (``T_α`` on the first two
Linear layers of a ReLU MLP trained on digits; in the full size also on the first two
convolutions of a small ReLU LeNet):

* ``max_x |f_α(x) − f(x)| / max_x |f(x)|`` on the test set, and the test accuracy;
* not invariant: ``λ_max(H)`` (Lanczos), ``tr(H)`` (block-Krylov trace estimator with a
  fixed seed), ε-sharpness (L2 ball, projected gradient ascent from a seeded random
  start, :func:`hesslab.measures.sharpness.epsilon_sharpness`);
* invariant: ``Σ_j θ_j² H_jj = tr(ΘHΘ)`` and ``λ_max(ΘHΘ)``, and per parameter tensor
  ``λ_max(H_pp)·‖θ_p‖²`` and ``tr(H_pp)·‖θ_p‖²/P_p``
  (:mod:`hesslab.measures.sharpness`).

Where the Hessian is evaluated. The measures are computed at the trained network (a
near-critical point; its gradient norm is reported). For this *linear* reparametrization
the identity ``∇²L(Dθ) = D⁻¹∇²L(θ)D⁻¹`` actually holds at every ``θ`` (``L(Dθ') = L(θ')``
for all ``θ'``, differentiate twice), and hesslab's tests check it at a non-critical point
too; the "critical point" condition in the paper matters for nonlinear
reparametrizations, whose Jacobian has a second derivative.

All computations are in float64, so function preservation is checked to ~1e-12 and the
invariant measures agree to ~1e-9 (the same seeds give the same probes, and the rescaled
operators differ from the original by exact diagonal similarities/scalar factors).

Run: ``hesslab reproduce dinh2017 --smoke`` (one MLP, 7 values of α; about 15-30 s on
2 CPU cores) or ``hesslab reproduce dinh2017`` (wider MLP on all training points, plus a
convnet; see :data:`FULL_SECONDS`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hesslab.data import digits
from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments._claims import record
from hesslab.measures.sharpness import (
    epsilon_sharpness,
    layer_normalized_sharpness,
    scale_invariant_operator,
)
from hesslab.models import lenet, mlp
from hesslab.objective import Objective
from hesslab.operators import hessian
from hesslab.quantities import Settings, measure
from hesslab.reparam import rescale_pair, scalable_layers
from hesslab.report.progress import StepProgress
from hesslab.report.run import RunDir
from hesslab.train import fit

__all__ = ["FULL_SECONDS", "SMOKE_SECONDS", "SPEC", "Dinh2017Config", "run"]

logger = logging.getLogger(__name__)

#: Measured wall time of :meth:`Dinh2017Config.smoke` with one CPU thread.
SMOKE_SECONDS = 20.0
#: Wall time of :meth:`Dinh2017Config.full`: a full run here (results/dinh2017) took 69 s
#: CPU with one thread (466 s wall with the 2 cores shared ~9 ways; 141 s in issue 19).
FULL_SECONDS = 70.0

PAPER = "Dinh, Pascanu, Bengio, Bengio (2017), arXiv:1703.04933"
S1 = "1. Rescaled ReLU MLP"
S2 = "2. Rescaled ReLU convnet"
S0 = "Setup"


#: measures that move under rescaling / that do not
MOVING = ("lambda_max", "trace", "eps_sharpness")
INVARIANT = (
    "inv_trace",
    "inv_lambda_max",
    "layer_norm_lambda_max",
    "layer_norm_trace",
)


@dataclass(frozen=True)
class Dinh2017Config:
    """Every knob of the reproduction. Build with :meth:`smoke` or :meth:`full`.

    Attributes:
        seed: seed of the split, the weights, the batch order and every estimator.
        widths: hidden widths of the ReLU MLP.
        epochs: SGD epochs.
        lr: SGD learning rate.
        momentum: SGD momentum.
        batch_size: SGD batch size.
        hessian_points: training points the curvature measures use (``0``: all).
        alphas: the factors ``α`` of ``T_α`` (on the first two Linear/Conv layers).
        eps: radius of the ε-sharpness L2 ball.
        sharpness_steps: projected gradient ascent steps of ε-sharpness.
        trace_matvecs: products of each trace estimate.
        lanczos_tol: Lanczos tolerance of every ``λ_max``.
        convnet: also run a small ReLU LeNet on digits images.
        conv_channels: channels of its two convolutions.
        conv_hidden: widths of its two hidden fully connected layers.
        output_tol: largest relative output change that counts as "the function is
            unchanged".
        move_min: smallest ratio ``max/min`` over ``α`` of ``λ_max`` that counts as
            "moved by orders of magnitude".
        invariant_tol: largest relative deviation over ``α`` of an invariant measure.
    """

    seed: int = 0
    widths: tuple[int, ...] = (16,)
    epochs: int = 30
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 64
    hessian_points: int = 256
    alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
    eps: float = 0.05
    sharpness_steps: int = 10
    trace_matvecs: int = 48
    lanczos_tol: float = 1e-8
    convnet: bool = False
    conv_channels: tuple[int, int] = (4, 8)
    conv_hidden: tuple[int, int] = (32, 16)
    output_tol: float = 1e-5
    move_min: float = 100.0
    invariant_tol: float = 1e-6

    @classmethod
    def smoke(cls) -> Dinh2017Config:
        """One MLP (64-16-10) on 256 Hessian points, 7 values of α (well under 40 s)."""
        return cls()

    @classmethod
    def full(cls) -> Dinh2017Config:
        """A 64-32-32-10 MLP and a small LeNet, 512 Hessian points, 13 values of α."""
        return cls(
            widths=(32, 32),
            hessian_points=512,
            alphas=tuple(float(10.0**k) for k in np.arange(-3.0, 3.01, 0.5)),
            sharpness_steps=20,
            trace_matvecs=96,
            convnet=True,
        )


def _measures(
    model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], cfg: Dinh2017Config
) -> dict[str, Any]:
    """Every measure of one (rescaled) model on the Hessian data."""
    obj = Objective(model, "ce", data)
    H = hessian(obj)
    seed = cfg.seed
    s = Settings(tol=cfg.lanczos_tol, return_vectors=False, num_matvecs=cfg.trace_matvecs)
    lam = measure("lambda_max", H, s, torch.Generator().manual_seed(seed))
    tr = measure("trace", H, s, torch.Generator().manual_seed(seed + 1))
    sharp = epsilon_sharpness(
        obj, cfg.eps, steps=cfg.sharpness_steps, generator=torch.Generator().manual_seed(seed + 2)
    )
    inv_op = scale_invariant_operator(H, obj.flat_params())
    inv_tr = measure("trace", inv_op, s, torch.Generator().manual_seed(seed + 3))
    inv_lam = measure("lambda_max", inv_op, s, torch.Generator().manual_seed(seed + 4))
    layers = layer_normalized_sharpness(
        obj,
        trace_method="krylov",
        num_matvecs=min(cfg.trace_matvecs, 32),
        tol=cfg.lanczos_tol,
        seed=seed + 5,
    )
    return {
        "loss": sharp.loss,
        "grad_norm": float(obj.gradient().norm()),
        "lambda_max": float(lam.values[0]),
        "trace": float(tr.value),
        "trace_stderr": float(tr.stderr),
        "eps_sharpness": float(sharp.value),
        "inv_trace": float(inv_tr.value),
        "inv_trace_stderr": float(inv_tr.stderr),
        "inv_lambda_max": float(inv_lam.values[0]),
        "layers": {k: asdict(v) for k, v in layers.items()},
        "num_matvecs": int(
            lam.num_matvecs
            + tr.num_matvecs
            + inv_tr.num_matvecs
            + inv_lam.num_matvecs
            + sum(v.num_matvecs for v in layers.values())
        ),
        "num_gradients": sharp.num_gradients + 1,
    }


def _layer_summary(layers: dict[str, dict[str, Any]], key: str) -> float:
    """The largest per-tensor value of ``key`` (a single number per model for the table)."""
    return max(v[key] for v in layers.values())


def _figure(alphas: np.ndarray, rows: list[dict[str, Any]], title: str) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    series = {
        "λ_max(H)": ("lambda_max", "-", "o"),
        "tr(H)": ("trace", "-", "s"),
        "ε-sharpness": ("eps_sharpness", "-", "^"),
        "Σθ²H_jj = tr(ΘHΘ)": ("inv_trace", "--", "o"),
        "λ_max(ΘHΘ)": ("inv_lambda_max", "--", "s"),
        "max_p λ_max(H_pp)‖θ_p‖²": ("layer_norm_lambda_max", "--", "^"),
        "max |f_α − f| / max |f|": ("output_change", ":", "x"),
    }
    for label, (key, ls, mk) in series.items():
        y = np.array([abs(r[key]) for r in rows], dtype=np.float64)
        y = np.where(y > 0, y, np.nan)
        ax.plot(alphas, y, linestyle=ls, marker=mk, ms=4, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("α   (θ₁, θ₂) → (αθ₁, θ₂/α)")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="center", bbox_to_anchor=(0.5, 0.4), ncol=2, framealpha=0.85)
    return fig


def _sweep(
    run: RunDir,
    section: str,
    model: nn.Module,
    hess_data: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    cfg: Dinh2017Config,
    tick: StepProgress,
    what: str,
) -> dict[str, Any]:
    """Rescale ``model`` by ``T_α`` on its first two layers for every ``α``; measure."""
    rows = _rescaled_rows(model, hess_data, test, cfg, tick, what)
    stats = _sweep_statistics(rows)
    _sweep_report(run, section, scalable_layers(model), hess_data, cfg, what, rows, stats)
    claims = _sweep_claims(run, section, cfg, stats)
    for r in rows:
        del r["_layers"]
    return {
        "rows": rows,
        "output_change": stats["out_max"],
        "test_accuracies": sorted(stats["accs"]),
        "moves": stats["moves"],
        "invariant_deviation": stats["inv_dev"],
        "claims": claims,
    }


def _rescaled_rows(
    model: nn.Module,
    hess_data: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    cfg: Dinh2017Config,
    tick: StepProgress,
    what: str,
) -> list[dict[str, Any]]:
    """One row of measures per ``α`` (each with its per-tensor ``"_layers"``)."""
    xt, yt = test
    with torch.no_grad():
        f0 = model(xt)
    scale = float(f0.abs().max())
    rows: list[dict[str, Any]] = []
    for alpha in cfg.alphas:
        m = rescale_pair(model, 0, alpha)
        with torch.no_grad():
            fa = m(xt)
        meas = _measures(m, hess_data, cfg)
        row = {
            "alpha": float(alpha),
            "output_change": float((fa - f0).abs().max()) / scale,
            "test_accuracy": float((fa.argmax(1) == yt).double().mean()),
            "train_loss": meas["loss"],
            "grad_norm": meas["grad_norm"],
            "lambda_max": meas["lambda_max"],
            "trace": meas["trace"],
            "eps_sharpness": meas["eps_sharpness"],
            "inv_trace": meas["inv_trace"],
            "inv_lambda_max": meas["inv_lambda_max"],
            "layer_norm_lambda_max": _layer_summary(meas["layers"], "normalized_lambda_max"),
            "layer_norm_trace": _layer_summary(meas["layers"], "normalized_trace"),
            "num_matvecs": meas["num_matvecs"],
        }
        row["_layers"] = meas["layers"]
        rows.append(row)
        tick(f"{what}: α = {alpha:.3g}")
    return rows


def _sweep_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the claims read off the rows.

    Returns:
        ``{"alphas", "ref" (the row closest to α = 1), "out_max", "accs", "moves"
        (max/min of each moving measure), "inv_dev" (max relative deviation of each
        invariant measure from ``ref``, per tensor too)}``.
    """
    alphas = np.array([r["alpha"] for r in rows])
    i1 = int(np.argmin(np.abs(np.log10(alphas))))  # the row closest to α = 1
    ref = rows[i1]
    moves = {
        k: max(abs(r[k]) for r in rows) / max(min(abs(r[k]) for r in rows), 1e-300) for k in MOVING
    }
    inv_dev = {
        k: max(abs(r[k] - ref[k]) for r in rows) / max(abs(ref[k]), 1e-300) for k in INVARIANT
    }
    # per-tensor deviations (the table reports the max over tensors; check each tensor)
    for key in ("normalized_lambda_max", "normalized_trace"):
        dev = 0.0
        for name, v in ref["_layers"].items():
            for r in rows:
                dev = max(dev, abs(r["_layers"][name][key] - v[key]) / max(abs(v[key]), 1e-300))
        inv_dev[f"per_tensor_{key}"] = dev
    return {
        "alphas": alphas,
        "ref": ref,
        "out_max": max(r["output_change"] for r in rows),
        "accs": {r["test_accuracy"] for r in rows},
        "moves": moves,
        "inv_dev": inv_dev,
    }


def _sweep_report(
    run: RunDir,
    section: str,
    layers: list[str],
    hess_data: tuple[torch.Tensor, torch.Tensor],
    cfg: Dinh2017Config,
    what: str,
    rows: list[dict[str, Any]],
    stats: dict[str, Any],
) -> None:
    """The table and the figure of one rescaling sweep."""
    table = [
        {
            "α": f"{r['alpha']:.3g}",
            "max|Δf|/max|f|": f"{r['output_change']:.1e}",
            "test acc": f"{r['test_accuracy']:.4f}",
            "λ_max(H)": f"{r['lambda_max']:.4g}",
            "tr(H)": f"{r['trace']:.4g}",
            "ε-sharpness": f"{r['eps_sharpness']:.4g}",
            "tr(ΘHΘ)": f"{r['inv_trace']:.10g}",
            "λ_max(ΘHΘ)": f"{r['inv_lambda_max']:.10g}",
            "max_p λ_max(H_pp)‖θ_p‖²": f"{r['layer_norm_lambda_max']:.10g}",
            "max_p tr(H_pp)‖θ_p‖²/P_p": f"{r['layer_norm_trace']:.10g}",
        }
        for r in rows
    ]
    run.add_table(
        section,
        f"{what} measures vs alpha",
        table,
        caption=(
            f"T_α on layers {layers[0]} and {layers[1]}; curvature on {hess_data[0].shape[0]} "
            f"training points; ε = {cfg.eps} (L2 ball, {cfg.sharpness_steps} ascent steps); "
            f"traces: {cfg.trace_matvecs} products, fixed seed."
        ),
    )
    run.add_figure(
        section,
        f"{what}_measures_vs_alpha",
        _figure(stats["alphas"], rows, f"{what}: flatness measures under T_α (log-log)"),
        caption=(
            "Solid: measures that move (λ_max, trace, ε-sharpness); dashed: scale-invariant "
            "measures (flat lines); dotted: relative output change (float64 rounding)."
        ),
    )


def _sweep_claims(
    run: RunDir, section: str, cfg: Dinh2017Config, stats: dict[str, Any]
) -> dict[str, bool]:
    """The scalars and the three claims (function kept, measures move, invariants stay).

    Returns:
        ``{"function": holds, "moves": holds, "invariant": holds}``.
    """
    alphas, out_max, accs = stats["alphas"], stats["out_max"], stats["accs"]
    moves, inv_dev = stats["moves"], stats["inv_dev"]
    for k, v in moves.items():
        run.add_scalar(section, f"{k} max/min over alpha", v)
    for k, v in inv_dev.items():
        run.add_scalar(section, f"{k} max relative deviation", v)
    run.add_scalar(section, "max relative output change", out_max)
    run.add_scalar(section, "gradient norm at alpha=1", stats["ref"]["grad_norm"])
    holds_f = out_max <= cfg.output_tol and len(accs) == 1
    record(
        run,
        section,
        "T_α leaves the function unchanged (outputs and test accuracy)",
        f"max relative output change {out_max:.1e} over α ∈ [{alphas.min():.0e}, "
        f"{alphas.max():.0e}]; test accuracies {sorted(accs)}",
        holds_f,
    )
    holds_m = all(v >= cfg.move_min for v in moves.values())
    record(
        run,
        section,
        "λ_max, tr(H) and ε-sharpness can be made arbitrarily large by T_α",
        ", ".join(f"{k} moves {v:.3g}x" for k, v in moves.items()),
        holds_m,
    )
    holds_i = all(v <= cfg.invariant_tol for v in inv_dev.values())
    record(
        run,
        section,
        "normalized measures (Σθ²H_jj, λ_max(ΘHΘ), λ_max(H_pp)‖θ_p‖², tr(H_pp)‖θ_p‖²/P_p) "
        "are invariant",
        "max relative deviation " + ", ".join(f"{k} {v:.1e}" for k, v in inv_dev.items()),
        holds_i,
    )
    return {"function": holds_f, "moves": holds_m, "invariant": holds_i}


def _subset(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (x, y) if n <= 0 or n >= x.shape[0] else (x[:n], y[:n])


def _setup(ctx: Context) -> None:
    ctx.run_dir.add_text(
        S0,
        f"{PAPER}. Function-preserving rescaling T_α(θ₁, θ₂) = (αθ₁, θ₂/α) of the first two "
        "layers of trained ReLU networks (biases: layer 1's bias × α). Everything in float64. "
        "The curvature is evaluated at the trained network (a near-critical point, gradient "
        "norm reported); for this linear reparametrization ∇²L(Dθ) = D⁻¹∇²L(θ)D⁻¹ holds at "
        "every θ, so the invariances are exact there as well. ε-sharpness is Keskar et al.'s "
        "(L(θ′) − L(θ)) / (1 + L(θ)) maximised over ‖θ′ − θ‖ ≤ ε by projected gradient ascent "
        "(a lower bound on the maximum).",
    )


def _training(cfg: Dinh2017Config) -> dict[str, Any]:
    return dict(
        lr=cfg.lr,
        momentum=cfg.momentum,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        seed=cfg.seed,
    )


def _mlp_part(ctx: Context) -> dict[str, Any]:
    cfg, run_dir, tick, dtype = ctx.cfg, ctx.run_dir, ctx.tick, torch.float64
    split = digits(seed=cfg.seed, dtype=dtype)
    res = fit(mlp(64, cfg.widths, 10, seed=cfg.seed, dtype=dtype), split, **_training(cfg))
    model = res.model.eval()
    tick("MLP trained")
    run_dir.add_scalar(S1, "MLP test accuracy", res.final_test_accuracy)
    run_dir.add_scalar(S1, "MLP train loss", res.final_train_loss)
    hess = _subset(split.train.x, split.train.y, cfg.hessian_points)
    return _sweep(run_dir, S1, model, hess, (split.test.x, split.test.y), cfg, tick, "MLP")


def _convnet_part(ctx: Context) -> dict[str, Any]:
    cfg, run_dir, tick, dtype = ctx.cfg, ctx.run_dir, ctx.tick, torch.float64
    isplit = digits(flat=False, seed=cfg.seed, dtype=dtype)
    net = lenet(
        1, 10, image_size=8, seed=cfg.seed, channels=cfg.conv_channels,
        hidden=cfg.conv_hidden, dtype=dtype,
    )  # fmt: skip
    res_c = fit(net, isplit, **_training(cfg))
    conv = res_c.model.eval()
    tick("convnet trained")
    run_dir.add_scalar(S2, "convnet test accuracy", res_c.final_test_accuracy)
    hess_c = _subset(isplit.train.x, isplit.train.y, cfg.hessian_points)
    return _sweep(run_dir, S2, conv, hess_c, (isplit.test.x, isplit.test.y), cfg, tick, "convnet")


def _parts(cfg: Dinh2017Config) -> list[Part]:
    return [Part("mlp", _mlp_part)] + ([Part("convnet", _convnet_part)] if cfg.convnet else [])


def _summary(ctx: Context) -> dict[str, Any]:
    """The headline.

    Returns:
        ``{"mlp": {"output_change", "test_accuracies", "moves": {measure: max/min},
        "invariant_deviation": {measure: max rel. deviation}, "rows": [...],
        "claims": {...}}, "convnet": {...} | None, "claims": {section: {claim: holds}},
        "seconds": {...}, "config": {...}}``.
    """
    seconds = ctx.record_part_seconds()
    return {
        "mlp": ctx.results["mlp"],
        "convnet": ctx.results.get("convnet"),
        "claims": ctx.claims,
        "seconds": seconds,
        "config": asdict(ctx.cfg),
    }


#: The registry entry (``hesslab.experiments.EXPERIMENTS[...]`` imports this module on access).
SPEC = Experiment(
    name="dinh2017",
    title="Sharp minima can generalize: rescaling moves flatness (Dinh et al. 2017)",
    paper=("Dinh, Pascanu, Bengio, Bengio (2017), Sharp Minima Can Generalize For Deep Nets"),
    arxiv="1703.04933",
    description=(
        "Function-preserving rescalings T_α of trained ReLU networks on digits (an MLP; "
        "in the full size also a convnet): outputs and test accuracy stay the same while "
        "λ_max, tr(H) and ε-sharpness move by orders of magnitude; scale-invariant "
        "measures (Σθ²H_jj, λ_max(ΘHΘ), per-tensor normalized λ_max and trace) stay "
        "constant."
    ),
    config_type=Dinh2017Config,
    smoke_seconds=SMOKE_SECONDS,
    full_seconds=FULL_SECONDS,
    parts=_parts,
    summary=_summary,
    steps=lambda cfg: len(cfg.alphas) * (1 + int(cfg.convnet)) + 1 + int(cfg.convnet),
    setup=_setup,
)

#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size). Reference: Dinh, Pascanu,
#: Bengio, Bengio (2017), "Sharp Minima Can Generalize For Deep Nets", ICML,
#: arXiv:1703.04933.
run = SPEC.run

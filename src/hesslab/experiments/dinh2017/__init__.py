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

Layout: :mod:`.config` (the config, section names, which measures move), :mod:`.measures`
(the measures of one rescaled model, the rows of a sweep, their statistics),
:mod:`.report` (table, figure, scalars and claims of a sweep); this module holds the
parts, the summary and :data:`SPEC`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from hesslab.data import digits, mnist5k
from hesslab.errors import ConfigurationError
from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments.dinh2017.config import (
    FULL_SECONDS,
    IMAGE_SIDE,
    INVARIANT,
    MNIST_FULL_SECONDS,
    MOVING,
    PAPER,
    S0,
    S1,
    S2,
    SMOKE_SECONDS,
    Dinh2017Config,
    Dinh2017MnistConfig,
)
from hesslab.experiments.dinh2017.measures import rescaled_rows, subset, sweep_statistics
from hesslab.experiments.dinh2017.report import sweep_claims, sweep_report
from hesslab.models import lenet, mlp
from hesslab.reparam import scalable_layers
from hesslab.train import fit

__all__ = [
    "FULL_SECONDS",
    "INVARIANT",
    "MNIST_FULL_SECONDS",
    "MNIST_SPEC",
    "MOVING",
    "SMOKE_SECONDS",
    "SPEC",
    "Dinh2017Config",
    "Dinh2017MnistConfig",
    "run",
]


def _sweep(ctx: Context, section: str, model: nn.Module, split: Any, what: str) -> dict[str, Any]:
    """Rescale ``model`` by ``T_α`` on its first two layers for every ``α``; measure.

    The curvature is measured on the first ``cfg.hessian_points`` training points of
    ``split``, outputs and accuracy on its test set.
    """
    cfg, run = ctx.cfg, ctx.run_dir
    hess_data = subset(split.train.x, split.train.y, cfg.hessian_points)
    test = (split.test.x, split.test.y)
    rows = rescaled_rows(model, hess_data, test, cfg, ctx.tick, what)
    stats = sweep_statistics(rows)
    sweep_report(run, section, scalable_layers(model), hess_data, cfg, what, rows, stats)
    claims = sweep_claims(run, section, cfg, stats)
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


def _load(cfg: Dinh2017Config, flat: bool) -> Any:
    """``cfg.data``'s split in float64 (flat vectors or ``[N, 1, side, side]`` images)."""
    load = mnist5k if cfg.data == "mnist5k" else digits
    return load(flat=flat, seed=cfg.seed, dtype=torch.float64)


def _mlp_part(ctx: Context) -> dict[str, Any]:
    cfg, run_dir, tick, dtype = ctx.cfg, ctx.run_dir, ctx.tick, torch.float64
    split = _load(cfg, flat=True)
    inputs = IMAGE_SIDE[cfg.data] ** 2
    res = fit(mlp(inputs, cfg.widths, 10, seed=cfg.seed, dtype=dtype), split, **_training(cfg))
    model = res.model.eval()
    tick("MLP trained")
    run_dir.add_scalar(S1, "MLP test accuracy", res.final_test_accuracy)
    run_dir.add_scalar(S1, "MLP train loss", res.final_train_loss)
    return _sweep(ctx, S1, model, split, "MLP")


def _convnet_part(ctx: Context) -> dict[str, Any]:
    cfg, run_dir, tick, dtype = ctx.cfg, ctx.run_dir, ctx.tick, torch.float64
    isplit = _load(cfg, flat=False)
    net = lenet(
        1, 10, image_size=IMAGE_SIDE[cfg.data], seed=cfg.seed, channels=cfg.conv_channels,
        hidden=cfg.conv_hidden, dtype=dtype,
    )  # fmt: skip
    res_c = fit(net, isplit, **_training(cfg))
    conv = res_c.model.eval()
    tick("convnet trained")
    run_dir.add_scalar(S2, "convnet test accuracy", res_c.final_test_accuracy)
    return _sweep(ctx, S2, conv, isplit, "convnet")


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


def _check(cfg: Dinh2017Config) -> None:
    if cfg.data not in IMAGE_SIDE:
        raise ConfigurationError(f"data must be one of {tuple(IMAGE_SIDE)}, got {cfg.data!r}")


#: the fields both entries share (the data and the sizes are the configs' own)
_COMMON: dict[str, Any] = dict(
    paper=("Dinh, Pascanu, Bengio, Bengio (2017), Sharp Minima Can Generalize For Deep Nets"),
    arxiv="1703.04933",
    smoke_seconds=SMOKE_SECONDS,
    parts=_parts,
    summary=_summary,
    steps=lambda cfg: len(cfg.alphas) * (1 + int(cfg.convnet)) + 1 + int(cfg.convnet),
    setup=_setup,
    check=_check,
)
_WHAT = (
    "(an MLP; in the full size also a convnet): outputs and test accuracy stay the same "
    "while λ_max, tr(H) and ε-sharpness move by orders of magnitude; scale-invariant "
    "measures (Σθ²H_jj, λ_max(ΘHΘ), per-tensor normalized λ_max and trace) stay constant."
)

#: The registry entry (``hesslab.experiments.EXPERIMENTS[...]`` imports this module on access).
SPEC = Experiment(
    name="dinh2017",
    title="Sharp minima can generalize: rescaling moves flatness (Dinh et al. 2017)",
    description="Function-preserving rescalings T_α of trained ReLU networks on digits " + _WHAT,
    config_type=Dinh2017Config,
    full_seconds=FULL_SECONDS,
    **_COMMON,
)

#: ``dinh2017-mnist``: the same sweeps on 5,000 real MNIST images (mnist5k).
MNIST_SPEC = Experiment(
    name="dinh2017-mnist",
    title="Sharp minima can generalize, on real MNIST (Dinh et al. 2017)",
    description=(
        "Function-preserving rescalings T_α of ReLU networks trained on 4,000 real MNIST "
        "images (mnist5k) " + _WHAT
    ),
    config_type=Dinh2017MnistConfig,
    full_seconds=MNIST_FULL_SECONDS,
    **_COMMON,
)

#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size). Reference: Dinh, Pascanu,
#: Bengio, Bengio (2017), "Sharp Minima Can Generalize For Deep Nets", ICML,
#: arXiv:1703.04933.
run = SPEC.run

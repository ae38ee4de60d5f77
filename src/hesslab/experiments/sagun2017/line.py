"""sagun2017 part 5: small- and large-batch solutions.

The loss and ``λ_max`` on the straight line between them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hesslab.data.datasets import Split
from hesslab.experiments.sagun2017.claims import _part5_claim
from hesslab.experiments.sagun2017.config import S5, Sagun2017Config
from hesslab.experiments.sagun2017.spectra import _lambda_max
from hesslab.experiments.sagun2017.train import _finish, _is_min, _mixture, _model, _set_flat
from hesslab.report import plots
from hesslab.report.progress import StepProgress
from hesslab.report.run import RunDir
from hesslab.train import evaluate, fit


def _part5(cfg: Sagun2017Config, run: RunDir, tick: StepProgress) -> dict[str, Any]:
    """Small- vs large-batch solutions: the loss and ``λ_max`` on the line between them."""
    k, seed = cfg.line_k, cfg.seeds[0]
    split = _mixture(
        cfg, k, seed, separation=cfg.line_separation, spread=cfg.line_spread,
        num_per_class=cfg.line_num_per_class,
    )  # fmt: skip
    small, large = _solutions(cfg, split, k, seed)
    gn = {"small": small.final_grad_norm, "large": large.final_grad_norm}
    run.add_text(S5, _line_text(cfg, k))
    ws = torch.nn.utils.parameters_to_vector(small.model.parameters()).detach()
    wl = torch.nn.utils.parameters_to_vector(large.model.parameters()).detach()
    ts, train_l, test_l, lmax = _scan(cfg, split, small.model, ws, wl, seed, tick)
    i0, i1 = int(np.argmin(np.abs(ts))), int(np.argmin(np.abs(ts - 1)))
    inside = np.zeros(ts.shape, dtype=bool)
    inside[i0 : i1 + 1] = True
    barrier = float(train_l[inside].max() - max(train_l[i0], train_l[i1]))
    barrier_test = float(test_l[inside].max() - max(test_l[i0], test_l[i1]))
    arrays = {"t": ts, "train_loss": train_l, "test_loss": test_l, "lambda_max": lmax}
    for name, arr in arrays.items():
        run.add_array(f"part5/{name}", arr)
    _line_figure(cfg, run, ts, train_l, test_l, lmax)
    run.add_table(
        S5,
        "endpoints",
        [
            {"solution": "small batch", "train loss": train_l[i0], "test loss": test_l[i0],
             "λ_max": lmax[i0], "‖∇L‖": gn["small"], "minimum": _is_min(cfg, gn["small"]),
             "train acc": small.final_train_accuracy, "test acc": small.final_test_accuracy},
            {"solution": "large batch", "train loss": train_l[i1], "test loss": test_l[i1],
             "λ_max": lmax[i1], "‖∇L‖": gn["large"], "minimum": _is_min(cfg, gn["large"]),
             "train acc": large.final_train_accuracy, "test acc": large.final_test_accuracy},
        ],
    )  # fmt: skip
    run.add_scalar(S5, "barrier (train)", barrier, unit="nats")
    run.add_scalar(S5, "barrier (test)", barrier_test, unit="nats")
    run.add_scalar(S5, "distance ‖w_large − w_small‖", float((wl - ws).norm()))
    both_min = _is_min(cfg, gn["small"]) and _is_min(cfg, gn["large"])
    _part5_claim(cfg, run, train_l, inside, (i0, i1), barrier, barrier_test, lmax, gn)
    return {
        "barrier": barrier,
        "barrier_test": barrier_test,
        "lambda_max_small": float(lmax[i0]),
        "lambda_max_large": float(lmax[i1]),
        "grad_norm": gn,
        "both_minima": both_min,
        "t": ts.tolist(),
        "train_loss": train_l.tolist(),
    }


def _solutions(cfg: Sagun2017Config, split: Split, k: int, seed: int) -> tuple[Any, Any]:
    """The small-batch (SGD, then polished by GD) and large-batch (GD) solutions."""
    init = _model(cfg, cfg.dim, cfg.widths, k, seed)
    small = fit(
        init, split, loss=cfg.loss, optimizer="sgd", lr=cfg.small_lr,
        batch_size=cfg.small_batch, epochs=cfg.small_epochs, seed=seed,
    )  # fmt: skip
    large = _finish(cfg, fit(
        init, split, loss=cfg.loss, optimizer="gd", lr=cfg.large_lr, steps=cfg.large_steps,
        grad_tol=cfg.grad_tol,
    ), split)  # fmt: skip
    if cfg.polish_steps > 0:  # continue the small-batch solution to a minimum of its basin
        small = _finish(cfg, fit(
            small.model, split, loss=cfg.loss, optimizer="gd", lr=cfg.large_lr,
            steps=cfg.polish_steps, grad_tol=cfg.grad_tol,
        ), split)  # fmt: skip
    return small, large


def _line_text(cfg: Sagun2017Config, k: int) -> str:
    """The setup paragraph of part 5."""
    return (
        f"Same init and data (k = {k}, separation {cfg.line_separation}, spread "
        f"{cfg.line_spread}: overlapping classes, so the loss stays finite). Small batch: "
        f"SGD B = {cfg.small_batch}, lr {cfg.small_lr}, {cfg.small_epochs} epochs; large "
        f"batch: full-batch GD, lr {cfg.large_lr}, {cfg.large_steps} steps"
        + (f" (until ‖∇L‖ ≤ {cfg.grad_tol:g})" if cfg.grad_tol else "")
        + (
            f"; the small-batch solution then polished by full-batch GD ({cfg.polish_steps} "
            "steps at most) to a minimum of its basin"
            if cfg.polish_steps
            else ""
        )
        + ". Line w(t) = (1−t)·w_small + t·w_large."
    )


def _scan(
    cfg: Sagun2017Config,
    split: Split,
    model: Any,
    ws: torch.Tensor,
    wl: torch.Tensor,
    seed: int,
    tick: StepProgress,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test loss and ``λ_max`` at ``w(t) = (1-t) w_small + t w_large``.

    Returns:
        ``(t, train_loss, test_loss, lambda_max)``; ``t`` always holds 0 and 1.
    """
    t0, t1, num = cfg.line_t
    ts = np.linspace(float(t0), float(t1), int(num))
    if not np.any(np.isclose(ts, 0.0)) or not np.any(np.isclose(ts, 1.0)):
        ts = np.unique(np.concatenate([ts, [0.0, 1.0]]))
    train_l, test_l, lmax = [], [], []
    for t in ts:
        m = _set_flat(model, (1 - t) * ws + t * wl)
        train_l.append(evaluate(m, split.train, loss=cfg.loss)[0])
        test_l.append(evaluate(m, split.test, loss=cfg.loss)[0])
        lmax.append(_lambda_max(cfg, m, split.train.tensors, seed))
        tick(f"sagun2017 part 5: t={t:.2f}", 1.0 / len(ts) * 3)
    return ts, np.asarray(train_l), np.asarray(test_l), np.asarray(lmax)


def _line_figure(
    cfg: Sagun2017Config,
    run: RunDir,
    ts: np.ndarray,
    train_l: np.ndarray,
    test_l: np.ndarray,
    lmax: np.ndarray,
) -> None:
    """Loss and sharpness on the line (part 5's figure)."""
    run.add_figure(
        S5,
        "part5_line",
        plots.plot_line_scan(
            ts,
            {"train loss": train_l, "test loss": test_l},
            secondary={"λ_max (train Hessian)": lmax},
            secondary_label="λ_max",
            endpoint_labels=(f"small batch B={cfg.small_batch}", "large batch (GD)"),
            title="Loss and sharpness between small- and large-batch solutions",
            log_y=True,
        ),
        "Train/test loss (left axis, log scale) and the top Hessian eigenvalue (right axis, "
        "dashed) on the straight line between the two solutions.",
    )

"""``hesslab demo``: a small MLP trained on digits, analysed and reported."""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from hesslab.cli.common import (
    CHECKPOINTS_DIR,
    _already_complete,
    _analysis_config,
    _finish,
    _open_run,
    _out,
    _Stages,
)
from hesslab.errors import ConfigurationError

DEMO_DESCRIPTION = (
    "A 64-32-32-10 ReLU MLP trained on scikit-learn's digits for a few seconds, then the "
    "full curvature summary of its training loss: top/bottom eigenvalues, trace ± stderr, "
    "spectral density, the outliers above its bulk edge, per-layer blocks, Gauss–Newton "
    "vs Hessian outliers and Papyan's class structure, each checked against the exact "
    "(dense float64) spectrum."
)


def cmd_demo(args: argparse.Namespace) -> int:
    """``hesslab demo``: train the digits MLP, analyse it, write the report; exit code."""
    from hesslab import Objective, data, models
    from hesslab.analysis import StageStore, analyze
    from hesslab.train import fit

    t0 = time.perf_counter()
    try:
        widths = [int(w) for w in args.widths.split(",") if w.strip()]
    except ValueError:
        widths = [0]
    if not widths or min(widths) < 1:
        raise ConfigurationError(
            f"--widths must be comma-separated positive integers, e.g. 32,32; got {args.widths!r}"
        )
    cfg = _analysis_config(args, exact_limit=args.exact_limit)
    training = {
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "batch_size": 64,
        "epochs": args.epochs,
    }
    config = {
        "command": "demo",
        "seed": args.seed,
        "device": "cpu",
        "dtype": "float64",
        "data": "digits (scikit-learn, 8x8, standardised; train split 1347 points)",
        "model": "mlp 64-32-32-10 relu",
        "loss": "ce",
        "training": training,
        "analysis": cfg,
    }
    run = _open_run(
        args, "demo", config, title="hesslab demo: digits MLP", description=DEMO_DESCRIPTION
    )
    if run is None:
        return _already_complete(args)
    stages = _Stages(7, "demo", args.quiet)
    stages("training")
    split = data.digits(flat=True, seed=args.seed, dtype=torch.float64)
    model = models.mlp(64, widths, 10, seed=args.seed, dtype=torch.float64)

    def train(_: Any) -> dict[str, Any]:
        # the recorded training settings are the ones used
        res = fit(model, split.train, **training, seed=args.seed, eval_data=split.test)
        (run.path / "metrics.jsonl").unlink(missing_ok=True)  # a retrained run logs afresh
        for rec in res.history:
            run.log_metrics(rec["step"], loss=rec["loss"], accuracy=rec.get("accuracy"))
        return {
            "state_dict": {k: v.detach().cpu().clone() for k, v in res.model.state_dict().items()},
            "seconds": res.seconds,
            "train_accuracy": res.final_train_accuracy,
            "test_accuracy": res.final_test_accuracy,
            "train_loss": res.final_train_loss,
        }

    trained = StageStore(run.path / CHECKPOINTS_DIR, {"widths": widths, **config}).run(
        "training", train
    )
    model.load_state_dict(trained["state_dict"])
    model.eval()
    run.add_text(
        "Training",
        f"SGD (lr 0.05, momentum 0.9, batch 64) for {args.epochs} epochs in "
        f"{trained['seconds']:.1f} s.",
    )
    run.add_scalar("Training", "train accuracy", trained["train_accuracy"])
    run.add_scalar("Training", "test accuracy", trained["test_accuracy"])
    run.add_scalar("Training", "train loss", trained["train_loss"])
    obj = Objective(model, "ce", (split.train.x, split.train.y))
    summary = analyze(obj, run, cfg, progress=stages, checkpoint_dir=run.path / CHECKPOINTS_DIR)
    stages.close()
    _out(f"digits MLP: test accuracy {trained['test_accuracy']:.3f}")
    _finish(run, summary, time.perf_counter() - t0)
    return 0

"""Reproduction of Zhang, Chen, Ding, Li, Sun, Luo (NeurIPS 2024): block heterogeneity.

"Why Transformers Need Adam: A Hessian Perspective", arXiv:2402.16788. Claim reproduced:

    The Hessian spectra of a transformer's parameter blocks (embeddings, Q, K, V, O, MLP,
    LayerNorm) differ sharply from each other ("block heterogeneity"), while a CNN's
    blocks have similar spectra; measured by Jensen-Shannon distances between the blocks'
    SLQ densities (their JS0 is the mean over all pairs of blocks at initialization).

Setup, scaled to 2 CPU cores: the zoo's small GPT (:func:`hesslab.models.gpt`, pre-LN,
causal SDPA, tied embedding) on the bundled character-level text (:func:`hesslab.data.text`)
against the zoo's LeNet-style CNN (:func:`hesslab.models.lenet`) on scikit-learn's 8x8
digits. Each network is measured at initialization and after brief training
(:func:`hesslab.train.fit`: Adam for the GPT, as transformers are trained; SGD with
momentum for the CNN), in float64:

* **Blocks** (their code takes every named parameter tensor): one block per module that
  owns parameters (:func:`hesslab.layer_groups`): a Linear/Conv weight with its bias, a
  LayerNorm's scale with its shift, the token and the position embeddings. The GPT's
  ``q``, ``k``, ``v``, ``o`` projections are separate modules, hence separate blocks.
* **Densities**: :func:`hesslab.spectral_density` of each diagonal block ``H[b, b]``
  (``op.blocks()``) with ``num_steps`` Lanczos steps (capped by the block size: exact
  eigenvalues for small blocks) and ``num_probes`` Rademacher probes, for the token-level
  mean loss (next-token cross-entropy) of ``measure_sequences`` training sequences and the
  class-mean cross-entropy of ``per_class`` digits per class.
* **Distances**: :func:`hesslab.measures.spectrum_js` for every pair of blocks: both
  densities Gaussian-broadened (``σ = sigma_rel`` × the pair's joint spectral width) on
  ``grid_points`` points over the joint support, JS distance with base-2 logarithms (in
  ``[0, 1]``). ``normalize=None`` (default) compares raw eigenvalues on the pair's joint
  axis: a block whose eigenvalues are all tiny next to the other's is a spike at 0 there,
  so it is far from a block with a spread-out bulk and close to one whose mass also sits
  near 0 (differences of scale count as well as differences of shape, the heterogeneity
  Adam's per-coordinate step sizes absorb); ``"scale"`` compares shapes only. The
  paper's exact kernel width and grid are not stated in what we could read; their code
  broadens with ``σ² = 1e-5`` on the raw axis.
* **Statistic and rule**: per seed, ``JS_T`` and ``JS_C``, the mean pairwise JS distance
  of the transformer's and of the CNN's blocks, and their difference
  ``D = JS_T − JS_C``. Over the ``S ≥ 3`` seeds (each seed changes the initialization,
  the data order and the probes), with ``mean(D)`` and its standard error
  ``se = std(D, ddof=1)/√S``: the claim **holds** when ``mean(D) > margin_se · se`` and
  ``mean(D) > 0``, **does not hold** when ``mean(D) < −margin_se · se``, and is
  **undecided** otherwise (``margin_se = 2``). Decided separately at initialization (the
  paper's JS0) and after training.

Run: ``hesslab reproduce zhang2024 --smoke`` (one-block GPT, short sequences, 3 seeds,
about a minute) or ``hesslab reproduce zhang2024`` (see :data:`FULL_SECONDS`; results
committed under ``results/zhang2024/``).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hesslab.data import balanced_subset, digits, text
from hesslab.errors import ConfigurationError
from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments._base import config_dtype as _dtype
from hesslab.experiments._claims import record
from hesslab.losses import ce_count, ce_sum, resolve_loss
from hesslab.measures import spectrum_js
from hesslab.models import gpt, lenet
from hesslab.operators import hessian
from hesslab.quantities import Settings, measure
from hesslab.report import plots
from hesslab.report.run import RunDir
from hesslab.train import fit

__all__ = ["FULL_SECONDS", "SMOKE_SECONDS", "SPEC", "Zhang2024Config", "decide", "run"]

logger = logging.getLogger(__name__)

#: Measured wall time of the smoke size, one thread: 12 s of CPU; 25-40 s wall on a
#: 2-core machine shared with other jobs.
SMOKE_SECONDS = 30.0
#: Measured wall time of the full size, one thread: 1,504 s on a 2-core machine with load
#: average ~16 from other jobs (``results/zhang2024/``); an idle machine needs far less.
FULL_SECONDS = 1500.0

MODELS = ("gpt", "cnn")
POINTS = ("init", "trained")
_TITLE = {"gpt": "small GPT on the bundled text", "cnn": "LeNet-style CNN on digits"}


@dataclass(frozen=True)
class Zhang2024Config:
    """Every knob of the reproduction. Build with :meth:`smoke` or :meth:`full`.

    Attributes:
        seeds: one run of both networks per seed (initialization, data order, probes).
        gpt_dim: GPT width ``d``.
        gpt_depth: GPT blocks.
        gpt_heads: GPT attention heads.
        seq_len: tokens per sequence.
        num_sequences: training sequences of the text corpus.
        measure_sequences: training sequences the Hessian is taken over.
        gpt_lr: Adam learning rate of the GPT.
        gpt_epochs: GPT training epochs.
        cnn_channels: LeNet's convolution channels.
        cnn_hidden: LeNet's hidden fully connected widths.
        cnn_lr: SGD learning rate of the CNN.
        cnn_epochs: CNN training epochs.
        momentum: SGD momentum of the CNN.
        batch_size: minibatch size of both trainings.
        per_class: digits per class the CNN's Hessian is taken over.
        points: when to measure, a subset of ``("init", "trained")``.
        num_steps: SLQ Lanczos steps per block (capped by the block size).
        num_probes: SLQ probes per block.
        grid_points: points of the density grid of each JS distance.
        sigma_rel: Gaussian kernel width relative to a pair's joint spectral width.
        normalize: eigenvalue axis of the comparison: ``None`` (raw), ``"scale"`` or
            ``"width"`` (see :func:`hesslab.measures.spectrum_js`).
        margin_se: standard errors the over-seeds difference must clear.
        dtype: dtype of the measurements.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    gpt_dim: int = 32
    gpt_depth: int = 2
    gpt_heads: int = 2
    seq_len: int = 64
    num_sequences: int = 256
    measure_sequences: int = 16
    gpt_lr: float = 3e-3
    gpt_epochs: int = 3
    cnn_channels: tuple[int, ...] = (6, 16)
    cnn_hidden: tuple[int, ...] = (120, 84)
    cnn_lr: float = 0.02
    cnn_epochs: int = 3
    momentum: float = 0.9
    batch_size: int = 16
    per_class: int = 10
    points: tuple[str, ...] = POINTS
    num_steps: int = 48
    num_probes: int = 1
    grid_points: int = 1024
    sigma_rel: float = 0.01
    normalize: str | None = None
    margin_se: float = 2.0
    dtype: str = "float64"

    @classmethod
    def smoke(cls) -> Zhang2024Config:
        """A one-block GPT of width 16 on 32-token sequences, 16-step SLQ, 3 seeds."""
        return cls(
            gpt_dim=16,
            gpt_depth=1,
            seq_len=32,
            num_sequences=64,
            measure_sequences=8,
            gpt_epochs=2,
            cnn_channels=(4, 8),
            cnn_hidden=(32, 16),
            cnn_epochs=1,
            per_class=5,
            num_steps=16,
            grid_points=512,
        )

    @classmethod
    def full(cls) -> Zhang2024Config:
        """The two-block GPT of width 32, 48-step SLQ, 3 seeds, init and trained."""
        return cls()


# ---------------------------------------------------------------------------------------
# pure helpers


def decide(diffs: Any, margin_se: float = 2.0) -> dict[str, Any]:
    """The over-seeds decision on ``D = JS_T − JS_C`` (one value per seed).

    Returns ``{"mean", "se", "num_seeds", "holds"}`` with ``holds`` ``True`` when
    ``mean > max(0, margin_se · se)``, ``False`` when ``mean < −margin_se · se``,
    ``None`` otherwise (and for fewer than 2 seeds, whose ``se`` is undefined).
    """
    d = np.asarray(diffs, dtype=np.float64).reshape(-1)
    if d.size == 0 or not np.all(np.isfinite(d)):
        raise ConfigurationError(f"decide needs finite differences, got {d.tolist()}")
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.nan
    holds: bool | None = None
    if d.size > 1:
        if mean > 0 and mean > margin_se * se:
            holds = True
        elif mean < -margin_se * se:
            holds = False
    return {"mean": mean, "se": se, "num_seeds": int(d.size), "holds": holds}


def _validate(cfg: Zhang2024Config) -> None:
    _dtype(cfg)
    if len(cfg.seeds) < 1 or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigurationError(f"seeds must be distinct and non-empty, got {cfg.seeds}")
    if not cfg.points or any(p not in POINTS for p in cfg.points):
        raise ConfigurationError(f"points must be a non-empty subset of {POINTS}, got {cfg.points}")
    if cfg.normalize not in (None, "scale", "width"):
        raise ConfigurationError(
            f"normalize must be None, 'scale' or 'width', got {cfg.normalize!r}"
        )
    if cfg.measure_sequences > cfg.num_sequences or cfg.num_steps < 2:
        raise ConfigurationError(
            "measure_sequences must be at most num_sequences and num_steps at least 2, got "
            f"{cfg.measure_sequences}, {cfg.num_sequences}, {cfg.num_steps}"
        )


def _gen(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(sum(k * 1_000_003**i for i, k in enumerate(key)) % 2**63)


_CAUSAL_LM = resolve_loss("causal_lm", None)


def _next_token_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the batch's tokens (hesslab's ``"causal_lm"``)."""
    return ce_sum(_CAUSAL_LM, logits, labels) / ce_count(_CAUSAL_LM, labels)


# ---------------------------------------------------------------------------------------
# measurement


def _pairwise_js(dens: dict[str, Any], cfg: Zhang2024Config) -> np.ndarray:
    names = list(dens)
    js = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            js[i, j] = js[j, i] = spectrum_js(
                dens[a],
                dens[names[j]],
                cfg.grid_points,
                cfg.sigma_rel,
                normalize=cfg.normalize,  # type: ignore[arg-type]
            )
    return js


def _mean_offdiag(m: np.ndarray) -> float:
    iu = np.triu_indices(m.shape[0], k=1)
    return float(m[iu].mean())


def _measure(net: nn.Module, loss: Any, data: Any, cfg: Zhang2024Config, key: tuple) -> dict:
    """Blockwise SLQ densities of ``net``'s Hessian and their pairwise JS distances.

    ``seconds`` is the densities' own wall time.
    """
    model = copy.deepcopy(net).to(_dtype(cfg)).eval()
    blocks = hessian(model, loss, data).blocks()
    s = Settings(num_steps=cfg.num_steps, num_probes=cfg.num_probes)
    results = {
        name: measure("density", op, s, _gen(*key, j))
        for j, (name, op) in enumerate(blocks.items())
    }
    dens = {name: d.nodes_and_weights() for name, d in results.items()}
    js = _pairwise_js(dens, cfg)
    return {
        "blocks": list(blocks),
        "sizes": [int(op.shape[0]) for op in blocks.values()],
        "js": js,
        "mean_js": _mean_offdiag(js),
        "lmax": [float(n.max()) for n, _ in dens.values()],
        "lmin": [float(n.min()) for n, _ in dens.values()],
        "densities": {n: (x.numpy(), w.numpy()) for n, (x, w) in dens.items()},
        "seconds": sum(d.seconds for d in results.values()),  # the densities' own
    }


def _train_and_measure(
    name: str, seed: int, cfg: Zhang2024Config, tick: Callable[[str], None]
) -> dict[str, Any]:
    """Build network ``name`` at ``seed``, measure at the configured points."""
    if name == "gpt":
        split = text(cfg.seq_len, cfg.num_sequences, max(1, cfg.num_sequences // 4), seed=seed)
        net = gpt(
            split.num_classes, cfg.seq_len, cfg.gpt_dim, cfg.gpt_depth, cfg.gpt_heads, seed=seed
        )
        x = split.train.x[: cfg.measure_sequences]
        data, loss = [(x, x)], "causal_lm"
        train_kw = {
            "loss": _next_token_ce,
            "optimizer": "adam",
            "lr": cfg.gpt_lr,
            "epochs": cfg.gpt_epochs,
        }
    else:
        split = digits(flat=False, seed=seed)
        net = lenet(
            1, 10, 8, seed=seed, channels=tuple(cfg.cnn_channels), hidden=tuple(cfg.cnn_hidden)
        )
        sub = balanced_subset(split.train, per_class=cfg.per_class, seed=seed)
        data, loss = [(sub.x, sub.y)], "ce"
        train_kw = {
            "loss": "ce",
            "optimizer": "sgd",
            "lr": cfg.cnn_lr,
            "momentum": cfg.momentum,
            "epochs": cfg.cnn_epochs,
        }
    out: dict[str, Any] = {"P": sum(p.numel() for p in net.parameters())}
    if "init" in cfg.points:
        out["init"] = _measure(net, loss, data, cfg, (seed, MODELS.index(name), 0))
        tick(f"{name} seed {seed} init")
    res = fit(net, split, batch_size=cfg.batch_size, seed=seed, **train_kw)
    out["train"] = {
        "train_loss": res.final_train_loss,
        "test_loss": res.final_test_loss,
        "test_accuracy": res.final_test_accuracy,
        "steps": res.steps,
        "seconds": res.seconds,
    }
    if "trained" in cfg.points:
        out["trained"] = _measure(res.model, loss, data, cfg, (seed, MODELS.index(name), 1))
        tick(f"{name} seed {seed} trained")
    return out


# ---------------------------------------------------------------------------------------
# report


def _short(name: str) -> str:
    return name.replace("blocks.", "b").replace("attn.", "").replace("mlp.", "")


def _report_point(run_dir: RunDir, point: str, runs: dict, cfg: Zhang2024Config) -> dict[str, Any]:
    section = (
        f"Block heterogeneity at {'initialization' if point == 'init' else 'the end of training'}"
    )
    per_seed = {m: [runs[(m, s)][point]["mean_js"] for s in cfg.seeds] for m in MODELS}
    diffs = np.asarray(per_seed["gpt"]) - np.asarray(per_seed["cnn"])
    verdict = decide(diffs, cfg.margin_se)
    first = cfg.seeds[0]
    for m in MODELS:
        rec = runs[(m, first)][point]
        labels = [_short(b) for b in rec["blocks"]]
        run_dir.add_figure(
            section,
            f"js_{m}_{point}",
            plots.plot_heatmap(
                rec["js"],
                labels,
                labels,
                title=f"{_TITLE[m]}: pairwise JS distance ({point}, seed {first})",
                colorbar_label="JS distance",
                vmin=0.0,
                vmax=1.0,
            ),
            caption=f"Jensen–Shannon distances between the SLQ densities of the {_TITLE[m]}'s "
            f"diagonal Hessian blocks (mean over pairs {rec['mean_js']:.3f}).",
        )
        run_dir.add_array(f"js_{m}_{point}_seed{first}", rec["js"])
    rows = [
        {
            "seed": s,
            "JS_T (GPT)": per_seed["gpt"][i],
            "JS_C (CNN)": per_seed["cnn"][i],
            "D = JS_T − JS_C": float(diffs[i]),
        }
        for i, s in enumerate(cfg.seeds)
    ]
    run_dir.add_table(section, f"mean pairwise JS ({point})", rows)
    mark = {True: "holds", False: "does not hold", None: "undecided"}[verdict["holds"]]
    record(
        run_dir,
        section,
        "Zhang et al. (2024): a transformer's blockwise Hessian spectra differ more from each "
        f"other than a CNN's (mean pairwise JS distance, {point})",
        f"mean D = {verdict['mean']:.3f} ± {verdict['se']:.3f} (s.e., {verdict['num_seeds']} "
        f"seeds; GPT {np.mean(per_seed['gpt']):.3f}, CNN {np.mean(per_seed['cnn']):.3f}); "
        f"rule: holds if mean D > {cfg.margin_se:g} s.e. → {mark}",
        verdict["holds"],
    )
    return {"per_seed": per_seed, "diffs": diffs.tolist(), **verdict}


def _report_blocks(run_dir: RunDir, runs: dict, cfg: Zhang2024Config) -> None:
    first = cfg.seeds[0]
    for m in MODELS:
        point = cfg.points[0]
        rec = runs[(m, first)][point]
        run_dir.add_table(
            "Blocks",
            f"{m} blocks ({point}, seed {first})",
            [
                {"block": b, "size": n, "λ_min": lo, "λ_max": hi}
                for b, n, lo, hi in zip(
                    rec["blocks"], rec["sizes"], rec["lmin"], rec["lmax"], strict=True
                )
            ],
        )
        tr = runs[(m, first)]["train"]
        run_dir.add_text(
            "Blocks",
            f"{_TITLE[m]}: P = {runs[(m, first)]['P']}, {len(rec['blocks'])} blocks; trained "
            f"{tr['steps']} steps in {tr['seconds']:.1f} s to train loss {tr['train_loss']:.3f}, "
            f"test loss {tr['test_loss']:.3f}.",
        )


def _setup(ctx: Context) -> None:
    cfg = ctx.cfg
    ctx.run_dir.add_text(
        "Setup",
        "Blocks = modules owning parameters (hesslab.layer_groups). SLQ per block: "
        f"{cfg.num_steps} Lanczos steps (capped by the block size), {cfg.num_probes} probe(s). "
        "JS distance per "
        f"pair: Gaussian kernel σ = {cfg.sigma_rel:g} × joint width on {cfg.grid_points} points, "
        f"axis {'raw eigenvalues' if cfg.normalize is None else cfg.normalize + '-normalized'}, "
        f"base-2 logs. Seeds {list(cfg.seeds)}; {cfg.dtype}.",
    )


def _parts(cfg: Zhang2024Config) -> list[Part]:
    """One part per (network, seed): train and measure its blockwise spectra."""
    return [
        Part(f"{m}_seed{s}", lambda c, m=m, s=s: _train_and_measure(m, s, c.cfg, c.tick))
        for s in cfg.seeds
        for m in MODELS
    ]


def _summary(ctx: Context) -> dict[str, Any]:
    """Decide the claim at every point.

    Returns:
        ``{"points": {point: {"per_seed", "diffs", "mean", "se", "num_seeds", "holds"}},
        "seconds": {...}, "config": {...}}``.
    """
    cfg, run_dir = ctx.cfg, ctx.run_dir
    runs = {(m, s): ctx.results[f"{m}_seed{s}"] for s in cfg.seeds for m in MODELS}
    points = {p: _report_point(run_dir, p, runs, cfg) for p in cfg.points}
    _report_blocks(run_dir, runs, cfg)
    seconds = {"total": ctx.elapsed(), "parts": dict(ctx.seconds)}
    run_dir.add_scalar("Timing", "total seconds", seconds["total"], unit="s")
    return {"points": points, "seconds": seconds, "config": asdict(cfg)}


#: The registry entry (``hesslab.experiments.EXPERIMENTS[...]`` imports this module on access).
SPEC = Experiment(
    name="zhang2024",
    title="Block heterogeneity of transformer Hessians (Zhang et al. 2024)",
    paper=(
        "Zhang, Chen, Ding, Li, Sun, Luo (NeurIPS 2024), Why Transformers Need Adam: A "
        "Hessian Perspective"
    ),
    arxiv="2402.16788",
    description=(
        "A small GPT on the bundled character-level text and a LeNet-style CNN on digits, at "
        "initialization and after brief training: SLQ densities of every parameter block's "
        "diagonal Hessian block, pairwise Jensen–Shannon distances as heat maps, and the "
        "claim that the transformer's blocks differ more than the CNN's, decided over seeds."
    ),
    config_type=Zhang2024Config,
    smoke_seconds=SMOKE_SECONDS,
    full_seconds=FULL_SECONDS,
    parts=_parts,
    summary=_summary,
    steps=lambda cfg: len(MODELS) * len(cfg.seeds) * len(cfg.points),
    setup=_setup,
    check=_validate,
)

#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size): measures both networks'
#: blockwise spectra for every seed and decides the claim. Reference: Zhang, Chen, Ding,
#: Li, Sun, Luo (NeurIPS 2024), "Why Transformers Need Adam: A Hessian Perspective",
#: arXiv:2402.16788.
run = SPEC.run

"""Reproduction of Sankar, Khasbage, Vigneswaran, Balasubramanian (AAAI 2021), spectra part.

"A Deeper Look at the Hessian Eigenspectrum of Deep Neural Networks and its Applications
to Regularization", arXiv:2012.03801 (docs/PAPERS.md §5). Claims reproduced here:

1. The layerwise Hessians ``H_ll`` (diagonal blocks of ``∇²L`` for each Conv2d/Linear
   WEIGHT, biases excluded) have spectra that look like the full Hessian's, and the
   **middle layers' spectra are closest to the full one** (a U-shaped distance curve over
   depth).
2. ``λ_max`` and ``Tr H``, full and layerwise, **decrease during training**.

(The layerwise trace regularizer is :mod:`hesslab.experiments.sankar2021_reg`.)

Setup, mirroring the authors' code ([CODE] in PAPERS.md §5), scaled to scikit-learn's
8x8 digits: a LeNet-style CNN (:func:`hesslab.models.lenet`, 3x3 convolutions with
padding for 8x8 images) and a ReLU MLP ``64-32-32-32-32-10``, both trained with SGD,
momentum 0.9, lr ``1e-2`` (their LeNet/MNIST lr), batch 8 (their batch 256 on 60,000
MNIST images gives 234 steps per epoch; 1,347 digits with batch 8 give 169, with batch 32
only 43, too few to train in a few epochs at this lr). Optionally (``models`` with
``"vit"``) a transformer too: the zoo's small ViT (:func:`hesslab.models.vit`, 2x2
patches, class token, pre-LN blocks; its weight layers are the patch convolution, each
block's ``q``, ``k``, ``v``, ``o``, ``fc``, ``proj`` and the head). After every
epoch (and at initialization, epoch 0) the float64 copy of the network is measured on a
class-balanced subset of ``per_class`` (10, as in their code) training points per class:

* **Densities** by stochastic Lanczos quadrature (:func:`hesslab.spectral_density`) of
  ``m = num_steps`` (128) steps from ``num_probes`` (1) Rademacher start vector(s), for
  the full Hessian ``H`` and each block ``H_ll``. Their code runs a separate 64-step
  Lanczos to find the spectral range; here the range is the SLQ run's own extreme Ritz
  values (``m ≥ 64`` steps, so at least as accurate), widened by ``range_margin`` (5%) of
  the width on each side, with ``grid_points`` (1,024) points and a Gaussian kernel
  ``σ = sigma_rel · width`` (``sigma_rel = √1e-5``).
* **Distances** between each layer's density and the full density, two metrics:

  - ``"w1"``, the principled one: :func:`hesslab.measures.spectrum_w1`, the exact
    1-Wasserstein distance ``∫|F_l(x) − F(x)| dx`` between the two SLQ eigenvalue
    distributions after mapping each to ``[0, 1]`` by its OWN support
    (``x ↦ (x − λ_min)/(λ_max − λ_min)``, ``normalize="width"``): it compares shapes,
    invariant to shifting and rescaling either spectrum (``w1_normalize="scale"``,
    ``x ↦ x / max|x|``, keeps zero fixed).
  - ``"sankar"``, **Sankar et al. code's variant**
    (:func:`hesslab.measures.sankar_density_distance`, ``method="values"``):
    ``scipy.stats.wasserstein_distance`` between the two arrays of broadened density
    VALUES on a common 1,024-point grid (positions discarded). It is not a distance
    between spectra (mirror images are at distance 0) and is reported for comparison
    with their numbers only.

  Every claim is a statistic over the training seeds ``seeds`` (3; one network per
  model and seed, same data): "middle closest" is, per seed, whether the arg-min over
  layers of the distance averaged over the epochs ``≥ 1`` is neither the first nor the
  last layer (chance level ``(L − 2)/L``, 3/5 for both nets here), and it holds for a
  model and metric when ≥ 2/3 of the seeds agree (does not hold when ≤ 1/3 do;
  :func:`~hesslab.experiments._claims.decide`, ``rule="fraction"``).
* ``λ_max`` = the largest Ritz value of each SLQ run (Ritz values converge fastest at the
  ends; the full network's is checked against :func:`hesslab.eigenpairs` at the last
  epoch: agreement within ``max(σ, Ritz residual)``), ``Tr`` by
  :func:`hesslab.trace` (Krylov-deflated Hutchinson, ``trace_matvecs`` products; exact for
  blocks of at most ``trace_matvecs`` parameters).
* **Trends**: for each series (full and layerwise ``λ_max`` and trace) over the epochs
  ``≥ trend_from_epoch`` (early training is a warm-up in which sharpness typically
  RISES from its small value at initialization): Spearman's ``ρ`` with the epoch and
  the ratio last/first. A series "decreases" when ``ρ < 0`` and last < first; a seed
  agrees when more than half of its series decrease, and the claim holds for a model
  when ≥ 2/3 of the seeds agree. The ratio to the value at
  initialization is reported too.

Run: ``hesslab reproduce sankar2021 --smoke`` (3 epochs, small SLQ, under a minute on
2 cores) or ``hesslab reproduce sankar2021`` (30 epochs, the authors' SLQ sizes; see
:data:`FULL_SECONDS`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from hesslab.data import balanced_subset, digits
from hesslab.errors import ConfigurationError
from hesslab.experiments._base import Context, Experiment, Part
from hesslab.experiments._claims import decide
from hesslab.linalg.density import SpectralDensity
from hesslab.linalg.results import TraceEstimate
from hesslab.measures import sankar_density_distance, spectrum_w1
from hesslab.models import lenet, mlp, vit
from hesslab.operators import hessian
from hesslab.quantities import Settings, measure
from hesslab.report import plots
from hesslab.report.run import RunDir
from hesslab.train import fit

__all__ = [
    "FULL_SECONDS",
    "SMOKE_SECONDS",
    "SPEC",
    "Sankar2021Config",
    "plot_distance_vs_depth",
    "plot_layer_densities",
    "run",
    "spearman",
]

logger = logging.getLogger(__name__)

#: Measured wall time of the smoke size (3 seeds, batch 32, 16-step SLQ), one thread: 18 s
#: on a lightly loaded 2-core machine (41-75 s when shared with other jobs; the one-seed
#: smoke it replaced took 86 s there).
SMOKE_SECONDS = 20.0
#: Wall time of the full size (3 training seeds x 30 epochs, 128-step SLQ, both models):
#: an ESTIMATE, 3 x the one-seed full run (results/sankar2021: 212 s CPU with one thread,
#: 892 s wall on 2 cores shared ~9 ways; 118 s in issue 19); not re-measured with seeds.
FULL_SECONDS = 640.0

MODELS = ("lenet", "mlp", "vit")
_SECTION = {"lenet": "LeNet-style CNN", "mlp": "MLP", "vit": "ViT (small vision transformer)"}
METRICS = ("w1", "sankar")
_METRIC_LABEL = {
    "w1": "1-Wasserstein between eigenvalue distributions (normalized axis)",
    "sankar": "Sankar et al. code's variant (W1 between density values)",
}


@dataclass(frozen=True)
class Sankar2021Config:
    """Every knob of the reproduction. Build with :meth:`smoke` or :meth:`full`.

    Attributes:
        seed: seed of the data (train/test split, balanced measurement subset).
        seeds: training seeds (initialization, batch order, probes), one trained network
            per model and seed; every claim is a statistic over them (≥ 3).
        models: which networks, from ``("lenet", "mlp", "vit")`` (default the first two;
            ``"vit"`` is the zoo's small vision transformer, :func:`hesslab.models.vit`).
        lenet_channels: output channels of LeNet's two convolutions.
        lenet_hidden: widths of LeNet's two hidden fully connected layers.
        mlp_widths: hidden widths of the MLP (ReLU).
        vit_dim: width of the ViT (2x2 patches of the 8x8 digits, class token).
        vit_depth: transformer blocks of the ViT.
        vit_heads: attention heads of the ViT.
        epochs: training epochs (measured after each, and at initialization).
        lr: SGD learning rate (their LeNet/MNIST: 1e-2).
        momentum: SGD heavy-ball momentum (theirs: 0.9).
        batch_size: minibatch size (theirs 256 on MNIST; 8 on 1,347 digits).
        per_class: points per class of the balanced measurement subset (theirs: 10).
        num_steps: SLQ Lanczos steps ``m`` (theirs: 128).
        num_probes: SLQ start vectors (theirs: 1).
        grid_points: density grid points (theirs: 1,024).
        range_margin: relative widening of the spectral range (theirs: 5%).
        sigma_rel: Gaussian kernel width relative to the spectral width.
        trace_matvecs: Hessian-vector products per trace estimate.
        w1_normalize: axis normalization of :func:`~hesslab.measures.spectrum_w1`,
            ``"width"`` or ``"scale"``.
        trend_from_epoch: first epoch of the trend window (warm-up excluded).
        dtype: dtype of the measurements (``"float64"`` recommended).
    """

    seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = ("lenet", "mlp")
    lenet_channels: tuple[int, ...] = (6, 16)
    lenet_hidden: tuple[int, ...] = (120, 84)
    mlp_widths: tuple[int, ...] = (32, 32, 32, 32)
    vit_dim: int = 16
    vit_depth: int = 2
    vit_heads: int = 2
    epochs: int = 30
    lr: float = 1e-2
    momentum: float = 0.9
    batch_size: int = 8
    per_class: int = 10
    num_steps: int = 128
    num_probes: int = 1
    grid_points: int = 1024
    range_margin: float = 0.05
    sigma_rel: float = math.sqrt(1e-5)
    trace_matvecs: int = 48
    w1_normalize: str = "width"
    trend_from_epoch: int = 5
    dtype: str = "float64"

    @classmethod
    def smoke(cls) -> Sankar2021Config:
        """3 seeds x 3 epochs (batch 32), 3 points per class, 16-step SLQ, 8-product traces."""
        return cls(
            epochs=3,
            batch_size=32,
            per_class=3,
            num_steps=16,
            grid_points=256,
            trace_matvecs=8,
            trend_from_epoch=1,
        )

    @classmethod
    def full(cls) -> Sankar2021Config:
        """3 seeds x 30 epochs, 10 points per class, the authors' SLQ sizes (128 steps)."""
        return cls()


# ---------------------------------------------------------------------------------------
# pure helpers


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation ``ρ`` (average ranks for ties); NaN for < 3 points.

    ``ρ = Pearson(rank(x), rank(y))`` (Spearman, 1904).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigurationError(
            f"spearman needs two 1-D arrays of one length, got {a.shape} and {b.shape}"
        )
    if a.size < 3:
        return math.nan

    def rank(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty_like(v)
        r[order] = np.arange(v.size, dtype=np.float64)
        for value in np.unique(v):  # average ranks of ties
            tie = v == value
            if tie.sum() > 1:
                r[tie] = r[tie].mean()
        return r

    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else math.nan


def plot_distance_vs_depth(
    layer_names: Sequence[str],
    epochs: Sequence[int],
    distances: Mapping[str, Any],
    *,
    title: str | None = None,
) -> Figure:
    """Distance of each layer's density to the full density vs layer index.

    Args:
        layer_names: ``[L]`` layers in depth order.
        epochs: ``[E]`` epoch of each row.
        distances: metric -> ``[E, L]`` distances (one panel per metric, one line per
            epoch, later epochs darker; the mean over epochs ``≥ 1`` in black).
        title: figure title.
    """
    import matplotlib.pyplot as plt

    n = len(distances)
    if n == 0:
        raise ConfigurationError("distances is empty; pass metric -> [E, L] array")
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 3.8), squeeze=False)
    x = np.arange(len(layer_names))
    ep = np.asarray(epochs)
    cmap = plt.get_cmap("viridis")
    for j, (metric, values) in enumerate(distances.items()):
        ax = axes[0, j]
        d = np.asarray(values, dtype=np.float64)
        for i, e in enumerate(ep):
            c = cmap(0.1 + 0.8 * i / max(1, len(ep) - 1))
            ax.plot(x, d[i], color=c, alpha=0.6, lw=1, marker="o", ms=2, label=f"epoch {e}")
        later = d[ep >= 1] if (ep >= 1).any() else d
        ax.plot(x, later.mean(0), color="k", lw=2, marker="s", ms=4, label="mean, epochs ≥ 1")
        ax.set_xticks(x, list(layer_names), rotation=30)
        ax.set_xlabel("layer (depth order)")
        ax.set_ylabel(_METRIC_LABEL.get(metric, metric), fontsize=8)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(ep) <= 12:
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_layer_densities(
    curves: Mapping[str, tuple[Any, Any]], *, title: str | None = None
) -> Figure:
    """Layer densities and the full density on the normalized axis ``[0, 1]``.

    Args:
        curves: name -> ``(x, φ)`` with ``x`` already mapped to ``[0, 1]`` by each
            spectrum's own support and ``φ`` the density in those units (log y axis).
        title: axes title.
    """
    import matplotlib.pyplot as plt

    if not curves:
        raise ConfigurationError("curves is empty; pass name -> (x, density)")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, (x, y) in curves.items():
        yy = np.clip(np.asarray(y, dtype=np.float64), 1e-8, None)
        ax.plot(np.asarray(x), yy, lw=2.2 if name == "full" else 1.0, label=name)
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-6)
    ax.set_xlabel("(λ − λ_min) / (λ_max − λ_min), each spectrum on its own support")
    ax.set_ylabel("density (normalized axis, log)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------
# measurement


def _dtype(cfg: Sankar2021Config) -> torch.dtype:
    try:
        return {"float64": torch.float64, "float32": torch.float32}[cfg.dtype]
    except KeyError:
        raise ConfigurationError(
            f"dtype must be 'float64' or 'float32', got {cfg.dtype!r}"
        ) from None


def _validate(cfg: Sankar2021Config) -> None:
    bad = [m for m in cfg.models if m not in MODELS]
    if bad or not cfg.models:
        raise ConfigurationError(f"models must be a non-empty subset of {MODELS}, got {cfg.models}")
    if cfg.w1_normalize not in ("width", "scale"):
        raise ConfigurationError(
            f"w1_normalize must be 'width' or 'scale', got {cfg.w1_normalize!r}"
        )
    for name in ("epochs", "per_class", "num_steps", "num_probes", "grid_points", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ConfigurationError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if len(cfg.seeds) < 3 or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigurationError(
            f"seeds must list at least 3 distinct training seeds (every claim is a statistic "
            f"over them), got {cfg.seeds}; e.g. seeds=[0, 1, 2]"
        )
    if cfg.trace_matvecs < 3:
        raise ConfigurationError(f"trace_matvecs must be >= 3, got {cfg.trace_matvecs}")
    _dtype(cfg)


def _build(name: str, cfg: Sankar2021Config, seed: int) -> nn.Module:
    if name == "lenet":
        return lenet(
            1,
            10,
            image_size=8,
            seed=seed,
            channels=tuple(cfg.lenet_channels),  # type: ignore[arg-type]
            hidden=tuple(cfg.lenet_hidden),  # type: ignore[arg-type]
        )
    if name == "vit":
        return vit(
            1, 10, 8, dim=cfg.vit_dim, depth=cfg.vit_depth, num_heads=cfg.vit_heads, seed=seed
        )
    return mlp(64, tuple(cfg.mlp_widths), 10, seed=seed)


def _gen(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k)) % (2**62)
    return torch.Generator().manual_seed(seed)


def _sigma(d: SpectralDensity, cfg: Sankar2021Config) -> float:
    return cfg.sigma_rel * d.width()


def _trace(op: Any, cfg: Sankar2021Config, g: torch.Generator) -> TraceEstimate:
    """``tr op``: exact (``P`` unit vectors) when ``P <= trace_matvecs``, else Krylov."""
    method = "exact" if op.shape[0] <= cfg.trace_matvecs else "krylov"
    return measure("trace", op, Settings(num_matvecs=cfg.trace_matvecs, trace_method=method), g)


def _normalized_curve(d: SpectralDensity, cfg: Sankar2021Config) -> tuple[np.ndarray, np.ndarray]:
    grid = d.grid(cfg.grid_points, cfg.range_margin)
    phi = d.evaluate(grid, _sigma(d, cfg))
    lo, hi = d.spectral_range()
    w = hi - lo if hi > lo else 1.0
    return ((grid - lo) / w).numpy(), (phi * w).numpy()


def _measure(
    net: nn.Module, data: tuple[torch.Tensor, torch.Tensor], cfg: Sankar2021Config, key: int
) -> dict[str, Any]:
    """Full and layerwise SLQ densities, λ_max, traces and distances at ``net``'s weights.

    ``seconds`` is the densities' and traces' own wall time.
    """
    model = copy.deepcopy(net).to(_dtype(cfg)).eval()
    H = hessian(model, "ce", data)
    blocks = H.blocks(weights_only=True)
    ops: dict[str, Any] = {"full": H, **blocks}
    dens: dict[str, SpectralDensity] = {}
    out: dict[str, Any] = {"lmax": {}, "lmax_residual": {}, "trace": {}, "trace_se": {}}
    s = Settings(num_steps=cfg.num_steps, num_probes=cfg.num_probes)
    seconds = 0.0
    for j, (name, op) in enumerate(ops.items()):
        d = measure("density", op, s, _gen(key, j, 1))
        dens[name] = d
        top = int(torch.argmax(d.nodes.flatten()))
        out["lmax"][name] = float(d.nodes.flatten()[top])
        out["lmax_residual"][name] = float(d.ritz_residuals.flatten()[top])
        tr = _trace(op, cfg, _gen(key, j, 2))
        se = tr.stderr
        out["trace"][name] = float(tr.value)
        out["trace_se"][name] = float(se) if se is not None and math.isfinite(se) else 0.0
        seconds += d.seconds + tr.seconds
    full = dens["full"]
    out["distances"] = {
        "w1": {
            n: spectrum_w1(dens[n], full, normalize=cfg.w1_normalize)  # type: ignore[arg-type]
            for n in blocks
        },
        "sankar": {
            n: sankar_density_distance(
                dens[n],
                full,
                cfg.grid_points,
                cfg.sigma_rel * _union_width(dens[n], full),
                margin=cfg.range_margin,
            )
            for n in blocks
        },
    }
    out["sigma_full"] = _sigma(full, cfg)
    out["densities"] = dens
    out["operator"] = H
    out["layer_sizes"] = {n: int(op.shape[0]) for n, op in blocks.items()}
    out["P"] = int(H.shape[0])
    out["seconds"] = seconds
    return out


def _union_width(a: SpectralDensity, b: SpectralDensity) -> float:
    lo = min(a.spectral_range()[0], b.spectral_range()[0])
    hi = max(a.spectral_range()[1], b.spectral_range()[1])
    return hi - lo if hi > lo else 1.0


# ---------------------------------------------------------------------------------------
# one model


def _trend(epochs: np.ndarray, values: np.ndarray, start: int) -> dict[str, float | bool]:
    keep = epochs >= start
    e, v = epochs[keep], values[keep]
    rho = spearman(e, v) if e.size >= 3 else math.nan
    first, last = float(v[0]), float(v[-1])
    decreases = bool(last < first and (math.isnan(rho) or rho < 0))
    return {
        "first_epoch": int(e[0]),
        "first": first,
        "last": last,
        "ratio_last_first": last / first if first != 0 else math.nan,
        "spearman": rho,
        "init": float(values[0]),
        "ratio_last_init": last / float(values[0]) if values[0] != 0 else math.nan,
        "decreases": decreases,
    }


def _run_model(
    name: str,
    cfg: Sankar2021Config,
    split: Any,
    sub: tuple[torch.Tensor, torch.Tensor],
    run_dir: RunDir,
    tick: Callable[[str], None],
    mi: int,
    seed: int,
) -> dict[str, Any]:
    """Train ``name`` with training seed ``seed``, measuring every epoch.

    The first seed's run writes the figures and tables; every seed writes its arrays
    (suffixed ``_seed<s>`` after the first). No claims: :func:`_claims_over_seeds`.
    """
    section = _section(name, mi)
    report = seed == cfg.seeds[0]
    tag = "" if report else f"_seed{seed}"
    model = _build(name, cfg, seed)
    n_train = int(split.train.x.shape[0])
    spe = math.ceil(n_train / cfg.batch_size)
    records: list[dict[str, Any]] = []
    seconds = {"measure": 0.0}

    def callback(net: nn.Module, step: int, info: dict[str, Any]) -> None:
        if step % spe != 0:
            return
        epoch = step // spe
        m = _measure(net, sub, cfg, key=seed * 100_003 + 7919 * mi + epoch)
        seconds["measure"] += m.pop("seconds")
        m["epoch"] = epoch
        if epoch == cfg.epochs:
            s = Settings(tol=1e-8, return_vectors=False)
            ev = measure("lambda_max", m["operator"], s, _gen(seed, mi, 3))
            seconds["measure"] += ev.seconds
            m["lmax_lanczos"] = float(ev.values[0])
        m.pop("operator")
        if epoch not in (0, cfg.epochs):
            m.pop("densities")
        records.append(m)
        run_dir.log_metrics(
            epoch,
            model=name,
            seed=seed,
            lmax_full=m["lmax"]["full"],
            trace_full=m["trace"]["full"],
            **{f"w1_{k}": v for k, v in m["distances"]["w1"].items()},
            **{f"sankar_{k}": v for k, v in m["distances"]["sankar"].items()},
        )
        tick(f"{name} seed {seed} epoch {epoch}")

    t0 = time.perf_counter()
    res = fit(
        model,
        split,
        loss="ce",
        optimizer="sgd",
        lr=cfg.lr,
        momentum=cfg.momentum,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        seed=seed,
        callbacks=[callback],
    )
    total = time.perf_counter() - t0
    layers = list(records[0]["layer_sizes"])
    epochs = np.asarray([r["epoch"] for r in records], dtype=np.int64)
    dist = {
        k: np.asarray([[r["distances"][k][n] for n in layers] for r in records]) for k in METRICS
    }
    P = records[0]["P"]
    if report:
        run_dir.add_text(
            section,
            f"{name}: P = {P} parameters; weight layers (depth order, sizes): "
            + ", ".join(f"{n} ({records[0]['layer_sizes'][n]})" for n in layers)
            + f". SGD lr {cfg.lr}, momentum {cfg.momentum}, batch {cfg.batch_size}, "
            f"{cfg.epochs} epochs on {n_train} digits ({spe} steps/epoch), training seeds "
            f"{list(cfg.seeds)} (figures and tables: seed {seed}; claims: over the seeds). "
            f"Measured at initialization and after every epoch on {int(sub[1].numel())} "
            f"balanced training points ({cfg.per_class}/class), {cfg.dtype}.",
        )
    dist_summary = _distances(name, cfg, run_dir, section, layers, epochs, dist, report, tag)
    if report:
        for rec in (records[0], records[-1]):
            _density_figures(name, cfg, run_dir, section, rec)
    trends, trend_start = _trends(name, cfg, run_dir, section, layers, epochs, records, report, tag)
    fullrec = records[-1]
    lam_slq, lam_ref = fullrec["lmax"]["full"], fullrec["lmax_lanczos"]
    tol = max(fullrec["sigma_full"], fullrec["lmax_residual"]["full"])
    check = {
        "slq": lam_slq,
        "lanczos": lam_ref,
        "abs_diff": abs(lam_slq - lam_ref),
        "tolerance": tol,
        "agrees": bool(abs(lam_slq - lam_ref) <= tol),
    }
    run_dir.add_scalar(section, f"{name} seed {seed} seconds", total, unit="s")
    return {
        "seed": seed,
        "P": P,
        "layers": layers,
        "layer_sizes": records[0]["layer_sizes"],
        "epochs": epochs.tolist(),
        "distances": {k: dist[k].tolist() for k in METRICS},
        "distance_summary": dist_summary,
        "lmax": {n: [r["lmax"][n] for r in records] for n in ["full", *layers]},
        "trace": {n: [r["trace"][n] for r in records] for n in ["full", *layers]},
        "trends": trends,
        "trend_start": trend_start,
        "trend_decreasing": sum(t["decreases"] for t in trends.values()),
        "trend_series": len(trends),
        "lmax_check": check,
        "train_accuracy": res.final_train_accuracy,
        "test_accuracy": res.final_test_accuracy,
        "seconds": total,
        "measure_seconds": seconds["measure"],
    }


def _section(name: str, mi: int) -> str:
    return f"{mi + 1}. {_SECTION[name]} on digits"


def _distances(name, cfg, run_dir, section, layers, epochs, dist, report, tag) -> dict:
    """Per-metric summary of one seed's layer-vs-full distances (figure/table if ``report``)."""
    L = len(layers)
    later = epochs >= 1 if (epochs >= 1).any() else np.ones_like(epochs, dtype=bool)
    out: dict[str, Any] = {}
    for k in METRICS:
        mean = dist[k][later].mean(0)
        amin = int(np.argmin(mean))
        per_epoch = np.argmin(dist[k], axis=1)
        interior = (per_epoch > 0) & (per_epoch < L - 1)
        out[k] = {
            "mean": {n: float(v) for n, v in zip(layers, mean, strict=True)},
            "final": {n: float(v) for n, v in zip(layers, dist[k][-1], strict=True)},
            "argmin": layers[amin],
            "argmin_index": amin,
            "interior": bool(0 < amin < L - 1),
            "final_argmin": layers[int(per_epoch[-1])],
            "interior_fraction": float(interior[later].mean()),
        }
        run_dir.add_array(f"{name}_distance_{k}{tag}", dist[k])
    run_dir.add_array(f"{name}_epochs{tag}", epochs)
    if not report:
        return out
    run_dir.add_figure(
        section,
        f"{name}_distance_vs_depth",
        plot_distance_vs_depth(layers, epochs.tolist(), dist, title=f"{name}: layer vs full"),
        caption="Distance between each layer's SLQ density and the full density vs layer "
        "index, one line per epoch (black: mean over epochs ≥ 1), first training seed. Left: "
        f"spectrum_w1 ({cfg.w1_normalize}-normalized axis); right: Sankar et al. code's "
        "variant (W1 between density values). Claim: U-shaped (minimum in the middle).",
    )
    rows = []
    for i, n in enumerate(layers):
        row: dict[str, Any] = {"layer": n, "index": i}
        for k in METRICS:
            row[f"{k} mean"] = out[k]["mean"][n]
            row[f"{k} final"] = out[k]["final"][n]
        rows.append(row)
    run_dir.add_table(
        section,
        f"{name} distances",
        rows,
        caption="Layer-vs-full distances of the first training seed: mean over epochs ≥ 1 "
        "and at the final epoch. w1 = 1-Wasserstein between eigenvalue distributions on the "
        "normalized axis; sankar = Sankar et al. code's variant.",
    )
    return out


def _density_figures(name, cfg, run_dir, section, rec) -> None:
    curves = {n: _normalized_curve(d, cfg) for n, d in rec["densities"].items()}
    run_dir.add_figure(
        section,
        f"{name}_densities_epoch{rec['epoch']}",
        plot_layer_densities(curves, title=f"{name}, epoch {rec['epoch']}"),
        caption=f"SLQ densities (σ = {cfg.sigma_rel:.2g} × width) of each layer block "
        "and of the full Hessian, each mapped to [0, 1] by its own support.",
    )
    if rec["epoch"] != cfg.epochs:
        return
    d = rec["densities"]["full"]
    grid = d.grid(cfg.grid_points, cfg.range_margin)
    run_dir.add_figure(
        section,
        f"{name}_full_density",
        plots.plot_density(
            grid.numpy(),
            d.evaluate(grid, _sigma(d, cfg)).numpy(),
            title=f"{name}: full Hessian density, epoch {rec['epoch']}",
            label="SLQ density",
        ),
        caption="Full Hessian spectral density (raw eigenvalue axis) at the final epoch.",
    )


def _trends(name, cfg, run_dir, section, layers, epochs, records, report, tag):
    """Trend of every λ_max / trace series of one seed (figures and table if ``report``)."""
    series_names = ["full", *layers]
    lmax = {n: np.asarray([r["lmax"][n] for r in records]) for n in series_names}
    tr = {n: np.asarray([r["trace"][n] for r in records]) for n in series_names}
    tr_se = {n: np.asarray([r["trace_se"][n] for r in records]) for n in series_names}
    start = min(cfg.trend_from_epoch, int(epochs[-1]))
    trends: dict[str, dict[str, Any]] = {}
    rows = []
    for q, s in (("lmax", lmax), ("trace", tr)):
        for n in series_names:
            t = _trend(epochs, s[n], start)
            trends[f"{q}/{n}"] = t
            rows.append({"quantity": q, "block": n, **t})
            run_dir.add_array(f"{name}_{q}_{n}{tag}", s[n])
    if not report:
        return trends, start
    for q, data, label in (("lmax", lmax, "λ_max (top Ritz value)"), ("trace", None, "Tr H")):
        series = data if data is not None else {n: (tr[n], tr_se[n]) for n in series_names}
        run_dir.add_figure(
            section,
            f"{name}_{q}",
            plots.plot_series(
                epochs, series, title=f"{name}: {label.split(' ')[0]}", xlabel="epoch",
                ylabel=label, log_y=True,
            ),
            caption=f"{label} of the full Hessian and of each layer block over training "
            "(first training seed" + (", ± stderr)." if data is None else ")."),
        )  # fmt: skip
    run_dir.add_table(
        section,
        f"{name} trends",
        rows,
        caption=f"Trend over epochs {start}..{int(epochs[-1])} (first training seed): Spearman "
        "ρ with the epoch, ratio last/first; 'init' is the value at initialization (epoch 0).",
    )
    return trends, start


def _claims_over_seeds(ctx: Context, name: str, mi: int) -> dict[str, Any]:
    """The claims of network ``name``, each a statistic over its training seeds.

    Per seed: "middle closest" is whether the arg-min over layers of the distance averaged
    over epochs ≥ 1 is an interior layer; "decrease" whether more than half of its
    λ_max/trace series decrease; the λ_max check whether SLQ and Lanczos agree. Each claim
    holds when ≥ 2/3 of the seeds agree and does not hold when ≤ 1/3 do
    (:func:`~hesslab.experiments._claims.decide`, ``rule="fraction"``).
    """
    cfg = ctx.cfg
    per = [ctx.results[_seed_part(name, s)] for s in cfg.seeds]
    section, first = _section(name, mi), per[0]
    L = len(first["layers"])
    verdicts: dict[str, Any] = {}
    for k in METRICS:
        amins = [p["distance_summary"][k]["argmin_index"] for p in per]
        v = decide([float(0 < a < L - 1) for a in amins], rule="fraction", margin=0.5)
        verdicts[f"middle_closest_{k}"] = v
        label = (
            f"1-Wasserstein, {cfg.w1_normalize}-normalized axis"
            if k == "w1"
            else "Sankar et al. code's variant"
        )
        ctx.claim(
            section,
            f"{name}: middle layers' spectra are closest to the full one [{label}]",
            "closest layer (arg-min of the distance averaged over epochs ≥ 1) per seed: "
            + ", ".join(f"{first['layers'][a]} ({a} of 0..{L - 1})" for a in amins)
            + f"; chance level (L − 2)/L = {(L - 2) / L:.2f}",
            v,
        )
    shares = [p["trend_decreasing"] / p["trend_series"] for p in per]
    verdicts["trend_decreases"] = decide(shares, rule="fraction", margin=0.5)
    ctx.claim(
        section,
        f"{name}: λ_max and trace, full and layerwise, decrease during training "
        f"(epochs ≥ {first['trend_start']})",
        "share of the λ_max/trace series that decrease (last < first and Spearman ρ < 0) "
        "per seed: " + ", ".join(f"{x:.2f}" for x in shares) + "; a seed agrees when > 0.5",
        verdicts["trend_decreases"],
    )
    ok = [float(p["lmax_check"]["agrees"]) for p in per]
    verdicts["lmax_check"] = decide(ok, rule="fraction", margin=0.5)
    ctx.claim(
        section,
        f"{name}: full λ_max from SLQ agrees with hesslab.eigenpairs within the SLQ "
        "resolution max(σ, Ritz residual)",
        "per seed |Δ|/tol: "
        + ", ".join(
            f"{p['lmax_check']['abs_diff'] / p['lmax_check']['tolerance']:.2g}" for p in per
        ),
        verdicts["lmax_check"],
    )
    ctx.run_dir.add_table(section, f"{name} seeds", [_seed_row(p) for p in per])
    return {
        **{k: first[k] for k in ("P", "layers", "layer_sizes", "epochs")},
        "seeds": per,
        "verdicts": {k: v.as_dict() for k, v in verdicts.items()},
        "middle_closest": {k: verdicts[f"middle_closest_{k}"].holds for k in METRICS},
        "trend_holds": verdicts["trend_decreases"].holds,
        "lmax_holds": verdicts["lmax_check"].holds,
        "seconds": sum(p["seconds"] for p in per),
    }


def _seed_row(p: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"seed": p["seed"]}
    for k in METRICS:
        row[f"{k} closest"] = p["distance_summary"][k]["argmin"]
    row["series decreasing"] = f"{p['trend_decreasing']}/{p['trend_series']}"
    row["λ_max check"] = p["lmax_check"]["agrees"]
    row["train accuracy"] = p["train_accuracy"]
    row["test accuracy"] = p["test_accuracy"]
    return row


def _seed_part(name: str, seed: int) -> str:
    return f"{name}_seed{seed}"


def _setup(ctx: Context) -> None:
    cfg = ctx.cfg
    ctx.run_dir.add_text(
        "Setup",
        "Layerwise Hessians = diagonal blocks H_ll of the Conv2d/Linear weights. SLQ with "
        f"{cfg.num_steps} Lanczos steps, {cfg.num_probes} Rademacher start vector(s), range "
        f"= extreme Ritz values widened by {cfg.range_margin:.0%}, Gaussian kernel σ = "
        f"{cfg.sigma_rel:.3g} × width on {cfg.grid_points} grid points. Distances: "
        f"'w1' = hesslab.measures.spectrum_w1 (1-Wasserstein between the eigenvalue "
        f"distributions, each mapped to [0, 1] by its own support: normalize="
        f"'{cfg.w1_normalize}'); 'sankar' = Sankar et al. code's variant "
        "(hesslab.measures.sankar_density_distance: W1 between the arrays of density "
        "values on a common grid; positions discarded). Traces by hesslab.trace "
        f"({cfg.trace_matvecs} products; exact for smaller blocks).",
    )


def _model_part(ctx: Context, name: str, mi: int, seed: int) -> dict[str, Any]:
    """Train network ``name`` on digits with training seed ``seed``, measuring every epoch."""
    cfg = ctx.cfg
    split = digits(flat=False, seed=cfg.seed)  # seeded: the same split in every part
    sub_data = balanced_subset(split.train, per_class=cfg.per_class, seed=cfg.seed)
    sub = (sub_data.x.to(_dtype(cfg)), sub_data.y)
    return _run_model(name, cfg, split, sub, ctx.run_dir, ctx.tick, mi, seed)


def _parts(cfg: Sankar2021Config) -> list[Part]:
    """Per network: one part per training seed, then one deciding its claims over them."""
    parts = []
    for mi, name in enumerate(cfg.models):
        parts += [
            Part(_seed_part(name, s), lambda c, n=name, mi=mi, s=s: _model_part(c, n, mi, s))
            for s in cfg.seeds
        ]
        parts.append(Part(name, lambda c, n=name, mi=mi: _claims_over_seeds(c, n, mi)))
    return parts


def _summary(ctx: Context) -> dict[str, Any]:
    """The per-network claims and the wall times.

    Returns:
        ``{"models": {name: {...}}, "claims": {name: {...}}, "seconds": {...},
        "config": {...}}``.
    """
    models = {name: ctx.results[name] for name in ctx.cfg.models}
    claims = {
        n: {
            **{f"middle_closest_{k}": m["middle_closest"][k] for k in METRICS},
            "trend_decreases": m["trend_holds"],
            "lmax_check": m["lmax_holds"],
        }
        for n, m in models.items()
    }
    seconds = {n: m["seconds"] for n, m in models.items()}
    seconds["total"] = ctx.elapsed()
    ctx.run_dir.add_scalar("Timing", "total seconds", seconds["total"], unit="s")
    return {"models": models, "claims": claims, "seconds": seconds, "config": asdict(ctx.cfg)}


#: The registry entry (``hesslab.experiments.EXPERIMENTS[...]`` imports this module on access).
SPEC = Experiment(
    name="sankar2021",
    title="Layerwise vs full Hessian spectra over training (Sankar et al. 2021)",
    paper=(
        "Sankar, Khasbage, Vigneswaran, Balasubramanian (AAAI 2021), A Deeper Look at the "
        "Hessian Eigenspectrum of Deep Neural Networks and its Applications to "
        "Regularization"
    ),
    arxiv="2012.03801",
    description=(
        "A LeNet-style CNN and an MLP trained on digits with SGD + momentum; after every "
        "epoch, SLQ densities of the full Hessian and of each weight layer's diagonal "
        "block on a class-balanced subset; distance of each layer to the full spectrum "
        "vs depth (1-Wasserstein on a normalized axis, and the authors' code variant), "
        "and λ_max / trace trends, full and layerwise."
    ),
    config_type=Sankar2021Config,
    smoke_seconds=SMOKE_SECONDS,
    full_seconds=FULL_SECONDS,
    parts=_parts,
    summary=_summary,
    steps=lambda cfg: len(cfg.models) * len(cfg.seeds) * (cfg.epochs + 1),
    setup=_setup,
    check=_validate,
)

#: ``run(run_dir, config=None, progress=None, stages=None) -> dict``: the runner
#: (:meth:`Experiment.run`; ``config=None`` is the smoke size): trains each network on
#: digits, measuring layerwise and full spectra every epoch; raises
#: :class:`~hesslab.errors.ConfigurationError` for an unknown model, metric normalization
#: or dtype. Reference: Sankar, Khasbage, Vigneswaran, Balasubramanian (AAAI 2021), "A
#: Deeper Look at the Hessian Eigenspectrum of Deep Neural Networks and its Applications
#: to Regularization", arXiv:2012.03801.
run = SPEC.run

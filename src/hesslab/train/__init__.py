"""Training: a small trainer, spectrum monitors, noise-injecting optimizers."""

from hesslab.train.fit import Callback, FitResult, evaluate, fit, resolve_loss
from hesslab.train.monitor import (
    JsonlSink,
    Measurement,
    RunDirSink,
    SpectrumMonitor,
    TensorBoardSink,
)
from hesslab.train.optim import HessianShapedNoiseGD, NoisyGD, SGDNoiseSampler, flat_parameters

__all__ = [
    "Callback",
    "FitResult",
    "HessianShapedNoiseGD",
    "JsonlSink",
    "Measurement",
    "NoisyGD",
    "RunDirSink",
    "SGDNoiseSampler",
    "SpectrumMonitor",
    "TensorBoardSink",
    "evaluate",
    "fit",
    "flat_parameters",
    "resolve_loss",
]

"""Training: a small trainer, spectrum monitors, noise-injecting optimizers, regularizers."""

from hesslab.train.fit import Callback, FitResult, evaluate, fit, resolve_loss
from hesslab.train.monitor import (
    JsonlSink,
    Measurement,
    RunDirSink,
    SpectrumMonitor,
    TensorBoardSink,
)
from hesslab.train.optim import HessianShapedNoiseGD, NoisyGD, SGDNoiseSampler, flat_parameters
from hesslab.train.regularizers import (
    HessianTracePenalty,
    PenaltyRecord,
    WSBoundPenalty,
    differentiable_batch_norm,
    middle_layer_parameters,
    middle_parameters,
)

__all__ = [
    "Callback",
    "FitResult",
    "HessianShapedNoiseGD",
    "HessianTracePenalty",
    "JsonlSink",
    "Measurement",
    "NoisyGD",
    "PenaltyRecord",
    "RunDirSink",
    "SGDNoiseSampler",
    "SpectrumMonitor",
    "TensorBoardSink",
    "WSBoundPenalty",
    "differentiable_batch_norm",
    "evaluate",
    "fit",
    "flat_parameters",
    "middle_layer_parameters",
    "middle_parameters",
    "resolve_loss",
]

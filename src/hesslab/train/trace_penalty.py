"""The Hessian-trace penalty of Sankar et al. (2021) (see :mod:`hesslab.train.regularizers`)."""

from __future__ import annotations

from torch import Tensor

from hesslab.train.probe_penalty import ProbePenalty

__all__ = ["HessianTracePenalty"]


class HessianTracePenalty(ProbePenalty):
    r"""``γ · (1/K) Σᵢ vᵢᵀ H_B vᵢ``: the Hessian-trace regularizer (Sankar et al., 2021).

    ``H_B`` is the Hessian of the minibatch loss w.r.t. the selected parameters (the block
    ``H_SS``); ``vᵢ`` are Rademacher or Gaussian probes (``E[vvᵀ] = I``, so the estimate is
    unbiased for ``tr H_SS``). The result is differentiated through the Hessian-vector
    products (double backprop), so ``backward()`` gives ``∇_θ(γ · estimate)`` for all
    parameters θ. The paper adds it every ``freq = 50`` steps after a start epoch with
    ``γ = 1e-3`` and ``K = 10`` (LeNet/MNIST).

    Args:
        params: the parameters the probes live on: ``None`` (all trainable), names,
            glob patterns, submodules (see :func:`hesslab.select_parameters`).
        num_probes: ``K`` (the paper's ``m``).
        gamma: ``γ``, the weight of the penalty.
        distribution: ``"rademacher"`` or ``"gaussian"``.
        every: the penalty is on every this many steps (the paper's ``freq``).
        start_step: first step at which it is on.
        selection: ``"all"``, ``"middle"`` (paper's tensor rule, see
            :func:`middle_parameters`), ``"middle-layers"`` (see
            :func:`middle_layer_parameters`), both applied within ``params``; or an
            explicit selection (names/globs/modules, then ``params`` must be ``None``).
        probes: fixed ``[K, P]`` probes (flat over the selection, in model order) used at
            every call instead of random ones (tests, gradient checks).
        seed: seed of the probe generator (ignored with ``generator``).
        generator: ``torch.Generator`` for the probes (its device is used to draw; the
            probes are moved to the parameters' device).
        keep_history: keep a :class:`PenaltyRecord` per active call in :attr:`history`.

    Attributes:
        last_value: last estimate of ``tr H_B`` (unscaled), ``None`` before the first call.
        last_penalty: last ``γ ·`` estimate.
        last_seconds: wall time of the last active call.
        history: the :class:`PenaltyRecord` of every active call.

    References:
        Sankar, Khasbage, Vigneswaran, Balasubramanian (2021), "A Deeper Look at the
        Hessian Eigenspectrum of Deep Neural Networks and its Applications to
        Regularization", AAAI, arXiv:2012.03801. Hutchinson (1989).
    """

    _needs_sq = False

    def _combine(self, tr: Tensor, tr_sq: Tensor | None, P: int) -> Tensor:
        return tr

"""Random probe vectors, and the float64 product engine the stochastic estimators share.

Every estimator in :mod:`hesslab.linalg` draws its probes here, so that the only source
of randomness is the ``generator`` argument (STYLE rule 2) and the same generator state
gives bit-identical probes on every run.

Distributions of a probe ``v`` in ``R^P`` (all satisfy ``E[v v^T] = I``):

* ``"rademacher"``: i.i.d. entries ``+-1`` with probability 1/2 (Hutchinson, 1989). Lowest
  variance for ``v^T A v`` among i.i.d. distributions: ``Var = 2(||A||_F^2 - sum_i a_ii^2)``.
* ``"gaussian"``: i.i.d. standard normal entries (Girard, 1989); ``Var = 2 ||A||_F^2``.
* ``"sphere"``: uniform on the sphere of radius ``sqrt(P)``; ``Var = 2P/(P+2) (||A||_F^2 -
  tr(A)^2/P)``. Rotation invariant, which XTrace and the deflated estimators exploit.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Literal

import torch
from torch import Tensor

from hesslab.errors import ConfigurationError
from hesslab.io import Checkpoint
from hesslab.linalg.basis import col_dots
from hesslab.linalg.space import LOCAL, LocalSpace, shared_generator, space_of
from hesslab.operators.base import LinearOperator, as_operator
from hesslab.rng import resolve_generator

__all__ = [
    "DISTRIBUTIONS",
    "Engine",
    "draw_probes",
    "mean_stderr",
    "remainder_samples",
]

Distribution = Literal["rademacher", "gaussian", "sphere"]

#: The probe distributions understood by :func:`draw_probes`.
DISTRIBUTIONS: tuple[str, ...] = ("rademacher", "gaussian", "sphere")


def check_distribution(distribution: str) -> str:
    """Validate a probe distribution name and return it."""
    if distribution not in DISTRIBUTIONS:
        raise ConfigurationError(
            f"unknown probe distribution {distribution!r}; choose one of {DISTRIBUTIONS}"
        )
    return distribution


def draw_probes(
    size: int,
    num_probes: int,
    *,
    distribution: Distribution = "rademacher",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    sample_dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Draw a block of ``K`` random probe vectors of length ``P``.

    Samples are drawn on the generator's device (so a CPU generator gives the same probes
    whatever the target device) and then moved to ``device`` in ``dtype``.

    Args:
        size: ``P``, the length of each probe.
        num_probes: ``K``, the number of probes (columns).
        distribution: ``"rademacher"``, ``"gaussian"`` or ``"sphere"`` (radius ``sqrt(P)``).
        generator: the source of randomness; ``None`` gives a fresh entropy-seeded one.
        dtype: dtype of the returned block (usually ``op.dtype``).
        device: device of the returned block (usually ``op.device``).
        sample_dtype: dtype the Gaussian samples are drawn in (float64 by default, so the
            probes of a seed are the same whatever ``dtype``; float32 draws 4x faster on
            CPU, for estimators whose vector work is float32 anyway).

    Returns:
        A ``[P, K]`` tensor whose columns satisfy ``E[v v^T] = I``.
    """
    check_distribution(distribution)
    if size <= 0 or num_probes < 0:
        raise ConfigurationError(
            f"need size > 0 and num_probes >= 0, got size={size}, num_probes={num_probes}"
        )
    generator = resolve_generator(generator)
    gdev = generator.device
    shape = (int(size), int(num_probes))
    if distribution == "rademacher":
        # uint8 draws (the same stream as int64 ones, 8x less memory), +-1 exact in any dtype
        V = torch.randint(0, 2, shape, generator=generator, device=gdev, dtype=torch.uint8)
        return V.to(device=torch.device(device), dtype=dtype).mul_(2.0).sub_(1.0)
    else:
        V = torch.randn(shape, generator=generator, device=gdev, dtype=sample_dtype)
        if distribution == "sphere" and num_probes > 0:
            V = V * (math.sqrt(size) / torch.linalg.vector_norm(V, dim=0, keepdim=True))
    return V.to(device=torch.device(device), dtype=dtype)


def check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``int(value)`` or raise ConfigurationError when it is not an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Engine:
    """Applies an operator to blocks in chunks and counts the columns applied.

    Products run in ``op.dtype`` on ``op.device``; their results are converted to the
    engine's working dtype :attr:`dtype` (``work_dtype``: float64 by default; ``None``
    takes the operator's dtype, at least float32), in which every probe, basis vector and
    product block is held. Probes are drawn in ``op.dtype`` and then converted, so the
    probe held is exactly the vector applied. Reductions of the estimators (samples, small
    projected matrices) are float64 whatever the working dtype.
    """

    def __init__(
        self,
        op: LinearOperator,
        *,
        distribution: str,
        generator: torch.Generator | None,
        block_size: int | None,
        work_dtype: torch.dtype | None = torch.float64,
    ) -> None:
        self.op = as_operator(op)
        if self.op.shape[0] != self.op.shape[1]:
            raise ConfigurationError(f"operator must be square, got shape {self.op.shape}")
        # a sharded operator: P is the global size, blocks hold this rank's local_P rows
        self.space = space_of(self.op)
        self.local_P = self.op.shape[0]
        self.P = self.space.global_size(self.local_P)
        self.device = self.op.device
        self.dtype = work_dtype or torch.promote_types(self.op.dtype, torch.float32)
        self.distribution = check_distribution(distribution)
        self.generator = shared_generator(generator, self.space)
        self.block_size = (
            None if block_size is None else check_positive_int("block_size", block_size)
        )
        self.num_matvecs = 0
        self.replay: ProductReplay | None = None

    def apply(self, V: Tensor) -> Tensor:
        """Return ``A @ V`` in :attr:`dtype` for a block ``V`` of shape ``[P, K]``.

        With :attr:`replay` set, the products of an interrupted run are read back instead
        of recomputed, and new ones are saved (one file per operator call).
        """
        K = V.shape[1]
        if K == 0:
            return torch.zeros(self.local_P, 0, dtype=self.dtype, device=self.device)
        step = K if self.block_size is None else self.block_size
        replay = self.replay
        outs = []
        for start in range(0, K, step):
            Vb = V[:, start : start + step]
            out = None if replay is None else replay.fetch(Vb)
            if out is None:
                Vc = Vb.to(self.op.dtype).contiguous()
                out = self.op.matmat(Vc).to(dtype=self.dtype, device=self.device)
                if replay is not None:
                    replay.record(Vb, out)
            elif replay is not None and not replay.verified:
                col = Vb[:, :1].to(self.op.dtype).contiguous()
                recomputed = self.op.matmat(col).to(dtype=self.dtype, device=self.device)
                replay.verify(recomputed, out[:, :1].to(self.device), self.op.dtype)
            outs.append(out.to(self.device))
        self.num_matvecs += K
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def probes(self, K: int, distribution: str | None = None) -> Tensor:
        """Draw ``K`` probes in :attr:`dtype` on the operator's device (the vectors applied)."""
        V = draw_probes(
            self.P,
            K,
            distribution=distribution or self.distribution,
            generator=self.generator,
            dtype=self.op.dtype,
            device=self.device,
            sample_dtype=self.dtype,
        )
        return self.space.local_part(V).to(self.dtype)

    def unit_block(self, start: int, stop: int) -> Tensor:
        """Columns ``start..stop-1`` of the identity, in :attr:`dtype` on the operator's device."""
        E = torch.zeros(self.P, stop - start, dtype=self.dtype, device=self.device)
        idx = torch.arange(start, stop, device=self.device)
        E[idx, idx - start] = 1.0
        return self.space.local_part(E)

    def zeros(self, j: int = 0) -> Tensor:
        """A ``[local_P, j]`` block of zeros in :attr:`dtype` on the operator's device."""
        return torch.zeros(self.local_P, j, dtype=self.dtype, device=self.device)


def generator_digest(generator: Any) -> str | None:
    """A short digest of a generator's state (identifies the seed of a checkpointed run)."""
    if not isinstance(generator, torch.Generator):
        return None
    return hashlib.sha256(generator.get_state().cpu().numpy().tobytes()).hexdigest()[:16]


def _block_digest(V: Tensor) -> tuple:
    """Shape and three sums of a block: a deterministic run repeats them exactly."""
    w = torch.arange(1, V.shape[0] + 1, dtype=V.dtype, device=V.device)
    return (tuple(V.shape), float(V.sum()), float((V * V).sum()), float(w @ V.sum(1)))


class ProductReplay:
    """Checkpoint of a stochastic estimator by replay of its operator products.

    The estimators built on :class:`Engine` are deterministic given the generator's state
    at entry and the products: every probe, basis and sample follows from them. So the
    checkpoint holds that state and every operator call's product (``<file>.<i>``, one
    file per call, written once; ``<file>`` lists their input digests, atomically after
    each). A resumed call with the same arguments restores the generator, re-runs the
    estimator's cheap arithmetic, reads the saved products back (checking that each input
    block is the one saved) and continues with new products from the first missing one:
    its result is bit-identical to an uninterrupted run's. That the operator is the same
    is checked once, by recomputing the first column of the first saved product (one
    product, not counted in ``num_matvecs``; tolerance ``1000 eps`` of the operator's
    dtype relative to the column's norm, as a single column and a block need not agree
    bit for bit).

    Args:
        checkpoint: the index file (:class:`~hesslab.io.Checkpoint`; read-only resumes
            without writing).
        key: the arguments that must match (compared on load).
        generator: the estimator's generator (its state is saved, or restored on resume).
        what: the estimator's name, for messages.
    """

    def __init__(
        self, checkpoint: Checkpoint, key: dict[str, Any], generator: torch.Generator, what: str
    ) -> None:
        self.checkpoint, self.key, self.what = checkpoint, key, what
        self.t0 = time.perf_counter()
        self.done = 0
        self.verified = False
        state = checkpoint.load_state(key, what)
        if state is not None:
            generator.set_state(state["generator"])
            self.generator_state = state["generator"]
            self.calls: list[tuple] = list(state["calls"])
            self.prior_seconds = float(state["seconds"])
        else:
            self.generator_state = generator.get_state()
            self.calls = []
            self.prior_seconds = 0.0
            self._save_index()

    @property
    def seconds(self) -> float:
        """Seconds spent by this estimate, the interrupted runs included."""
        return self.prior_seconds + time.perf_counter() - self.t0

    def _save_index(self) -> None:
        self.checkpoint.save(
            {
                "key": self.key,
                "generator": self.generator_state,
                "calls": self.calls,
                "seconds": self.seconds,
            }
        )

    def fetch(self, V: Tensor) -> Tensor | None:
        """The saved product of the next call, ``None`` past the saved ones."""
        i = self.done
        if i >= len(self.calls):
            return None
        if _block_digest(V) != self.calls[i]:
            raise ConfigurationError(
                f"checkpoint {self.checkpoint.path}: operator call {i} of {self.what} got "
                "another input block than the run that saved it (another operator, device or "
                "torch version?); remove the checkpoint files to start afresh"
            )
        self.done += 1
        return self.checkpoint.derived(f".{i}").load()

    def verify(self, recomputed: Tensor, saved: Tensor, dtype: torch.dtype) -> None:
        """Check a recomputed product column against the saved one (same operator?)."""
        scale = max(float(torch.linalg.vector_norm(saved)), torch.finfo(torch.float64).tiny)
        err = float(torch.linalg.vector_norm(recomputed - saved)) / scale
        if err > 1e3 * torch.finfo(dtype).eps:
            raise ConfigurationError(
                f"checkpoint {self.checkpoint.path} of {self.what} was written for another "
                f"operator (a saved product differs by {err:.1e} relative when recomputed); "
                "resume with the operator that wrote it, or remove the checkpoint files"
            )
        self.verified = True

    def record(self, V: Tensor, AV: Tensor) -> None:
        """Save a new call's product (before the index that lists it)."""
        i = self.done
        self.checkpoint.derived(f".{i}").save(AV.detach().cpu())
        self.calls = [*self.calls[:i], _block_digest(V)]
        self.done += 1
        self._save_index()

    def remove(self) -> None:
        """Delete the index and the product files (after a normal return)."""
        for i in range(len(self.calls)):
            self.checkpoint.derived(f".{i}").remove()
        self.checkpoint.remove()


def remainder_samples(
    X: Tensor,
    AX: Tensor,
    Q: Tensor,
    Z: Tensor,
    *,
    normalize: bool,
    kind: str = "trace",
    space: LocalSpace = LOCAL,
) -> Tensor:
    """Per-probe Hutchinson samples for the operator deflated by ``range(Q)``.

    With ``x = (I - Q Q^T) v`` and ``A x = A v - Z (Q^T v)`` (no new products):

    * ``kind="trace"``: ``x^T A x``, an unbiased sample of ``tr((I-QQ^T) A (I-QQ^T))``.
    * ``kind="frobenius"``: ``||A x||^2``, an unbiased sample of ``||A (I - Q Q^T)||_F^2``.

    ``normalize=True`` (Gaussian or spherical probes, independent of ``Q``) uses that
    ``x / ||x||`` is uniform on the unit sphere of the ``n = P - d`` dimensional complement
    and returns ``n * x^T A x / ||x||^2`` (resp. ``n ||A x||^2 / ||x||^2``): still unbiased,
    with the smaller variance of spherical probes (Epperly, Tropp & Webber, 2024).
    In a sharded ``space`` the blocks are this rank's rows and every inner product is
    summed over the ranks. The samples are float64 whatever the blocks' dtype.
    """
    if Q.shape[1] > 0:
        C = space.reduce_sum(Q.T @ X)
        Xp = X - Q @ C
        AXp = AX - Z @ C
    else:
        Xp, AXp = X, AX
    s = col_dots(Xp, AXp, space) if kind == "trace" else col_dots(AXp, AXp, space)
    s = s.to(torch.float64)
    if normalize:
        n = space.global_size(X.shape[0]) - Q.shape[1]
        s = s * (n / col_dots(Xp, Xp, space).to(torch.float64))
    return s


def mean_stderr(samples: Tensor) -> tuple[float, float]:
    """Sample mean and its standard error ``std(ddof=1)/sqrt(n)`` (``inf`` for one sample)."""
    n = samples.numel()
    mean = float(samples.mean())
    if n < 2:
        return mean, math.inf
    return mean, float(samples.std(unbiased=True)) / math.sqrt(n)

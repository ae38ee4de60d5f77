"""Linear operators over the flat parameter space.

A curvature operator ``A`` is a symmetric linear map ``R^P -> R^P``. Subclasses implement
:meth:`LinearOperator._matmat` on a block ``V`` of shape ``[P, K]``; the public
:meth:`LinearOperator.matmat` (and ``A @ v``) validates shape, dtype and device first
(design after ``scipy.sparse.linalg.LinearOperator`` and curvlinops).

Composition is by wrapping, never by overriding: :func:`scale`, :func:`shift`,
:class:`SumOperator`, :class:`DeflatedOperator`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from hesslab.errors import ConfigurationError, OperatorInputError
from hesslab.validation import DENSE_MAX_BYTES, check_dense_size, check_finite

__all__ = [
    "DeflatedOperator",
    "DenseOperator",
    "LinearOperator",
    "ScaledOperator",
    "SumOperator",
    "as_operator",
]


class LinearOperator:
    """Abstract symmetric linear operator ``A: R^P -> R^P``.

    Attributes:
        shape: ``(P, P)``.
        dtype: dtype of the vectors the operator accepts and returns.
        device: device of the vectors the operator accepts and returns.

    Subclasses call ``super().__init__(P, dtype, device)`` and implement ``_matmat``.
    """

    #: Whether the operator is known to be symmetric (all curvature operators are).
    symmetric: bool = True

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device | str) -> None:
        if size <= 0:
            raise ConfigurationError(f"operator size must be positive, got {size}")
        self.shape: tuple[int, int] = (int(size), int(size))
        self.dtype: torch.dtype = dtype
        self.device: torch.device = torch.device(device)

    # ------------------------------------------------------------------ products
    def _matmat(self, V: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Compute ``A @ V`` for a validated block ``V`` of shape ``[P, K]``."""
        raise NotImplementedError

    def _check(self, V: Tensor) -> None:
        if not isinstance(V, Tensor):
            raise OperatorInputError(
                f"expected a torch.Tensor, got {type(V).__name__}; "
                "convert with torch.as_tensor(x, dtype=op.dtype, device=op.device)"
            )
        P = self.shape[1]
        if V.ndim not in (1, 2) or V.shape[0] != P:
            raise OperatorInputError(
                f"expected a vector [{P}] or block [{P}, K], got shape {tuple(V.shape)}"
            )
        if V.dtype != self.dtype:
            raise OperatorInputError(
                f"operator works in {self.dtype} but got {V.dtype}; call V.to({self.dtype})"
            )
        if V.device != self.device and not (
            V.device.type == self.device.type and self.device.index is None
        ):
            raise OperatorInputError(
                f"operator lives on {self.device} but got a tensor on {V.device}; "
                f"call V.to('{self.device}')"
            )

    def matmat(self, V: Tensor) -> Tensor:
        """Return ``A @ V`` for a block ``V`` of shape ``[P, K]`` (or a vector ``[P]``)."""
        self._check(V)
        if V.ndim == 1:
            return self._matmat(V[:, None])[:, 0]
        if V.shape[1] == 0:
            return V.clone()
        return self._matmat(V)

    def matvec(self, v: Tensor) -> Tensor:
        """Return ``A @ v`` for a vector ``v`` of shape ``[P]``."""
        if isinstance(v, Tensor) and v.ndim != 1:
            raise OperatorInputError(f"matvec expects a vector [P], got {tuple(v.shape)}")
        return self.matmat(v)

    def __matmul__(self, V: Tensor) -> Tensor:
        return self.matmat(V)

    # ------------------------------------------------------------- composition
    def __mul__(self, c: float) -> LinearOperator:
        return ScaledOperator(self, float(c))

    __rmul__ = __mul__

    def __neg__(self) -> LinearOperator:
        return ScaledOperator(self, -1.0)

    def __add__(self, other: LinearOperator) -> LinearOperator:
        return SumOperator([self, as_operator(other)])

    def __sub__(self, other: LinearOperator) -> LinearOperator:
        return SumOperator([self, ScaledOperator(as_operator(other), -1.0)])

    # --------------------------------------------------------------- conversion
    def to_dense(self, *, chunk_size: int = 256, max_bytes: int | None = DENSE_MAX_BYTES) -> Tensor:
        """Materialise ``A`` as a dense ``[P, P]`` tensor (for small ``P`` only).

        Computed as ``A @ I`` in blocks of ``chunk_size`` columns.

        Args:
            chunk_size: columns per block product.
            max_bytes: refuse when ``P * P`` entries of ``dtype`` exceed this many bytes
                (default :data:`hesslab.validation.DENSE_MAX_BYTES`, 4 GiB); ``None`` for
                no limit.

        Raises:
            MemoryLimitError: the matrix would exceed ``max_bytes`` (the message gives the
                size and the matrix-free alternatives).
        """
        P = self.shape[0]
        check_dense_size(P, self.dtype, max_bytes)
        out = torch.empty(P, P, dtype=self.dtype, device=self.device)
        for start in range(0, P, chunk_size):
            stop = min(P, start + chunk_size)
            E = torch.zeros(P, stop - start, dtype=self.dtype, device=self.device)
            E[torch.arange(start, stop), torch.arange(stop - start)] = 1
            out[:, start:stop] = self.matmat(E)
        return out

    def to_scipy(self):
        """Return a :class:`scipy.sparse.linalg.LinearOperator` view (NumPy in and out).

        Products convert NumPy arrays to tensors on ``self.device`` in ``self.dtype``.
        """
        from scipy.sparse.linalg import LinearOperator as ScipyLinearOperator

        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def _mm(X: np.ndarray) -> np.ndarray:
            X = np.asarray(X)
            squeeze = X.ndim == 1
            T = torch.as_tensor(np.array(X, dtype=np_dtype, copy=True), device=self.device)
            if squeeze:
                T = T[:, None]
            Y = self.matmat(T).detach().cpu().numpy()
            return Y[:, 0] if squeeze else Y

        return ScipyLinearOperator(
            shape=self.shape, matvec=_mm, matmat=_mm, rmatvec=_mm, rmatmat=_mm, dtype=np_dtype
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(P={self.shape[0]}, dtype={self.dtype}, device={self.device})"


class DenseOperator(LinearOperator):
    """An explicit ``[P, P]`` matrix seen as an operator."""

    def __init__(self, A: Tensor | np.ndarray, *, symmetric: bool | None = None) -> None:
        A = torch.as_tensor(A)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ConfigurationError(f"DenseOperator needs a square matrix, got {tuple(A.shape)}")
        if not A.is_floating_point():
            A = A.to(torch.get_default_dtype())
        super().__init__(A.shape[0], A.dtype, A.device)
        check_finite(A, "the matrix of the DenseOperator")
        self.A = A
        if symmetric is None:
            tol = 100 * torch.finfo(A.dtype).eps * max(1.0, float(A.abs().max()))
            symmetric = bool((A - A.T).abs().max() <= tol)
        self.symmetric = symmetric

    def _matmat(self, V: Tensor) -> Tensor:
        return self.A @ V

    def to_dense(self, *, chunk_size: int = 256, max_bytes: int | None = DENSE_MAX_BYTES) -> Tensor:
        """A copy of the wrapped matrix (already in memory, so no size limit applies)."""
        return self.A.clone()  # already in memory: no limit to enforce


class ScipyOperator(LinearOperator):
    """A ``scipy.sparse.linalg.LinearOperator`` (or sparse matrix) wrapped as an operator."""

    def __init__(self, A, dtype: torch.dtype = torch.float64) -> None:
        from scipy.sparse.linalg import aslinearoperator

        self._A = aslinearoperator(A)
        if self._A.shape[0] != self._A.shape[1]:
            raise ConfigurationError(f"operator must be square, got {self._A.shape}")
        super().__init__(self._A.shape[0], dtype, "cpu")

    def _matmat(self, V: Tensor) -> Tensor:
        Y = self._A.matmat(V.detach().cpu().numpy())
        return torch.as_tensor(np.asarray(Y), dtype=self.dtype)


class ScaledOperator(LinearOperator):
    """``c * A``."""

    def __init__(self, op: LinearOperator, c: float) -> None:
        super().__init__(op.shape[0], op.dtype, op.device)
        self.op, self.c = op, float(c)
        self.symmetric = op.symmetric

    def _matmat(self, V: Tensor) -> Tensor:
        return self.c * self.op._matmat(V)


class SumOperator(LinearOperator):
    """``A_1 + A_2 + ...`` (all with the same shape, dtype and device)."""

    def __init__(self, ops: Sequence[LinearOperator]) -> None:
        ops = [as_operator(o) for o in ops]
        if not ops:
            raise ConfigurationError("SumOperator needs at least one operator")
        first = ops[0]
        for o in ops[1:]:
            if o.shape != first.shape or o.dtype != first.dtype or o.device != first.device:
                raise ConfigurationError(
                    f"cannot add {o!r} to {first!r}: shapes, dtypes and devices must match"
                )
        super().__init__(first.shape[0], first.dtype, first.device)
        self.ops = list(ops)
        self.symmetric = all(o.symmetric for o in ops)

    def _matmat(self, V: Tensor) -> Tensor:
        out = self.ops[0]._matmat(V)
        for o in self.ops[1:]:
            out = out + o._matmat(V)
        return out


class IdentityOperator(LinearOperator):
    """The identity ``I`` of size ``P``."""

    def _matmat(self, V: Tensor) -> Tensor:
        return V.clone()


def shift(op: LinearOperator, sigma: float) -> LinearOperator:
    """Return ``A + sigma * I``."""
    return SumOperator(
        [op, ScaledOperator(IdentityOperator(op.shape[0], op.dtype, op.device), sigma)]
    )


def scale(op: LinearOperator, c: float) -> LinearOperator:
    """Return ``c * A``."""
    return ScaledOperator(op, c)


class DeflatedOperator(LinearOperator):
    """``(I - U U^T) A (I - U U^T)``: ``A`` with the span of orthonormal ``U`` projected out.

    Args:
        op: the operator ``A``.
        U: ``[P, r]`` block with orthonormal columns (orthonormalised here with QR to be
            safe), e.g. top eigenvectors to remove outliers before a density estimate.
    """

    def __init__(self, op: LinearOperator, U: Tensor) -> None:
        op = as_operator(op)
        super().__init__(op.shape[0], op.dtype, op.device)
        if U.ndim == 1:
            U = U[:, None]
        if U.shape[0] != op.shape[0]:
            raise ConfigurationError(
                f"deflation vectors must have {op.shape[0]} rows, got {tuple(U.shape)}"
            )
        Q, _ = torch.linalg.qr(U.to(dtype=op.dtype, device=op.device))
        self.op, self.U = op, Q
        self.symmetric = op.symmetric

    def _project(self, V: Tensor) -> Tensor:
        return V - self.U @ (self.U.T @ V)

    def _matmat(self, V: Tensor) -> Tensor:
        return self._project(self.op._matmat(self._project(V)))


class FunctionOperator(LinearOperator):
    """An operator defined by a function ``V [P, K] -> A V [P, K]``."""

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        size: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        *,
        symmetric: bool = True,
    ) -> None:
        super().__init__(size, dtype, device)
        self._fn = fn
        self.symmetric = symmetric

    def _matmat(self, V: Tensor) -> Tensor:
        return self._fn(V)


def as_operator(A) -> LinearOperator:
    """Convert a tensor, NumPy array, SciPy matrix/operator or operator to :class:`LinearOperator`.

    Algorithms call this on their input so that they accept any of these.
    """
    if isinstance(A, LinearOperator):
        return A
    if isinstance(A, Tensor):
        return DenseOperator(A)
    if isinstance(A, np.ndarray):
        return DenseOperator(torch.from_numpy(np.ascontiguousarray(A)))
    try:
        import scipy.sparse as sp
        from scipy.sparse.linalg import LinearOperator as ScipyLinearOperator
    except ImportError:  # pragma: no cover
        sp = None
    if sp is not None and (sp.issparse(A) or isinstance(A, ScipyLinearOperator)):
        return ScipyOperator(A)
    raise ConfigurationError(
        f"cannot use a {type(A).__name__} as a linear operator; pass a hesslab operator, "
        "a square torch.Tensor, a NumPy array or a scipy LinearOperator"
    )

"""The state one :func:`hesslab.analysis.analyze` call threads through its parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hesslab.analysis.config import AnalysisConfig
from hesslab.io import Checkpoint
from hesslab.linalg.space import space_of
from hesslab.objective import Objective
from hesslab.operators.base import LinearOperator
from hesslab.operators.hessian import HessianOperator
from hesslab.quantities import Settings, measure
from hesslab.report.run import RunDir
from hesslab.stages import StageStore

__all__ = ["Job", "identity", "record_eigen"]


def record_eigen(run: RunDir, section: str, name: str, res: Any) -> None:
    """One summary scalar (the extreme eigenvalue with the run's diagnostics) + a table."""
    run.add_result(section, name, res, max_scalars=0)
    run.add_scalar(
        section,
        f"{name}[0]",
        float(res.values[0]),
        num_matvecs=res.num_matvecs,
        seconds=res.seconds,
        converged=f"{int(res.converged.sum())}/{len(res.values)}",
        method=res.method,
        tol=res.tol,
        peak_memory_bytes=getattr(res, "peak_memory_bytes", None),
    )
    rows = [
        {"rank": i + 1, "λ": float(v), "residual ‖Hv − λv‖": float(r), "converged": bool(c)}
        for i, (v, r, c) in enumerate(
            zip(res.values, res.residual_norms, res.converged, strict=True)
        )
    ]
    run.add_table(section, name, rows)


def _gen(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def identity(op: LinearOperator) -> LinearOperator:
    """The default ``wrap``: the operator itself."""
    return op


@dataclass
class Job:
    """The state one :func:`analyze` call threads through its parts."""

    objective: Objective
    run: RunDir
    cfg: AnalysisConfig
    store: StageStore
    H_local: HessianOperator
    H: LinearOperator
    wrap: Callable[[LinearOperator], LinearOperator]
    progress: Callable[[str], None] | None
    summary: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    part: str = ""

    @property
    def P(self) -> int:
        """The number of parameters."""
        return space_of(self.H).global_size(self.H.shape[0])  # all ranks' when sharded

    def begin(self, part: str) -> None:
        """Start a part: report it and time it by its results' own ``seconds``."""
        self.part = part
        self.timings.setdefault(part, 0.0)
        if self.progress is not None:
            self.progress(part)

    def settings(self, **changes: Any) -> Settings:
        """The :class:`~hesslab.quantities.Settings` of the config, with ``changes``."""
        cfg = self.cfg
        base = Settings(
            k=cfg.k_top, tol=cfg.tol, num_matvecs=cfg.trace_matvecs,
            num_steps=cfg.density_steps, num_probes=cfg.density_probes,
            basis_device=cfg.basis_device, basis_dir=cfg.basis_dir,
        )  # fmt: skip
        return base.replace(**changes)

    def stage(
        self, stage: str, name: str, op: LinearOperator, seed: int | None, s: Settings
    ) -> Any:
        """Quantity ``name`` of ``op`` as the resumable stage ``stage``.

        ``seed`` is the offset from ``config.seed`` of its generator (``None``:
        deterministic); the result's ``seconds`` count towards the current part.
        """

        def compute(ckpt: Checkpoint | None) -> Any:
            gen = None if seed is None else _gen(self.cfg.seed + seed, op.device)
            return measure(name, op, s.replace(checkpoint=ckpt), gen)

        result = self.store.run(stage, compute)
        self.timings[self.part] = self.timings.get(self.part, 0.0) + float(result.seconds)
        return result

    def top(self) -> Any:
        """The top-``k_top`` eigenpairs of H (stage ``eig_top``)."""
        return self.stage("eig_top", "top_k", self.H, 0, self.settings())

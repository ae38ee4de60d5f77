"""The peer benchmark's tables: the methods compared per measure and the plan per problem.

Each :class:`Method` names a function ``func`` of the adapter module ``module``
(``lib_hesslab.py``, ``lib_pyhessian.py``, ...) and the keyword arguments it is called with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import HESSLAB

PEER_MODULES = ("pyhessian", "curvlinops", "hessian_eigenthings", "backpack")
DISTS = (
    "torch",
    "hesslab",
    "pyhessian",
    "hessian-eigenthings",
    "curvlinops-for-pytorch",
    "backpack-for-pytorch",
    "scipy",
    "numpy",
)


@dataclass(frozen=True)
class Method:
    name: str  # row label, unique within a measure
    library: str
    settings: str
    module: str
    func: str
    kwargs: tuple = ()

    def call_kwargs(self) -> dict:
        return dict(self.kwargs)


TOPK = [
    Method(
        HESSLAB, "hesslab", "eigenpairs: thick-restart Lanczos, tol=1e-6", "lib_hesslab", "topk"
    ),
    Method(
        "curvlinops + ARPACK",
        "curvlinops",
        "scipy eigsh(H.to_scipy(), which='LA'), tol=0",
        "lib_curvlinops",
        "topk",
    ),
    Method(
        "pyhessian",
        "pyhessian",
        "eigenvalues(): power iteration, maxIter=100, tol=1e-3",
        "lib_pyhessian",
        "topk",
    ),
    Method(
        "eigenthings power",
        "hessian-eigenthings",
        "deflated_power_iteration: max_iter=100, tol=1e-4",
        "lib_eigenthings",
        "topk_power",
    ),
    Method(
        "eigenthings lanczos",
        "hessian-eigenthings",
        "lanczos: max_iter=2k, tol=1e-4, which='LM'",
        "lib_eigenthings",
        "topk_lanczos",
    ),
]
TRACE = [
    Method(HESSLAB, "hesslab", "trace: krylov (default), stderr", "lib_hesslab", "trace"),
    Method(
        "pyhessian hutchinson", "pyhessian", "trace(maxIter=96, tol=0)", "lib_pyhessian", "trace"
    ),
    Method(
        "curvlinops hutchinson",
        "curvlinops",
        "hutchinson_trace",
        "lib_curvlinops",
        "trace_hutchinson",
    ),
    Method("curvlinops hutch++", "curvlinops", "hutchpp_trace", "lib_curvlinops", "trace_hutchpp"),
    Method("curvlinops xtrace", "curvlinops", "xtrace", "lib_curvlinops", "trace_xtrace"),
    Method(
        "eigenthings hutch++",
        "hessian-eigenthings",
        "trace (hutch++ default), stderr",
        "lib_eigenthings",
        "trace",
    ),
    Method(
        "backpack DiagHessian",
        "backpack",
        "exact diagonal, no HVPs (not a 96-product estimator)",
        "lib_backpack",
        "trace_diag",
    ),
]
DENSITY = [
    Method(
        HESSLAB,
        "hesslab",
        "spectral_density(num_steps=budget, num_probes=1)",
        "lib_hesslab",
        "density",
    ),
    Method(
        "pyhessian", "pyhessian", "density(iter=100, n_v=budget/100)", "lib_pyhessian", "density"
    ),
    Method(
        "pyhessian (torch.eig shim)",
        "pyhessian",
        "same, torch.eig -> torch.linalg.eigh (patched by the bench)",
        "lib_pyhessian",
        "density",
        (("shim", True),),
    ),
    Method(
        "curvlinops",
        "curvlinops",
        "fast_lanczos(ncv=100) x budget/100",
        "lib_curvlinops",
        "density",
    ),
    Method(
        "eigenthings",
        "hessian-eigenthings",
        "spectral_density: 1x100 steps at 100, defaults 10x80 at 800",
        "lib_eigenthings",
        "density",
    ),
]
COST = [
    Method(
        HESSLAB, "hesslab", "H @ v (mode='auto', after its first product)", "lib_hesslab", "cost"
    ),
    Method(
        "pyhessian",
        "pyhessian",
        "hessian_vector_product on the cached gradient graph",
        "lib_pyhessian",
        "cost",
    ),
    Method(
        "curvlinops", "curvlinops", "H @ v (torch.func jvp of jacrev)", "lib_curvlinops", "cost"
    ),
    Method(
        "eigenthings",
        "hessian-eigenthings",
        "op.matvec (rebuilds the graph per product)",
        "lib_eigenthings",
        "cost",
    ),
    Method(
        "backpack",
        "backpack",
        "hessianfree.hvp.hessian_vector_product(loss, params, v)",
        "lib_backpack",
        "cost",
    ),
]


# What the full run measures per problem on a CPU (issue 5: density on P1 only). P4's
# float64 convolutions cost about a second per product on CPU, so it gets the product cost
# only. Timed repeats per child: enough for a stable median (each child is itself one of
# >= 3 interleaved runs), few enough that `make bench` stays near 20 minutes on 2 cores.
PLAN: dict[str, dict[str, Any]] = {
    "P1": {"measures": ["topk", "trace", "density", "cost"], "cost_reps": 20, "cost_block": 16},
    "P2": {"measures": ["topk", "trace", "cost"], "cost_reps": 8, "cost_block": 16},
    "P3": {"measures": ["topk", "trace", "cost"], "cost_reps": 5, "cost_block": 16},
    "P4": {"measures": ["cost"], "cost_reps": 3, "cost_block": 0},
}

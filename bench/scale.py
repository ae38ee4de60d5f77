"""Scale: hesslab beside PyHessian, curvlinops and hessian-eigenthings on large models.

Issue 14's benchmark. Models (float32, eval mode, random CIFAR-size images / random
tokens, random labels, weights at initialisation):

* ResNet-18: torchvision's ``resnet18(num_classes=10)`` when torchvision imports, else
  hesslab's CIFAR ResNet-18 (:func:`hesslab.models.resnet_small` with width 64 and blocks
  (2, 2, 2, 2), 11.2M parameters); the table says which;
* ViT-tiny: :func:`hesslab.models.vit` with ``dim=192, depth=12, heads=3`` on 32x32
  (patch 4), 5.5M;
* GPT-2: Hugging Face ``GPT2LMHeadModel`` from a ``GPT2Config`` (``n_embd=512``,
  ``n_layer=9``, ``n_head=8``, vocabulary 8192, 128 positions: 33M parameters) on random
  token sequences, next-token cross-entropy (flattened logits, so every library sees
  ``CrossEntropyLoss()(model(x), y)``).

A model whose import fails is skipped with a line saying why. Per model and library:
one product's cost (seconds per column, and over one plain gradient), peak memory of
the top-5 solve at ``tol=1e-3`` (``hesslab.linalg.memory.measure_peak_memory``: process
RSS above its value at the call's start), top-1 and top-5 at ``tol`` 1e-3 and 1e-6 (wall,
products, largest error against hesslab's ``tol=1e-7`` top-5 reference, relative to
``|lambda_1|``), the trace at 96 products (relative error against hesslab's
``--ref-trace``-product estimate, default 384), the density at 100 products (1-Wasserstein
distance to hesslab's ``--ref-density``-product SLQ reference, 3 probes x 150 steps by
default, over the reference's spectral width), and, for hesslab, the Krylov overhead
fraction ``(wall - time in products) / time in products`` of each solve. Each peer runs at
its documented usage with its own ``tol`` set to the column's value: PyHessian
``hessian(...).eigenvalues(maxIter=100, tol=tol, top_n=k)``, ``trace(maxIter=96)``,
``density(iter=100, n_v=1)`` (with a ``torch.eig`` shim: PyTorch 2 removed it);
curvlinops ``eigsh(HessianLinearOperator(...).to_scipy(), k, which="LA", tol=tol)``,
``hutchpp_trace(num_matvecs=96)``, ``fast_lanczos(H, 100)``; hessian-eigenthings
``lanczos(op, k=k, tol=tol, which="LA")``, ``trace(op, num_matvecs=96)``,
``spectral_density(op, num_runs=1, lanczos_steps=100)``. A failure is a result.

    make bench-scale                                     # the full run (issue 14's sizes)
    PYTHONPATH=src python bench/scale.py --quick         # small models, a few minutes
    PYTHONPATH=src python bench/scale.py --models resnet18 --images 64

Writes ``results/scale.md`` (``results/scale_quick.md`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "peers")]

from common import Loaded, gradient_fn, interleaved_times  # noqa: E402

import hesslab  # noqa: E402
from hesslab.linalg.density import wasserstein1  # noqa: E402
from hesslab.linalg.memory import measure_peak_memory  # noqa: E402
from hesslab.models import resnet_small, vit  # noqa: E402
from hesslab.operators.base import LinearOperator  # noqa: E402

ROOT = HERE.parent
LIBS = ("hesslab", "pyhessian", "curvlinops", "eigenthings")
TOLS = (1e-3, 1e-6)


# ----------------------------------------------------------------------------- models
class _Flat(nn.Module):
    """An LM with flattened shifted logits ``[B (T-1), V]`` (criterion-shaped output)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.lm(input_ids=ids).logits
        return out[:, :-1].reshape(-1, out.shape[-1])


def _images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _resnet18(quick: bool) -> tuple[nn.Module, str]:
    if not quick:
        try:
            from torchvision.models import resnet18

            torch.manual_seed(0)
            return resnet18(num_classes=10), "torchvision resnet18"
        except Exception as e:
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
            note = f"hesslab resnet_small(64, (2,2,2,2)) (torchvision not importable: {why})"
    else:
        note = "hesslab resnet_small(8, (1,1,1,1)) (quick)"
    width, blocks = (8, (1, 1, 1, 1)) if quick else (64, (2, 2, 2, 2))
    return resnet_small(3, 10, width=width, num_blocks=blocks), note


def _gpt2(quick: bool) -> tuple[nn.Module, str]:
    import transformers

    dim, layers, vocab, pos = (64, 2, 512, 32) if quick else (512, 9, 8192, 128)
    cfg = transformers.GPT2Config(
        vocab_size=vocab, n_positions=pos, n_embd=dim, n_layer=layers, n_head=8 if dim > 64 else 4,
        bos_token_id=0, eos_token_id=0, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    return _Flat(transformers.GPT2LMHeadModel(cfg)), f"HF GPT2 {layers}x{dim}, vocab {vocab}"


def build(name: str, args: argparse.Namespace) -> Loaded:
    """The problem ``name`` (raises ImportError when its library does not import)."""
    if name == "resnet18":
        model, note = _resnet18(args.quick)
        x, y = _images(args.images)
    elif name == "vit":
        dim, depth, heads = (32, 2, 2) if args.quick else (192, 12, 3)
        model = vit(3, 10, 32, 4, dim=dim, depth=depth, num_heads=heads, mlp_ratio=4)
        note = f"hesslab vit dim {dim} depth {depth} heads {heads}"
        x, y = _images(args.images)
    else:
        model, note = _gpt2(args.quick)
        g = torch.Generator().manual_seed(0)
        vocab, T = model.lm.config.vocab_size, model.lm.config.n_positions
        x = torch.randint(0, vocab, (args.sequences, T), generator=g)
        y = x[:, 1:].reshape(-1)
    model = model.float().eval()
    P = sum(p.numel() for p in model.parameters())
    prob = Loaded(name, model, x, y, P)
    prob.note = note  # type: ignore[attr-defined]
    return prob


# ------------------------------------------------------------------------ operators
class Timed(LinearOperator):
    """Wraps an operator; counts the columns applied and the seconds spent in products."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(op.shape[0], op.dtype, op.device)
        self.op, self.columns, self.seconds = op, 0, 0.0

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.op.matmat(V)
        self.seconds += time.perf_counter() - t0
        self.columns += V.shape[1]
        return out


def _hesslab_op(prob: Loaded) -> Timed:
    H = hesslab.hessian(prob.model, "ce", (prob.x, prob.y))
    H @ torch.randn(prob.num_params, generator=torch.Generator().manual_seed(9))  # mode choice
    return Timed(H)


def _peer(lib: str):
    return importlib.import_module(
        {"pyhessian": "lib_pyhessian", "curvlinops": "lib_curvlinops"}.get(lib, "lib_eigenthings")
    )


# --------------------------------------------------------------------------- solves
def _run(fn: Callable[[], dict], prob: Loaded) -> dict:
    """``fn()`` timed, with its peak memory; a failure becomes ``{"error": ...}``.

    The model's ``.grad`` fields are cleared first: PyHessian leaves its
    ``backward(create_graph=True)`` graph there, and the next construction would add to it.
    """
    for p in prob.model.parameters():
        p.grad = None
    try:
        with measure_peak_memory("cpu") as m:
            t0 = time.perf_counter()
            out = fn()
            out.setdefault("wall_s", time.perf_counter() - t0)
        out["peak_bytes"] = m.bytes
        return out
    except Exception as e:
        msg = str(e).splitlines()[0][:90] if str(e) else ""
        return {"error": f"{type(e).__name__}: {msg}"}


def _hesslab_top(prob: Loaded, k: int, tol: float) -> dict:
    H = _hesslab_op(prob)
    t0 = time.perf_counter()
    r = hesslab.eigenpairs(H, k, tol=tol, generator=torch.Generator().manual_seed(0))
    wall = time.perf_counter() - t0
    return {
        "values": [float(v) for v in r.values],
        "products": H.columns,
        "wall_s": wall,
        "overhead": (wall - H.seconds) / H.seconds,
    }


def _peer_top(lib: str, prob: Loaded, k: int, tol: float) -> dict:
    if lib == "pyhessian":
        mod = _peer(lib)
        torch.manual_seed(0)
        h, count = mod._hessian(prob)
        values, _ = h.eigenvalues(maxIter=100, tol=tol, top_n=k)
        return {"values": sorted((float(v) for v in values), reverse=True), "products": count.n}
    if lib == "curvlinops":
        from scipy.sparse.linalg import eigsh

        H, count = _peer(lib)._operator(prob)
        w = eigsh(H.to_scipy(), k=k, which="LA", tol=tol, return_eigenvectors=False)
        return {"values": sorted((float(v) for v in w), reverse=True), "products": count["columns"]}
    import hessian_eigenthings as he

    op, count = _peer(lib)._operator(prob)
    res = he.lanczos(op, k=k, tol=tol, which="LA", seed=0)
    return {"values": sorted((float(v) for v in res.eigenvalues), reverse=True),
            "products": count["n"]}  # fmt: skip


def _hesslab_trace(prob: Loaded, budget: int, method: str | None = None) -> dict:
    H = _hesslab_op(prob)
    t0 = time.perf_counter()
    kw = {} if method is None else {"method": method}
    est = hesslab.trace(H, budget, generator=torch.Generator().manual_seed(0), **kw)
    wall = time.perf_counter() - t0
    return {"value": est.value, "stderr": est.stderr, "products": H.columns, "wall_s": wall,
            "overhead": (wall - H.seconds) / H.seconds}  # fmt: skip


def _peer_trace(lib: str, prob: Loaded, budget: int) -> dict:
    mod = _peer(lib)
    return mod.trace_hutchpp(prob, budget, 0) if lib == "curvlinops" else mod.trace(prob, budget, 0)


def _hesslab_density(prob: Loaded, steps: int, probes: int = 1, basis: str | None = None) -> dict:
    H = _hesslab_op(prob)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    sd = hesslab.spectral_density(H, steps, probes, generator=g, basis_device=basis)
    wall = time.perf_counter() - t0
    nodes, weights = sd.nodes_and_weights()
    return {"nodes": nodes.flatten().tolist(), "weights": weights.flatten().tolist(),
            "products": H.columns, "wall_s": wall,
            "overhead": (wall - H.seconds) / H.seconds}  # fmt: skip


def _peer_density(lib: str, prob: Loaded, budget: int) -> dict:
    mod = _peer(lib)
    if lib == "pyhessian":
        return mod.density(prob, budget, 0, shim=True)
    return mod.density(prob, budget, 0)


def _cost(lib: str, prob: Loaded, reps: int) -> dict:
    if lib == "hesslab":
        H = _hesslab_op(prob).op
        v = torch.randn(prob.num_params, 1, generator=torch.Generator().manual_seed(0))
        secs = interleaved_times({"grad": gradient_fn(prob), "hvp": lambda: H.matmat(v)}, reps)
        return {"hvp_s": secs["hvp"], "hvp_over_grad": secs["hvp"] / secs["grad"]}
    return _peer(lib).cost(prob, reps, 0)


# ---------------------------------------------------------------------------- table
def _err_top(out: dict, ref: list[float], k: int) -> str:
    if "error" in out:
        return f"fails ({out['error']})"
    vals = out["values"][:k]
    err = max(abs(a - b) for a, b in zip(vals, ref[:k], strict=False)) / abs(ref[0])
    return f"{out['wall_s']:.1f} s, {out['products']}, {err:.1e}"


def _cells(prob: Loaded, lib: str, res: dict, refs: dict) -> list[str]:
    cost = res["cost"]
    cells = [lib]
    if "default_kernel_error" in res:
        cells = [f"{lib} (math SDPA kernel by hand)"]
        prob.notes.add(
            f"{lib} with PyTorch's default SDPA kernels: {res['default_kernel_error']['error']}"
        )  # type: ignore[attr-defined]
    if "error" in cost:
        cells += [f"fails ({cost['error']})", "-"]
    else:
        cells += [f"{cost['hvp_s']:.3f}", f"{cost['hvp_over_grad']:.2f}"]
    peak = res.get(("top", 5, 1e-3), {}).get("peak_bytes")
    cells.append("-" if peak is None else f"{peak / 2**20:.1f}")
    for k in (1, 5):
        for tol in TOLS:
            cells.append(_err_top(res[("top", k, tol)], refs["values"], k))
    tr = res["trace"]
    cells.append(
        f"fails ({tr['error']})"
        if "error" in tr
        else f"{tr['wall_s']:.1f} s, {tr['products']}, "
        f"{abs(tr['value'] - refs['trace']) / abs(refs['trace']):.1e}"
    )
    de = res["density"]
    if "error" in de:
        cells.append(f"fails ({de['error']})")
    else:
        w1 = wasserstein1(de["nodes"], de["weights"], refs["nodes"], refs["weights"])
        cells.append(f"{de['wall_s']:.1f} s, {de['products']}, {w1 / refs['width']:.1e}")
    if lib == "hesslab":
        keys = [("top", 1, 1e-3), ("top", 5, 1e-3), "trace", "density"]
        cells.append(
            " / ".join(f"{100 * res[key].get('overhead', float('nan')):.0f}%" for key in keys)
        )
    else:
        cells.append("-")
    return cells


HEAD = (
    "| library | product (s/column) | product / gradient | peak MiB (top-5, 1e-3) "
    "| top-1 tol 1e-3 | top-1 tol 1e-6 | top-5 tol 1e-3 | top-5 tol 1e-6 | trace, 96 "
    "| density, 100 | Krylov overhead (top-1 / top-5 / trace / density) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


# ----------------------------------------------------------------------------- main
#: references whose float64 Krylov blocks (trace) or float32 Lanczos bases (density) would
#: exceed this many bytes use plain Hutchinson / a disk basis instead (24 GiB machines)
REF_MEMORY = 4 * 2**30


def _references(prob: Loaded, args: argparse.Namespace) -> dict:
    top = _hesslab_top(prob, 5, 1e-7)
    P = prob.num_params
    method = "hutchinson" if 2 * 8 * P * args.ref_trace // 3 > REF_MEMORY else None
    tr = _hesslab_trace(prob, args.ref_trace, method)
    steps = max(1, args.ref_density // 3)
    de = _hesslab_density(prob, steps, 3, "disk" if 4 * P * 3 * steps > REF_MEMORY else None)
    nodes = torch.tensor(de["nodes"])
    return {"values": top["values"], "trace": tr["value"], "trace_stderr": tr["stderr"],
            "trace_method": method or "krylov",
            "nodes": de["nodes"], "weights": de["weights"],
            "width": float(nodes.max() - nodes.min()) or 1.0}  # fmt: skip


def _measure(prob: Loaded, lib: str, args: argparse.Namespace) -> dict:
    """Every cell of one library. A peer whose product fails under PyTorch's default
    attention kernels (flash / memory-efficient SDPA have no double backward) is run under
    ``sdpa_kernel(SDPBackend.MATH)``, as its user would have to; the failure is noted."""
    res: dict[Any, dict] = {"cost": _run(lambda: _cost(lib, prob, args.reps), prob)}
    if lib != "hesslab" and "error" in res["cost"]:
        res["default_kernel_error"] = res["cost"]
        with sdpa_kernel(SDPBackend.MATH):
            return {**_solves(prob, lib, args), "default_kernel_error": res["cost"]}
    return {**res, **_solves(prob, lib, args, cost=False)}


def _solves(prob: Loaded, lib: str, args: argparse.Namespace, cost: bool = True) -> dict:
    res: dict[Any, dict] = {}
    if cost:
        res["cost"] = _run(lambda: _cost(lib, prob, args.reps), prob)
    for k in (1, 5):
        for tol in TOLS:
            if lib == "hesslab":
                res[("top", k, tol)] = _run(lambda k=k, tol=tol: _hesslab_top(prob, k, tol), prob)
            else:
                res[("top", k, tol)] = _run(lambda k=k, tol=tol: _peer_top(lib, prob, k, tol), prob)
    if lib == "hesslab":
        res["trace"] = _run(lambda: _hesslab_trace(prob, 96), prob)
        res["density"] = _run(lambda: _hesslab_density(prob, 100), prob)
    else:
        res["trace"] = _run(lambda: _peer_trace(lib, prob, 96), prob)
        res["density"] = _run(lambda: _peer_density(lib, prob, 100), prob)
    return res


def model_table(name: str, args: argparse.Namespace) -> str:
    """The markdown section of one model (or a line saying why it was skipped)."""
    try:
        prob = build(name, args)
    except ImportError as e:
        return f"### {name}\n\nskipped: {type(e).__name__}: {e}\n"
    t0 = time.perf_counter()
    refs = _references(prob, args)
    lines = [
        f"### {name}: {prob.note}, P = {prob.num_params:,}, "  # type: ignore[attr-defined]
        f"data {tuple(prob.x.shape)}",
        "",
        f"Reference: top-5 {[f'{v:.6g}' for v in refs['values']]}, trace "
        f"{refs['trace']:.6g} +- {refs['trace_stderr']:.2g} ({args.ref_trace} products, "
        f"{refs['trace_method']}).",
        "Cells: wall, products, error (eigenvalues: max abs error / |lambda_1|; trace: "
        "relative; density: W1 / spectral width).",
        "",
        HEAD,
    ]
    prob.notes = set()  # type: ignore[attr-defined]
    for lib in args.libs:
        res = _measure(prob, lib, args)
        lines.append("| " + " | ".join(_cells(prob, lib, res, refs)) + " |")
        print(lines[-1], flush=True)
    lines += ["", *sorted(prob.notes)]  # type: ignore[attr-defined]
    lines.append(f"\n({time.perf_counter() - t0:.0f} s for this model)\n")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "vit", "gpt2"])
    ap.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--sequences", type=int, default=8, help="GPT-2 sequences of 128 tokens")
    ap.add_argument("--ref-trace", type=int, default=384)
    ap.add_argument("--ref-density", type=int, default=450)
    ap.add_argument("--reps", type=int, default=3, help="repeats of the product timing")
    ap.add_argument("--quick", action="store_true", help="small models and data")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.quick:
        args.images, args.sequences = min(args.images, 8), min(args.sequences, 2)
        args.ref_trace, args.ref_density = min(args.ref_trace, 192), min(args.ref_density, 150)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    head = (
        f"# bench/scale.py{' --quick' if args.quick else ''}\n\n"
        f"float32, CPU ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; command: `python bench/scale.py "
        f"{' '.join(sys.argv[1:])}`\n"
    )
    parts = [head] + [model_table(name, args) for name in args.models]
    text = "\n".join(parts)
    print(text)
    out = (
        Path(args.out)
        if args.out
        else ROOT / "results" / ("scale_quick.md" if args.quick else "scale.md")
    )
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()

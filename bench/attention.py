"""Hessian-vector products on attention models: cost per product / one gradient, side by side.

Run: ``python bench/attention.py`` (after ``make peers``; ``--quick`` for fewer
repeats). Prints a markdown table and writes ``bench/results/attention.md``.

Models (float32, eval mode, one batch): a small decoder-only GPT (pre-LN, causal
``F.scaled_dot_product_attention``, tied embeddings) on token sequences, a Hugging Face
``GPT2LMHeadModel`` from a small config (``attn_implementation="sdpa"``), and a small ViT
on 32x32 images. The loss is the token-mean next-token cross-entropy for the language
models (``"causal_lm"`` in hesslab) and cross-entropy for the ViT.

Each library multiplies the Hessian of the same loss with one vector, at its documented
usage: hesslab ``hessian(model, loss, batch) @ v`` (automatic mode: the derivative passes
run under the math SDPA kernel by themselves); curvlinops 3.0.1
``HessianLinearOperator(...) @ v``; hessian-eigenthings 1.0.0a5
``HessianOperator(...).matvec(v)``. Each peer is run twice: as a user would call it
(PyTorch's default attention kernels), and with the user wrapping the call in
``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`` by hand. A failure is recorded with its
error. The unit is one plain PyTorch gradient of the same loss with the default kernels
(what a training step pays). Ratios, medians of interleaved repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import hesslab

RESULTS = Path(__file__).resolve().parent / "results"


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, T, _ = h.shape
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        h = h + self.proj(a.transpose(1, 2).reshape(B, T, -1))
        return h + self.mlp(self.ln2(h))


class GPT(nn.Module):
    def __init__(self, vocab: int = 96, d: int = 64, heads: int = 4, layers: int = 2, T: int = 32):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(T, d)
        self.blocks = nn.ModuleList(_Block(d, heads, True) for _ in range(layers))
        self.lnf = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for b in self.blocks:
            h = b(h)
        return self.head(self.lnf(h))


class ViT(nn.Module):
    def __init__(self, d: int = 64, heads: int = 4, layers: int = 2, patch: int = 4):
        super().__init__()
        self.embed = nn.Conv2d(3, d, patch, patch)
        self.pos = nn.Parameter(0.02 * torch.randn(1, (32 // patch) ** 2, d))
        self.blocks = nn.ModuleList(_Block(d, heads, False) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        for b in self.blocks:
            h = b(h)
        return self.head(self.ln(h).mean(1))


class _Flat(nn.Module):
    """The LM with flattened, shifted logits ``[B (T-1), V]``: a criterion-shaped output
    for the peers, whose losses are ``criterion(model(x), y)``."""

    def __init__(self, lm: nn.Module, hf: bool) -> None:
        super().__init__()
        self.lm, self.hf = lm, hf

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.lm(input_ids=ids).logits if self.hf else self.lm(ids)
        return out[:, :-1].reshape(-1, out.shape[-1])


def _problems(batch: int) -> dict[str, dict]:
    g = torch.Generator().manual_seed(0)
    probs = {}
    torch.manual_seed(0)
    ids = torch.randint(0, 96, (batch, 32), generator=g)
    probs["small GPT"] = {"model": GPT(), "ids": ids, "hf": False}
    try:
        import transformers

        cfg = transformers.GPT2Config(
            vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=4,
            bos_token_id=0, eos_token_id=0, attn_implementation="sdpa",
        )  # fmt: skip
        torch.manual_seed(0)
        ids = torch.randint(0, 256, (batch, 32), generator=g)
        probs["HF GPT-2 (2x64)"] = {
            "model": transformers.GPT2LMHeadModel(cfg),
            "ids": ids,
            "hf": True,
        }
    except ImportError:
        pass
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    probs["ViT (32x32, 2x64)"] = {"model": ViT(), "x": x, "y": y}
    for p in probs.values():
        p["model"].eval()
        if "ids" in p:
            p["flat"] = _Flat(p["model"], p["hf"]).eval()
            p["x"], p["y"] = p["ids"], p["ids"][:, 1:].reshape(-1)
        else:
            p["flat"] = p["model"]
    return probs


def _median(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _hesslab(prob: dict) -> Callable[[], object]:
    if "ids" in prob:
        batch = {"input_ids": prob["ids"]} if prob["hf"] else (prob["ids"],)
        H = hesslab.hessian(prob["model"], "causal_lm", batch)
    else:
        H = hesslab.hessian(prob["model"], "ce", (prob["x"], prob["y"]))
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(1))
    return lambda: H @ v


def _curvlinops(prob: dict) -> Callable[[], object]:
    from curvlinops import HessianLinearOperator

    model = prob["flat"]
    params = [p for p in model.parameters() if p.requires_grad]
    H = HessianLinearOperator(model, nn.CrossEntropyLoss(), params, [(prob["x"], prob["y"])])
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(1))
    return lambda: H @ v


def _eigenthings(prob: dict) -> Callable[[], object]:
    import hessian_eigenthings as he

    crit = he.supervised_loss(nn.CrossEntropyLoss())
    op = he.HessianOperator(prob["flat"], [(prob["x"], prob["y"])], crit)
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(1))
    return lambda: op.matvec(v)


def _gradient(prob: dict) -> Callable[[], object]:
    model = prob["flat"]
    params = [p for p in model.parameters() if p.requires_grad]

    def grad() -> None:
        torch.autograd.grad(F.cross_entropy(model(prob["x"]), prob["y"]), params)

    return grad


def _cell(make: Callable[[dict], Callable], prob: dict, reps: int, math: bool) -> str:
    """Product time / gradient time, both timed interleaved in the same window (so a change
    in the machine's load between cells does not enter the ratio)."""

    def ctx() -> contextlib.AbstractContextManager:
        return sdpa_kernel(SDPBackend.MATH) if math else contextlib.nullcontext()

    try:
        with ctx():
            fn = make(prob)
            fn()  # the first product (hesslab: the automatic mode's choice)
        grad = _gradient(prob)
        grad()
        t_fn, t_grad = [], []
        for _ in range(reps):
            with ctx():
                t0 = time.perf_counter()
                fn()
                t_fn.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            grad()
            t_grad.append(time.perf_counter() - t0)
        return f"{statistics.median(t_fn) / statistics.median(t_grad):.2f}"
    except Exception as e:  # a peer's failure is a result
        return f"fails ({type(e).__name__}: {str(e).splitlines()[0][:70]})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    torch.set_num_threads(1)
    rows = []
    for name, prob in _problems(args.batch).items():
        P = sum(p.numel() for p in prob["model"].parameters())
        prob["grad_s"] = _median(_gradient(prob), reps)
        cells = [_cell(_hesslab, prob, reps, math=False)]
        for make in (_curvlinops, _eigenthings):
            cells += [_cell(make, prob, reps, math=False), _cell(make, prob, reps, math=True)]
        rows.append(f"| {name} | {P:,} | {prob['grad_s'] * 1e3:.1f} ms | " + " | ".join(cells))
    head = (
        "| model | P | gradient | hesslab | curvlinops | curvlinops + math kernel by hand "
        "| eigenthings | eigenthings + math kernel by hand |\n|---|---|---|---|---|---|---|---|"
    )
    note = (
        f"One product / one gradient (default kernels), float32, batch {args.batch}, "
        f"1 thread, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}; medians of {reps} interleaved repeats."
    )
    table = "\n".join([note, "", head, *(r + " |" for r in rows)])
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("attention_quick.md" if args.quick else "attention.md")).write_text(table + "\n")


if __name__ == "__main__":
    main()

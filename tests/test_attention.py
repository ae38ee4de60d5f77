"""Curvature of attention models: every operator against double-backward references.

The models reach ``F.scaled_dot_product_attention`` directly (a small GPT), through
``nn.MultiheadAttention``, through ``nn.TransformerEncoder`` (whose eval-mode fast path
is fused) and through Hugging Face GPT-2 (``attn_implementation="sdpa"``) when
transformers is installed. References are float64 double backward under the math kernel
(``tests/attention_ref.py``), each checked against central finite differences.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import hesslab
from hesslab import GGNOperator, GradientMomentOperator, HessianOperator, Objective
from hesslab.operators import HESSIAN_MODES
from hesslab.train import HessianTracePenalty
from tests.attention_ref import (
    EncoderModel,
    MHAModel,
    TinyGPT,
    call,
    dense_hessian,
    dense_jacobian,
    fd_check,
    flatten,
    gradient,
    params_of,
    unflatten,
)

RTOL = 1e-10


def _rel(A: torch.Tensor, B: torch.Tensor) -> float:
    return float((A - B).norm() / B.norm())


def _classifier_case(kind: str):
    torch.manual_seed(0)
    model = (MHAModel() if kind == "mha" else EncoderModel()).double().eval()
    x = torch.randn(7, 5, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    data = [(x[:3], y[:3]), (x[3:], y[3:])]

    def loss(theta):
        return F.cross_entropy(call(model, theta, x), y)  # the mean over all 7 points

    return model, data, "ce", loss


def _lm_batches(vocab: int, T: int, seed: int = 1):
    """Two padded batches of unequal token counts, as Hugging Face dict batches."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (5, T), generator=g)
    mask = torch.ones(5, T, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 2:] = 0
    mask[4, 5:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    batches = [
        {"input_ids": ids[:2], "attention_mask": mask[:2], "labels": labels[:2]},
        {"input_ids": ids[2:], "attention_mask": mask[2:], "labels": labels[2:]},
    ]
    return ids, mask, labels, batches


def token_mean_loss(logits_fn, ids, mask, labels):
    """Hand-written next-token cross-entropy averaged over every non-ignored token."""

    def loss(theta):
        logits = logits_fn(theta, ids, mask)[:, :-1]
        target = labels[:, 1:]
        keep = target != -100
        return F.cross_entropy(logits[keep], target[keep], reduction="sum") / keep.sum()

    return loss


def _gpt_case():
    torch.manual_seed(0)
    model = TinyGPT().double().eval()
    ids, mask, labels, batches = _lm_batches(7, 6)
    loss = token_mean_loss(lambda th, i, m: call(model, th, i, m), ids, mask, labels)
    return model, batches, "causal_lm", loss


def _hf_case(attn: str = "sdpa"):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=11,
        n_positions=8,
        n_embd=8,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation=attn,
    )
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    ids, mask, labels, batches = _lm_batches(11, 6)

    def logits(theta, i, m):
        return call(model, theta, input_ids=i, attention_mask=m).logits

    return model, batches, "causal_lm", token_mean_loss(logits, ids, mask, labels)


def _timm_case():
    """timm's VisionTransformer (fused attention) at a tiny size; needs timm + torchvision."""
    vt = pytest.importorskip("timm.models.vision_transformer")
    torch.manual_seed(0)
    model = vt.VisionTransformer(
        img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depth=1,
        num_heads=2, mlp_ratio=2.0,
    )  # fmt: skip
    model = model.double().eval()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))

    def loss(theta):
        return F.cross_entropy(call(model, theta, x), y)

    return model, [(x[:2], y[:2]), (x[2:], y[2:])], "ce", loss


CASES = {
    "mha": lambda: _classifier_case("mha"),
    "encoder": lambda: _classifier_case("encoder"),
    "gpt": _gpt_case,
    "hf-gpt2": _hf_case,
    "timm-vit": _timm_case,
}
_REF: dict[str, tuple] = {}


def _case(name: str):
    if name not in _REF:
        model, data, loss_fn, loss = CASES[name]()
        theta = params_of(model)
        H = dense_hessian(loss, theta)
        _REF[name] = (model, data, loss_fn, loss, theta, H)
    return _REF[name]


@pytest.mark.parametrize("name", list(CASES))
def test_reference_matches_finite_differences(name):
    _, _, _, loss, theta, H = _case(name)
    assert _rel(H, H.T) < 1e-12
    assert fd_check(loss, theta, H) < 1e-6


@pytest.mark.parametrize("mode", HESSIAN_MODES)
@pytest.mark.parametrize("name", list(CASES))
def test_hessian_every_mode_matches_reference(name, mode):
    model, data, loss_fn, _, theta, H_ref = _case(name)
    H = HessianOperator(Objective(model, loss_fn, data), mode=mode)
    assert H.shape[0] == H_ref.shape[0]  # tied embeddings counted once
    assert _rel(H.to_dense(), H_ref) < RTOL


@pytest.mark.parametrize("name", list(CASES))
def test_auto_mode_records_the_attention_backend(name):
    model, data, loss_fn, _, _, H_ref = _case(name)
    H = hesslab.hessian(model, loss_fn, data)
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert _rel(H @ v, H_ref @ v) < RTOL
    assert H.mode_report["attention"] == "math"


def _dense_ggn(model, data, loss_fn, theta):
    """``J^T A J`` from the logits' Jacobian (reverse mode) and the closed-form loss Hessian."""
    obj = Objective(model, loss_fn, data)
    G = torch.zeros(len(flatten(theta)), len(flatten(theta)), dtype=torch.float64)
    for batch, w in obj.batches():
        inputs, target = obj._split(batch)

        def logits(th, inputs=inputs):
            out = call(model, th, **inputs) if isinstance(inputs, dict) else call(model, th, inputs)
            return getattr(out, "logits", out)

        out = logits(theta).detach()
        J = dense_jacobian(logits, theta).view(*out.shape, -1)
        if loss_fn == "causal_lm":
            out, J, target = out[:, :-1], J[:, :-1], target[:, 1:]
        keep = target != -100
        out, J = out[keep], J[keep]  # [items, V], [items, V, P]
        p = torch.softmax(out, -1)
        A = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        G += w * torch.einsum("ivp,ivw,iwq->pq", J, A, J)
    return G


@pytest.mark.parametrize("name", list(CASES))
def test_ggn_matches_reference(name):
    model, data, loss_fn, _, theta, _ = _case(name)
    G = GGNOperator(Objective(model, loss_fn, data))
    ref = _dense_ggn(model, data, loss_fn, theta)
    assert _rel(G.to_dense(), ref) < RTOL


def test_ggn_and_hessian_agree_on_the_gpt_with_a_closed_form_check():
    """H - G is the residual term: not zero, and G is positive semi-definite."""
    model, data, loss_fn, _, _, H_ref = _case("gpt")
    G = GGNOperator(Objective(model, loss_fn, data)).to_dense()
    assert float(torch.linalg.eigvalsh(G).min()) > -1e-12 * float(G.norm())
    assert _rel(G, H_ref) > 1e-3


@pytest.mark.parametrize("name", ["mha", "gpt"])
def test_gradient_moment_matches_per_sample_loop(name):
    """Per-sample gradients of ``l_i = (N / N_items) total_i`` (a sample is a sequence)."""
    model, data, loss_fn, loss, theta, _ = _case(name)
    obj = Objective(model, loss_fn, data)
    M = GradientMomentOperator(obj).to_dense()
    rows = []
    for batch, _ in obj.batches():
        for i in range(obj._batch_size(batch)):
            if isinstance(batch, dict):
                sample = {k: v[i] for k, v in batch.items()}
            else:
                sample = tuple(t[i] for t in batch)
            flat = flatten(theta).clone().requires_grad_(True)
            with sdpa_kernel(SDPBackend.MATH):
                li = obj.sample_loss(unflatten(theta, flat), sample)
            rows.append(torch.autograd.grad(li, flat)[0])
    Gs = torch.stack(rows)
    assert _rel(M, Gs.T @ Gs / len(rows)) < RTOL
    # the per-sample losses average to L: their gradients average to the gradient
    assert _rel(Gs.mean(0), gradient(loss, theta)) < RTOL


def test_trace_penalty_on_attention_model_reuses_or_recomputes_the_loss():
    """The penalty's double backward runs through the math kernel, also when the loop's
    own loss went through the fused kernel."""
    torch.manual_seed(0)
    model = MHAModel().double()
    x = torch.randn(6, 5, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    P = sum(p.numel() for p in model.parameters())
    probes = torch.randn(3, P, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    pen = HessianTracePenalty(probes=probes, gamma=1.0)
    loss = F.cross_entropy(model(x), y)
    with_loss = pen(model, (x, y), "ce", loss=loss)
    own = pen(model, (x, y), "ce")
    H = dense_hessian(lambda th: F.cross_entropy(call(model, th, x), y), params_of(model))
    expected = torch.einsum("kp,pq,kq->k", probes, H, probes).mean()
    assert abs(float(with_loss.detach()) - float(expected)) < 1e-9 * abs(float(expected))
    assert abs(float(own.detach()) - float(expected)) < 1e-9 * abs(float(expected))
    with_loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_plain_evaluations_keep_the_fused_kernel_and_agree():
    """The loss value (no derivatives) equals the math kernel's to rounding."""
    model, data, loss_fn, loss, theta, _ = _case("gpt")
    obj = Objective(model, loss_fn, data)
    assert abs(obj.value() - float(loss(theta))) < 1e-12


def test_eigenpairs_of_encoder_hessian():
    model, data, loss_fn, _, _, H_ref = _case("encoder")
    top = hesslab.eigenpairs(hesslab.hessian(model, loss_fn, data), k=3, tol=1e-10)
    ref = torch.linalg.eigvalsh(H_ref).flip(0)[:3]
    assert torch.allclose(top.values.to(ref.dtype), ref, rtol=1e-8, atol=1e-12)


def test_encoder_fast_path_is_restored_after_products():
    model, data, loss_fn, *_ = _case("encoder")
    before = torch.backends.mha.get_fastpath_enabled()
    H = hesslab.hessian(model, loss_fn, data)
    H @ torch.ones(H.shape[0], dtype=torch.float64)
    assert torch.backends.mha.get_fastpath_enabled() == before


def test_transformer_in_float32_runs():
    torch.manual_seed(0)
    model = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
        1,
        enable_nested_tensor=False,
    ).eval()
    x = torch.randn(4, 5, 8)
    y = torch.randn(4, 5, 8)
    H = hesslab.hessian(model, "mse", (x, y))
    out = H @ torch.ones(H.shape[0])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()

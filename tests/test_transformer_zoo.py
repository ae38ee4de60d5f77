"""The bundled text corpus and the zoo's transformers (GPT, ViT): shapes, tied weights,
seeded initialisation, and Hessian-vector products against a double-backward reference.

References for attention models are built by double backward under the SDPA math kernel
in float64 and are themselves checked against central finite differences of the
gradient (``torch.func.hessian`` is wrong for attention blocks on torch 2.13, issue 13).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

import hesslab
from hesslab.data import CharTokenizer, digits, generate_corpus, load_data, text
from hesslab.data.text import CHARS
from hesslab.errors import ConfigurationError, DataError
from hesslab.models import build_model, gpt, vit


def _math():
    return sdpa_kernel(SDPBackend.MATH)


# --------------------------------------------------------------------------------------
# text corpus


def test_corpus_is_deterministic_and_pinned():
    a = generate_corpus(400, seed=0)
    assert a == generate_corpus(400, seed=0)
    assert a != generate_corpus(400, seed=1)
    assert set(a) <= set(CHARS)
    # pure-Python SplitMix64: the text must not change across Python/NumPy/torch versions
    assert a.startswith("the bright teacher near one ship carries one farmer.")


def test_text_split_and_tokenizer():
    split = text(seq_len=16, num_train=20, num_test=5, seed=3)
    tr, te = split.train, split.test
    assert tr.x.shape == (20, 16) and te.x.shape == (5, 16)
    assert tr.x.dtype == torch.long and torch.equal(tr.x, tr.y)
    assert tr.num_classes == len(CHARS) == 30
    tok = tr.meta["tokenizer"]
    assert tok.vocab_size == 30
    s = tok.decode(tr.x.reshape(-1))
    assert torch.equal(tok.encode(s), tr.x.reshape(-1))
    assert s == generate_corpus(20 * 16, seed=6)  # train text: seed 2 * seed
    assert tok.decode(te.x.reshape(-1)) == generate_corpus(5 * 16, seed=7)
    with pytest.raises(DataError, match="alphabet"):
        tok.encode("Capital")
    with pytest.raises(ConfigurationError):
        CharTokenizer("aa")
    with pytest.raises(ConfigurationError):
        text(seq_len=1)


def test_text_is_a_bundled_name():
    split = load_data("text", seq_len=8, num_train=3, num_test=2)
    assert split.train.x.shape == (3, 8)
    batches = list(split.train.loader(2))
    assert [tuple(b[0].shape) for b in batches] == [(2, 8), (1, 8)]


# --------------------------------------------------------------------------------------
# models


def test_gpt_forward_shapes_positions_and_mask():
    ids = torch.randint(0, 30, (3, 10), generator=torch.Generator().manual_seed(0))
    for positions in ("learned", "sinusoidal"):
        net = gpt(30, max_len=12, dim=16, depth=1, num_heads=2, positions=positions)
        out = net(ids)
        assert out.shape == (3, 10, 30)
        # causal: the logits at t do not depend on tokens after t
        ids2 = ids.clone()
        ids2[:, 6:] = (ids2[:, 6:] + 1) % 30
        assert torch.allclose(net(ids2)[:, :6], out[:, :6], atol=1e-6)
        assert not torch.allclose(net(ids2)[:, 6:], out[:, 6:])
        # an all-ones mask is the plain causal model; padding keys are ignored
        assert torch.allclose(net(ids, torch.ones_like(ids)), out, atol=1e-6)
        mask = torch.ones_like(ids)
        mask[:, 8:] = 0
        assert torch.allclose(net(ids, mask)[:, :8], out[:, :8], atol=1e-6)
    with pytest.raises(ConfigurationError, match="max_len"):
        gpt(30, max_len=4, dim=16)(ids)
    with pytest.raises(ConfigurationError):
        gpt(30, dim=15, num_heads=2)


@pytest.mark.parametrize(
    ("channels", "size", "pool"), [(1, 8, "cls"), (1, 28, "mean"), (3, 32, "cls")]
)
def test_vit_forward_shapes(channels, size, pool):
    net = vit(channels, 10, size, dim=16, depth=1, num_heads=2, pool=pool)
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1))
    assert net(x).shape == (2, 10)
    n_tokens = 16 + (pool == "cls")  # a 4x4 grid of patches by default
    assert net.embed.pos.shape == (1, n_tokens, 16)


def test_same_seed_same_weights_global_rng_untouched():
    before = torch.random.get_rng_state()
    for make in (lambda s: gpt(seed=s), lambda s: vit(seed=s)):
        a, b, c = make(0).state_dict(), make(0).state_dict(), make(1).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.isfinite(a[k]).all() for k in a)
        assert any(not torch.equal(a[k], c[k]) for k in a)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_tied_embedding_counted_once():
    net = gpt(30, max_len=8, dim=16, depth=1, num_heads=2)
    names = [n for n, _ in net.named_parameters()]
    assert "tok.weight" in names and not any("head" in n for n in names)
    d, V, T, hidden = 16, 30, 8, 64
    block = 2 * 2 * d + 4 * (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    expected = V * d + T * d + block + 2 * d  # the output layer adds nothing
    ids = torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(0))
    obj = hesslab.Objective(net.eval(), "causal_lm", [(ids, ids)])
    assert obj.space.size == expected == sum(p.numel() for p in net.parameters())


def test_build_model_from_data():
    net = build_model("gpt", text(seq_len=12, num_train=2, num_test=0), dim=16, num_heads=2)
    assert net.max_len == 12 and net.tok.num_embeddings == 30
    v = build_model("vit", digits(flat=False), dim=16, num_heads=2)
    assert v(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    with pytest.raises(ConfigurationError, match="token sequences"):
        build_model("gpt", digits())


# --------------------------------------------------------------------------------------
# curvature products against the double-backward reference


def _lm_per_token(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1))


def _reference_hvp(model, loss_of_outputs, inputs, targets, v):
    """``H v`` by double backward under the math kernel, and by central differences."""
    names = [n for n, _ in model.named_parameters()]
    theta = [p.detach().clone() for _, p in model.named_parameters()]
    shapes = [t.shape for t in theta]

    def grad_at(flat, create_graph):
        parts = list(torch.split(flat, [s.numel() for s in shapes]))
        params = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        with _math():
            loss = loss_of_outputs(functional_call(model, params, (inputs,)), targets)
            (g,) = torch.autograd.grad(loss, flat, create_graph=create_graph)
        return g

    flat = torch.cat([t.reshape(-1) for t in theta]).requires_grad_(True)
    g = grad_at(flat, True)
    with _math():
        (hv,) = torch.autograd.grad(g @ v, flat)
    eps = 1e-5
    plus = grad_at((flat.detach() + eps * v).requires_grad_(True), False)
    minus = grad_at((flat.detach() - eps * v).requires_grad_(True), False)
    return hv, (plus - minus) / (2 * eps)


@pytest.mark.parametrize("name", ["gpt", "vit"])
def test_hvp_matches_double_backward_reference(name):
    g = torch.Generator().manual_seed(5)
    if name == "gpt":
        model = gpt(30, max_len=8, dim=16, depth=2, num_heads=2, dtype=torch.float64).eval()
        x = torch.randint(0, 30, (3, 8), generator=g)
        y, out_loss = x, _lm_per_token
    else:
        model = vit(1, 10, 8, dim=16, depth=2, num_heads=2, dtype=torch.float64).eval()
        x = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
        y, out_loss = torch.randint(0, 10, (4,), generator=g), F.cross_entropy
    P = sum(p.numel() for p in model.parameters())
    v = torch.randn(P, generator=g, dtype=torch.float64)
    v = v / v.norm()  # a step eps * v of norm eps: differences accurate to O(eps^2)
    ref, fd = _reference_hvp(model, out_loss, x, y, v)
    assert float((ref - fd).norm() / ref.norm()) < 1e-7  # the reference itself
    # hesslab picks the math kernel for its derivative passes by itself
    hv = hesslab.hessian(model, "causal_lm" if name == "gpt" else "ce", [(x, y)]) @ v
    assert float((hv - ref).norm() / ref.norm()) < 1e-10

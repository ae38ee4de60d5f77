"""Item-level objectives: the mean over every non-ignored item of the data set, exactly.

References are hand-written full-data losses on the concatenated data (what PyTorch's
``reduction="mean"`` returns on all of it at once), differentiated densely in float64.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hesslab
from hesslab import BatchLoss, DataError, HessianOperator, LossValue, Objective
from tests.attention_ref import TinyGPT, call, dense_hessian, params_of

TOL = 1e-12


def _rel(A, B):
    return float((A - B).norm() / B.norm())


def _classifier(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5)).double()
    x = torch.randn(11, 4, dtype=torch.float64)
    y = torch.randint(0, 5, (11,))
    y[[0, 1, 2, 7]] = -100  # three ignored targets in the first batch, one in the second
    return model, x, y


@pytest.mark.parametrize(
    "crit",
    [
        "ce",
        nn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64)),
        nn.CrossEntropyLoss(ignore_index=2),
        nn.CrossEntropyLoss(label_smoothing=0.2),
        nn.CrossEntropyLoss(
            weight=torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64),
            label_smoothing=0.1,
        ),
    ],
)
def test_cross_entropy_is_the_mean_over_non_ignored_targets(crit):
    model, x, y = _classifier()
    if isinstance(crit, nn.CrossEntropyLoss) and crit.ignore_index == 2:
        y = torch.where(y == -100, torch.full_like(y, 2), y)
    ref_crit = crit if isinstance(crit, nn.Module) else nn.CrossEntropyLoss()
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]  # unequal item counts

    def loss(theta):
        return ref_crit(call(model, theta, x), y)  # PyTorch's mean over all of the data

    obj = Objective(model, crit, batches)
    assert abs(obj.value() - float(loss(params_of(model)))) < TOL
    H_ref = dense_hessian(loss, params_of(model))
    assert _rel(HessianOperator(obj).to_dense(), H_ref) < TOL
    G = hesslab.ggn(obj).to_dense()
    assert _rel(G, G.T) < TOL


def test_the_old_per_point_weighting_would_be_off():
    """Batch means weighted by points differ from the item mean: the test can fail."""
    model, x, y = _classifier()
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    per_point = sum(
        len(b[1]) / len(y) * float(F.cross_entropy(model(b[0]), b[1]).detach()) for b in batches
    )
    exact = Objective(model, "ce", batches).value()
    assert abs(exact - float(F.cross_entropy(model(x), y).detach())) < TOL
    assert abs(per_point - exact) > 1e-3


def test_sum_reduction_is_the_mean_over_points_of_summed_items():
    model, x, y = _classifier()
    obj = Objective(model, nn.CrossEntropyLoss(reduction="sum"), [(x[:5], y[:5]), (x[5:], y[5:])])
    expected = float(F.cross_entropy(model(x), y, reduction="sum").detach()) / len(y)
    assert abs(obj.value() - expected) < TOL


def test_sequence_and_pytorch_layouts():
    """[B, T, V] logits with [B, T] labels, and [B, C, d] with [B, d] (segmentation)."""
    torch.manual_seed(0)
    lin = nn.Linear(3, 4).double()
    x = torch.randn(5, 6, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (5, 6))
    y[0, :4] = -100
    seq = Objective(lin, "ce", [(x[:2], y[:2]), (x[2:], y[2:])])
    assert abs(seq.value() - float(F.cross_entropy(lin(x).flatten(0, 1), y.flatten()))) < TOL

    class Seg(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x).transpose(1, 2)  # [B, C=4, d=6]

    seg = Objective(Seg(), "ce", [(x[:2], y[:2]), (x[2:], y[2:])])
    assert abs(seg.value() - seq.value()) < TOL


def _lm_data(seed=1, n=6, T=6, vocab=7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, T), generator=g)
    mask = torch.ones(n, T, dtype=torch.long)
    for i, length in enumerate([6, 3, 5, 2, 6, 4][:n]):
        mask[i, length:] = 0
    return ids, mask


def _lm_reference(model, ids, mask):
    labels = ids.masked_fill(mask == 0, -100)

    def loss(theta):
        logits = call(model, theta, ids, mask)[:, :-1]
        target = labels[:, 1:]
        keep = target != -100
        return F.cross_entropy(logits[keep], target[keep], reduction="sum") / keep.sum()

    return loss


def _batches(ids, mask, cuts):
    edges = [0, *cuts, len(ids)]
    return [
        {"input_ids": ids[a:b], "attention_mask": mask[a:b]} for a, b in itertools.pairwise(edges)
    ]


def test_causal_lm_rebatching_gives_the_same_operator():
    torch.manual_seed(0)
    model = TinyGPT().double().eval()
    ids, mask = _lm_data()
    H_ref = dense_hessian(_lm_reference(model, ids, mask), params_of(model))
    dense = []
    for cuts in ([1], [2, 5], [3, 4, 5]):
        H = HessianOperator(Objective(model, "causal_lm", _batches(ids, mask, cuts)))
        dense.append(H.to_dense())
        assert _rel(dense[-1], H_ref) < TOL
    assert _rel(dense[0], dense[2]) < TOL


def test_loss_value_custom_loss_equals_the_built_in():
    torch.manual_seed(0)
    model = TinyGPT().double().eval()
    ids, mask = _lm_data()
    batches = _batches(ids, mask, [2])

    def lm_loss(model_fn, batch):
        logits = model_fn(batch["input_ids"])[:, :-1]
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)[:, 1:]
        total = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
        return LossValue(total, (labels != -100).sum())

    def count(batch):
        return int(batch["attention_mask"][:, 1:].sum())

    v = torch.randn(
        HessianOperator(Objective(model, "causal_lm", batches)).shape[0],
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    ref = HessianOperator(Objective(model, "causal_lm", batches)) @ v
    for fn in (BatchLoss(lm_loss), BatchLoss(lm_loss, count=count)):
        obj = Objective(model, fn, batches)
        assert obj.loss.per_item and obj.num_items == float(mask[:, 1:].sum())
        assert _rel(HessianOperator(obj) @ v, ref) < TOL


def test_per_sequence_mean_loss_is_what_batch_means_give():
    """A custom loss returning the batch mean weights sequences, not tokens (documented)."""
    torch.manual_seed(0)
    model = TinyGPT().double().eval()
    ids, mask = _lm_data()
    batches = _batches(ids, mask, [2])
    token = Objective(model, "causal_lm", batches).value()

    def mean_loss(model_fn, batch):
        logits = model_fn(batch["input_ids"])[:, :-1]
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)[:, 1:]
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten())

    per_seq = Objective(model, BatchLoss(mean_loss), batches).value()
    assert abs(per_seq - token) > 1e-3


def test_masked_lm_averages_over_labelled_positions():
    torch.manual_seed(0)
    model = TinyGPT().double().eval()
    ids, mask = _lm_data()
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[1, 0], labels[3, 1], labels[4, 2], labels[4, 5] = 1, 2, 3, 4, 5
    batches = [
        {"input_ids": ids[:3], "attention_mask": mask[:3], "labels": labels[:3]},
        {"input_ids": ids[3:], "attention_mask": mask[3:], "labels": labels[3:]},
    ]

    def loss(theta):
        logits = call(model, theta, ids, mask)
        keep = labels != -100
        return F.cross_entropy(logits[keep], labels[keep])

    obj = Objective(model, "masked_lm", batches)
    assert obj.num_items == 5.0
    H_ref = dense_hessian(loss, params_of(model))
    assert _rel(HessianOperator(obj).to_dense(), H_ref) < TOL


def test_tuple_lm_batches_and_a_batch_without_items():
    torch.manual_seed(0)
    model = TinyGPT().double().eval()
    ids, mask = _lm_data()
    labels = ids.masked_fill(mask == 0, -100)
    labels[:2] = -100  # the first batch has no items: skipped
    obj = Objective(model, "causal_lm", [(ids[:2], labels[:2]), (ids[2:], labels[2:])])
    ref = Objective(model, "causal_lm", [(ids[2:], labels[2:])])
    assert abs(obj.value() - ref.value()) < TOL
    with pytest.raises(DataError, match="no loss items"):
        Objective(model, "causal_lm", [(ids[:2], labels[:2])])


def test_hf_gpt2_causal_lm_and_tied_weights():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=7, n_positions=8, n_embd=8, n_layer=1, n_head=2, bos_token_id=0,
        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    ids, mask = _lm_data()
    obj = Objective(model, "causal_lm", _batches(ids, mask, [2]))
    unique = {id(p) for p in model.parameters()}
    assert obj.space.size == sum(p.numel() for p in model.parameters() if id(p) in unique)
    assert "lm_head.weight" not in obj.space.names  # tied to transformer.wte.weight
    # HF's own .loss (token mean within a batch) on the whole data at once
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    # (HF computes its loss from logits cast to float32: agreement to float32 rounding)
    assert abs(obj.value() - float(full.loss)) < 1e-6

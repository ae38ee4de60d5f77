"""Papyan's class / cross-class decomposition of the Gauss–Newton matrix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hesslab import ConfigurationError, DataError, Objective, class_structure
from hesslab.data import gaussian_mixture
from hesslab.operators.class_structure import LowRankOperator, subspace_fraction

C = 4


def _trained(spread: float = 0.1, steps: int = 100, seed: int = 0):
    """A tanh MLP trained by full-batch GD on 4 tight, separable Gaussian classes."""
    torch.manual_seed(seed)
    split = gaussian_mixture(
        num_classes=C,
        dim=8,
        num_per_class=40,
        spread=spread,
        separation=3.0,
        seed=seed,
        dtype=torch.float64,
        test_fraction=0.5,
    )
    x, y = split.train.tensors
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, C)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model, x, y


@pytest.fixture(scope="module")
def trained():
    model, x, y = _trained()
    cs = class_structure(Objective(model, "ce", [(x[:50], y[:50]), (x[50:], y[50:])]))
    G = cs.ggn.to_dense()
    ev, U = torch.linalg.eigh(G)
    return cs, G, ev.flip(0), U.flip(1), (model, x, y)


def test_parts_sum_to_the_dense_ggn(trained):
    cs, G, _, _, (model, x, y) = trained
    parts = {k: op.to_dense() for k, op in cs.parts().items()}
    total = sum(parts.values())
    assert float((total - G).abs().max()) <= 1e-10 * float(G.abs().max())
    split = cs.global_mean.to_dense() + cs.class_means_centered.to_dense()
    assert torch.allclose(split, parts["class_means"], atol=1e-14)
    for name, A in parts.items():  # each part is symmetric positive semi-definite
        assert torch.allclose(A, A.T, atol=1e-14), name
        assert float(torch.linalg.eigvalsh(A).min()) >= -1e-12 * float(G.abs().max()), name
    # The ggn field is the GGN of the data, independent of how it is batched.
    one = class_structure(Objective(model, "ce", (x, y)))
    assert torch.allclose(one.means, cs.means, atol=1e-13)


def test_ranks_are_as_predicted(trained):
    cs, *_ = trained
    assert cs.predicted_ranks() == {
        "class_means": C,
        "class_means_centered": C - 1,
        "cross_class": C * (C - 1),
    }
    assert cs.class_means.rank() == C
    assert cs.class_means_centered.rank() == C - 1
    assert cs.global_mean.rank() == 1
    assert cs.cross_class.rank() == C * (C - 1)
    # the exact low-rank spectrum agrees with the dense one
    dense = torch.linalg.eigvalsh(cs.cross_class.to_dense()).flip(0)[: C * C]
    assert torch.allclose(cs.cross_class.eigenvalues(), dense, atol=1e-14)


def test_outliers_come_from_the_class_means(trained):
    """On this problem G has C outliers, then a mini-bulk of C(C-2), then the bulk.

    Measured (float64, any CPU): G's top 4 are 0.0234..0.0210, then 8 eigenvalues
    0.0125..0.0058, then <= 1e-4 (on another machine 0.0254..0.0225, 0.0113..0.0042). The
    top-C eigenvectors lie in the span of the class means (smallest fraction 0.92-0.98
    over 5 seeds, asserted >= 0.88 and a median >= 0.93) and the Rayleigh–Ritz values of G
    on that span match the top C within 1.4%-4.8% (asserted 8%, median 4%); the
    class-means part alone carries 0.64..0.66 of each outlier (asserted within [0.5, 1]):
    the rest is cross-class curvature in the same directions. The mini-bulk lies in the
    span of the cross-class means (fraction 1.000 measured, asserted >= 0.95).
    """
    cs, G, ev, U, _ = trained
    bulk_edge = float(ev[C * (C - 1)])
    assert float(ev[C - 1]) > 1.5 * float(ev[C])  # C outliers, a gap
    assert float(ev[C * (C - 1) - 1]) > 20 * bulk_edge  # mini-bulk well above the bulk
    # the top-C eigenvectors in span(class means), decided over 5 training seeds: one
    # seed's smallest fraction moves with the CPU's rounding (0.98 on one machine, 0.92
    # on another for seed 0); over seeds 0-4 here 0.92, 0.96, 0.98, 0.98, 0.96
    mins, ritz_errors = [], []
    for seed in range(5):
        m, xs, ys = _trained(seed=seed)
        cs_s = class_structure(Objective(m, "ce", (xs, ys)))
        G_s = cs_s.ggn.to_dense()
        ev_s, U_s = torch.linalg.eigh(G_s)
        ev_s, U_s = ev_s.flip(0), U_s.flip(1)
        Q_s = cs_s.class_means.range_basis()
        mins.append(float(subspace_fraction(U_s[:, :C], Q_s).min()))
        ritz = torch.linalg.eigvalsh(Q_s.T @ G_s @ Q_s).flip(0)
        ritz_errors.append(float(((ritz - ev_s[:C]) / ev_s[:C]).abs().max()))
    assert min(mins) >= 0.88 and sorted(mins)[2] >= 0.93, mins
    # Rayleigh–Ritz values of G on span(class means) vs its top C: 1.4%-4.8% over seeds
    assert max(ritz_errors) <= 0.08 and sorted(ritz_errors)[2] <= 0.04, ritz_errors
    ratio = cs.class_means.eigenvalues() / ev[:C]
    assert float(ratio.min()) >= 0.5 and float(ratio.max()) <= 1.0
    mini = U[:, C : C * (C - 1)]
    assert float(subspace_fraction(mini, cs.cross_class.range_basis()).min()) >= 0.95
    # The within-class part is the bulk: its top eigenvalue is below the mini-bulk.
    w_top = float(torch.linalg.eigvalsh(cs.within_class.to_dense())[-1])
    assert w_top < 0.2 * float(ev[C * (C - 1) - 1])


def test_low_rank_operator_and_errors():
    B = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op = LowRankOperator(B, torch.tensor([2.0, 0.5], dtype=torch.float64))
    dense = B @ torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)) @ B.T
    assert torch.allclose(op.to_dense(), dense, atol=1e-14)
    assert torch.allclose(op.eigenvalues(), torch.linalg.eigvalsh(dense).flip(0)[:2], atol=1e-12)
    with pytest.raises(ConfigurationError, match="non-negative"):
        LowRankOperator(B, torch.tensor([1.0, -1.0], dtype=torch.float64))
    model, x, y = _trained(steps=1)
    with pytest.raises(ConfigurationError, match="cross-entropy"):
        class_structure(Objective(model, "mse", (x, y)))
    keep = y < C - 1  # the last class has no samples
    with pytest.raises(DataError, match="no samples"):
        class_structure(Objective(model, "ce", (x[keep], y[keep])))


def test_analyze_classes_stage(tmp_path):
    from hesslab.cli import main
    from hesslab.report.run import RunDir

    from .test_cli import _write_model

    f = _write_model(tmp_path)
    args = ["analyze", "--model", f"{f}:build", "--data", "blobs", "--dtype", "float64"]
    rc = main([*args, "--what", "ggn,classes", "--k", "4", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    (path,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    run = RunDir.load(path)
    section = "Class structure of the Gauss–Newton outliers"
    html = (path / "report.html").read_text()
    assert section in html and "fraction in span(class means)" in html
    assert (path / "figures" / "class_structure.png").is_file()
    claims = [c for c in run.claims if "Papyan" in c["claim"]]
    assert len(claims) == 1

"""analyze's one outlier count (exact spectrum > SLQ density > Lanczos top-k), the density
figure's bulk edge, and Papyan's class structure in the summary and the CLI summary."""

from __future__ import annotations

import torch

from hesslab import Objective, count_outliers, models
from hesslab.analysis import AnalysisConfig, analyze
from hesslab.cli.common import _finish
from hesslab.linalg.density import spectral_density
from hesslab.operators.hessian import HessianOperator
from hesslab.report.run import RunDir

S_EIG = "Top and bottom eigenvalues"


def _objective(loss: str = "ce") -> Objective:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes
    model = models.mlp(4, [6], 3, seed=0, dtype=torch.float64)
    target = y if loss == "ce" else torch.nn.functional.one_hot(y, 3).double()
    return Objective(model, loss, (x, target))


CFG = AnalysisConfig(
    what=("eig", "density", "classes"), k_top=4, k_bottom=0, density_steps=20,
    density_probes=2, seed=3,
)  # fmt: skip


def test_the_outlier_count_is_count_outliers_of_the_slq_density(tmp_path, capsys):
    obj = _objective()
    run = RunDir.create(tmp_path, "a", config={}, command=["x"])
    summary = analyze(obj, run, CFG)
    # the density stage's own generator (seed + 4): the same SLQ, the same count
    g = torch.Generator().manual_seed(CFG.seed + 4)
    want = count_outliers(spectral_density(HessianOperator(obj), 20, 2, generator=g))
    rec = run.scalar(S_EIG, "outliers above the bulk edge")
    assert rec["value"] == want.count == summary["outliers"]
    diag = rec["diagnostics"]
    assert diag["method"] == "density" and diag["source"] == "SLQ density, 2 probe(s)"
    assert diag["bulk_edge"] == want.threshold and diag["low"] <= want.count <= diag["high"]
    assert summary["outliers_text"].startswith(want.text + " (SLQ density, 2 probe(s)")
    assert (run.path / "figures" / "density.png").is_file()
    # Papyan's class structure: the count of leading eigenvectors in span(class means)
    cls = summary["classes"]
    f = torch.tensor(cls["class_fraction"])
    lead = int((f >= 0.5).long().cumprod(0).sum())
    assert cls["count"] == lead and cls["num_classes"] == 3
    assert (
        run.scalar("Class structure of the Gauss–Newton outliers", "class-structure count")["value"]
        == lead
    )
    _finish(run, summary, 1.0)
    out = capsys.readouterr().out
    assert f"outliers above the bulk edge: {summary['outliers_text']}" in out
    assert f"class structure (Papyan 2020): {lead} leading eigenvectors of G" in out


def test_exact_spectrum_first_and_classes_skipped_for_mse(tmp_path, capsys):
    obj = _objective("mse")
    run = RunDir.create(tmp_path, "b", config={}, command=["x"])
    cfg = AnalysisConfig(**{**CFG.__dict__, "exact_limit": 1000})
    summary = analyze(obj, run, cfg)
    exact = run.arrays["exact_eigenvalues"]
    rec = run.scalar(S_EIG, "outliers above the bulk edge")
    assert rec["diagnostics"]["source"] == "exact spectrum"
    assert rec["value"] == count_outliers(torch.as_tensor(exact)).count
    assert rec["diagnostics"]["bulk_edge_stderr"] == 0.0  # exact: no probe spread
    assert "classes" not in summary and "'mse' loss" in summary["classes_skipped"]
    _finish(run, summary, 1.0)
    assert "class structure (Papyan 2020): skipped for the 'mse' loss" in capsys.readouterr().out


def test_density_figure_draws_the_bulk_edge_band():
    from hesslab import plot as hplot
    from hesslab.measures.spectrum import count_outliers as count

    A = torch.diag(torch.cat([torch.linspace(0.0, 1.0, 200, dtype=torch.float64),
                              torch.tensor([5.0, 7.0], dtype=torch.float64)]))  # fmt: skip
    d = spectral_density(A, 40, 3, generator=torch.Generator().manual_seed(0))
    oc = count(d)
    assert oc.count == 2
    fig = hplot.density(d, edge=oc.threshold, edge_band=(oc.threshold - 0.1, oc.threshold + 0.1))
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "bulk edge" in labels and "bulk edge ± 2 s.e. (probes)" in labels


def test_classes_skipped_with_the_reason_when_the_means_would_not_fit(tmp_path, monkeypatch):
    from hesslab.analysis import structure

    monkeypatch.setattr(structure, "MAX_MEANS_BYTES", 1)
    run = RunDir.create(tmp_path, "c", config={}, command=["x"])
    summary = analyze(_objective(), run, AnalysisConfig(what=("classes",), k_top=2))
    assert "classes" not in summary and "C² = 9 class means" in summary["classes_skipped"]

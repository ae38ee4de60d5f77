"""``hesslab analyze`` end to end on the zoo's transformers: the small GPT on the bundled
text (token-level ``causal_lm`` loss) and the ViT on 8x8 digit images, at small sizes."""

from __future__ import annotations

import math

import pytest
import torch

from hesslab.cli import main
from hesslab.errors import ConfigurationError
from hesslab.report.run import RunDir

FAST = ["--k", "3", "--k-bottom", "1", "--trace-matvecs", "12", "--density-steps", "12"]
TINY = ["--model-option", "dim=8", "--model-option", "depth=1", "--model-option", "num_heads=2"]


def _analyze(tmp_path, capsys, *args):
    rc = main(
        ["analyze", *args, *TINY, *FAST, "--dtype", "float64", "--quiet", "--out", str(tmp_path)]
    )
    assert rc == 0
    assert "report:" in capsys.readouterr().out
    (path,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return RunDir.load(path)


def _check_full_report(run):
    sections = {s for s in run.sections}
    for s in (
        "Top and bottom eigenvalues",
        "Trace, tr(H²) and eigenvalue bounds",
        "Spectral density",
        "Layerwise Hessians",
        "Gauss–Newton vs Hessian",
    ):
        assert s in sections, s
    assert {f["name"] for f in run.figures} >= {
        "top_eigenvalues",
        "density",
        "layers",
        "ggn_vs_hessian",
    }
    assert (run.path / "report.html").stat().st_size > 10_000
    # a diagonal block is a principal submatrix: its top eigenvalue is at most H's
    # (Cauchy interlacing), and the block traces add up to tr H within their errors
    lam = run.scalar("Top and bottom eigenvalues", "λ top[0]")["value"]
    (table,) = [t for t in run.tables if t["name"] == "per-layer summary"]
    rows = table["rows"]
    assert max(r["λ_max"] for r in rows) <= lam * (1 + 1e-5)
    tr = run.scalar("Trace, tr(H²) and eigenvalue bounds", "tr H")
    total = sum(r["trace"] for r in rows)
    se = math.sqrt(tr["stderr"] ** 2 + sum(r["trace stderr"] ** 2 for r in rows))
    assert abs(total - tr["value"]) <= 4 * se + 1e-8 * abs(tr["value"])
    return rows


def test_analyze_gpt_on_text(tmp_path, capsys):
    # the loss defaults to causal_lm for the bundled text
    run = _analyze(tmp_path, capsys, "--model", "gpt", "--data", "text", "--max-points", "4")
    rows = _check_full_report(run)
    layers = [r["layer"] for r in rows]
    assert layers[:2] == ["tok", "pos"] and "blocks.0.attn.q" in layers and layers[-1] == "ln_f"
    assert run.config["loss"] == "causal_lm" and run.config["model_options"] == TINY[1::2]


def test_analyze_vit_on_digit_images(tmp_path, capsys):
    run = _analyze(
        tmp_path, capsys, "--model", "vit", "--data", "digits-image", "--max-points", "40"
    )
    rows = _check_full_report(run)
    assert [r["layer"] for r in rows][:2] == ["embed", "embed.proj"]


def test_model_options_need_a_zoo_model(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch\ndef build():\n    return torch.nn.Linear(64, 10)\n")
    rc = main(
        [
            "analyze",
            "--model",
            f"{f}:build",
            "--model-option",
            "dim=8",
            "--data",
            "digits",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert rc == 2
    with pytest.raises(ConfigurationError):
        from hesslab.models import build_model

        build_model("gpt", None, nonsense=1)


def test_label_check_reads_classes_from_the_last_dimension_of_sequence_logits():
    from argparse import Namespace

    from hesslab.cli import _check_targets
    from hesslab.errors import DataError

    logits = torch.zeros(2, 8, 30)  # T = 8 positions, V = 30 classes
    labels = torch.full((2, 8), 29)
    labels[0, :3] = -100  # ignored positions are not labels
    for loss in ("causal_lm", "masked_lm", "ce"):
        _check_targets(Namespace(loss=loss, data="text"), logits, labels)
    with pytest.raises(DataError, match=r"0\.\.29"):
        _check_targets(Namespace(loss="causal_lm", data="text"), logits, labels.clamp(min=0) + 1)

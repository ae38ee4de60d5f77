"""Smoke tests of every CLI command: exit codes, run folders, reports, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hesslab.cli import main
from hesslab.report.run import RunDir

FAST = ["--k", "3", "--k-bottom", "1", "--trace-matvecs", "24", "--density-steps", "20", "--quiet"]


def _run_dir(out):
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _check_run_folder(path):
    for name in ("config.json", "results.json", "arrays.npz", "report.html"):
        assert (path / name).is_file(), name
    cfg = json.loads((path / "config.json").read_text())
    assert "seed" in cfg and "command" in cfg
    results = json.loads((path / "results.json").read_text())
    html = (path / "report.html").read_text()
    figures = sorted((path / "figures").glob("*.png"))
    assert figures
    # every figure is embedded in the self-contained page
    assert html.count("data:image/png;base64,") >= len(figures)
    assert "http://" not in html and "https://" not in html
    return cfg, results, html


def test_demo_small(tmp_path, capsys):
    rc = main(
        [
            "demo",
            "--out",
            str(tmp_path),
            "--epochs",
            "2",
            "--widths",
            "12",
            "--exact-limit",
            "4000",
            *FAST,
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "report:" in out and "λ_max" in out
    path = _run_dir(tmp_path)
    cfg, results, html = _check_run_folder(path)
    run = RunDir.load(path)
    # the exact spectrum was computed and the Lanczos top eigenvalues agree with it
    exact = run.arrays["exact_eigenvalues"]
    lam = run.scalar("Top and bottom eigenvalues", "λ top[0]")["value"]
    assert abs(lam - exact[-1]) <= 1e-5 * abs(exact[-1])
    assert "Gauss–Newton" in html
    # one meaning of "outlier": the summary line, the scalar and count_outliers agree
    from hesslab import count_outliers

    rec = run.scalar("Top and bottom eigenvalues", "outliers above the bulk edge")
    want = count_outliers(torch.as_tensor(exact))
    assert rec["value"] == want.count and rec["diagnostics"]["source"] == "exact spectrum"
    assert f"outliers above the bulk edge: {want.text} (exact spectrum" in out


def _write_model(tmp_path):
    f = tmp_path / "mymodel.py"
    f.write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(),"
        " torch.nn.Linear(8, 3))\n"
    )
    return f


def _file_data_argv(tmp_path, model_file, out) -> list[str]:
    """Writes 40 points ``d.npz`` (2 inputs, 3 classes); ``hesslab analyze`` of them."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    data = str(tmp_path / "d.npz")
    model = f"{model_file}:build"
    return ["analyze", "--model", model, "--data", data, "--dtype", "float64", "--out", str(out)]


def test_analyze_own_model_and_file_data(tmp_path, capsys):
    f = _write_model(tmp_path)
    out = tmp_path / "runs"
    argv = _file_data_argv(tmp_path, f, out)
    rc = main([*argv, "--batch-size", "16", "--exact-limit", "100", *FAST])
    assert rc == 0, capsys.readouterr().err
    cfg, results, html = _check_run_folder(_run_dir(out))
    assert cfg["config"]["batch_size"] == 16 and cfg["config"]["command"] == "analyze"
    # weights file and a parameter subset
    model = __import__("torch").nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    )
    torch.save(model.state_dict(), tmp_path / "w.pt")
    out2 = tmp_path / "runs2"
    rc = main(
        [
            "analyze",
            "--model",
            f"{f}:build",
            "--weights",
            str(tmp_path / "w.pt"),
            "--data",
            "blobs",
            "--params",
            "2.*",
            "--what",
            "eig,trace",
            "--out",
            str(out2),
            *FAST,
        ]
    )
    assert rc == 0
    summary = json.loads((_run_dir(out2) / "results.json").read_text())
    assert summary


def test_analyze_with_disk_basis_gives_the_in_memory_numbers(tmp_path, capsys):
    """`--basis-device disk` (memory-bounded runs): same numbers, no file left behind."""
    f = _write_model(tmp_path)
    basis_dir = tmp_path / "basis"
    basis_dir.mkdir()
    common = ["analyze", "--model", f"{f}:build", "--data", "blobs", "--dtype", "float64"]
    common += ["--what", "eig,density", "--quiet", *FAST]
    assert main([*common, "--out", str(tmp_path / "mem")]) == 0
    argv = [*common, "--out", str(tmp_path / "disk"), "--basis-device", "disk"]
    assert main([*argv, "--basis-dir", str(basis_dir)]) == 0, capsys.readouterr().err
    mem = json.loads((_run_dir(tmp_path / "mem") / "results.json").read_text())
    disk = json.loads((_run_dir(tmp_path / "disk") / "results.json").read_text())
    cfg = json.loads((_run_dir(tmp_path / "disk") / "config.json").read_text())
    assert cfg["config"]["analysis"]["basis_device"] == "disk"
    values = {s["name"]: s["value"] for s in mem["scalars"] if isinstance(s["value"], float)}
    got = {s["name"]: s["value"] for s in disk["scalars"] if s["name"] in values}
    assert any(n.startswith("λ top") for n in values)
    for name, v in values.items():
        if "seconds" in name or "time" in name:
            continue
        assert abs(got[name] - v) <= 1e-9 * max(1.0, abs(v)), name
    assert list(basis_dir.iterdir()) == []
    assert main([*common, "--out", str(tmp_path / "x"), "--basis-device", "floppy"]) == 2
    assert "basis_device" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["analyze", "--model", "nofile.py:f", "--data", "digits"], "does not exist"),
        (["analyze", "--model", "nocolon", "--data", "digits"], "file.py:factory"),
        (["reproduce", "nonsense"], "unknown experiment"),
        (["report", "/nonexistent/run"], "not a hesslab run folder"),
    ],
)
def test_bad_arguments_give_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hesslab: error:") and message in err
    assert "\n" not in err


def test_bad_data_and_parts(tmp_path, capsys):
    f = _write_model(tmp_path)
    assert main(["analyze", "--model", f"{f}:build", "--data", "no-such-data"]) == 2
    assert "hesslab: error:" in capsys.readouterr().err
    assert (
        main(
            [
                "analyze",
                "--model",
                f"{f}:build",
                "--data",
                "blobs",
                "--what",
                "magic",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "unknown analysis part" in capsys.readouterr().err


def test_list_and_report(tmp_path, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sagun2017" in out
    # rebuild a report from a run folder
    main(
        [
            "demo",
            "--out",
            str(tmp_path),
            "--epochs",
            "1",
            "--widths",
            "8",
            "--what",
            "eig",
            "--exact-limit",
            "0",
            *FAST,
        ]
    )
    capsys.readouterr()
    path = _run_dir(tmp_path)
    (path / "report.html").unlink()
    assert main(["report", str(path)]) == 0
    assert (path / "report.html").is_file()


def test_help_for_every_command(capsys):
    for cmd in ([], ["demo"], ["analyze"], ["reproduce"], ["list"], ["report"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0
        assert "usage" in capsys.readouterr().out


def test_reproduce_smoke_through_the_cli(tmp_path, capsys):
    """`hesslab reproduce NAME --smoke` runs the registered experiment into a run folder."""
    rc = main(["reproduce", "dinh2017", "--smoke", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "[holds]" in out and "report:" in out
    path = _run_dir(tmp_path)
    cfg, results, html = _check_run_folder(path)
    run = RunDir.load(path)
    assert run.status == "complete"
    assert run.claims and all(c["holds"] is not None for c in run.claims)
    # a bad override is a one-line error
    assert (
        main(
            [
                "reproduce",
                "dinh2017",
                "--smoke",
                "--set",
                "no_such_field=1",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "hesslab: error:" in capsys.readouterr().err


def test_demo_resume_reuses_the_trained_model(tmp_path, monkeypatch, capsys):
    import hesslab.quantities as analysis_mod  # analyze measures through it
    import hesslab.train as train_mod

    argv = ["demo", "--out", str(tmp_path), "--epochs", "1", "--widths", "6", *FAST]
    argv += ["--what", "eig,trace"]
    real_trace = analysis_mod.trace

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(analysis_mod, "trace", interrupted)
    assert main(argv) == 130
    path = _run_dir(tmp_path)
    assert (path / "checkpoints" / "training.done.pt").exists()
    monkeypatch.setattr(analysis_mod, "trace", real_trace)

    def no_training(*a, **kw):
        raise AssertionError("the model was trained again")

    monkeypatch.setattr(train_mod, "fit", no_training)
    assert main([*argv, "--resume", str(path)]) == 0
    run = RunDir.load(path)
    assert run.status == "complete"
    # the resumed run's trace estimate is the Hessian's trace (dense spectrum of the run)
    tr = run.scalar("Trace, tr(H²) and eigenvalue bounds", "tr H")
    exact = float(run.arrays["exact_eigenvalues"].sum())
    assert abs(tr["value"] - exact) <= 4 * tr["stderr"] + 1e-8 * abs(exact), (tr, exact)
    assert len(run.metrics()) > 0
    assert not (path / "checkpoints").exists()

"""Every ``hesslab analyze`` option has its effect, checked against dense float64 truth.

A tiny model (``2-8-3`` tanh MLP, P = 51) from a model file, a data file with a train and
a test part, and for each option a run through :func:`hesslab.cli.main` whose recorded
numbers are compared with the spectrum of the dense Hessian (``torch.func.hessian``,
:mod:`tests.reference`) of what the option asks for: the selected block (``--params``),
the loaded weights (``--weights``), the chosen loss (``--loss``), part (``--split``) and
prefix (``--max-points``) of the data, the working precision (``--dtype``) and the parts
computed (``--what``).

Each check was seen to fail with the option's effect removed from ``hesslab/cli/``, one
mutant at a time: ``--params`` ignored, ``--weights`` not loaded, ``--loss`` ignored,
``--split`` ignored, ``--max-points`` ignored / off by one / without its size check,
``--dtype`` always float32 / always float64, ``--what`` ignored (all parts), only the
first ``--batch-size`` batch used, ``reproduce --seed`` always written as ``seeds``.
"""

from __future__ import annotations

import json
import runpy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hesslab.cli import main
from hesslab.report.run import RunDir

from .reference import dense_ggn, dense_hessian
from .test_cli import _run_dir, _write_model

S_EIG = "Top and bottom eigenvalues"
S_TRACE = "Trace, tr(H²) and eigenvalue bounds"
NUM_TRAIN, NUM_TEST = 40, 30


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The model file, a data file with train and test parts, and a weights file."""
    d = tmp_path_factory.mktemp("effects")
    model_file = _write_model(d)
    g = torch.Generator().manual_seed(0)
    x, x_test = torch.randn(NUM_TRAIN, 2, generator=g), 2 * torch.randn(NUM_TEST, 2, generator=g)
    y, y_test = (
        torch.randint(0, 3, (NUM_TRAIN,), generator=g),
        torch.randint(0, 3, (NUM_TEST,), generator=g),
    )
    np.savez(d / "d.npz", x=x.numpy(), y=y.numpy(), x_test=x_test.numpy(), y_test=y_test.numpy())
    other = _model(model_file)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.5).add_(0.1)  # clearly other weights than the factory's
    torch.save(other.state_dict(), d / "w.pt")
    data = {"train": (x.double(), y), "test": (x_test.double(), y_test)}
    return {"dir": d, "model": model_file, "data": data, "weights": other.state_dict()}


def _model(model_file, state=None):
    """The factory's model, built without hesslab (and ``state`` loaded), in float64."""
    model = runpy.run_path(str(model_file))["build"]()
    if state is not None:
        model.load_state_dict(state)
    return model.double().eval()


def _mse(out, y):
    return F.mse_loss(out, F.one_hot(y, out.shape[1]).to(out.dtype))


def _reference(setup, *, split="train", n=None, loss="ce", weights=False, names=None, ggn=False):
    """Ascending eigenvalues of the dense float64 Hessian (or GGN) the options describe."""
    model = _model(setup["model"], setup["weights"] if weights else None)
    x, y = setup["data"][split]
    batches = [(x[:n], y[:n])] if n else [(x, y)]
    criterion = _mse if loss == "mse" else F.cross_entropy
    M = (dense_ggn if ggn else dense_hessian)(model, criterion, batches, names)
    return torch.linalg.eigvalsh((M + M.T) / 2).numpy()


def _analyze(setup, name, *options):
    out = setup["dir"] / name
    argv = ["analyze", "--model", f"{setup['model']}:build", "--data", str(setup["dir"] / "d.npz")]
    argv += ["--out", str(out), "--quiet", "--k", "3", "--k-bottom", "1", "--tol", "1e-10"]
    argv += ["--exact-limit", "100", "--trace-matvecs", "30", "--density-steps", "12"]
    defaults = {"--what": "eig", "--dtype": "float64"}
    for key, value in defaults.items():
        if key not in options:
            argv += [key, value]
    assert main([*argv, *options]) == 0
    return RunDir.load(_run_dir(out))


def _assert_spectrum(run, ref, rtol=1e-9):
    """The run's exact spectrum and its Lanczos extremes against the dense reference."""
    exact = run.arrays["exact_eigenvalues"]
    scale = np.abs(ref).max()
    assert exact.shape == ref.shape
    assert np.abs(exact - ref).max() <= rtol * scale
    top = run.scalar(S_EIG, "λ top[0]")["value"]
    assert abs(top - ref[-1]) <= max(rtol, 1e-8) * scale
    if any(s["name"] == "λ bottom[0]" for s in run.scalars):
        assert abs(run.scalar(S_EIG, "λ bottom[0]")["value"] - ref[0]) <= max(rtol, 1e-8) * scale


def test_defaults_match_the_dense_hessian(setup):
    run = _analyze(setup, "defaults")
    ref = _reference(setup)
    _assert_spectrum(run, ref)
    assert run.config["num_points"] == NUM_TRAIN


def test_params_selects_the_block(setup):
    """``--params '2.*'``: the spectrum of the diagonal block of the last layer only."""
    run = _analyze(setup, "params", "--params", "2.*")
    ref = _reference(setup, names=["2.weight", "2.bias"])
    assert len(ref) == 27
    _assert_spectrum(run, ref)
    # the block's spectrum is not the full Hessian's: the check can tell them apart
    assert abs(ref[-1] - _reference(setup)[-1]) > 1e-3 * abs(ref[-1])


def test_weights_are_loaded(setup):
    run = _analyze(setup, "weights", "--weights", str(setup["dir"] / "w.pt"))
    ref = _reference(setup, weights=True)
    _assert_spectrum(run, ref)
    assert abs(ref[-1] - _reference(setup)[-1]) > 1e-3 * abs(ref[-1])


def test_loss_mse_is_used(setup):
    run = _analyze(setup, "mse", "--loss", "mse")
    ref = _reference(setup, loss="mse")
    _assert_spectrum(run, ref)
    assert abs(ref[-1] - _reference(setup)[-1]) > 1e-3 * abs(ref[-1])


def test_split_test_is_used(setup):
    run = _analyze(setup, "split", "--split", "test")
    ref = _reference(setup, split="test")
    _assert_spectrum(run, ref)
    assert run.config["num_points"] == NUM_TEST
    assert abs(ref[-1] - _reference(setup)[-1]) > 1e-3 * abs(ref[-1])


@pytest.mark.parametrize("n", [1, 17])
def test_max_points_takes_the_first_points(setup, n):
    run = _analyze(setup, f"max{n}", "--max-points", str(n))
    ref = _reference(setup, n=n)
    _assert_spectrum(run, ref, rtol=1e-9)
    assert run.config["num_points"] == n
    for m in (n - 1, n + 1):  # neither one point fewer nor one more
        if m > 0:
            assert np.abs(_reference(setup, n=m) - ref).max() > 1e-6 * np.abs(ref).max()


def test_max_points_above_the_data_size_takes_everything(setup):
    run = _analyze(setup, "max-all", "--max-points", str(NUM_TRAIN + 5))
    _assert_spectrum(run, _reference(setup))
    assert run.config["num_points"] == NUM_TRAIN


def test_batch_size_gives_the_full_data_hessian(setup):
    """Uneven batches (7 into 40): the Hessian of the mean over all points, unchanged."""
    run = _analyze(setup, "batches", "--batch-size", "7")
    _assert_spectrum(run, _reference(setup))
    assert run.config["batch_size"] == 7


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_sets_the_working_precision(setup, dtype):
    run = _analyze(setup, dtype, "--dtype", dtype)
    text = " ".join(t["text"] for t in run.texts if t["section"] == S_EIG)
    assert f"torch.{dtype}" in text  # the objective's dtype, as analysed
    _assert_spectrum(run, _reference(setup), rtol=1e-9 if dtype == "float64" else 1e-4)


def test_what_runs_exactly_the_parts_asked_for(setup):
    sections = {
        "eig": S_EIG,
        "trace": S_TRACE,
        "density": "Spectral density",
        "layers": "Layerwise Hessians",
        "ggn": "Gauss–Newton vs Hessian",
    }
    run = _analyze(setup, "what", "--what", "trace,layers,ggn")
    present = {s["section"] for s in run.scalars} | {t["section"] for t in run.tables}
    assert {sections[p] for p in ("trace", "layers", "ggn")} <= present
    assert not {sections["eig"], sections["density"]} & present
    assert "density/values" not in run.arrays
    ref = _reference(setup)
    # trace within 4 of its own standard errors (plus rounding) of the dense trace
    tr = run.scalar(S_TRACE, "tr H")
    assert abs(tr["value"] - ref.sum()) <= 4 * tr["stderr"] + 1e-8 * np.abs(ref).sum()
    # every layer's λ_max is that of its dense diagonal block
    rows = {
        r["layer"]: r for t in run.tables if t["name"] == "per-layer summary" for r in t["rows"]
    }
    assert len(rows) == 2
    for layer, names in zip(rows, (["0.weight", "0.bias"], ["2.weight", "2.bias"]), strict=True):
        block = _reference(setup, names=names)
        assert abs(rows[layer]["λ_max"] - block[-1]) <= 1e-8 * abs(block[-1])
    # the Gauss–Newton's top eigenvalue is the dense GGN's
    g = _reference(setup, ggn=True)
    assert (
        abs(run.scalar("Gauss–Newton vs Hessian", "λ top (GGN)[0]")["value"] - g[-1])
        <= 1e-8 * g[-1]
    )


def test_what_density_and_eig(setup):
    run = _analyze(setup, "what2", "--what", "density,eig", "--density-steps", "60")
    present = {s["section"] for s in run.scalars}
    assert S_TRACE not in present and "Layerwise Hessians" not in present
    ref = _reference(setup)
    _assert_spectrum(run, ref)
    nodes, weights = run.arrays["density/nodes"], run.arrays["density/weights"]
    assert abs(weights.sum() - 1) <= 1e-9
    scale = np.abs(ref).max()
    assert nodes.min() >= ref[0] - 1e-8 * scale and nodes.max() <= ref[-1] + 1e-8 * scale
    # 60 >= P steps with full reorthogonalization: the top Ritz value is λ_max
    assert abs(nodes.max() - ref[-1]) <= 1e-6 * scale


def test_reproduce_seed_reaches_the_config(tmp_path, monkeypatch):
    """``reproduce --seed S`` sets ``seeds=[S]`` or ``seed=S``, whichever the config has."""
    from hesslab.experiments.registry import ExperimentSpec

    def stop(self, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(ExperimentSpec, "run", stop)
    for name, key, value in (("dinh2017", "seed", 7), ("sagun2017", "seeds", [7])):
        out = tmp_path / name
        assert (
            main(["reproduce", name, "--smoke", "--seed", "7", "--quiet", "--out", str(out)]) == 130
        )
        cfg = json.loads((_run_dir(out) / "config.json").read_text())["config"]
        assert cfg[key] == value

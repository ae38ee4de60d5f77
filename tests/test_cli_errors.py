"""Bad input through every CLI command and option: one line on stderr, exit code 2.

Each case asserts the exit code, a fragment of the message that names the problem, that
the message is exactly one line, and that no traceback is printed. A bug inside hesslab
(an exception that is not a user error) still prints its traceback (exit code 1), and
``--debug`` prints the traceback of every error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hesslab.cli import main

from .test_cli import _write_model

CUSTOM = """import torch


class Net(torch.nn.Module):
    def __init__(self, fail_above=None):
        super().__init__()
        self.lin = torch.nn.Linear(2, 3)
        self.fail_above = fail_above

    def forward(self, x):
        if self.fail_above is not None and x.shape[0] > self.fail_above:
            raise ValueError("batch too large for this layer")
        return self.lin(x)


def later():
    return Net(fail_above=64)  # the first 64 points pass


def as_dict():
    class D(Net):
        def forward(self, x):
            return {"logits": self.lin(x)}

    return D()


def no_params():
    return torch.nn.Identity()


def boom():
    raise ValueError("bad width")


def not_module():
    return 5


not_callable = 3


def flat_out():
    return torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Flatten(0))
"""


def _line(text: str) -> int:
    """The line number of ``text`` in :data:`CUSTOM`."""
    return next(i for i, ln in enumerate(CUSTOM.splitlines(), 1) if text in ln)


BOOM = _line('raise ValueError("bad width")')
LATER = _line('raise ValueError("batch too large')


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    """Every broken file the cases need, written once: ``{name: path}``."""
    d = tmp_path_factory.mktemp("bad")
    files = {"dir": d, "model": _write_model(d), "out": d / "runs", "custom": d / "custom.py"}
    files["custom"].write_text(CUSTOM)
    (d / "syntax.py").write_text("import torch\ndef build(:\n    pass\n")
    (d / "imports.py").write_text("import no_such_module_xyz\n\ndef build():\n    pass\n")
    (d / "raises.py").write_text("import torch\n\nraise RuntimeError('at import')\n")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 2, generator=g), torch.randint(0, 3, (40,), generator=g)
    arrays = {
        "good": {"x": x, "y": y},
        "big": {"x": x, "y": y + 5},
        "neg": {"x": x, "y": y - 1},
        "wide": {"x": torch.randn(40, 5, generator=g), "y": y},
        "reg": {"x": x, "y": torch.randn(40, generator=g)},
        "short": {"x": x, "y": y[:30]},
        "onlyx": {"x": x},
    }
    for name, a in arrays.items():
        np.savez(d / f"{name}.npz", **{k: v.numpy() for k, v in a.items()})
        files[name] = d / f"{name}.npz"
    raw = files["good"].read_bytes()
    (d / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    (d / "junk.npz").write_bytes(b"not a zip file at all " * 8)
    torch.save({"x": x, "y": y}, d / "good.pt")
    raw = (d / "good.pt").read_bytes()
    (d / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    (d / "data.csv").write_text("1,2,0\n")
    (d / "emptydir").mkdir()
    _weights(d)
    (d / "notrun").mkdir()
    (d / "badjson").mkdir()
    (d / "badjson" / "config.json").write_text("{not json")
    (d / "otherrun").mkdir()
    (d / "otherrun" / "config.json").write_text(json.dumps({"config": {"command": "demo"}}))
    files.update({p.name.replace(".", "_"): p for p in d.iterdir()})  # {syntax_py}
    return files


def _weights(d: Path) -> None:
    def mlp(out: int) -> torch.nn.Sequential:
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, out))

    good = mlp(3).state_dict()
    torch.save(good, d / "w_good.pt")
    torch.save(mlp(4).state_dict(), d / "w_size.pt")
    torch.save({"foo": torch.zeros(1)}, d / "w_keys.pt")
    torch.save({f"module.{k}": v for k, v in good.items()}, d / "w_ddp.pt")
    torch.save(
        {k: v.fill_(float("nan")) if k == "0.bias" else v for k, v in good.items()}, d / "w_nan.pt"
    )
    torch.save([v for v in mlp(3).state_dict().values()], d / "w_list.pt")
    torch.save(mlp(3), d / "w_module.pt")  # a pickled Module: refused by weights_only
    (d / "w_junk.pt").write_bytes(b"junk")
    raw = (d / "w_good.pt").read_bytes()
    (d / "w_trunc.pt").write_bytes(raw[: len(raw) // 2])


def _one_line_error(rc: int, err: str, fragments: tuple[str, ...]) -> None:
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    for frag in fragments:
        assert frag in err, (frag, err)


def _fails(argv: list[str], *fragments: str, capsys) -> str:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out
    _one_line_error(rc, captured.err, ("hesslab: error:", *fragments))
    return captured.err


def _usage_error(argv: list[str], *fragments: str, capsys) -> None:
    """argparse-level errors: SystemExit(2) with a one-line message."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    _one_line_error(e.value.code, capsys.readouterr().err, fragments)


def _analyze(f, *extra, model=None, data=None):
    return [
        "analyze",
        "--model",
        model or f"{f['model']}:build",
        "--data",
        data or f["good"],
        "--out",
        f["out"],
        "--quiet",
        "--what",
        "eig",
        "--k",
        "2",
        "--k-bottom",
        "0",
        *extra,
    ]


# ------------------------------------------------------------------- the model
MODEL_CASES = [
    ("{dir}/nofile.py:build", ("does not exist",)),
    ("nocolon", ("path/to/file.py:factory",)),
    ("{syntax_py}:build", ("cannot import", "SyntaxError", "syntax.py:2")),
    ("{imports_py}:build", ("ModuleNotFoundError", "no_such_module_xyz", "imports.py:1")),
    ("{raises_py}:build", ("RuntimeError: at import", "raises.py:3")),
    ("{model}:nope", ("defines no 'nope'", "build")),
    ("{custom}:boom", ("factory", "ValueError: bad width", f"custom.py:{BOOM}", "fix the factory")),
    ("{custom}:not_callable", ("is not callable",)),
    ("{custom}:not_module", ("returned a int, not a torch.nn.Module",)),
    ("{custom}:no_params", ("without parameters",)),
    ("{custom}:as_dict", ("returns a dict, not a tensor",)),
    ("{custom}:flat_out", ("--loss ce with class labels needs model outputs [N, C]", "[40]")),
]


@pytest.mark.parametrize("spec, fragments", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model(f, spec, fragments, capsys):
    _fails(_analyze(f, model=spec.format(**f)), *fragments, capsys=capsys)


def test_user_forward_failing_later_is_located_in_their_file(f, capsys):
    """The probe forward (first points) passes; the user's forward raises inside the
    objective's full-batch pass: still a user error, located in their file."""
    argv = _analyze(f, model=f"{f['custom']}:later", data="blobs")
    _fails(argv, "your model code raised ValueError", f"custom.py:{LATER}", capsys=capsys)


# ----------------------------------------------------------------- --weights
WEIGHT_CASES = [
    ("nofile.pt", ("no such file", "torch.save(model.state_dict()")),
    ("w_size.pt", ("do not fit", "size mismatch for 2.weight (file [4, 8], model [3, 8])")),
    ("w_keys.pt", ("missing 0.weight", "unexpected foo")),
    ("w_ddp.pt", ("unexpected module.0.weight", "model.module.state_dict()")),
    ("w_nan.pt", ("0.bias hold NaN or inf",)),
    ("w_list.pt", ("holds a list, not a state_dict",)),
    ("w_module.pt", ("cannot be read by torch.load(weights_only=True)", "UnpicklingError")),
    ("w_junk.pt", ("cannot be read by torch.load",)),
    ("w_trunc.pt", ("cannot be read by torch.load", "truncated")),
]


@pytest.mark.parametrize("name, fragments", WEIGHT_CASES, ids=[c[0] for c in WEIGHT_CASES])
def test_bad_weights(f, name, fragments, capsys):
    _fails(_analyze(f, "--weights", f["dir"] / name), "--weights", *fragments, capsys=capsys)


# -------------------------------------------------------------------- --data
DATA_CASES = [
    ("no-such-data", ("unknown data 'no-such-data'", "bundled name")),
    ("{dir}/missing.npz", ("data file or folder", "missing.npz' does not exist")),
    ("{dir}/no/folder", ("does not exist", "check the path")),
    ("{trunc_npz}", ("BadZipFile", "numpy.savez")),
    ("{junk_npz}", ("cannot read", "as .npz")),
    ("{trunc_pt}", ("cannot read", "torch.load")),
    ("{onlyx}", ("but not both",)),
    ("{data_csv}", ("unsupported data file", ".npz")),
    ("{short}", ("x has 40, y has 30",)),
    ("{emptydir}", ("neither MNIST", "CIFAR-10")),
    # the model against the data
    ("{wide}", ("forward pass", "mat1 and mat2", "inputs of shape [5] per point")),
    ("{big}", ("labels in [5, 7]", "outputs 3 scores", "0..2")),
    ("{neg}", ("labels", "[-1, 1]")),
    ("{reg}", ("--loss ce needs integer class labels", "--loss mse")),
]


@pytest.mark.parametrize("data, fragments", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data(f, data, fragments, capsys):
    _fails(_analyze(f, data=data.format(**f)), *fragments, capsys=capsys)


def test_mse_targets_that_would_broadcast_and_one_hot_labels_out_of_range(f, capsys):
    _fails(
        _analyze(f, "--loss", "mse", data=f["reg"]),
        "targets of shape [N] but the model outputs [N, 3]",
        "broadcast",
        capsys=capsys,
    )
    _fails(_analyze(f, "--loss", "mse", data=f["big"]), "labels in [5, 7]", capsys=capsys)


def test_missing_split(f, capsys):
    _fails(_analyze(f, "--split", "test"), "no 'test' split", "--split train", capsys=capsys)


# ------------------------------------------------------------------ --device
@pytest.mark.parametrize(
    "option, device, fragments",
    [
        ("--device", "cudaa", ("--device 'cudaa' is not a device name", "use cpu")),
        ("--device", "meta", ("holds no data",)),
        ("--basis-device", "cudaa", ("--basis-device 'cudaa' is not a device name",)),
        ("--basis-device", "floppy", ("basis_device",)),
    ],
)
def test_bad_device(f, option, device, fragments, capsys):
    _fails(_analyze(f, option, device), *fragments, capsys=capsys)


def test_cuda_that_is_not_there(f, capsys):
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        argv, frag = _analyze(f, "--device", f"cuda:{n}"), f"there are {n} CUDA device(s)"
    else:
        argv, frag = _analyze(f, "--device", "cuda"), "CUDA is not available here"
    _fails(argv, frag, capsys=capsys)
    if not torch.cuda.is_available():
        _fails(_analyze(f, "--basis-device", "cuda"), "--basis-device cuda", capsys=capsys)


# ---------------------------------------------------------- analysis settings
SETTING_CASES = [
    (("--params", "nothing.*"), ("'nothing.*' matches no parameter", "0.weight")),
    (("--what", "magic"), ("unknown analysis part", "'magic'")),
    (("--what", ","), ("selects no part",)),
    (("--dtype", "float16"), ("--dtype must be float32 or float64",)),
    (("--k", "500"), ("k must be an integer in [1, P=51]",)),
    (("--tol", "-1"), ("tol must be",)),
    (("--basis-device", "disk", "--basis-dir", "{dir}/nodir"), ("existing writable directory",)),
    (("--out", "{model}"), ("--out", "cannot create a run folder")),
    (("--distributed",), ("--distributed must run under torchrun", "torchrun --nproc_per_node")),
    (("--resume", "{notrun}"), ("not a hesslab run folder",)),
    (("--resume", "{dir}/nowhere"), ("not a hesslab run folder",)),
    (("--resume", "{badjson}"), ("not valid JSON",)),
    (("--resume", "{otherrun}"), ("started with other settings", "command")),
]


@pytest.mark.parametrize("extra, fragments", SETTING_CASES, ids=[c[0][0] for c in SETTING_CASES])
def test_bad_settings(f, extra, fragments, capsys):
    argv = _analyze(f, *[e.format(**f) for e in extra])
    _fails(argv, *fragments, capsys=capsys)


USAGE_CASES = [
    (["analyze", "--data", "blobs"], "the following arguments are required: --model"),
    (["analyze", "--model", "m.py:f"], "required: --data"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--split", "val"], "invalid choice: 'val'"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--loss", "hinge"], "invalid choice"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--k", "0"], "--k: must be >= 1, got 0"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--k", "x"], "expected an integer"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--k-bottom", "-1"], "--k-bottom"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--max-points", "-1"], "--max-points"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--batch-size", "-3"], "--batch-size"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--threads", "-1"], "--threads"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--trace-matvecs", "0"], "--trace-matvecs"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--density-steps", "0"], "--density-steps"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--density-probes", "0"], "--density-probes"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--exact-limit", "-1"], "--exact-limit"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--tol", "tiny"], "--tol"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--seed", "1.5"], "--seed"),
    (["analyze", "--model", "m.py:f", "--data", "b", "--no-such-option"], "unrecognized"),
    (["demo", "--epochs", "-1"], "--epochs: must be >= 0"),
    (["demo", "--k", "0"], "--k"),
    (["reproduce"], "required: name"),
    (["report"], "required: run_dir"),
    (["list", "extra"], "unrecognized arguments: extra"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, fragment", USAGE_CASES, ids=[" ".join(c[0]) for c in USAGE_CASES])
def test_usage_errors_are_one_line(argv, fragment, capsys):
    _usage_error(argv, fragment, "see `hesslab", capsys=capsys)


# ------------------------------------------------- demo, reproduce, report, list
def test_demo_errors(tmp_path, capsys):
    demo = ["demo", "--out", tmp_path, "--quiet", "--epochs", "1"]
    for widths in ("a,b", "0", "8,-1", ","):
        _fails([*demo, "--widths", widths], "--widths must be comma-separated", capsys=capsys)
    _fails([*demo, "--what", "magic"], "unknown analysis part", capsys=capsys)
    _fails([*demo, "--basis-device", "cudaa"], "--basis-device", capsys=capsys)
    _fails([*demo, "--resume", tmp_path / "nowhere"], "not a hesslab run folder", capsys=capsys)
    _fails([*demo, "--out", __file__], "cannot create a run folder", capsys=capsys)
    assert not list(tmp_path.iterdir())  # no error left a half-made run folder


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["nonsense"], ("unknown experiment 'nonsense'", "dinh2017")),
        (["dinh2017", "--set", "ks"], ("must look like field=value",)),
        (["dinh2017", "--set", "zzz=1"], ("has no setting 'zzz'", "settings:")),
        (["dinh2017", "--set", "lr=fast"], ("lr must be a number",)),
        (["dinh2017", "--set", "widths=[1,"], ("widths must be a list",)),
        (["dinh2017", "--set", "epochs=1.5"], ("epochs must be an integer",)),
        (["sagun2017", "--set", "seeds=[0"], ("seeds must be a list",)),
        (["sagun2017", "--set", "seeds=[]"], ("seeds must list at least one seed",)),
    ],
)
def test_reproduce_errors(tmp_path, extra, fragments, capsys):
    _fails(
        ["reproduce", *extra, "--smoke", "--quiet", "--out", tmp_path], *fragments, capsys=capsys
    )


def test_reproduce_and_report_on_folders_that_are_not_runs(f, capsys):
    for folder in (f["notrun"], f["dir"] / "nowhere"):
        argv = ["reproduce", "dinh2017", "--smoke", "--resume", folder]
        _fails(argv, "not a hesslab run folder", capsys=capsys)
        _fails(["report", folder], "not a hesslab run folder", capsys=capsys)
    _fails(["report", f["badjson"]], "not valid JSON", capsys=capsys)
    argv = ["reproduce", "dinh2017", "--smoke", "--resume", f["otherrun"]]
    _fails(argv, "started with other settings", capsys=capsys)


# ------------------------------------------------- bugs in hesslab vs --debug
def _internal_bug(*a, **kw):
    raise ZeroDivisionError("planted bug")


def test_a_bug_in_hesslab_prints_its_traceback(f, monkeypatch, capsys):
    import hesslab.quantities  # analyze's eigensolves go through it

    monkeypatch.setattr(hesslab.quantities, "eigenpairs", _internal_bug)
    assert main([str(a) for a in _analyze(f, "--dtype", "float64")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "_internal_bug" in err
    assert "hesslab: internal error: ZeroDivisionError: planted bug" in err
    assert "bug in hesslab" in err


def test_out_of_memory_is_a_user_error(f, monkeypatch, capsys):
    import hesslab.quantities  # analyze's eigensolves go through it

    def oom(*a, **kw):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(hesslab.quantities, "eigenpairs", oom)
    argv = _analyze(f, "--dtype", "float64")
    _fails(
        argv, "out of memory (OutOfMemoryError: CUDA out of memory", "--batch-size", capsys=capsys
    )


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_of_user_errors(f, where, capsys):
    argv = [str(a) for a in _analyze(f, model=f"{f['custom']}:boom")]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert f'custom.py", line {BOOM}, in boom' in err  # the user's frame, from the chained error
    assert err.rstrip().splitlines()[-1].startswith("hesslab: error: the --model factory")
    # without --debug: one line
    _fails(argv[1:] if where == "before" else argv[:-1], "ValueError", capsys=capsys)


def test_console_script_end_to_end(f):
    """The real process: exit status 2, one stderr line, no traceback."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    argv = [str(a) for a in _analyze(f, model=f"{f['dir'] / 'syntax.py'}:build")]
    cmd = [sys.executable, "-c", "import sys; from hesslab.cli import main; sys.exit(main())"]
    env = {"PYTHONPATH": src, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([*cmd, *argv], capture_output=True, text=True, env=env, timeout=120)
    _one_line_error(res.returncode, res.stderr, ("hesslab: error:", "SyntaxError"))

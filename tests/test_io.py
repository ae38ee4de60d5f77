"""Tests of hesslab.io: atomic writes, JSON encoding, JSON lines, npz."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import hesslab.io
from hesslab.errors import ConfigurationError, DataError
from hesslab.io import (
    append_jsonl,
    as_float,
    atomic_write_bytes,
    atomic_write_text,
    load_npz,
    read_json,
    read_jsonl,
    save_npz,
    to_jsonable,
    write_json,
)
from hesslab.linalg.results import EigenResult, TraceEstimate


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, ["tw", "o"])
    assert target.read_text() == "two"
    assert _leftovers(target.parent) == []
    # Not mkstemp's owner-only 0o600: the usual permissions under the umask.
    assert target.stat().st_mode & 0o777 == 0o666 & ~hesslab.io._UMASK


def test_atomic_write_generator_raising_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old content")

    def chunks():
        yield b"new "
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write_bytes(target, chunks())
    assert target.read_bytes() == b"old content"
    assert _leftovers(tmp_path) == []

    fresh = tmp_path / "fresh.bin"
    with pytest.raises(RuntimeError):
        atomic_write_bytes(fresh, chunks())
    assert not fresh.exists()
    assert _leftovers(tmp_path) == []


def test_atomic_write_failed_rename_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "results.json"
    write_json(target, {"a": 1})

    def broken_replace(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        write_json(target, {"a": 2, "big": list(range(1000))})
    monkeypatch.undo()
    assert read_json(target) == {"a": 1}
    assert _leftovers(tmp_path) == []


@dataclass(frozen=True)
class _Inner:
    x: torch.Tensor
    note: str = "hi"


def test_to_jsonable_round_trips_strict_json() -> None:
    obj = {
        "tensor": torch.tensor([1.0, float("nan"), float("inf")]),
        "scalar_tensor": torch.tensor(2.5),
        "half": torch.tensor([1.5], dtype=torch.bfloat16),
        "int_tensor": torch.arange(3),
        "np": np.array([[1, 2], [3, 4]], dtype=np.int32),
        "np_scalar": np.float32(0.25),
        "np_bool": np.bool_(True),
        "neg_inf": -math.inf,
        "nan": math.nan,
        "nested": [(1, 2), {3}],
        "dc": _Inner(torch.ones(2)),
        "path": Path("/tmp/x"),
        "dtype": torch.float64,
        "complex": 1 + 2j,
        3: "int key",
        "callable": len,
    }
    enc = to_jsonable(obj)
    text = json.dumps(enc, allow_nan=False)
    back = json.loads(text)
    assert back["tensor"] == [1.0, "NaN", "Infinity"]
    assert back["scalar_tensor"] == 2.5
    assert back["half"] == [1.5]
    assert back["int_tensor"] == [0, 1, 2]
    assert back["np"] == [[1, 2], [3, 4]]
    assert back["np_scalar"] == 0.25 and back["np_bool"] is True
    assert back["neg_inf"] == "-Infinity" and back["nan"] == "NaN"
    assert back["nested"] == [[1, 2], [3]]
    assert back["dc"] == {"x": [1.0, 1.0], "note": "hi"}
    assert back["dtype"] == "torch.float64"
    assert back["complex"] == {"real": 1.0, "imag": 2.0}
    assert back["3"] == "int key"
    assert "len" in back["callable"]
    assert math.isnan(as_float(back["nan"])) and as_float(back["neg_inf"]) == -math.inf
    assert as_float(None) != as_float(None)  # None -> nan
    with pytest.raises(ConfigurationError, match="cannot encode"):
        to_jsonable({"f": len}, strict=True)


def test_result_dataclasses_encode() -> None:
    eig = EigenResult(
        values=torch.tensor([3.0, 1.0], dtype=torch.float64),
        vectors=None,
        residual_norms=torch.tensor([1e-9, float("nan")]),
        converged=torch.tensor([True, False]),
        num_matvecs=20,
        seconds=0.1,
        method="lanczos",
        which="largest",
        tol=1e-6,
        norm_estimate=3.0,
    )
    tr = TraceEstimate(value=4.0, stderr=float("inf"), num_matvecs=10, seconds=0.0, method="h")
    back = json.loads(json.dumps(to_jsonable([eig, tr]), allow_nan=False))
    assert back[0]["values"] == [3.0, 1.0]
    assert back[0]["residual_norms"][1] == "NaN"
    assert back[0]["converged"] == [True, False]
    assert back[1]["stderr"] == "Infinity"


def test_write_json_is_strict_and_readable(tmp_path: Path) -> None:
    path = write_json(tmp_path / "x.json", {"v": float("nan"), "t": torch.zeros(2)})
    text = path.read_text()
    assert "NaN" in text and text.endswith("\n")
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare constant {c}"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(DataError, match="does not exist"):
        read_json(tmp_path / "missing.json")


def test_jsonl_append_and_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    assert read_jsonl(path) == []
    append_jsonl(path, {"step": 0, "loss": torch.tensor(1.5)})
    append_jsonl(path, {"step": 1, "loss": float("nan")})
    with open(path, "ab") as fh:  # a crash in the middle of writing the third record
        fh.write(b'{"step": 2, "lo')
    records = read_jsonl(path)
    assert records == [{"step": 0, "loss": 1.5}, {"step": 1, "loss": "NaN"}]
    # Appending after a torn line starts a fresh line; the torn one is skipped.
    append_jsonl(path, {"step": 3})
    assert [r["step"] for r in read_jsonl(path)] == [0, 1, 3]


def test_npz_round_trip_and_errors(tmp_path: Path) -> None:
    path = save_npz(
        tmp_path / "a.npz",
        values=torch.tensor([1.0, 2.0]),
        bf=torch.ones(2, dtype=torch.bfloat16),
        **{"sec/name/values": np.eye(2), "file": np.arange(3)},
    )
    loaded = load_npz(path)
    np.testing.assert_array_equal(loaded["values"], [1.0, 2.0])
    assert loaded["bf"].dtype == np.float32
    np.testing.assert_array_equal(loaded["sec/name/values"], np.eye(2))
    np.testing.assert_array_equal(np.load(path)["file"], np.arange(3))
    assert load_npz(tmp_path / "missing.npz") == {}
    with pytest.raises(DataError, match="dtype object"):
        save_npz(tmp_path / "b.npz", x=np.array([{}, None], dtype=object))
    assert not (tmp_path / "b.npz").exists()
    (tmp_path / "c.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt"):
        load_npz(tmp_path / "c.npz")

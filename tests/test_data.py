"""Tests of hesslab.data: bundled sets, transformations, and the file readers."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from hesslab.data import (
    DATASETS,
    Split,
    TensorData,
    balanced_subset,
    blobs,
    cifar10,
    circles,
    digits,
    gaussian_mixture,
    load_data,
    load_tensor_file,
    mnist,
    moons,
    read_idx,
    with_label_noise,
)
from hesslab.errors import ConfigurationError, DataError

# --------------------------------------------------------------------------------------
# bundled data sets

BUNDLED = {
    # name: (loader, num_classes, input shape, train size, test size)
    "digits": (lambda **k: digits(**k), 10, (64,), 1347, 450),
    "digits-image": (lambda **k: digits(flat=False, **k), 10, (1, 8, 8), 1347, 450),
    "mixture": (lambda **k: gaussian_mixture(**k), 3, (2,), 150, 150),
    "blobs": (lambda **k: blobs(**k), 3, (2,), 100, 100),
    "moons": (lambda **k: moons(**k), 2, (2,), 100, 100),
    "circles": (lambda **k: circles(**k), 2, (2,), 100, 100),
}


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_shapes_dtypes_classes(name):
    make, k, shape, n_train, n_test = BUNDLED[name]
    split = make()
    assert isinstance(split, Split)
    for part, n in ((split.train, n_train), (split.test, n_test)):
        assert isinstance(part, TensorData)
        assert len(part) == n
        assert part.input_shape == shape
        assert part.x.dtype == torch.float32
        assert part.y.dtype == torch.int64
        assert part.num_classes == k
        assert set(part.y.unique().tolist()) == set(range(k))
        assert torch.isfinite(part.x).all()
    # The registry gives the same data.
    via_registry = load_data(name)
    assert torch.equal(via_registry.train.x, split.train.x)


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_deterministic_by_seed(name):
    make = BUNDLED[name][0]
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.train.x, c.train.x)


def test_bundled_do_not_touch_global_rng():
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()  # noqa: NPY002 -- checking the legacy global state
    for make, *_ in BUNDLED.values():
        make(seed=1)
    with_label_noise(digits().train, 0.5, seed=1)
    balanced_subset(digits().train, 5, seed=1)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])  # noqa: NPY002


def test_digits_dtype_and_standardization():
    split = digits(dtype=torch.float64)
    assert split.train.x.dtype == torch.float64
    mean = split.train.x.mean(0)
    std = split.train.x.std(0, unbiased=False)
    assert mean.abs().max() < 1e-10
    nonconstant = std > 0
    assert torch.allclose(std[nonconstant], torch.ones_like(std[nonconstant]))
    raw = digits(standardize=False)
    assert raw.train.x.min() == 0 and raw.train.x.max() == 16
    with pytest.raises(ConfigurationError):
        digits(dtype=torch.int64)
    with pytest.raises(ConfigurationError):
        digits(test_fraction=1.5)


def test_digits_split_is_stratified_and_disjoint():
    split = digits(test_fraction=0.2, seed=0)
    counts = split.test.class_counts().double() / (
        split.test.class_counts() + split.train.class_counts()
    )
    assert torch.all((counts - 0.2).abs() < 0.02)
    assert len(split.train) + len(split.test) == 1797


def test_mixture_simplex_separation_and_spread():
    split = gaussian_mixture(
        num_classes=5, dim=8, num_per_class=400, spread=0.5, separation=3.0, seed=1
    )
    mu = split.train.meta["means"]
    d = torch.cdist(mu, mu)
    off = d[~torch.eye(5, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, 3.0), atol=1e-9)
    x, y = split.train.x.double(), split.train.y
    for c in range(5):
        xc = x[y == c]
        assert torch.allclose(xc.mean(0), mu[c], atol=0.15)
        assert abs(float(xc.std(0).mean()) - 0.5) < 0.05
    # Random means when a simplex does not fit; and an explicit error when asked for one.
    r = gaussian_mixture(num_classes=10, dim=2, separation=4.0)
    assert r.train.meta["means_kind"] == "random"
    radius = torch.full((10,), 4.0 / 2**0.5, dtype=torch.float64)
    assert torch.allclose(r.train.meta["means"].norm(dim=1), radius)
    with pytest.raises(ConfigurationError, match="dim"):
        gaussian_mixture(num_classes=10, dim=2, means="simplex")


def test_blobs_sizes_follow_sagun():
    split = blobs(num_classes=7, num_train=100, num_test=100, seed=2)
    assert len(split.train) == 100 and len(split.test) == 100
    assert split.train.num_classes == 7
    assert split.train.x.mean(0).abs().max() < 1e-5  # standardised with train statistics


# --------------------------------------------------------------------------------------
# TensorData


def test_tensordata_loader_subset_to():
    x = torch.arange(20.0).reshape(10, 2)
    y = torch.arange(10) % 3
    d = TensorData(x, y, name="toy", num_classes=3)
    batches = list(d.loader(4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), x)
    shuffled = torch.cat([b[1] for b in d.loader(3, shuffle=True, seed=5)])
    again = torch.cat([b[1] for b in d.loader(3, shuffle=True, seed=5)])
    assert torch.equal(shuffled, again)
    assert sorted(shuffled.tolist()) == sorted(y.tolist())
    assert len(list(d.loader(None))) == 1
    sub = d.subset([1, 3])
    assert torch.equal(sub.x, x[[1, 3]]) and sub.num_classes == 3
    d64 = d.to(dtype=torch.float64)
    assert d64.x.dtype == torch.float64 and d64.y.dtype == torch.int64
    xb, yb = d[[0, 2]]
    assert xb.shape == (2, 2) and yb.tolist() == [0, 2]
    with pytest.raises(DataError, match="loader"):
        iter(d)  # not silently point by point


def test_tensordata_validates():
    with pytest.raises(DataError, match="number of data points"):
        TensorData(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match="num_classes"):
        TensorData(torch.zeros(3, 2), torch.tensor([0, 1, 5]), num_classes=3)
    with pytest.raises(DataError, match="tensors"):
        TensorData(np.zeros((3, 2)), torch.zeros(3))


# --------------------------------------------------------------------------------------
# label noise, balanced subsets


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 1.0])
def test_label_noise_exact_fraction(fraction):
    train = digits().train
    noisy = with_label_noise(train, fraction, seed=0)
    idx = noisy.meta["label_noise_indices"]
    assert len(idx) == round(fraction * len(train))
    assert len(set(idx.tolist())) == len(idx)
    untouched = torch.ones(len(train), dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(noisy.y[untouched], train.y[untouched])
    assert torch.equal(noisy.meta["original_labels"], train.y)
    assert noisy.meta["num_labels_changed"] == int((noisy.y != train.y).sum())
    assert torch.equal(noisy.x, train.x)
    assert noisy.y.min() >= 0 and noisy.y.max() < 10


def test_label_noise_exclude_true_and_split():
    train = digits().train
    noisy = with_label_noise(train, 0.5, seed=1, exclude_true=True)
    idx = noisy.meta["label_noise_indices"]
    assert bool((noisy.y[idx] != train.y[idx]).all())
    split = digits()
    out = with_label_noise(split, 0.2)
    assert out.test is split.test  # the test set stays clean
    a = with_label_noise(train, 0.3, seed=7)
    b = with_label_noise(train, 0.3, seed=7)
    assert torch.equal(a.y, b.y)
    with pytest.raises(ConfigurationError):
        with_label_noise(train, 1.5)


def test_balanced_subset_counts():
    train = digits().train
    sub = balanced_subset(train, per_class=10, seed=0)
    assert sub.class_counts().tolist() == [10] * 10
    assert torch.equal(sub.x, train.x[sub.meta["subset_indices"]])
    again = balanced_subset(train, per_class=10, seed=0)
    assert torch.equal(again.meta["subset_indices"], sub.meta["subset_indices"])
    with pytest.raises(DataError, match="per_class"):
        balanced_subset(train, per_class=1000)


# --------------------------------------------------------------------------------------
# MNIST idx files


def _write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _write_mnist(folder: Path, n_train=6, n_test=4, size=28, gz=False, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        ext = ".gz" if gz else ""
        _write_idx(folder / f"{part}-images-idx3-ubyte{ext}", images, gz)
        _write_idx(folder / f"{part}-labels-idx1-ubyte{ext}", labels, gz)
        arrays[part] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx(tmp_path, gz):
    arrays = _write_mnist(tmp_path, gz=gz)
    split = mnist(tmp_path, normalize=False)
    assert split.train.x.shape == (6, 1, 28, 28) and split.test.x.shape == (4, 1, 28, 28)
    assert split.train.x.dtype == torch.float32 and split.train.y.dtype == torch.int64
    expected = torch.from_numpy(arrays["train"][0]).float().div(255).unsqueeze(1)
    assert torch.allclose(split.train.x, expected)
    assert split.test.y.tolist() == arrays["t10k"][1].tolist()
    assert split.train.num_classes == 10
    norm = mnist(tmp_path, flat=True, num_train=3)
    assert norm.train.x.shape == (3, 784)
    assert torch.allclose(norm.train.x, ((expected[:3] - 0.1307) / 0.3081).reshape(3, -1))


def test_mnist_torchvision_layout_and_load_data(tmp_path):
    _write_mnist(tmp_path / "MNIST" / "raw", size=8)
    split = load_data(tmp_path)
    assert split.train.x.shape == (6, 1, 8, 8)
    assert split.name == "mnist"


def test_mnist_missing_file_message(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        mnist(tmp_path)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte" in msg and str(tmp_path) in msg and "yann.lecun" in msg


def test_mnist_corrupt_files(tmp_path):
    _write_mnist(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte"
    raw = bad.read_bytes()
    bad.write_bytes(raw[:-10])  # truncated
    with pytest.raises(DataError, match="truncated"):
        mnist(tmp_path)
    bad.write_bytes(b"\x12\x34\x56\x78" + raw[4:])  # bad magic
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)
    _write_mnist(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="different downloads"):
        mnist(tmp_path)


# --------------------------------------------------------------------------------------
# CIFAR-10 python batches


def _write_cifar(root: Path, n=3, seed=0, str_keys=False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        if str_keys:
            obj = {"data": data, "labels": labels, "batch_label": name}
        else:  # what the original Python 2 pickles unpickle to with encoding="bytes"
            obj = {b"data": data, b"labels": labels, b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
        batches[name] = (data, labels)
    return folder, batches


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar10_reads_batches(tmp_path, str_keys):
    _, batches = _write_cifar(tmp_path, str_keys=str_keys)
    split = cifar10(tmp_path, normalize=False)
    assert split.train.x.shape == (15, 3, 32, 32) and split.test.x.shape == (3, 3, 32, 32)
    first = torch.from_numpy(batches["data_batch_1"][0]).float().div(255).reshape(3, 3, 32, 32)
    assert torch.allclose(split.train.x[:3], first)
    labels = [v for i in range(1, 6) for v in batches[f"data_batch_{i}"][1]]
    assert split.train.y.tolist() == labels
    normed = load_data(tmp_path / "cifar-10-batches-py", num_train=4)
    assert len(normed.train) == 4 and normed.train.num_classes == 10
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    assert torch.allclose(normed.train.x[:3], (first - mean) / std, atol=1e-6)


def test_cifar10_missing_and_corrupt(tmp_path):
    folder, _ = _write_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError) as info:
        cifar10(tmp_path)
    assert "data_batch_3" in str(info.value) and "cs.toronto.edu" in str(info.value)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        cifar10(tmp_path)
    # A pickle that would run code is refused, not executed.
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Path("/")}, protocol=2))
    with pytest.raises(DataError, match="not allowed"):
        cifar10(tmp_path)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DataError, match="3072"):
        cifar10(tmp_path)


# --------------------------------------------------------------------------------------
# .pt / .npz files and dispatch


def test_pt_and_npz_files(tmp_path):
    x = torch.randn(12, 5, dtype=torch.float64)
    y = torch.arange(12) % 4
    torch.save({"x": x, "y": y, "x_test": x[:3], "y_test": y[:3]}, tmp_path / "d.pt")
    split = load_data(tmp_path / "d.pt")
    assert split.train.x.dtype == torch.float32 and torch.allclose(split.train.x, x.float())
    assert split.train.num_classes == 4 and len(split.test) == 3
    torch.save((x, y), tmp_path / "t.pt")
    tup = load_data(str(tmp_path / "t.pt"), dtype=torch.float64)
    assert tup.test is None and torch.equal(tup.train.x, x)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    npz = load_tensor_file(tmp_path / "d.npz")
    assert torch.equal(npz.train.y, y) and npz.test is None
    # Regression targets stay floating, without classes.
    np.savez(tmp_path / "r.npz", x=x.numpy(), y=np.ones((12, 2)))
    reg = load_data(tmp_path / "r.npz")
    assert reg.train.num_classes is None and reg.train.y.dtype == torch.float32


def test_load_data_errors(tmp_path):
    with pytest.raises(DataError, match="unknown data"):
        load_data("no-such-dataset")
    with pytest.raises(DataError, match="neither MNIST"):
        load_data(tmp_path)
    torch.save({"inputs": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="known layout"):
        load_data(tmp_path / "bad.pt")
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(ConfigurationError, match=r"\.npz"):
        load_data(tmp_path / "d.csv")
    with pytest.raises(ConfigurationError, match="bad options"):
        load_data("moons", num_classes=3)
    assert set(DATASETS) == {
        "digits",
        "digits-image",
        "mnist5k",
        "mnist5k-image",
        "mixture",
        "blobs",
        "moons",
        "circles",
        "text",
    }

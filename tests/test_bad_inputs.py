"""Bad inputs through the public Python API: each raises a specific error with a useful message.

Every case names the exception class (a :class:`hesslab.HesslabError` subclass) and a
fragment of the message that says where the problem is or what to do. The last section
holds "silent wrong number" regressions checked against dense float64 truth: inputs that
used to return plausible but wrong numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hesslab
from hesslab import (
    DenseOperator,
    Objective,
    eigenpairs,
    frobenius_sq,
    ggn,
    gradient_moment,
    hessian,
    logdet,
    logdet_slq,
    power_iteration,
    spectral_density,
    trace,
    wolkowicz_styan,
)
from hesslab.data import load_data
from hesslab.data.files import load_tensor_file
from hesslab.errors import (
    ConfigurationError,
    DataError,
    HesslabError,
    MemoryLimitError,
    NonDeterminismError,
    NonDifferentiableError,
    NonFiniteError,
    NonSymmetricError,
    ParameterSelectionError,
    SharedModuleError,
    TargetError,
)
from hesslab.landscape import interpolate, slice_1d
from hesslab.operators import HESSIAN_MODES, GradientMomentOperator, HessianOperator
from hesslab.operators.base import DeflatedOperator, FunctionOperator
from hesslab.reparam import rescale
from hesslab.train import fit
from hesslab.train.monitor import SpectrumMonitor
from hesslab.train.regularizers import HessianTracePenalty
from tests.reference import dense_hessian

D, C, N = 3, 4, 12


def _mlp(seed: int = 0, dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 5), nn.Tanh(), nn.Linear(5, C)).to(dtype).eval()


def _data(seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g, dtype=dtype), torch.randint(0, C, (N,), generator=g)


def _two_batches(x, y):
    return [(x[: N // 2], y[: N // 2]), (x[N // 2 :], y[N // 2 :])]


def _vec(op) -> torch.Tensor:
    return torch.randn(op.shape[0], generator=torch.Generator().manual_seed(3), dtype=op.dtype)


def _nonsymmetric() -> DenseOperator:
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    op = DenseOperator(A)
    assert op.symmetric is False
    return op


class _ArgmaxNet(nn.Module):
    """Outputs the one-hot of the arg-max: piecewise constant, no gradient reaches the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, C).double()

    def forward(self, x):
        return F.one_hot(self.lin(x).argmax(1), C).to(x.dtype)


class _HalfArgmax(nn.Module):
    """A differentiable head plus a second layer whose only use goes through an arg-max."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(D, C).double()
        self.b = nn.Linear(D, C).double()

    def forward(self, x):
        return self.a(x) + F.one_hot(self.b(x).argmax(1), C).to(x.dtype)


class _ExpNet(nn.Module):
    """``exp(50 x_0)``: finite on small inputs, inf in float64 once ``x_0 > ~14``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, C).double()

    def forward(self, x):
        return self.lin(x) * torch.exp(50 * x[:, :1])


def test_new_errors_keep_the_old_except_clauses_working():
    assert issubclass(TargetError, DataError) and issubclass(TargetError, ValueError)
    for cls in (NonDifferentiableError, NonSymmetricError, MemoryLimitError, SharedModuleError):
        assert issubclass(cls, ConfigurationError)
    assert issubclass(NonFiniteError, HesslabError) and not issubclass(NonFiniteError, RuntimeError)


# ------------------------------------------------------------------- NaN and inf
def test_nan_weight_is_named_not_called_nondeterminism():
    model = _mlp()
    with torch.no_grad():
        model[2].weight[1, 3] = float("nan")
    for check in (True, False):
        with pytest.raises(NonFiniteError, match=r"parameter '2\.weight'.*NaN/inf weights"):
            Objective(model, "ce", _data(), check_determinism=check)


def test_nan_buffer_is_named():
    model = nn.Sequential(nn.Linear(D, 5), nn.BatchNorm1d(5), nn.Linear(5, C)).double().eval()
    model[1].running_var[0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"buffer '1\.running_var'"):
        hessian(model, "ce", _data())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_bad_data_in_a_later_batch_is_reported_at_construction(value):
    x, y = _data()
    x[N - 1, 0] = value
    with pytest.raises(NonFiniteError, match="batch 1"):
        Objective(_mlp(), "ce", _two_batches(x, y))


def test_nan_loss_is_not_a_nondeterminism_error():
    x, y = _data()

    def nan_loss(outputs, targets):
        return F.cross_entropy(outputs, targets) * torch.tensor(float("nan"), dtype=x.dtype)

    with pytest.raises(NonFiniteError, match="the loss on batch 0") as info:
        Objective(_mlp(), nan_loss, (x, y))
    assert not isinstance(info.value, NonDeterminismError)


def test_a_model_that_overflows_on_a_later_batch():
    """Finite data, finite first batch; the model overflows on batch 1 only."""
    x, y = _data()
    x[:, 0] = x[:, 0].clamp(-1, 1)
    x[N - 1, 0] = 20.0  # exp(1000) = inf in float64
    obj = Objective(_ExpNet(), "ce", _two_batches(x, y))
    H = HessianOperator(obj)
    with pytest.raises(NonFiniteError, match=r"HessianOperator product on batch 1"):
        H @ _vec(H)
    with pytest.raises(NonFiniteError, match="batch 1"):
        eigenpairs(H, k=1)  # not a raw LAPACK error from the Ritz step
    with pytest.raises(NonFiniteError, match="the loss on batch 1"):
        obj.value()
    with pytest.raises(NonFiniteError, match="batch 1"):
        obj.gradient()
    with pytest.raises(NonFiniteError, match="GGNOperator product on batch 1"):
        ggn(obj) @ _vec(H)
    with pytest.raises(NonFiniteError, match="batch 1"):
        gradient_moment(obj) @ _vec(H)


def test_nan_parameters_through_at_and_landscape():
    obj = Objective(_mlp(), "ce", _data())
    theta = obj.flat_params().clone()
    theta[0] = float("nan")
    with pytest.raises(NonFiniteError, match="batch 0"):
        HessianOperator(obj.at(theta)) @ theta.nan_to_num()
    d = torch.full_like(theta, float("nan"))
    with pytest.raises(NonFiniteError, match="the loss on batch 0"):
        slice_1d(obj, d, [0.0, 1.0])
    bad = _mlp()
    with torch.no_grad():
        bad[0].bias.fill_(float("inf"))
    with pytest.raises(NonFiniteError):
        interpolate(obj, _mlp(), bad, [0.0, 0.5])


def test_monitor_reports_a_diverged_model():
    mon = SpectrumMonitor(_data(), "ce", every=1, quantities=("lambda_max",))
    model = _mlp()
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"parameter '0\.weight'"):
        mon.step(model, 0)


# ------------------------------------------------------------------------ targets
@pytest.mark.parametrize("bad_label", [C, 3 * C, -1])  # C: the first label out of range
@pytest.mark.parametrize("loss", ["ce", nn.CrossEntropyLoss(), F.cross_entropy, "mse"])
def test_labels_out_of_range(loss, bad_label):
    x, y = _data()
    y = y.clone()
    y[2] = bad_label
    with pytest.raises(TargetError, match=rf"labels must be in 0\.\.{C - 1} \(the model has {C}"):
        hessian(_mlp(), loss, (x, y))


def test_labels_out_of_range_in_a_later_batch_are_caught_by_every_operator():
    x, y = _data()
    y = y.clone()
    y[N - 1] = C + 5
    obj = Objective(_mlp(), "ce", _two_batches(x, y))  # construction checks batch 0 only
    v = _vec(HessianOperator(obj))
    for mode in ("auto", *HESSIAN_MODES):
        with pytest.raises(TargetError, match="labels must be in"):
            HessianOperator(obj, mode=mode) @ v
    with pytest.raises(TargetError, match="labels must be in"):
        ggn(obj) @ v
    for cache in (True, False):  # per-sample gradients run inside vmap
        with pytest.raises(TargetError, match="labels must be in"):
            GradientMomentOperator(obj, cache=cache) @ v
    with pytest.raises(TargetError):
        obj.value()


def test_ignore_index_is_allowed_and_other_labels_are_not():
    x, y = _data()
    y = y.clone()
    y[0] = -1
    H = hessian(_mlp(), nn.CrossEntropyLoss(ignore_index=-1), (x, y))
    assert torch.isfinite(H @ _vec(H)).all()
    y[1] = -2
    with pytest.raises(TargetError, match="min -2, max -2"):
        hessian(_mlp(), nn.CrossEntropyLoss(ignore_index=-1), (x, y))


@pytest.mark.parametrize(
    ("targets", "fragment"),
    [
        (torch.zeros(N, 1, dtype=torch.long), r"need class indices of shape \(12,\)"),
        (torch.zeros(N - 1, dtype=torch.long), r"need class indices of shape \(12,\)"),
        (torch.zeros(N, dtype=torch.float64), "floating targets of shape"),
    ],
)
def test_cross_entropy_target_shapes(targets, fragment):
    x, _ = _data()
    with pytest.raises(TargetError, match=fragment):
        hessian(_mlp(), "ce", (x, targets))


@pytest.mark.parametrize(
    ("out_dim", "target_shape", "fragment"),
    [
        (1, (N, 2), r"broadcast them to \(12, 2\)"),
        (3, (N,), "broadcast them to nothing"),
        (2, (2 * N,), "do not match outputs"),
        (3, (N, 3, 1, 1), "do not match outputs"),
    ],
)
def test_mse_target_shapes_never_broadcast(out_dim, target_shape, fragment):
    x, _ = _data()
    y = torch.randn(*target_shape, dtype=torch.float64)
    with pytest.raises(TargetError, match=fragment):
        hessian(nn.Linear(D, out_dim).double(), "mse", (x, y))


@pytest.mark.parametrize("criterion", [nn.L1Loss(), nn.HuberLoss(), nn.SmoothL1Loss()])
def test_elementwise_criteria_never_broadcast(criterion):
    x, _ = _data()
    y = torch.randn(N, 3, dtype=torch.float64)  # outputs [N, 1]: would broadcast to [N, 3]
    with pytest.raises(
        TargetError, match=rf"{type(criterion).__name__} targets of shape \(12, 3\)"
    ):
        hessian(nn.Linear(D, 1).double(), criterion, (x, y))


def test_nll_labels_out_of_range():
    x, y = _data()
    model = nn.Sequential(_mlp(), nn.LogSoftmax(dim=1))
    with pytest.raises(TargetError, match="labels must be in"):
        hessian(model, nn.NLLLoss(), (x, y + C))


def test_mse_one_hot_needs_matrix_outputs():
    x, y = _data()
    with pytest.raises(
        TargetError, match=r"one-hot encodes class labels and needs outputs \[N, C\]"
    ):
        hessian(nn.Sequential(nn.Linear(D, C), nn.Flatten(0)).double(), "mse", (x, y))


def test_training_losses_check_targets_too():
    x, y = _data()
    with pytest.raises(TargetError, match="labels must be in"):
        fit(_mlp(), (x, y + C), loss="ce", steps=1, lr=0.1)
    with pytest.raises(TargetError, match="do not match outputs"):
        fit(nn.Linear(D, 2).double(), (x, torch.randn(N, 1, dtype=x.dtype)), loss="mse", steps=1)
    with pytest.raises(TargetError, match="labels must be in"):
        HessianTracePenalty(num_probes=2)(_mlp(), (x, y + C), "ce")


def test_custom_loss_must_return_a_scalar():
    x, y = _data()
    with pytest.raises(ConfigurationError, match="reduction is 'none'"):
        Objective(_mlp(), nn.CrossEntropyLoss(reduction="none"), (x, y))
    with pytest.raises(TargetError, match="must be a floating-point scalar"):
        Objective(_mlp(), lambda o, t: F.cross_entropy(o, t, reduction="none"), (x, y))


def test_data_that_do_not_fit_the_model():
    x, y = _data()
    with pytest.raises(DataError, match=r"first batch \(tensors of shapes \[\(12, 5\)"):
        hessian(_mlp(), "ce", (torch.randn(N, 5, dtype=torch.float64), y))


# ---------------------------------------------------------- non-differentiable
@pytest.mark.parametrize("mode", ["auto", *HESSIAN_MODES])
def test_argmax_model_raises_in_every_hessian_mode(mode):
    with pytest.raises(NonDifferentiableError, match="gradient graph is disconnected"):
        hessian(_ArgmaxNet(), "ce", _data(), mode=mode)


@pytest.mark.parametrize("make", [ggn, gradient_moment])
def test_argmax_model_raises_for_other_operators(make):
    with pytest.raises(NonDifferentiableError, match="argmax"):
        make(_ArgmaxNet(), "ce", _data())


def test_a_disconnected_parameter_block():
    model = _HalfArgmax()
    with pytest.raises(NonDifferentiableError, match=r"\['b.weight', 'b.bias'\]"):
        hessian(model, "ce", _data(), params="b")
    # a is connected: the full objective is fine, and b's block is zero (b does not move the
    # loss), as for any unused parameter: blocks of a valid objective are not refused
    H = hessian(model, "ce", _data())
    block = H.restrict("b")
    assert torch.equal(block @ _vec(block), torch.zeros(block.shape[0], dtype=block.dtype))


class _RoundNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, C).double()

    def forward(self, x):
        return self.lin(x).round()


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_a_step_function_model_has_a_zero_gradient_graph(loss):
    with pytest.raises(NonDifferentiableError, match="derivative is exactly zero"):
        hessian(_RoundNet(), loss, _data())


def test_an_exactly_zero_gradient_at_an_interpolating_minimum_is_fine():
    """Targets equal to the outputs: the gradient is exactly zero, the Hessian (= GGN) is not."""
    x, _ = _data()
    model = nn.Linear(D, 2).double()
    with torch.no_grad():
        y = model(x)
    H = hessian(model, "mse", (x, y))
    assert float(H.objective.gradient().abs().max()) == 0.0
    truth = dense_hessian(model, F.mse_loss, [(x, y)])
    torch.testing.assert_close(H.to_dense(), truth, rtol=1e-10, atol=1e-12)


def test_mode_selection_does_not_swallow_a_diagnosed_error():
    """An error hesslab diagnosed inside a product (here a custom loss raising a
    NonDeterminismError, a RuntimeError) propagates; it is not a mode that cannot run."""
    x, y = _data()
    state = {"broken": False}

    @hesslab.batch_loss
    def loss(model_fn, batch):
        if state["broken"]:
            raise NonDeterminismError("the data source changed: reload it")
        return F.cross_entropy(model_fn(batch[0]), batch[1])

    H = hessian(_mlp(), loss, (x, y))
    state["broken"] = True
    with pytest.raises(NonDeterminismError, match="reload it"):
        H @ _vec(H)


# ---------------------------------------------------------------- selections
@pytest.mark.parametrize("params", [[], (), "nothing.*", "1"])
def test_empty_or_unmatched_selections(params):
    with pytest.raises(ParameterSelectionError, match=r"params is empty|matches no parameter"):
        hessian(_mlp(), "ce", _data(), params=params)


def test_empty_selection_everywhere():
    H = hessian(_mlp(), "ce", _data())
    with pytest.raises(ParameterSelectionError, match="params is empty"):
        H.restrict([])
    with pytest.raises(ParameterSelectionError, match="params is empty"):
        HessianTracePenalty(params=[], num_probes=2)(_mlp(), _data(), "ce")
    with pytest.raises(ParameterSelectionError, match="params is empty"):
        SpectrumMonitor(_data(), "ce", params=[]).step(_mlp(), 0)


# ---------------------------------------------------------------- symmetry
@pytest.mark.parametrize(
    "solver",
    [
        lambda A: eigenpairs(A, k=2),
        lambda A: power_iteration(A, k=1),
        lambda A: spectral_density(A, 3, 2),
        lambda A: trace(A, 8),
        lambda A: trace(A, 8, method="hutch++"),
        lambda A: trace(A, 8, method="xtrace"),
        lambda A: frobenius_sq(A, 8),
        lambda A: frobenius_sq(A, 8, method="hutchinson"),
        lambda A: hesslab.diagonal(A, 8, method="xdiag"),
        lambda A: wolkowicz_styan(A),
        lambda A: logdet(A, 2),
        lambda A: logdet_slq(A, 3, 2),
        lambda A: eigenpairs(DeflatedOperator(A, torch.eye(6, 1, dtype=A.dtype)), k=1),
        lambda A: eigenpairs(2.0 * A + A, k=1),
    ],
)
def test_symmetric_methods_refuse_nonsymmetric_operators(solver):
    with pytest.raises(NonSymmetricError, match="symmetric=False"):
        solver(_nonsymmetric())


def test_a_dense_matrix_with_nan_is_refused_before_lapack_sees_it():
    A = torch.eye(4, dtype=torch.float64)
    A[1, 2] = A[2, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="matrix of the DenseOperator"):
        eigenpairs(A, k=1)


def test_methods_valid_for_any_square_matrix_still_run():
    op = _nonsymmetric()
    exact = float(torch.trace(op.A))
    assert trace(op, 6, method="exact").value == pytest.approx(exact, rel=1e-12)
    est = hesslab.diagonal(op, 6, method="exact")
    assert torch.allclose(est.values, torch.diagonal(op.A))
    assert np.isfinite(trace(op, 40, method="hutchinson").value)
    # the flag can be overridden when the asymmetry is rounding error
    sym = DenseOperator(op.A + op.A.T, symmetric=True)
    assert eigenpairs(sym, k=1, tol=1e-10).values.numel() == 1


def _sym() -> DenseOperator:
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return DenseOperator(A + A.T)


_ARGUMENT_ERRORS = {
    "eigenpairs k=0": (lambda: eigenpairs(_sym(), k=0), ConfigurationError, "k must be"),
    "eigenpairs which": (lambda: eigenpairs(_sym(), 1, "middle"), ConfigurationError, "which"),
    "power k>P": (lambda: power_iteration(_sym(), k=7), ConfigurationError, r"\[1, P=6\]"),
    "trace budget": (lambda: trace(_sym(), 0), ConfigurationError, "num_matvecs"),
    "trace method": (lambda: trace(_sym(), 8, method="magic"), ConfigurationError, "unknown"),
    "density dist": (
        lambda: spectral_density(_sym(), 3, 2, distribution="cauchy"),
        ConfigurationError,
        "distribution",
    ),
    "logdet rank": (lambda: logdet(_sym(), 0), ConfigurationError, "rank must be"),
    "diagonal method": (
        lambda: hesslab.diagonal(_sym(), 8, method="magic"),
        ConfigurationError,
        "unknown method",
    ),
    "matvec shape": (
        lambda: _sym() @ torch.ones(5, dtype=torch.float64),
        hesslab.OperatorInputError,
        r"\[6\]",
    ),
    "matvec dtype": (lambda: _sym() @ torch.ones(6), hesslab.OperatorInputError, "float64"),
    "hessian mode": (
        lambda: hessian(_mlp(), "ce", _data(), mode="sideways"),
        ConfigurationError,
        "unknown Hessian mode",
    ),
    "moment kind": (
        lambda: gradient_moment(_mlp(), "ce", _data(), kind="third"),
        ConfigurationError,
        "kind must be",
    ),
    "minibatch size": (
        lambda: gradient_moment(_mlp(), "ce", _data(), kind="minibatch", batch_size=N + 1),
        ConfigurationError,
        "batch_size between 1 and N=12",
    ),
    "unknown loss": (
        lambda: Objective(_mlp(), "hinge", _data()),
        ConfigurationError,
        "unknown loss",
    ),
    "reduction": (
        lambda: Objective(_mlp(), "ce", _data(), reduction="max"),
        ConfigurationError,
        "reduction must be",
    ),
    "not a model": (lambda: Objective(lambda x: x, "ce", _data()), ConfigurationError, "nn.Module"),
    "train-mode dropout": (
        lambda: Objective(nn.Sequential(nn.Linear(D, C), nn.Dropout(0.5)).double(), "ce", _data()),
        NonDeterminismError,
        "dropout layer '1' is active",
    ),
    "ggn custom loss": (
        lambda: ggn(_mlp(), hesslab.batch_loss(lambda f, b: f(b[0]).sum()), _data()),
        ConfigurationError,
        "needs a criterion",
    ),
    "as_operator": (lambda: eigenpairs("A", k=1), ConfigurationError, "cannot use a str"),
}


@pytest.mark.parametrize("case", sorted(_ARGUMENT_ERRORS))
def test_argument_errors(case):
    fn, error, fragment = _ARGUMENT_ERRORS[case]
    with pytest.raises(error, match=fragment):
        fn()


# ---------------------------------------------------------------- to_dense
def test_to_dense_refuses_above_its_memory_limit():
    P = 91_000
    op = FunctionOperator(lambda V: V, P, torch.float32)
    with pytest.raises(MemoryLimitError, match=r"33124000000 bytes \(30\.8 GiB\).*max_bytes=None"):
        op.to_dense()
    H = hessian(_mlp(), "ce", _data())
    P = H.shape[0]
    with pytest.raises(MemoryLimitError, match=f"{P * P * 8} bytes"):
        H.to_dense(max_bytes=P * P * 8 - 1)
    assert torch.equal(H.to_dense(max_bytes=None), H.to_dense())


# ---------------------------------------------------------------- rescale
def test_rescale_refuses_a_linear_applied_twice():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    with pytest.raises(SharedModuleError, match=r"module '0' \(Linear\) is used again as '2'"):
        rescale(model, [2.0, 0.5])


def test_rescale_refuses_tied_parameters():
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    with pytest.raises(SharedModuleError, match="tied"):
        rescale(nn.Sequential(a, nn.ReLU(), b), [2.0, 0.5])


def test_rescale_refuses_a_sequential_with_its_own_forward():
    class Twice(nn.Sequential):
        def forward(self, x):
            return self[2](self[1](self[0](self[0](x) * 0 + x)))

    with pytest.raises(ConfigurationError, match="with its own forward"):
        rescale(Twice(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), [2.0, 0.5])


def test_rescale_checks_outputs_on_a_probe():
    """A forward hook changes what the Sequential computes: only the probe can tell."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    model[1].register_forward_hook(lambda m, i, o: o.square())
    with pytest.raises(ConfigurationError, match="differ from the model's by"):
        rescale(model, [3.0, 1 / 3.0])
    x = torch.randn(5, 4, dtype=torch.float64)
    plain = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    out = rescale(plain, [1e3, 1e-3], probe=x)
    assert torch.allclose(out(x), plain(x), rtol=1e-9, atol=1e-12)


# -------------------------------------------------------------- data and files
@pytest.mark.parametrize(
    ("device", "fragment"), [("bogus", "is not a device"), ("cuda:99", "is not available here")]
)
def test_bad_devices(device, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Objective(_mlp(), "ce", _data(), device=device)


def test_objective_data_errors():
    x, y = _data()
    with pytest.raises(DataError, match="single tensor"):
        Objective(_mlp(), "ce", x)
    with pytest.raises(DataError, match="single-use iterator"):
        Objective(_mlp(), "ce", ((x, y) for _ in range(2)))
    with pytest.raises(DataError, match="no data points"):
        Objective(_mlp(), "ce", [])


def test_data_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tensor_file(tmp_path / "missing.npz")
    bad = tmp_path / "truncated.npz"
    np.savez(bad, x=np.zeros((4, 3)), y=np.zeros(4, dtype=np.int64))
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=r"not an \.npz"):
        load_tensor_file(bad)
    with pytest.raises(DataError, match="not a bundled name"):
        load_data("no-such-dataset")


# ------------------------------------------------ silent wrong numbers (dense truth)
def test_mse_targets_of_shape_n_for_outputs_n1_give_the_true_hessian():
    """Targets ``[N]`` for outputs ``[N, 1]`` used to broadcast to ``[N, N]`` (42-136% off)."""
    x, _ = _data()
    model = nn.Sequential(nn.Linear(D, 4), nn.Tanh(), nn.Linear(4, 1)).double().eval()
    y = torch.randn(N, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    H = hessian(model, "mse", (x, y)).to_dense()
    truth = dense_hessian(model, F.mse_loss, [(x, y[:, None])])
    torch.testing.assert_close(H, truth, rtol=1e-10, atol=1e-12)
    wrong = dense_hessian(model, lambda o, t: (o - t).square().mean(), [(x, y)])
    assert float((wrong - truth).norm() / truth.norm()) > 0.1  # the broadcast is far off


def test_argmax_model_no_longer_reports_a_zero_spectrum():
    """The forward-over-reverse product of an arg-max model is zero: an eigenvalue 0.0 was
    returned; dense truth (autograd through the arg-max) has no gradient at all."""
    x, y = _data()
    model = _ArgmaxNet()
    loss = F.cross_entropy(model(x), y)
    assert not loss.requires_grad  # the truth: no derivative exists through the arg-max
    with pytest.raises(NonDifferentiableError):
        eigenpairs(hessian(model, "ce", (x, y), mode="forward-over-reverse"), k=1)

"""The automatic product mode of HessianOperator: timing, reuse of its result, process memo."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hesslab
from hesslab import Objective
from hesslab.operators import HessianOperator, clear_mode_memo

from .models import make
from .reference import dense_hessian


@pytest.fixture(autouse=True)
def _fresh_memo():
    clear_mode_memo()
    yield
    clear_mode_memo()


def _objective(params=None):
    model, x, y, _ = make("tanh_mlp")
    return model, Objective(model, "ce", (x, y), params)


class _Applies:
    """Counts top-level HessianOperator._apply calls per mode (the "columns" block mode
    applies the single mode column by column inside one call: those are not counted, so
    the counts do not depend on which mode the timing chose)."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        self._depth = 0
        inner = HessianOperator._apply

        def counted(op, mode, batch, Vd):
            if self._depth == 0:
                self.calls.append(mode)
            self._depth += 1
            try:
                return inner(op, mode, batch, Vd)
            finally:
                self._depth -= 1

        monkeypatch.setattr(HessianOperator, "_apply", counted)


def test_first_product_is_the_chosen_modes_timing_run(monkeypatch):
    _, obj = _objective()
    H = HessianOperator(obj)
    v = torch.randn(H.shape[0], 1, generator=torch.Generator().manual_seed(0), dtype=H.dtype)
    applies = _Applies(monkeypatch)
    inside = {}
    choose = HessianOperator._choose

    def counted_choose(op, *a):
        n0 = len(applies.calls)
        out = choose(op, *a)
        inside["n"] = len(applies.calls) - n0
        return out

    monkeypatch.setattr(HessianOperator, "_choose", counted_choose)
    first = H.matmat(v)
    timed = len(applies.calls)
    assert timed == inside["n"]  # no application after the timing: its run is the product
    chosen = H.chosen_mode("single")
    assert chosen in hesslab.operators.HESSIAN_MODES
    # every application during the first product was a timing run: each candidate at
    # most twice (a second run only when within 1.5x of the best), the chosen one's last
    # run is the product
    assert 1 <= applies.calls.count(chosen) <= 2
    assert all(applies.calls.count(m) <= 2 for m in set(applies.calls))
    # every candidate was timed on the whole batch, or dropped by the slice screen (or
    # the gradient bound) with its reason
    skipped = {m for m, why in H.mode_report["single"]["errors"].items() if "not timed" in why}
    assert set(applies.calls) | skipped == set(H._candidates())
    assert not set(applies.calls) & skipped
    second = H.matmat(v)
    assert applies.calls[timed:] == [chosen]  # later products: the chosen mode, once each
    assert torch.equal(first, second)  # the reused timing run is the chosen mode's product
    ref = dense_hessian(obj.model, torch.nn.functional.cross_entropy, [obj._data[0]])
    torch.testing.assert_close(first[:, 0], ref @ v[:, 0], rtol=1e-10, atol=1e-12)


def test_wide_block_is_not_taken_from_the_four_column_timing_run(monkeypatch):
    _, obj = _objective()
    H = HessianOperator(obj)
    V = torch.randn(H.shape[0], 7, generator=torch.Generator().manual_seed(1), dtype=H.dtype)
    out = H.matmat(V)
    ref = HessianOperator(obj, mode="reverse-over-reverse").matmat(V)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(H.matmat(V), out)


def test_a_second_operator_on_the_same_structure_reuses_the_choice(monkeypatch):
    model, obj = _objective()
    H1 = HessianOperator(obj)
    v = torch.randn(H1.shape[0], 1, generator=torch.Generator().manual_seed(2), dtype=H1.dtype)
    V = torch.randn(H1.shape[0], 5, generator=torch.Generator().manual_seed(3), dtype=H1.dtype)
    p1, P1 = H1.matmat(v), H1.matmat(V)
    saved = {k: t.clone() for k, t in model.state_dict().items()}
    # new weights, same architecture and data shapes (e.g. the next monitor step)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
    x, y = obj._data[0]
    H2 = HessianOperator(Objective(model, "ce", (x, y)))
    applies = _Applies(monkeypatch)
    H2.matmat(v)
    H2.matmat(V)
    single, block = H1.chosen_mode("single"), H1.chosen_mode("block")
    assert H2.chosen_mode("single") == single and H2.chosen_mode("block") == block
    assert H2.mode_report["single"]["reused"] and H2.mode_report["block"]["reused"]
    timings = H1.mode_report["single"]["seconds_per_column"]
    assert H2.mode_report["single"]["seconds_per_column"] == timings
    # no timing: one top-level application per product (the "columns" block mode, the
    # fastest for blocks on some machines and loads, applies the single mode per column
    # inside its one call, which _Applies does not count)
    assert applies.calls == [single, block]
    # the old weights again: the reused modes give the first operator's numbers exactly
    model.load_state_dict(saved)
    H3 = HessianOperator(Objective(model, "ce", (x, y)))
    assert torch.equal(H3.matmat(v), p1)
    assert torch.equal(H3.matmat(V), P1)


def test_other_structures_time_again(monkeypatch):
    model, obj = _objective()
    v = torch.randn(obj.space.size, 1, dtype=obj.space.dtype)
    HessianOperator(obj).matmat(v)
    # a parameter subset: another key
    first = obj.space.names[0]
    H_sub = HessianOperator(obj.restrict([first]))
    H_sub.matmat(torch.randn(H_sub.shape[0], 1, dtype=H_sub.dtype))
    assert "reused" not in H_sub.mode_report["single"]
    # another batch shape: another key
    x, y = obj._data[0]
    H_half = HessianOperator(Objective(model, "ce", (x[:5], y[:5])))
    H_half.matmat(v)
    assert "reused" not in H_half.mode_report["single"]
    # the same again: reused; after clear_mode_memo(): timed
    H_again = HessianOperator(Objective(model, "ce", (x[:5], y[:5])))
    H_again.matmat(v)
    assert H_again.mode_report["single"]["reused"]
    clear_mode_memo()
    H_fresh = HessianOperator(Objective(model, "ce", (x[:5], y[:5])))
    H_fresh.matmat(v)
    assert "reused" not in H_fresh.mode_report["single"]


def test_a_remembered_mode_that_fails_is_timed_again(monkeypatch):
    model, obj = _objective()
    v = torch.randn(obj.space.size, 1, dtype=obj.space.dtype)
    H1 = HessianOperator(obj)
    H1.matmat(v)
    chosen = H1.chosen_mode("single")
    inner = HessianOperator._apply
    fails = {"n": 0}

    def broken(op, mode, batch, Vd):
        if mode == chosen and fails["n"] == 0:
            fails["n"] += 1
            raise RuntimeError("no vmap rule")
        return inner(op, mode, batch, Vd)

    monkeypatch.setattr(HessianOperator, "_apply", broken)
    x, y = obj._data[0]
    H2 = HessianOperator(Objective(model, "ce", (x, y)))
    out = H2.matmat(v)
    assert fails["n"] == 1
    assert "reused" not in H2.mode_report["single"]  # timed afresh
    torch.testing.assert_close(out, H1.matmat(v), rtol=1e-10, atol=1e-12)


def test_restricted_blocks_share_choices_across_steps():
    """Per-layer blocks of two operators on the same architecture: the second reuses all."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(20, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    for step in range(2):
        H = hesslab.hessian(model, "ce", (x, y))
        for name, B in H.blocks().items():
            B.matmat(torch.ones(B.shape[0], 1, dtype=B.dtype))
            assert bool(B.mode_report["single"].get("reused")) == (step == 1), name


def test_columns_candidate_takes_the_single_products_time(monkeypatch):
    _, obj = _objective()
    H = HessianOperator(obj)
    applies = _Applies(monkeypatch)
    V = torch.randn(H.shape[0], 6, generator=torch.Generator().manual_seed(4), dtype=H.dtype)
    out = H.matmat(V)
    single = H.mode_report["single"]
    block = H.mode_report["block"]["seconds_per_column"]
    assert block["columns"] == single["seconds_per_column"][single["mode"]]
    # "columns" ran at most once: for the product itself, if it won
    assert applies.calls.count("columns") == (H.chosen_mode("block") == "columns")
    ref = HessianOperator(obj, mode="reverse-over-reverse").matmat(V)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


def test_block_choice_when_the_single_mode_was_set_without_timings():
    _, obj = _objective()
    H = HessianOperator(obj)
    H.mode_report["single"] = {"mode": "reverse-over-reverse"}  # set by hand, no timings
    V = torch.randn(H.shape[0], 3, generator=torch.Generator().manual_seed(5), dtype=H.dtype)
    out = H.matmat(V)
    assert "columns" in H.mode_report["block"]["seconds_per_column"]  # timed this time
    ref = HessianOperator(obj, mode="reverse-over-reverse").matmat(V)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


def test_mode_reports_do_not_share_state_with_the_memo():
    model, obj = _objective()
    v = torch.randn(obj.space.size, 1, dtype=obj.space.dtype)
    H1 = HessianOperator(obj)
    H1.matmat(v)
    H1.mode_report["single"]["seconds_per_column"].clear()  # a caller edits its report
    x, y = obj._data[0]
    H2 = HessianOperator(Objective(model, "ce", (x, y)))
    H2.matmat(v)
    assert H2.mode_report["single"]["reused"]
    assert H2.mode_report["single"]["seconds_per_column"]  # the memo kept its own copy


def test_the_slice_screen_drops_a_far_slower_mode_and_keeps_the_products_exact(monkeypatch):
    _, obj = _objective()
    H = HessianOperator(obj)
    slow = HessianOperator._fwd_rev

    def slowed(op, batch, Vd):
        out = slow(op, batch, Vd)
        import time

        time.sleep(0.05)  # forward-over-reverse made far slower than the cached mode
        return out

    monkeypatch.setattr(HessianOperator, "_fwd_rev", slowed)
    applies = _Applies(monkeypatch)
    v = torch.randn(H.shape[0], 1, generator=torch.Generator().manual_seed(4), dtype=H.dtype)
    out = H.matmat(v)
    report = H.mode_report["single"]
    assert H.chosen_mode("single") == "reverse-over-reverse-cached"
    assert "slice" in report["errors"]["forward-over-reverse"]
    assert applies.calls == ["reverse-over-reverse-cached"]  # never run on the whole batch
    ref = dense_hessian(obj.model, torch.nn.functional.cross_entropy, [obj._data[0]])
    torch.testing.assert_close(out[:, 0], ref @ v[:, 0], rtol=1e-10, atol=1e-12)


def test_the_slice_screen_keeps_close_modes_for_the_full_timing(monkeypatch):
    import time

    _, obj = _objective()
    H = HessianOperator(obj)
    for name in ("_fwd_rev", "_rev_rev"):  # both modes dominated by the same 20 ms
        inner = getattr(HessianOperator, name)

        def slowed(op, *a, _inner=inner, **k):
            time.sleep(0.02)
            return _inner(op, *a, **k)

        monkeypatch.setattr(HessianOperator, name, slowed)
    x, y = obj._data[0]
    V = {n: t.unsqueeze(0) for n, t in obj.theta.items()}
    H._batch_index = 0
    assert H._screen(obj._prepare((x, y)), V) == {}  # within 2x: both go to the full timing
    assert H._screen(obj._prepare((x[:1], y[:1])), V) == {}  # one row: no slice

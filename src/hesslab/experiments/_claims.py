"""One verdict rule for every reproduction's claims: a statistic over seeds and a threshold.

Every claim an experiment reports is decided by :func:`decide` (samples over seeds or
runs) or :func:`decide_estimate` (an estimate with its standard error), which return a
:class:`Verdict`: ``holds`` is ``True`` / ``False`` / ``None`` (undecided) and ``text``
states the statistic, the ``±`` it shows (always the standard error of the mean) and
the rule. :func:`add_claim` writes it into a run folder.

Rules (``x`` is the per-seed quantity the claim is about, ``n`` its finite samples):

* ``"paired"``: ``x = a − b`` seed by seed; ``t = (mean x − margin) / se(x)``,
  ``se = sd / √n``. Holds when ``t ≥ z`` (the claimed direction beyond ``z`` standard
  errors), does not hold when ``t ≤ −z``, undecided in between.
* ``"welch"``: independent samples; ``t = (mean a − mean b − margin) / √(s²ₐ/nₐ + s²_b/n_b)``,
  same thresholds.
* ``"mean"``: one sample (``b`` is ``None``): ``t = (mean a − margin) / se(a)``.
* ``"fraction"``: the share of seeds with ``x > margin`` (``x = a − b``, or ``a``):
  holds when ``≥ 2/3`` of the seeds agree, does not hold when ``≤ 1/3`` do.
* ``"equal"``: equivalence: holds when ``|mean x| ≤ tol + z·se``, else does not hold.

Fewer than ``min_seeds`` (3) finite samples give *undecided*, never a verdict from one
seed. Non-finite samples (diverged runs) are dropped and their count is stated.
``direction="less"`` flips the sign of the claim (``x < −margin``).

Reference: Welch (1947), "The generalization of 'Student's' problem when several
different population variances are involved", Biometrika 34.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hesslab.errors import ConfigurationError

__all__ = [
    "Verdict",
    "add_claim",
    "all_of",
    "claims_by_key",
    "decide",
    "decide_equal",
    "decide_estimate",
    "record",
    "verdict_word",
]

RULES = ("paired", "welch", "mean", "fraction", "equal")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim's rule.

    Attributes:
        holds: ``True`` (holds), ``False`` (does not hold), ``None`` (undecided).
        rule: the rule in words, e.g. ``"paired mean difference ≥ 2 s.e., ≥ 3 seeds"``.
        estimate: the mean difference / mean / share of agreeing seeds.
        stderr: standard error of ``estimate`` (``nan`` for ``"fraction"``).
        statistic: ``t`` (estimate minus margin over stderr, signed towards the claim) or
            the agreeing share for ``"fraction"``.
        n: finite samples used (per group for ``"welch"``: the smaller one).
        agree: seeds whose own value points the claimed way (``-1`` when not per-seed).
        excluded: non-finite samples dropped.
        text: ``estimate ± s.e. (n, agree/n) → verdict`` for the claims table.
    """

    holds: bool | None
    rule: str
    estimate: float
    stderr: float
    statistic: float
    n: int
    agree: int
    excluded: int
    text: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def verdict_word(holds: bool | None) -> str:
    """``"holds"``, ``"does not hold"`` or ``"undecided"``."""
    return "undecided" if holds is None else ("holds" if holds else "does not hold")


def _finite(x: Any) -> tuple[np.ndarray, int]:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    ok = np.isfinite(arr)
    return arr[ok], int((~ok).sum())


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def _three_way(t: float, z: float) -> bool | None:
    if math.isnan(t):
        return None
    return True if t >= z else (False if t <= -z else None)


def decide_estimate(
    estimate: float,
    stderr: float,
    n: int,
    *,
    direction: str = "greater",
    z: float = 2.0,
    margin: float = 0.0,
    min_seeds: int = 3,
    agree: int = -1,
    excluded: int = 0,
    what: str = "mean",
) -> Verdict:
    """Verdict on ``estimate ± stderr`` (from ``n`` samples) against ``margin``.

    Holds when ``s·(estimate − s·margin) ≥ z·stderr`` with ``s = +1`` for
    ``direction="greater"`` and ``−1`` for ``"less"``; does not hold when the same
    quantity is ``≤ −z·stderr``; undecided in between or with ``n < min_seeds``.
    """
    sign = _sign(direction)
    dev = sign * estimate - margin
    if stderr == 0.0:
        t = math.inf if dev > 0 else (-math.inf if dev < 0 else math.nan)
    else:
        t = dev / stderr if math.isfinite(stderr) else math.nan
    holds = _three_way(t, z) if n >= min_seeds else None
    op = ">" if sign > 0 else "<"
    rule = f"{what} {op} {_num(sign * margin)} by ≥ {z:g} s.e., ≥ {min_seeds} samples"
    text = _text(estimate, stderr, n, agree, excluded, t, holds, rule)
    return Verdict(holds, rule, float(estimate), float(stderr), float(t), n, agree, excluded, text)


def _num(x: float) -> str:
    return "0" if x == 0 else f"{x:.3g}"


def _sign(direction: str) -> int:
    if direction not in ("greater", "less"):
        raise ConfigurationError(f"direction must be 'greater' or 'less', got {direction!r}")
    return 1 if direction == "greater" else -1


def _text(est, se, n, agree, excluded, t, holds, rule) -> str:
    parts = [f"{est:+.4g} ± {se:.2g} (± = s.e., n = {n}"]
    if agree >= 0:
        parts.append(f", {agree}/{n} agree")
    if excluded:
        parts.append(f", {excluded} non-finite excluded")
    stat = "" if math.isnan(t) else f"; t = {t:+.2f}"
    return "".join(parts) + f"){stat} → {verdict_word(holds)} [{rule}]"


def decide(
    samples_a: Sequence[float] | np.ndarray,
    samples_b: Sequence[float] | np.ndarray | None = None,
    *,
    rule: str = "paired",
    direction: str = "greater",
    z: float = 2.0,
    margin: float = 0.0,
    min_seeds: int = 3,
    tol: float = 0.0,
) -> Verdict:
    """Decide "``a`` exceeds ``b``" (or "``a`` exceeds ``margin``") over seeds.

    Args:
        samples_a: per-seed (or per-run) values of the first quantity.
        samples_b: per-seed values of the compared quantity (same seeds for
            ``"paired"``), or ``None`` for the one-sample rules.
        rule: ``"paired"``, ``"welch"``, ``"mean"``, ``"fraction"`` or ``"equal"`` (module
            docstring).
        direction: ``"greater"`` (claim ``x > margin``) or ``"less"`` (``x < −margin``).
        z: standard errors the claimed direction must clear.
        margin: the claimed effect must exceed this (same units as ``x``).
        min_seeds: fewer finite samples give *undecided*.
        tol: the equivalence tolerance of ``"equal"``.

    Returns:
        The :class:`Verdict`.

    Raises:
        ConfigurationError: an unknown rule or direction, or paired samples of unequal size.
    """
    if rule not in RULES:
        raise ConfigurationError(f"rule must be one of {RULES}, got {rule!r}")
    sign = _sign(direction)
    if rule == "welch":
        return _welch(samples_a, samples_b, sign, direction, z, margin, min_seeds)
    a = np.asarray(samples_a, dtype=np.float64).reshape(-1)
    if samples_b is not None:
        b = np.asarray(samples_b, dtype=np.float64).reshape(-1)
        if b.size not in (1, a.size):
            raise ConfigurationError(f"paired samples differ in size: {a.size} vs {b.size}")
        a = a - b
    x, excluded = _finite(a)
    agree = int((sign * x > margin).sum())
    what = "paired mean difference" if samples_b is not None else "mean"
    if rule == "fraction":
        return _fraction(x, agree, excluded, min_seeds, sign, margin)
    est = float(x.mean()) if x.size else math.nan
    se = _se(x)
    if rule == "equal":
        return _equal(x, est, se, agree, excluded, z, tol, min_seeds, what)
    return decide_estimate(
        est, se, x.size, direction=direction, z=z, margin=margin, min_seeds=min_seeds,
        agree=agree, excluded=excluded, what=what,
    )  # fmt: skip


def _welch(a_in, b_in, sign, direction, z, margin, min_seeds) -> Verdict:
    if b_in is None:
        raise ConfigurationError("rule 'welch' compares two samples: give samples_b")
    a, ea = _finite(a_in)
    b, eb = _finite(b_in)
    est = float(a.mean() - b.mean()) if a.size and b.size else math.nan
    va = a.var(ddof=1) / a.size if a.size > 1 else math.nan
    vb = b.var(ddof=1) / b.size if b.size > 1 else math.nan
    se = float(math.sqrt(va + vb))
    return decide_estimate(
        est, se, min(a.size, b.size), direction=direction, z=z, margin=margin,
        min_seeds=min_seeds, excluded=ea + eb, what="Welch mean difference",
    )  # fmt: skip


def _fraction(x, agree, excluded, min_seeds, sign, margin) -> Verdict:
    n = x.size
    share = agree / n if n else math.nan
    holds: bool | None = None
    if n >= min_seeds:
        holds = True if share >= 2 / 3 else (False if share <= 1 / 3 else None)
    op = ">" if sign > 0 else "<"
    rule = f"≥ 2/3 of ≥ {min_seeds} samples with x {op} {_num(sign * margin)} (≤ 1/3: no)"
    est = float(x.mean()) if n else math.nan
    text = (
        f"{agree}/{n} agree (mean x = {est:+.4g}"
        + (f", {excluded} non-finite excluded" if excluded else "")
        + f") → {verdict_word(holds)} [{rule}]"
    )
    return Verdict(holds, rule, float(share), math.nan, float(share), n, agree, excluded, text)


def _equal(x, est, se, agree, excluded, z, tol, min_seeds, what) -> Verdict:
    return decide_equal(est, se, x.size, tol=tol, z=z, min_seeds=min_seeds, excluded=excluded,
                        what=what)  # fmt: skip


def decide_equal(
    estimate: float,
    stderr: float,
    n: int,
    *,
    tol: float = 0.0,
    z: float = 2.0,
    min_seeds: int = 3,
    excluded: int = 0,
    what: str = "mean",
) -> Verdict:
    """Equivalence: holds when ``|estimate| ≤ tol + z·stderr``, else does not hold."""
    holds: bool | None = None
    bound = tol + z * (stderr if math.isfinite(stderr) else 0.0)
    if n >= min_seeds and math.isfinite(estimate):
        holds = abs(estimate) <= bound
    rule = f"|{what}| ≤ {tol:.3g} + {z:g} s.e., ≥ {min_seeds} samples"
    text = _text(estimate, stderr, n, -1, excluded, math.nan, holds, rule)
    stat = abs(estimate) / bound if bound else math.nan
    return Verdict(holds, rule, float(estimate), float(stderr), stat, n, -1, excluded, text)


def all_of(*verdicts: Verdict) -> bool | None:
    """A conjunction of claims: holds when all hold, does not hold when any does not."""
    marks = [v.holds for v in verdicts]
    if any(m is False for m in marks):
        return False
    return True if all(m is True for m in marks) else None


def add_claim(run_dir: Any, section: str, claim: str, verdict: Verdict, measured: str = "") -> None:
    """Write ``claim`` with ``measured`` and the verdict's statistic into ``run_dir``.

    The claims table shows ``"<measured>; <verdict.text>"`` and the verdict.
    """
    record(run_dir, section, claim, measured, verdict)


def claims_by_key(run_dir: Any) -> dict[str, dict[str, bool | None]]:
    """``{section: {claim: holds}}`` of every claim in ``run_dir``: the one claims schema.

    Keyed by the section and the claim (JSON-ready), so two claims of one section are two
    entries and neither can replace the other (:func:`record` refuses a repeated pair).
    """
    out: dict[str, dict[str, bool | None]] = {}
    for c in run_dir.claims:
        out.setdefault(c["section"], {})[c["claim"]] = c["holds"]
    return out


def record(
    run_dir: Any,
    section: str,
    claim: str,
    measured: Any,
    verdict: Verdict | bool | None,
) -> bool | None:
    """Write one claim into ``run_dir``; every experiment's claims pass through here.

    Same arguments as :meth:`hesslab.report.run.RunDir.add_claim`, with a
    :class:`Verdict` allowed as ``verdict``.

    Args:
        run_dir: the run folder.
        section: the report section the claim belongs to.
        claim: the paper's claim in words; unique within ``section``.
        measured: what the run measured, in words (``""``: the verdict's text alone).
        verdict: a :class:`Verdict` (its statistic is appended to ``measured``), or the
            outcome of an experiment-specific rule stated in ``measured``: ``True`` /
            ``False`` / ``None`` (undecided).

    Returns:
        Whether the claim holds (``None``: undecided).

    Raises:
        ConfigurationError: ``(section, claim)`` was recorded before in this run (one
            verdict would silently replace the other).
    """
    if str(claim) in claims_by_key(run_dir).get(str(section), {}):
        raise ConfigurationError(
            f"claim {claim!r} of section {section!r} was already recorded in this run; "
            "give each claim of a section its own wording"
        )
    if isinstance(verdict, Verdict):
        text = f"{measured}; {verdict.text}" if measured != "" else verdict.text
        holds = verdict.holds
    else:
        text, holds = measured, verdict
    run_dir.add_claim(section, claim, text, holds)
    return holds

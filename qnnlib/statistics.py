"""The statistics of a grid of seeded runs: summaries and two-sided comparisons.

Introduced with the experiment grids (`qnnlib.experiments`, notebook 01) and used by
every notebook that states a conclusion: the project's evidence rule is at least
`MIN_SEEDS` seeds per side, a mean +- sample standard deviation, and the Welch t
interval of a difference.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["summarize", "format_mean_std", "t_quantile", "MIN_SEEDS", "Comparison", "compare"]


def summarize(runs: pd.DataFrame, metric: str = "test_error",
              by: str | Sequence[str] = "name") -> pd.DataFrame:
    """Mean, sample standard deviation (ddof=1; 0 for a single seed), min, max and count
    of `metric` per group, groups in order of first appearance."""
    by = [by] if isinstance(by, str) else list(by)
    grouped = runs.groupby(by, sort=False)[metric]
    table = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()
    table["std"] = table["std"].fillna(0.0)
    return table.rename(columns={"count": "n"})


def format_mean_std(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    """'1.23 ± 0.04' (values times `scale`, e.g. error fractions as percent)."""
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def t_quantile(probability: float, df: float) -> float:
    """Quantile of Student's t distribution with `df` degrees of freedom (bisection on the
    numerically integrated density: accurate to ~1e-6, enough for confidence intervals)."""
    if not 0.5 <= probability < 1 or df <= 0:
        raise ValueError(f"need 0.5 <= probability < 1 and df > 0, got {probability}, {df}")

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 20001)
        log_density = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
                       - (df + 1) / 2 * np.log1p(grid ** 2 / df))
        return 0.5 + float(np.trapezoid(np.exp(log_density), grid))

    low, high = 0.0, 1.0
    while cdf(high) < probability:
        low, high = high, 2 * high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < probability else (low, middle)
    return (low + high) / 2


MIN_SEEDS = 3   # the project's evidence rule: a conclusion rests on at least this many seeds per side


@dataclass(frozen=True)
class Comparison:
    """Mean of `a` minus mean of `b` over seeds, with Welch's 95 % confidence interval.

    verdict: "single run" (a side has fewer than 2 seeds: no interval), "lower" or
    "higher" (the interval excludes 0), else "no clear difference".
    conclusion(): the verdict a notebook may state, "single run" below `MIN_SEEDS` seeds.
    record(): the JSON-ready form the notebooks' metrics keep.
    within(tolerance): the whole interval lies inside [-tolerance, +tolerance].
    """

    difference: float
    low: float
    high: float
    n_a: int
    n_b: int

    @property
    def verdict(self) -> str:
        if min(self.n_a, self.n_b) < 2:
            return "single run"
        if self.high < 0:
            return "lower"
        if self.low > 0:
            return "higher"
        return "no clear difference"

    def conclusion(self, min_seeds: int = MIN_SEEDS) -> str:
        """`verdict`, or "single run" when a side has fewer than `min_seeds` seeds: then no
        conclusion is drawn, whatever the interval says."""
        return "single run" if min(self.n_a, self.n_b) < min_seeds else self.verdict

    def record(self, scale: float = 100.0, min_seeds: int = MIN_SEEDS) -> dict:
        """Difference and interval times `scale` (100: error fractions as percentage points;
        1: already in points), None where undefined; seeds per side; `conclusion`."""
        def points(value: float):
            return round(value * scale, 4) if math.isfinite(value) else None

        return {"difference_pct": points(self.difference), "ci_low_pct": points(self.low),
                "ci_high_pct": points(self.high), "n_a": self.n_a, "n_b": self.n_b,
                "verdict": self.conclusion(min_seeds)}

    def within(self, tolerance: float) -> bool:
        return min(self.n_a, self.n_b) >= 2 and -tolerance <= self.low and self.high <= tolerance

    def describe(self, scale: float = 100.0, unit: str = " points") -> str:
        """'+0.31 points (95 % CI -0.05 to +0.67, 3 vs 3 seeds)'."""
        text = f"{self.difference * scale:+.2f}{unit}"
        if min(self.n_a, self.n_b) < 2:
            return f"{text} (single run)"
        return (f"{text} (95 % CI {self.low * scale:+.2f} to {self.high * scale:+.2f}, "
                f"{self.n_a} vs {self.n_b} seeds)")


def compare(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Compare two groups of per-seed results (e.g. test errors) with Welch's t interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or not (a.size and b.size):
        raise ValueError("compare needs non-empty, finite results on both sides")
    difference = float(a.mean() - b.mean())
    if min(a.size, b.size) < 2:
        return Comparison(difference, math.nan, math.nan, a.size, b.size)
    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    spread = math.sqrt(var_a + var_b)
    if spread == 0:
        return Comparison(difference, difference, difference, a.size, b.size)
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (a.size - 1) + var_b ** 2 / (b.size - 1))
    half = t_quantile(0.5 + confidence / 2, df) * spread
    return Comparison(difference, difference - half, difference + half, a.size, b.size)

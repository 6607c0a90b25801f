"""Many comparisons at once: Welch p-values and Holm's step-down correction.

A notebook that compares m pairs of variants and calls every 95 % interval that excludes 0
a difference will, even when no variant differs at all, report at least one "difference"
with probability 1 - 0.95^m if the comparisons are independent (m = 19: 62 %), and up to
min(1, 0.05 m) if they are not. Holm's procedure (S. Holm, "A simple
sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70, 1979) keeps
the probability of *any* false "difference" in a family of m comparisons (the family-wise
error rate) at most alpha, whatever their dependence, and rejects at least as much as
Bonferroni's alpha/m test.

`welch_p_value` gives each comparison's two-sided p of Welch's t test (the test dual to
`qnnlib.statistics.compare`'s interval: p < 1 - confidence exactly when the interval
excludes 0), `holm_adjusted` and `holm` correct a family of them, and `holm_family` does
both for a family of (a, b) samples: the verdicts the notebooks state. Introduced by
notebook 04 (5 shift-ablation and 19 bit-width-sweep comparisons; issue 21 item 8).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .statistics import MIN_SEEDS, Comparison, compare

__all__ = ["student_t_two_sided", "welch_p_value", "holm_adjusted", "holm", "HolmComparison", "holm_family"]


def student_t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` >= 1 degrees of freedom, by numerical
    integration of the density (the approach of `statistics.t_quantile`, without scipy).

    With t = sqrt(df) tan(theta) the density c (1 + t^2/df)^(-(df+1)/2) dt becomes
    c sqrt(df) cos^(df-1)(theta) dtheta, so with phi = pi/2 - theta

        P(|T| >= |t|) = 2 G((df+1)/2) / (sqrt(pi) G(df/2)) * int_0^phi0 sin^(df-1)(phi) dphi,
        phi0 = arctan(sqrt(df) / |t|)

    (df = 1: 1 - 2 arctan(|t|) / pi, the Cauchy tail). The substitution phi = u^2 makes the
    integrand 2u sin^(df-1)(u^2) smooth at 0; the trapezoid rule on 200001 points is
    accurate to ~1e-8 absolute and ~1e-5 relative in the far tail.
    """
    if not df >= 1 or math.isnan(t):
        raise ValueError(f"need df >= 1 and a number t, got t={t}, df={df}")
    if t == 0:
        return 1.0
    phi0 = math.atan2(math.sqrt(df), abs(t))        # atan2: |t| = inf gives 0
    u = np.linspace(0.0, math.sqrt(phi0), 200001)
    integral = float(np.trapezoid(2 * u * np.sin(u * u) ** (df - 1), u))
    scale = 2 * math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(math.pi)
    return min(1.0, max(0.0, scale * integral))


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of Welch's t test of mean(a) = mean(b) on per-seed values.

        t = (mean a - mean b) / sqrt(s_a^2/n_a + s_b^2/n_b)     (s^2: sample variance, ddof 1)
        df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))
        p = P(|T_df| >= |t|)

    (Welch-Satterthwaite df; df >= min(n_a, n_b) - 1 >= 1, clamped there against rounding.)
    NaN when a side has a single value (no test, as `compare` gives no interval). Both
    sides constant: 1 if the means are equal, else 0 (the zero-width interval of `compare`
    excludes 0).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or not (a.size and b.size):
        raise ValueError("welch_p_value needs non-empty, finite results on both sides")
    if min(a.size, b.size) < 2:
        return math.nan
    difference = float(a.mean() - b.mean())
    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if var_a + var_b == 0:
        return 1.0 if difference == 0 else 0.0
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (a.size - 1) + var_b ** 2 / (b.size - 1))
    df = max(df, min(a.size, b.size) - 1.0)
    return student_t_two_sided(difference / math.sqrt(var_a + var_b), df)


def holm_adjusted(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values of a family of m hypotheses, in the order given.

    Sort p_(1) <= ... <= p_(m); then  p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)).
    The running max makes them monotone in p (ties get equal values). `holm` rejects
    H_(i) exactly when p~_(i) < alpha, which is Holm's step-down rule: reject while
    p_(i) < alpha / (m - i + 1), stop at the first that is not.
    """
    values = {name: float(p) for name, p in p_values.items()}
    if not all(0.0 <= p <= 1.0 for p in values.values()):
        raise ValueError(f"p-values must lie in [0, 1] (no NaN), got {values}")
    m, running, adjusted = len(values), 0.0, {}
    for i, name in enumerate(sorted(values, key=values.get)):   # stable: ties keep their order
        running = max(running, (m - i) * values[name])
        adjusted[name] = min(1.0, running)
    return {name: adjusted[name] for name in values}


def holm(p_values: Mapping[str, float], alpha: float = 0.05) -> dict[str, bool]:
    """Which hypotheses Holm's procedure rejects at family-wise error rate `alpha`
    (strictly: adjusted p < alpha, as an interval must strictly exclude 0)."""
    if not 0 < alpha < 1:
        raise ValueError(f"need 0 < alpha < 1, got {alpha}")
    return {name: p < alpha for name, p in holm_adjusted(p_values).items()}


@dataclass(frozen=True)
class HolmComparison:
    """One comparison of a family: its Welch interval at confidence 1 - alpha, raw p,
    Holm-adjusted p (NaN for single runs), the family's size and alpha.

    verdict: "higher"/"lower" only when the interval excludes 0 *and* Holm rejects
    (p_holm < alpha); else "no clear difference", or "single run" (a side below 2 seeds).
    """

    comparison: Comparison
    p_value: float
    p_holm: float
    family_size: int
    alpha: float

    @property
    def uncorrected_verdict(self) -> str:
        return self.comparison.verdict

    @property
    def verdict(self) -> str:
        raw = self.comparison.verdict
        if raw in ("higher", "lower") and not self.p_holm < self.alpha:
            return "no clear difference"
        return raw

    def conclusion(self, min_seeds: int = MIN_SEEDS) -> str:
        """`verdict`, or "single run" below `min_seeds` seeds a side (no conclusion drawn)."""
        small = min(self.comparison.n_a, self.comparison.n_b) < min_seeds
        return "single run" if small else self.verdict

    def within(self, tolerance: float) -> bool:
        return self.comparison.within(tolerance)

    def record(self, scale: float = 100.0, min_seeds: int = MIN_SEEDS) -> dict:
        """`Comparison.record` with the corrected verdict (`conclusion`), the interval's own
        (`Comparison.conclusion`), the raw and Holm p (6 decimals, None when undefined) and
        the family's size."""
        def p(value: float):
            return round(value, 6) if math.isfinite(value) else None

        return {**self.comparison.record(scale, min_seeds), "verdict": self.conclusion(min_seeds),
                "uncorrected_verdict": self.comparison.conclusion(min_seeds), "p_value": p(self.p_value),
                "p_holm": p(self.p_holm), "family_size": self.family_size}

    def describe(self, scale: float = 100.0, unit: str = " points") -> str:
        """'+0.31 points (95 % CI -0.05 to +0.67, 3 vs 3 seeds; p = 0.08, Holm p = 0.4)'
        (the interval's level is 1 - alpha)."""
        text = self.comparison.describe(scale, unit).replace("95 % CI", f"{100 * (1 - self.alpha):g} % CI")
        if not math.isfinite(self.p_value):
            return text
        return f"{text[:-1]}; p = {self.p_value:.2g}, Holm p = {self.p_holm:.2g})"


def holm_family(pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                alpha: float = 0.05) -> dict[str, HolmComparison]:
    """Compare every (a, b) of a family (mean a minus mean b, Welch interval at confidence
    1 - alpha) and correct their p-values together with Holm. When any side of the family
    has a single value there is no test: every p and Holm p is NaN (verdict "single run"
    where that side is, "no clear difference" elsewhere: nothing is rejected)."""
    comparisons = {name: compare(a, b, confidence=1 - alpha) for name, (a, b) in pairs.items()}
    raw = {name: welch_p_value(a, b) for name, (a, b) in pairs.items()}
    testable = all(math.isfinite(p) for p in raw.values())
    adjusted = holm_adjusted(raw) if testable else {name: math.nan for name in raw}
    return {name: HolmComparison(comparisons[name], raw[name], adjusted[name], len(pairs), alpha)
            for name in pairs}

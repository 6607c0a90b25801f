"""Welch p-values and Holm's correction (`qnnlib.multiple_testing`) against independent
references: Holm's procedure worked by hand and as its sequential rule, Student's t tail in
closed form (df 1, 2), from printed tables and from mpmath's incomplete beta function."""
import math
import random

import mpmath
import numpy as np
import pytest

from qnnlib.multiple_testing import (HolmComparison, holm, holm_adjusted, holm_family, student_t_two_sided,
                                     welch_p_value)
from qnnlib.statistics import compare, t_quantile


def t_tail_reference(t: float, df: float) -> float:
    """P(|T| >= |t|) = I_{df/(df+t^2)}(df/2, 1/2) (regularized incomplete beta, mpmath)."""
    return float(mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True))


def holm_step_down_reference(p: dict, alpha: float) -> set:
    """Holm (1979) as stated: order the p-values, reject H_(i) while p_(i) < alpha/(m-i+1),
    stop at the first that is not."""
    m, rejected = len(p), set()
    for i, name in enumerate(sorted(p, key=p.get), start=1):
        if not p[name] < alpha / (m - i + 1):
            break
        rejected.add(name)
    return rejected


# --- Holm --------------------------------------------------------------------------------

def test_holm_by_hand():
    """p = 0.01, 0.04, 0.03, 0.005 (m = 4), alpha 0.05. Sorted: H4 0.005 < 0.05/4 = 0.0125,
    reject; H1 0.01 < 0.05/3 = 0.0167, reject; H3 0.03 >= 0.05/2 = 0.025, stop: H3 and H2
    stand. Adjusted: H4 4 x 0.005 = 0.02; H1 max(0.02, 3 x 0.01) = 0.03;
    H3 max(0.03, 2 x 0.03) = 0.06; H2 max(0.06, 1 x 0.04) = 0.06."""
    p = {"H1": 0.01, "H2": 0.04, "H3": 0.03, "H4": 0.005}
    assert holm(p, alpha=0.05) == {"H1": True, "H2": False, "H3": False, "H4": True}
    adjusted = holm_adjusted(p)
    assert list(adjusted) == ["H1", "H2", "H3", "H4"]  # the order given
    assert adjusted == pytest.approx({"H1": 0.03, "H2": 0.06, "H3": 0.06, "H4": 0.02}, abs=1e-12)
    # at alpha 0.10 the step-down goes further: 0.03 < 0.10/2, 0.04 < 0.10/1
    assert holm(p, alpha=0.10) == dict.fromkeys(p, True)


def test_holm_caps_at_one_and_is_monotone():
    """p = 0.2, 0.5, 0.9: 3 x 0.2 = 0.6; max(0.6, 2 x 0.5) = 1.0; max(1.0, 0.9) = 1.0."""
    assert holm_adjusted({"a": 0.2, "b": 0.5, "c": 0.9}) == pytest.approx({"a": 0.6, "b": 1.0, "c": 1.0})
    # a single hypothesis is not corrected; ties get equal adjusted values
    assert holm_adjusted({"only": 0.03}) == {"only": 0.03}
    assert holm_adjusted({"x": 0.01, "y": 0.01, "z": 0.2}) == pytest.approx({"x": 0.03, "y": 0.03, "z": 0.2})
    assert holm_adjusted({}) == {} and holm({}) == {}


def test_holm_equals_the_sequential_rule_and_beats_bonferroni():
    rng = random.Random(0)
    for trial in range(500):
        m = rng.randint(1, 25)
        p = {f"h{i}": rng.choice([rng.random(), rng.random() ** 6, 0.0, 1.0]) for i in range(m)}
        alpha = rng.choice([0.01, 0.05, 0.1])
        rejected = {name for name, r in holm(p, alpha).items() if r}
        assert rejected == holm_step_down_reference(p, alpha), (trial, p, alpha)
        assert {name for name, value in p.items() if value < alpha / m} <= rejected  # Bonferroni
        adjusted = holm_adjusted(p)
        assert all(p[n] <= adjusted[n] <= 1 for n in p)
        order = sorted(p, key=p.get)
        assert all(adjusted[a] <= adjusted[b] for a, b in zip(order, order[1:]))  # monotone in p


def test_holm_refuses_what_is_not_a_p_value():
    for bad in (math.nan, -0.1, 1.5):
        with pytest.raises(ValueError, match="p-values"):
            holm_adjusted({"a": 0.01, "b": bad})
    for alpha in (0, 1, -0.05):
        with pytest.raises(ValueError, match="alpha"):
            holm({"a": 0.01}, alpha=alpha)


# --- Student's t tail --------------------------------------------------------------------

@pytest.mark.parametrize("t, df, p", [
    (12.706, 1, 0.05), (4.303, 2, 0.05), (3.182, 3, 0.05), (2.776, 4, 0.05), (2.228, 10, 0.05),
    (2.086, 20, 0.05), (9.925, 2, 0.01), (3.169, 10, 0.01), (1.812, 10, 0.10)])
def test_t_tail_matches_printed_tables(t, df, p):
    """Two-sided critical values of Student's t, as printed (3 decimals) in every table."""
    assert student_t_two_sided(t, df) == pytest.approx(p, abs=2e-4)
    assert student_t_two_sided(-t, df) == student_t_two_sided(t, df)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0, 2.0, 4.0, 30.0, 1e4])
def test_t_tail_closed_forms(t):
    """df = 1 (Cauchy): 1 - 2 arctan(t)/pi; df = 2: 1 - t / sqrt(2 + t^2)."""
    assert student_t_two_sided(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-6, abs=1e-12)
    assert student_t_two_sided(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("df", [1.0, 1.01, 1.4, 2.6, 3.9, 7.3, 25.0, 300.0])
def test_t_tail_against_the_incomplete_beta_function(df):
    for t in (0.05, 0.7, 1.5, 2.5, 4.0, 8.0):
        reference = t_tail_reference(t, df)
        assert student_t_two_sided(t, df) == pytest.approx(reference, rel=2e-5, abs=1e-8), (t, df)
    assert student_t_two_sided(0.0, df) == 1.0 and student_t_two_sided(math.inf, df) == 0.0


def test_t_tail_inverts_statistics_t_quantile():
    """The p of the quantile t_(1 - p/2) is p again (two independent integrations)."""
    for df in (1.5, 3.0, 8.2, 40.0):
        for p in (0.2, 0.05, 0.01):
            assert student_t_two_sided(t_quantile(1 - p / 2, df), df) == pytest.approx(p, rel=1e-4)


def test_t_tail_refuses_bad_arguments():
    with pytest.raises(ValueError):
        student_t_two_sided(1.0, 0.5)
    with pytest.raises(ValueError):
        student_t_two_sided(math.nan, 3)


# --- Welch's test ------------------------------------------------------------------------

def test_welch_by_hand_df_two():
    """a = [1, 2, 3] (s^2 = 1), b = [5, 5, 5] (s^2 = 0): standard error sqrt(1/3),
    t = -3 sqrt(3), df = (1/3)^2 / ((1/3)^2 / 2) = 2, so p = 1 - sqrt(27/29) = 0.03509."""
    assert welch_p_value([1, 2, 3], [5, 5, 5]) == pytest.approx(1 - math.sqrt(27 / 29), rel=1e-6)


def test_welch_by_hand_df_one():
    """a = [0, 2] (s^2 = 2, n = 2), b = [5, 5, 5, 5]: standard error 1, t = -4, df = 1,
    p = 1 - 2 arctan(4) / pi = 0.15596."""
    assert welch_p_value([0, 2], [5] * 4) == pytest.approx(1 - 2 * math.atan(4) / math.pi, rel=1e-6)


def test_welch_at_the_tabulated_five_percent_point():
    """Equal sizes 6 and equal variances (3.5): df = 2 (6 - 1) = 10, standard error
    sqrt(2 x 3.5 / 6); a shift of 2.228 standard errors is t_0.975(10) = 2.228: p = 0.05."""
    b = np.arange(1.0, 7.0)
    a = b + 2.228 * math.sqrt(2 * 3.5 / 6)
    assert welch_p_value(a, b) == pytest.approx(0.05, abs=2e-4)
    assert welch_p_value(b, a) == welch_p_value(a, b)


def test_welch_against_mpmath_on_random_samples():
    rng = np.random.default_rng(1)
    for _ in range(30):
        a = rng.normal(0, rng.uniform(0.1, 2), rng.integers(2, 9))
        b = rng.normal(rng.uniform(-2, 2), rng.uniform(0.1, 2), rng.integers(2, 9))
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        t = (a.mean() - b.mean()) / math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
        p = welch_p_value(a, b)
        assert 0 <= p <= 1 and p == pytest.approx(t_tail_reference(t, df), rel=2e-5, abs=1e-8)
        # the test is dual to compare's interval: it excludes 0 exactly when p < 1 - confidence
        if abs(p - 0.05) > 1e-4:
            assert (compare(a, b, 0.95).verdict != "no clear difference") == (p < 0.05)


def test_welch_edge_cases():
    assert welch_p_value([1.0, 2.0, 4.0], [1.0, 2.0, 4.0]) == 1.0  # identical samples: t = 0
    assert welch_p_value([3.0, 3.0], [3.0, 3.0, 3.0]) == 1.0      # constant and equal
    assert welch_p_value([3.0, 3.0], [4.0, 4.0]) == 0.0            # constant and different
    assert math.isnan(welch_p_value([3.0], [1.0, 2.0]))           # a single run: no test
    for a, b in (([], [1.0, 2.0]), ([1.0, math.nan], [1.0, 2.0]), ([1.0, 2.0], [math.inf, 1.0])):
        with pytest.raises(ValueError, match="finite"):
            welch_p_value(a, b)


# --- a family's verdicts -----------------------------------------------------------------

def test_family_verdicts_stand_only_where_holm_rejects():
    """Shifts of 2.5 and 2.4 standard errors (df 10): raw p 0.031 and 0.037 (tables: t = 2.228
    at 0.05, 2.764 at 0.02), so each interval excludes 0, but Holm's smallest adjusted p is
    2 x 0.031 > 0.05: no verdict stands. A third, huge difference survives and makes the
    family 3 (its Holm p: 3 x p)."""
    b = np.arange(1.0, 7.0)
    se = math.sqrt(2 * 3.5 / 6)
    pairs = {"edge_1": (b + 2.5 * se, b), "edge_2": (b - 2.4 * se, b)}
    family = holm_family(pairs)
    for name, tested in family.items():
        assert isinstance(tested, HolmComparison) and tested.family_size == 2 and tested.alpha == 0.05
        assert 0.025 < tested.p_value < 0.05 and tested.p_holm >= 0.05
        assert tested.uncorrected_verdict in ("higher", "lower") and tested.verdict == "no clear difference"
    assert family["edge_1"].uncorrected_verdict == "higher" and family["edge_2"].uncorrected_verdict == "lower"
    assert family["edge_1"].p_holm == pytest.approx(2 * min(t.p_value for t in family.values()))

    family = holm_family({**pairs, "big": (b + 20 * se, b)})
    assert family["big"].verdict == "higher" and family["big"].p_holm == pytest.approx(3 * family["big"].p_value)
    record = family["big"].record(scale=1)
    assert record["verdict"] == record["uncorrected_verdict"] == "higher" and record["family_size"] == 3
    assert record["p_holm"] == pytest.approx(family["big"].p_holm, abs=1e-6)
    assert record["difference_pct"] == pytest.approx(20 * se, abs=1e-4)
    assert family["edge_1"].record(scale=1)["verdict"] == "no clear difference"
    assert family["edge_1"].record(scale=1)["uncorrected_verdict"] == "higher"
    assert "Holm p = " in family["edge_1"].describe(scale=1)


def test_family_with_too_few_seeds():
    """Below MIN_SEEDS a side: the record concludes nothing ("single run"); with a single
    value there is no test at all: p and Holm p are undefined for the whole family."""
    two = holm_family({"x": ([1.0, 1.1], [5.0, 5.1]), "y": ([1.0, 1.2], [1.1, 1.0])})
    assert all(math.isfinite(t.p_holm) for t in two.values())
    assert {t.record()["verdict"] for t in two.values()} == {"single run"}
    one = holm_family({"x": ([1.0], [5.0, 5.1]), "y": ([1.0, 1.2], [1.1, 1.0])})
    assert one["x"].verdict == "single run" and one["y"].verdict == "no clear difference"
    assert all(math.isnan(t.p_holm) for t in one.values())
    assert one["x"].record()["p_value"] is None and one["x"].record()["p_holm"] is None

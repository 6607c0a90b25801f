"""qnnlib.ste (notebook 03's estimator maths) against independent references: closed
forms, brute-force enumeration of every binarization and float autograd; the ablation
helpers (learning-rate choice, verdicts) against hand computations."""
import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from qnnlib import experiments, numerics, ste
from qnnlib.ordered_matmul import reference_matmul
from qnnlib.layers import squared_hinge_loss
from qnnlib.quantizers import hard_sigmoid, hard_tanh


def test_aligned_weights_have_the_requested_correlation_and_unit_norm():
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(400, generator=gen)
    t = hard_tanh(r) / hard_tanh(r).pow(2).mean().sqrt()
    for rho in (0.0, 0.3, 1.0):
        w = ste.aligned_weights(r, 2000, rho, torch.Generator().manual_seed(1))
        # E[cos(w_k, t)^2] = rho^2 + (1 - rho^2) / n (the sign s is random), E||w||^2 = 1
        cos2 = ((w @ t) / (w.norm(dim=1) * t.norm())).pow(2)
        assert cos2.mean().item() == pytest.approx(rho ** 2 + (1 - rho ** 2) / len(r), abs=0.01)
        assert w.pow(2).sum(1).mean().item() == pytest.approx(1.0, abs=0.02)
    exact = ste.aligned_weights(r, 5, 1.0, gen)
    assert torch.allclose(exact.abs(), (t / math.sqrt(len(r))).abs().expand(5, -1))


def test_noise_to_signal_monte_carlo_matches_exact_variance_and_closed_form():
    # rho = 1: w = +-t / sqrt(n), so R^2 -> E[sum t^2 (1 - HT^2)] / E[(t . HT)^2] ~ C / n
    mc, exact = ste.noise_to_signal(256, 1.0, torch.Generator().manual_seed(0), inputs=20, units=4,
                                    draws=400)
    assert mc == pytest.approx(exact, rel=0.05)
    r = torch.randn(200_000, generator=torch.Generator().manual_seed(1))
    ht = hard_tanh(r)
    closed = math.sqrt(((1 - ht ** 2) * ht.pow(2)).mean() / ht.pow(2).mean() ** 2 / 256)
    assert exact == pytest.approx(closed, rel=0.1)
    # rho = 0: order one, no 1/sqrt(n) decay
    wide, _ = ste.noise_to_signal(1024, 0.0, torch.Generator().manual_seed(2), 20, 4, 64)
    assert 0.3 < wide < 3


def test_squared_hinge_grad_is_autograd_of_the_per_example_loss():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(7, 10, generator=gen, requires_grad=True)
    labels = torch.randint(10, (7,), generator=gen)
    squared_hinge_loss(z, labels, reduction="none").sum().backward()
    assert torch.allclose(ste.squared_hinge_grad(z.detach(), labels), z.grad, atol=1e-7)


def test_per_example_loss_reduces_to_the_training_loss():
    gen = torch.Generator().manual_seed(0)
    z, labels = torch.randn(6, 10, generator=gen), torch.randint(10, (6,), generator=gen)
    by_hand = torch.tensor([sum(max(0.0, 1 - (1 if j == y else -1) * z[i, j].item()) ** 2
                               for j in range(10)) / 10 for i, y in enumerate(labels.tolist())])
    per_example = squared_hinge_loss(z, labels, reduction="none")
    assert torch.allclose(per_example, by_hand.float(), atol=1e-6)
    assert torch.allclose(per_example.mean(), squared_hinge_loss(z, labels))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none'"):
        squared_hinge_loss(z, labels, reduction="sum")


def test_exact_gradient_estimate_matches_enumeration_of_every_binarization():
    # d E[L(gamma W b)] / d r by autograd over the probabilities of all 2^n patterns b
    width, outputs, draws = 4, 3, 40_000
    gen = torch.Generator().manual_seed(3)
    r = torch.tensor([-0.6, 0.2, 0.7, 1.4])
    W = torch.randn(outputs, width, generator=gen) / 2
    label = torch.tensor(1)
    halves, *_ = ste._expected_loss_sums(r, W, label, gen, draws, chunk=1000)
    estimate = 0.5 * (r.abs() < 1).float() * (halves[0] + halves[1]) / draws

    rr = r.clone().double().requires_grad_(True)
    p = hard_sigmoid(rr)
    expected = 0.0
    for pattern in itertools.product((-1.0, 1.0), repeat=width):
        b = torch.tensor(pattern, dtype=torch.float64)
        prob = torch.prod(torch.where(b > 0, p, 1 - p))
        expected = expected + prob * squared_hinge_loss((W.double() @ b)[None], label[None])
    expected.backward()
    assert torch.allclose(estimate.double(), rr.grad, atol=4e-3)
    assert estimate[3] == 0 and rr.grad[3] == 0    # saturated unit: no gradient


def test_gradient_comparison_orders_the_estimators():
    values = ste.gradient_comparison(256, 1.0, torch.Generator().manual_seed(0), outputs=10, draws=256)
    assert list(values) == list(ste.ESTIMATORS)
    assert all(-1 <= v <= 1 + 1e-6 for v in values.values())
    assert values["STE, mean over draws"] > 0.99 > values["STE without saturation"]


@pytest.mark.parametrize("a_shape, b_shape", [((7, 67), (67, 10)), ((67,), (67, 10)), ((10, 67), (67,)),
                                              ((67,), (67,)), ((1, 1), (1, 1))])
def test_product_sums_in_the_order_of_the_textbook_loop(a_shape, b_shape):
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(*a_shape, generator=gen), torch.randn(*b_shape, generator=gen)
    expected = reference_matmul(a.reshape(-1, a_shape[-1]).numpy(), b.reshape(b_shape[0], -1).numpy())
    got = ste.product(a, b)
    assert got.shape == (a @ b).shape
    assert np.array_equal(got.numpy().reshape(expected.shape), expected)


MKL_BRANCHES = ("COMPATIBLE,STRICT", "AVX2,STRICT", "AUTO")
NOTEBOOK_03_MATHS = """import json, torch
from qnnlib import ste
gen = torch.Generator().manual_seed(5)
print(json.dumps([ste.noise_to_signal(300, 0.3, gen, inputs=3, units=10, draws=64),
                  ste.gradient_comparison(300, 0.0, gen, outputs=10, draws=256)]))"""


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="the branches are MKL's")
def test_notebook_03_maths_give_the_same_bits_on_every_mkl_branch():
    """MKL's branch stands for the CPU: its products of these shapes changed with the branch
    (and an AMD EPYC and an Intel Xeon gave notebook 03 different last digits) before every
    product here summed in a fixed order."""
    clean = {k: v for k, v in os.environ.items() if k not in (numerics.ENV, *numerics.PROFILES["portable"])}
    outputs = {subprocess.run([sys.executable, "-c", NOTEBOOK_03_MATHS], capture_output=True, text=True, check=True,
                              env={**clean, "MKL_CBWR": branch, "ATEN_CPU_CAPABILITY": "avx2"}).stdout
               for branch in MKL_BRANCHES}
    assert len(outputs) == 1, outputs
    assert len(json.loads(outputs.pop())) == 2


def synthetic_results(unsaturated_cosine=0.8, random_one_draw=0.9):
    """Noise and cosine tables shaped like notebook 03's, built from the closed forms of §4
    (R = C / sqrt(rho^2 n + 1 - rho^2)) and cosines 1 - c / n for the converging estimators."""
    widths = [16, 64, 256, 1024, 4096]
    noise = pd.DataFrame([{"rho": rho, "width": n, "R_monte_carlo": 0.9 / math.sqrt(rho ** 2 * n + 1 - rho ** 2)}
                          for rho in (0.0, 0.3, 1.0) for n in widths])
    rows = []
    for rho in (0.0, 0.3):
        for n in widths:
            values = {"STE, mean over draws": 1 - 0.5 / n, "hard-tanh surrogate": 1 - 2 / n - 0.004 * (rho == 0),
                      "STE without saturation": unsaturated_cosine,
                      "STE, one draw": random_one_draw if rho == 0 else 1 - 1 / n}
            rows += [{"rho": rho, "estimator": e, "width": n, "cosine": c} for e, c in values.items()]
    return noise, pd.DataFrame(rows)


def test_derivation_claims_hold_on_results_shaped_like_the_theory():
    claims = ste.derivation_claims(*synthetic_results())
    assert len(claims) == 12 and all(c["holds"] for c in claims), [c for c in claims if not c["holds"]]


def test_derivation_claims_catch_a_contradicting_result():
    # the unsaturated STE agreeing with the exact gradient contradicts §5's written claim
    claims = {c["claim"]: c["holds"] for c in ste.derivation_claims(*synthetic_results(unsaturated_cosine=0.99))}
    assert [claim for claim, holds in claims.items() if not holds] == [
        "rho = 0: the STE without saturation stays far from it at every width",
        "rho = 0.3: the STE without saturation stays far from it at every width"]
    noise, cosines = synthetic_results(random_one_draw=0.99)
    failed = [c["claim"] for c in ste.derivation_claims(noise, cosines) if not c["holds"]]
    assert failed == ["rho = 0: a single draw stays well below cosine one at every width"]
    noise["R_monte_carlo"] = 1.0        # no decay with width at any rho
    failed = [c["claim"] for c in ste.derivation_claims(noise, cosines) if not c["holds"]]
    assert "correlated weights (rho = 1): the noise share falls like 1/sqrt(n)" in failed


def test_choose_learning_rates_takes_the_lowest_mean_validation_error():
    runs = pd.DataFrame({"variant": ["b", "b", "b", "b", "a", "a", "a"],
                         "lr_start": [0.01, 0.003, 0.003, 0.001, 0.001, 0.003, 0.01],
                         "best_val_error": [0.05, 0.02, 0.06, 0.04, 0.3, 0.2, 0.2]})
    table = ste.choose_learning_rates(runs, by="variant")
    assert list(table["variant"]) == ["b"] * 3 + ["a"] * 3          # variants in order of appearance
    assert list(table["lr_start"]) == [0.001, 0.003, 0.01] * 2
    assert table["mean"].tolist() == pytest.approx([0.04, 0.04, 0.05, 0.3, 0.2, 0.2])
    assert table["n"].tolist() == [1, 2, 1, 1, 1, 1]
    # b: 0.001 and 0.003 tie at 0.04 -> the smaller rate; a: 0.003 and 0.01 tie -> 0.003
    assert table.loc[table["chosen"], "lr_start"].tolist() == [0.001, 0.003]
    with pytest.raises(ValueError, match="chosen on validation error, not 'test_error'"):
        ste.choose_learning_rates(runs.assign(test_error=0.1), by="variant", metric="test_error")


def test_verdict_needs_three_seeds_per_side():
    lower = experiments.compare([0.060, 0.062], [0.130, 0.131])
    assert lower.verdict == "lower" and lower.conclusion() == "single run"
    sentence = ste.comparison_sentence("A", "B", lower)
    assert sentence.startswith("Single run") and "no conclusion" in sentence and "lower" not in sentence


def test_comparison_sentence_states_a_hand_welch_interval():
    a, b = np.array([0.060, 0.064, 0.062]), np.array([0.130, 0.126, 0.128])
    # equal sizes and variances: Welch's df = 2 (n - 1) = 4, t_0.975(4) = 2.776445 (tables)
    half = 2.776445 * math.sqrt(a.var(ddof=1) / 3 + b.var(ddof=1) / 3)
    sentence = ste.comparison_sentence("A", "B", experiments.compare(a, b))
    assert "**lower** than that of B: -6.60 points (95 % CI" in sentence
    assert f"{100 * (-0.066 - half):+.2f} to {100 * (-0.066 + half):+.2f}" in sentence
    same = ste.comparison_sentence("A", "B", experiments.compare(a, a[::-1] + [0.001, -0.001, 0.0]))
    assert "**not clearly different** from" in same

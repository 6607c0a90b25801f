"""The straight-through estimator measured against stochastic binarization (notebook 03).

Notebook 03_ste_derivation (arXiv:1609.07061 Sec. 2.3) derives the saturated STE from
stochastic binarization b(r) = HT(r) + zero-mean noise. This module holds its maths:

* `aligned_weights`: next-layer weights with a chosen correlation rho to the input (§4);
* `noise_to_signal`: the noise share R = rms(w.n(r)) / rms(w.HT(r)) of a unit's input (§4);
* `squared_hinge_grad`: the gradient of the per-example squared hinge loss (§5);
* `gradient_comparison`: cosines of STE estimates with the exact gradient of the
  expected loss over the binarization noise, for one random problem (§5);
* `derivation_claims`: the checks behind the notebook's written conclusions of §4-§5;
* `choose_learning_rates`, `comparison_sentence`: the MNIST ablations (§6-§7): each variant
  at the learning rate its validation error prefers, and the sentence stating the
  verdict over >= `experiments.MIN_SEEDS` seeds generated from the per-seed results.

Every function draws from an explicit `torch.Generator`, in a fixed order, so a seed
fixes the numbers; and every product sums in a fixed order (`product`), so those numbers
are the same bits on every CPU.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .experiments import MIN_SEEDS
from .layers import squared_hinge_loss
from .ordered_linear import ordered_mm
from .quantizers import hard_tanh, sign, stochastic_sign

__all__ = ["product", "aligned_weights", "noise_to_signal", "squared_hinge_grad", "cosine",
           "gradient_comparison", "ESTIMATORS", "derivation_claims", "choose_learning_rates",
           "comparison_sentence"]

ESTIMATORS = ("STE, one draw", "STE, mean over draws", "hard-tanh surrogate",
              "STE without saturation", "reference split-half")


def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for float32 vectors and matrices, each sum in the order of its terms
    (`ordered_linear.ordered_mm`). These products are small (a layer's width against 10
    outputs), and MKL's results for them change with its code branch (`MKL_CBWR`, which
    follows the CPU) even under the pinned numerics: one CPU gives other bits on another
    branch, and an AMD EPYC and an Intel Xeon gave notebook 03 different last digits. For
    the same reason the square roots here are `math.sqrt` of Python floats, not MKL's."""
    out = ordered_mm(a if a.dim() == 2 else a[None], b if b.dim() == 2 else b[:, None])
    out = out if b.dim() == 2 else out[:, 0]
    return out if a.dim() == 2 else out[0]


def aligned_weights(r: torch.Tensor, units: int, rho: float, gen: torch.Generator) -> torch.Tensor:
    """`units` weight rows w = (rho s t + sqrt(1 - rho^2) xi) / sqrt(n) (notebook 03 §4).

    t = HT(r) / rms(HT(r)) is the input pattern, xi ~ N(0, I_n), and s = +-1 a random
    sign per row: each row's correlation with t is rho in expectation.
    """
    n = r.shape[-1]
    ht = hard_tanh(r)
    t = ht / math.sqrt(ht.pow(2).mean().item())  # math, not MKL's vector sqrt: the same on every CPU
    xi = torch.randn(units, n, generator=gen)
    s = sign(torch.rand(units, 1, generator=gen) - 0.5)
    return (rho * s * t + math.sqrt(1 - rho ** 2) * xi) / math.sqrt(n)


def noise_to_signal(width: int, rho: float, gen: torch.Generator, inputs: int, units: int,
                    draws: int) -> tuple[float, float]:
    """Monte-Carlo and exact-variance estimates of R(width) for correlation rho (notebook 03 §4).

    R = sqrt(E[N^2] / E[S^2]) with S = w.HT(r), N = w.(b(r) - HT(r)), over `inputs` random
    inputs r ~ N(0, I), `units` rows of `aligned_weights` each, and `draws` stochastic
    binarizations b(r) per input. The exact estimate uses Var[N | r] = sum w_i^2 (1 - HT_i^2).
    """
    signal2 = noise2_mc = noise2_exact = 0.0
    for _ in range(inputs):
        r = torch.randn(width, generator=gen)
        w = aligned_weights(r, units, rho, gen)
        ht = hard_tanh(r)
        b = stochastic_sign(r.expand(draws, width), gen)
        signal2 += product(w, ht).pow(2).mean().item()
        noise2_mc += product(b - ht, w.T).pow(2).mean().item()
        noise2_exact += product(w.pow(2), 1 - ht ** 2).mean().item()
    return math.sqrt(noise2_mc / signal2), math.sqrt(noise2_exact / signal2)


def squared_hinge_grad(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d/dz of `squared_hinge_loss(z, labels, reduction="none")`, per example (notebook 03 §5):
    -2 t max(0, 1 - t z) / C with targets t = 2 onehot(labels) - 1 over C classes."""
    targets = 2 * torch.nn.functional.one_hot(labels, z.shape[-1]).to(z.dtype) - 1
    return -2 * targets * torch.clamp(1 - targets * z, min=0) / z.shape[-1]


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    """Cosine similarity of two vectors (notebook 03 §5)."""
    return (product(u, v) / (u.norm() * v.norm())).item()


def _expected_loss_sums(r, Wg, label, gen, draws, chunk):
    # Per unit i, over `draws` binarizations b: the exact flip differences
    # L(a_i + w_i) - L(a_i - w_i) (even and odd draws apart) and the STE sums.
    width = r.shape[0]
    mask = (r.abs() <= 1).float()                            # the STE's saturation
    halves = [torch.zeros(width), torch.zeros(width)]
    ste_sum, unsat_sum, one_draw = torch.zeros(width), torch.zeros(width), None
    done = 0
    while done < draws:
        k = min(chunk, draws - done)
        b = stochastic_sign(r.expand(k, width), gen)
        z = product(b, Wg.T)                                 # (k, m)
        rest = z[:, None, :] - b[:, :, None] * Wg.T[None]    # a_i for every unit i: (k, n, m)
        flip = (squared_hinge_loss(rest + Wg.T[None], label, reduction="none")
                - squared_hinge_loss(rest - Wg.T[None], label, reduction="none"))   # (k, n)
        halves[0] += flip[0::2].sum(0)
        halves[1] += flip[1::2].sum(0)
        g = product(squared_hinge_grad(z, label), Wg)        # (k, n): w_i^T grad L(z)
        ste_sum += (g * mask).sum(0)
        unsat_sum += g.sum(0)
        if one_draw is None:
            one_draw = g[0] * mask
        done += k
    return halves, ste_sum, unsat_sum, one_draw


def gradient_comparison(width: int, rho: float, gen: torch.Generator, outputs: int, draws: int,
                        chunk: int = 128) -> dict[str, float]:
    """One random problem of notebook 03 §5: cosines of STE estimates with the exact gradient.

    A layer of `width` stochastic binary units b(r) feeds `outputs` units z = gamma W b
    (W from `aligned_weights`, gamma so that E[z^2] = 1) and a squared hinge loss for a
    random label. The exact gradient of E[L] w.r.t. r_i is sigma'(r_i) E[L(a_i + w_i) -
    L(a_i - w_i)], estimated from `draws` draws (in chunks of `chunk`); the STE estimates
    use the same draws. Returns {estimator: cosine} for `ESTIMATORS` in order; the last,
    "reference split-half", compares the reference's even-draw and odd-draw halves.
    """
    r = torch.randn(width, generator=gen)
    W = aligned_weights(r, outputs, rho, gen)
    label = torch.randint(outputs, (), generator=gen)
    ht = hard_tanh(r)
    gamma = 1 / math.sqrt((product(W, ht).pow(2) + product(W.pow(2), 1 - ht ** 2)).mean().item())  # E[z^2] = 1
    Wg = gamma * W
    slope = 0.5 * (r.abs() < 1).float()                      # sigma'(r)
    mask = (r.abs() <= 1).float()
    halves, ste_sum, unsat_sum, one_draw = _expected_loss_sums(r, Wg, label, gen, draws, chunk)
    exact = slope * (halves[0] + halves[1]) / draws
    surrogate = mask * product(squared_hinge_grad(product(ht, Wg.T), label), Wg)
    values = (cosine(one_draw, exact), cosine(ste_sum / draws, exact), cosine(surrogate, exact),
              cosine(unsat_sum / draws, exact), cosine(slope * halves[0], slope * halves[1]))
    return dict(zip(ESTIMATORS, values))


def derivation_claims(noise: pd.DataFrame, cosines: pd.DataFrame) -> list[dict]:
    """The measured statements of notebook 03's conclusions on §4-§5, each checked here.

    noise: rows (rho, width, R_monte_carlo); cosines: rows (rho, estimator, width, cosine),
    cosines averaged over problems. Needs rho = 0 and some rho > 0 in both. Returns one dict
    per claim: {"claim", "holds" (bool), "evidence" (the numbers)}. Thresholds:

    * random weights (rho = 0): |slope of log R vs log n| < 0.2 over the wider half of the
      widths (order one at every width); correlated (rho >= 0.3): slope within 0.15 of -1/2;
    * the mean saturated STE: cosine > 0.99 at the widest width, and 1 - cosine smaller
      there than at the narrowest, for every rho;
    * one draw: cosine < 0.97 at every width for rho = 0, > 0.99 at the widest for the
      largest rho;
    * hard-tanh surrogate: cosine > 0.99 at the widest width for every rho, and farther from
      the exact gradient than the mean STE there for rho = 0;
    * STE without saturation: cosine < 0.95 at every width and rho.
    """
    widths = sorted(noise["width"].unique())
    wide_half = widths[(len(widths) - 1) // 2:]

    def slope(rho):
        part = noise[(noise["rho"] == rho) & noise["width"].isin(wide_half)]
        return float(np.polyfit(np.log(part["width"]), np.log(part["R_monte_carlo"]), 1)[0])

    def cos(rho, estimator):
        part = cosines[(cosines["rho"] == rho) & (cosines["estimator"] == estimator)]
        return part.set_index("width")["cosine"].sort_index()

    claims = []

    def claim(text, holds, evidence):
        claims.append({"claim": text, "holds": bool(holds), "evidence": evidence})

    flat = slope(0.0)
    claim("random weights: the noise share stays of order one at every width",
          abs(flat) < 0.2, f"slope {flat:+.2f}")
    for rho in sorted(r for r in noise["rho"].unique() if r >= 0.3):
        value = slope(rho)
        claim(f"correlated weights (rho = {rho:g}): the noise share falls like 1/sqrt(n)",
              abs(value + 0.5) < 0.15, f"slope {value:+.2f}")
    rhos = sorted(cosines["rho"].unique())
    for rho in rhos:
        mean_ste = cos(rho, "STE, mean over draws")
        claim(f"rho = {rho:g}: the mean STE approaches the exact gradient as the layer widens",
              mean_ste.iloc[-1] > 0.99 and 1 - mean_ste.iloc[-1] < 1 - mean_ste.iloc[0],
              f"cosine {mean_ste.iloc[0]:.4f} -> {mean_ste.iloc[-1]:.4f}")
        surrogate = cos(rho, "hard-tanh surrogate")
        claim(f"rho = {rho:g}: the hard-tanh surrogate comes close at the widest width",
              surrogate.iloc[-1] > 0.99, f"cosine {surrogate.iloc[-1]:.4f}")
        unsaturated = cos(rho, "STE without saturation")
        claim(f"rho = {rho:g}: the STE without saturation stays far from it at every width",
              unsaturated.max() < 0.95, f"largest cosine {unsaturated.max():.4f}")
    one_draw = cos(0.0, "STE, one draw")
    claim("rho = 0: a single draw stays well below cosine one at every width",
          one_draw.max() < 0.97, f"largest cosine {one_draw.max():.4f}")
    correlated = cos(rhos[-1], "STE, one draw")
    claim(f"rho = {rhos[-1]:g}: a single draw approaches the exact gradient",
          correlated.iloc[-1] > 0.99, f"cosine at the widest width {correlated.iloc[-1]:.4f}")
    mean_ste, surrogate = cos(0.0, "STE, mean over draws"), cos(0.0, "hard-tanh surrogate")
    claim("rho = 0: the surrogate is farther from the exact gradient than the mean STE at the widest width",
          1 - surrogate.iloc[-1] > 1 - mean_ste.iloc[-1],
          f"1 - cosine {1 - surrogate.iloc[-1]:.1e} vs {1 - mean_ste.iloc[-1]:.1e}")
    return claims


def choose_learning_rates(runs: pd.DataFrame, by: str = "name", rate: str = "lr_start",
                          metric: str = "best_val_error") -> pd.DataFrame:
    """Learning-rate tuning on validation error only (notebook 03 §6).

    For every (variant `by`, learning rate `rate`): the mean of `metric` over the tuning
    seeds and their count n; `chosen` marks, per variant, the rate with the lowest mean
    (ties: the smaller rate). The test error must not be passed in: it is never looked at.
    """
    if metric.startswith("test") or "test" in metric.split("_"):
        raise ValueError(f"learning rates are chosen on validation error, not {metric!r}")
    table = (runs.groupby([by, rate], sort=False)[metric].agg(["mean", "count"]).reset_index()
             .rename(columns={"count": "n"}).sort_values([by, rate], kind="stable"))
    best = table.sort_values(["mean", rate], kind="stable").groupby(by, sort=False).head(1).index
    table["chosen"] = table.index.isin(best)
    order = list(dict.fromkeys(runs[by]))
    return (table.assign(_order=table[by].map(order.index)).sort_values(["_order", rate])
            .drop(columns="_order").reset_index(drop=True))


_PHRASES = {"lower": "**lower** than", "higher": "**higher** than",
            "no clear difference": "**not clearly different** from"}


def comparison_sentence(a: str, b: str, comparison, min_seeds: int = MIN_SEEDS,
                        what: str = "test error") -> str:
    """The sentence that states a comparison's conclusion, generated from it, e.g.
    "The test error of saturated is **lower** than that of unsaturated: -6.91 points (95 % CI
    -7.2 to -6.6, 3 vs 3 seeds)." Fewer than `min_seeds` seeds: says so, concludes nothing."""
    label = comparison.conclusion(min_seeds)
    if label == "single run":
        return (f"Single run: {comparison.n_a} vs {comparison.n_b} seeds, fewer than {min_seeds} "
                f"per side, so no conclusion on {a} versus {b} is drawn "
                f"(difference of the means {comparison.difference * 100:+.2f} points).")
    return (f"The {what} of {a} is {_PHRASES[label]} that of {b}: "
            f"{comparison.describe()}.")

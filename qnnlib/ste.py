"""The straight-through estimator measured against stochastic binarization (notebook 03).

Notebook 03_ste_derivation (arXiv:1609.07061 Sec. 2.3) derives the saturated STE from
stochastic binarization b(r) = HT(r) + zero-mean noise. This module holds its maths:

* `aligned_weights`: next-layer weights with a chosen correlation rho to the input (§4);
* `noise_to_signal`: the noise share R = rms(w.n(r)) / rms(w.HT(r)) of a unit's input (§4);
* `squared_hinge_grad`: the gradient of the per-example squared hinge loss (§5);
* `gradient_comparison`: cosines of STE estimates with the exact gradient of the
  expected loss over the binarization noise, for one random problem (§5).

Every function draws from an explicit `torch.Generator`, in a fixed order, so a seed
fixes the numbers.
"""
from __future__ import annotations

import math

import torch

from .layers import squared_hinge_loss
from .quantizers import hard_tanh, sign, stochastic_sign

__all__ = ["aligned_weights", "noise_to_signal", "squared_hinge_grad", "cosine",
           "gradient_comparison", "ESTIMATORS"]

ESTIMATORS = ("STE, one draw", "STE, mean over draws", "hard-tanh surrogate",
              "STE without saturation", "reference split-half")


def aligned_weights(r: torch.Tensor, units: int, rho: float, gen: torch.Generator) -> torch.Tensor:
    """`units` weight rows w = (rho s t + sqrt(1 - rho^2) xi) / sqrt(n) (notebook 03 §4).

    t = HT(r) / rms(HT(r)) is the input pattern, xi ~ N(0, I_n), and s = +-1 a random
    sign per row: each row's correlation with t is rho in expectation.
    """
    n = r.shape[-1]
    ht = hard_tanh(r)
    t = ht / ht.pow(2).mean().sqrt()
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
        signal2 += (w @ ht).pow(2).mean().item()
        noise2_mc += ((b - ht) @ w.T).pow(2).mean().item()
        noise2_exact += (w.pow(2) @ (1 - ht ** 2)).mean().item()
    return math.sqrt(noise2_mc / signal2), math.sqrt(noise2_exact / signal2)


def squared_hinge_grad(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d/dz of `squared_hinge_loss(z, labels, reduction="none")`, per example (notebook 03 §5):
    -2 t max(0, 1 - t z) / C with targets t = 2 onehot(labels) - 1 over C classes."""
    targets = 2 * torch.nn.functional.one_hot(labels, z.shape[-1]).to(z.dtype) - 1
    return -2 * targets * torch.clamp(1 - targets * z, min=0) / z.shape[-1]


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    """Cosine similarity of two vectors (notebook 03 §5)."""
    return (u @ v / (u.norm() * v.norm())).item()


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
        z = b @ Wg.T                                         # (k, m)
        rest = z[:, None, :] - b[:, :, None] * Wg.T[None]    # a_i for every unit i: (k, n, m)
        flip = (squared_hinge_loss(rest + Wg.T[None], label, reduction="none")
                - squared_hinge_loss(rest - Wg.T[None], label, reduction="none"))   # (k, n)
        halves[0] += flip[0::2].sum(0)
        halves[1] += flip[1::2].sum(0)
        g = squared_hinge_grad(z, label) @ Wg                # (k, n): w_i^T grad L(z)
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
    gamma = 1 / ((W @ ht).pow(2) + W.pow(2) @ (1 - ht ** 2)).mean().sqrt()    # E[z^2] = 1
    Wg = gamma * W
    slope = 0.5 * (r.abs() < 1).float()                      # sigma'(r)
    mask = (r.abs() <= 1).float()
    halves, ste_sum, unsat_sum, one_draw = _expected_loss_sums(r, Wg, label, gen, draws, chunk)
    exact = slope * (halves[0] + halves[1]) / draws
    surrogate = mask * (squared_hinge_grad(ht @ Wg.T, label) @ Wg)
    values = (cosine(one_draw, exact), cosine(ste_sum / draws, exact), cosine(surrogate, exact),
              cosine(unsat_sum / draws, exact), cosine(slope * halves[0], slope * halves[1]))
    return dict(zip(ESTIMATORS, values))

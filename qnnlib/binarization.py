"""Deterministic vs stochastic binarization (arXiv:1609.07061 Sec. 2.1): notebook 01's helpers.

* `real_weights`, `real_weight_error`: the authors' Theano code evaluates a network trained
  with stochastic weight binarization with its real-valued weights W (= E[W^b], Sec. 2.1)
  in place of their binarization; notebook 01 §5 compares that with the binary network.
* `coverage_range`: whether a Monte-Carlo band's coverage is consistent with 95 % (notebook 01, part 3).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from .models import quant_linears
from .quantizers import Identity
from .training import evaluate

__all__ = ["real_weights", "real_weight_error", "coverage_range"]


@contextmanager
def real_weights(model: nn.Module):
    """Within the block, every QuantLinear of `model` uses W itself instead of q(W);
    the quantizers come back afterwards, also after an exception (notebook 01 §5)."""
    layers = quant_linears(model)
    saved = [layer.weight_quantizer for layer in layers]
    for layer in layers:
        layer.weight_quantizer = Identity()
    try:
        yield model
    finally:
        for layer, quantizer in zip(layers, saved):
            layer.weight_quantizer = quantizer


def real_weight_error(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Error rate in [0, 1] of `model` in eval mode with real-valued weights (notebook 01 §5);
    inputs and labels move to the model's device."""
    device = next(model.parameters()).device
    with real_weights(model):
        return evaluate(model, inputs.to(device), labels.to(device))


def coverage_range(points: int, level: float = 0.95, mass: float = 0.999) -> tuple[float, float]:
    """Central range of the share of `points` independent `level` confidence intervals
    that cover their true value: the share is Binomial(points, level) / points, and the
    range [k_lo, k_hi] / points holds at least `mass` of it (each tail <= (1 - mass) / 2).

    Notebook 01 (part 3) uses it to decide whether a Monte-Carlo band's coverage of the hard
    tanh is "close to 95 %" (Eq. 2-3: E[stochastic binarization] = HT(x)).
    """
    if points < 1 or not 0 < level < 1 or not 0 < mass < 1:
        raise ValueError(f"need points >= 1 and level, mass in (0, 1), got {points}, {level}, {mass}")
    probabilities = [math.comb(points, k) * level ** k * (1 - level) ** (points - k) for k in range(points + 1)]
    tail = (1 - mass) / 2
    low = 0
    while sum(probabilities[:low + 1]) <= tail:      # drop counts while the lower tail stays <= tail
        low += 1
    high = points
    while sum(probabilities[high:]) <= tail:
        high -= 1
    return low / points, high / points

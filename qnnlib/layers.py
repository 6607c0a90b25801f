"""Quantized layers that keep real-valued weight accumulators, and the L2-SVM loss.

The paper's training rule (arXiv:1609.07061 Sec. 2.2, Alg. 1): the forward and backward
passes use quantized weights W_b = q(W), but the optimizer updates the real-valued W,
because the tiny Adam steps would vanish if applied to binary weights. After each step
W is clipped to [-1, 1] (Sec. 2.3), beyond which the STE gives no gradient anyway.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ordered_linear import MATMULS, ordered_linear
from .quantizers import Sign, StochasticSign, get_quantizer

__all__ = [
    "glorot_lr_scale", "QuantLinear", "BinaryLinear", "QuantActivation", "BinaryActivation",
    "squared_hinge_loss", "SquaredHingeLoss",
]


def glorot_lr_scale(fan_in: int, fan_out: int) -> float:
    """Per-layer learning-rate multiplier 1 / sqrt(1.5 / (fan_in + fan_out)).

    From the authors' BinaryNet/BinaryConnect code ("Glorot" LR scale): the inverse of
    the Glorot uniform init bound, so every layer moves its weights at a similar
    relative speed although all are initialised U(-1, 1).
    """
    return 1.0 / math.sqrt(1.5 / (fan_in + fan_out))


class QuantLinear(nn.Linear):
    """Dense layer with quantized weights and a real-valued accumulator (Alg. 1).

    Forward: y = x @ q(W).T + b, with q the `weight_quantizer` (default "sign").
    Gradient: reaches the real W through q's straight-through estimator.
    `self.weight` is W, initialised U(-init_range, init_range) (the authors' code:
    U(-1, 1) for binary weights); the bias starts at zero and is not quantized.
    `matmul="ordered"` computes the products with sums in a fixed order, the same bits
    on every CPU (`qnnlib.ordered_linear`); "xnor" computes the forward product of ±1
    weights and binarized inputs by XNOR-popcount instead (`qnnlib.xnor_forward`);
    "torch" (default) uses torch's BLAS.
    """

    # Class default so nn.Linear.__init__'s call to reset_parameters works before
    # the instance's init_range is set; __init__ then re-initialises with it.
    init_range: float = 1.0

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 weight_quantizer="sign", init_range: float = 1.0, matmul: str = "torch"):
        super().__init__(in_features, out_features, bias=bias)
        if matmul not in MATMULS:
            raise ValueError(f"matmul must be one of {MATMULS}, got {matmul!r}")
        self.matmul = matmul
        self.init_range = float(init_range)
        self.weight_quantizer = get_quantizer(weight_quantizer)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.uniform_(-self.init_range, self.init_range)
            if self.bias is not None:
                self.bias.zero_()

    def quantized_weight(self) -> torch.Tensor:
        """q(W): the weights used by forward and backward, differentiable w.r.t. W."""
        return self.weight_quantizer(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.matmul != "torch":
            return ordered_linear(x, self.quantized_weight(), self.bias, self.matmul == "xnor")
        return F.linear(x, self.quantized_weight(), self.bias)

    @property
    def lr_scale(self) -> float:
        """glorot_lr_scale(in_features, out_features)."""
        return glorot_lr_scale(self.in_features, self.out_features)

    @torch.no_grad()
    def clip_(self, bound: float = 1.0) -> "QuantLinear":
        """Clamp the real weights to [-bound, bound] in place (after each optimizer step)."""
        self.weight.clamp_(-bound, bound)
        return self

    def extra_repr(self) -> str:
        matmul = f", matmul={self.matmul}" if self.matmul != "torch" else ""
        return super().extra_repr() + f", init_range={self.init_range}{matmul}"


class BinaryLinear(QuantLinear):
    """QuantLinear with binary weights (arXiv:1609.07061 Sec. 2.1, Eq. 1-3).

    Forward: y = x @ sign(W).T + b, or a stochastic sign of W when `stochastic`
    (training mode only; deterministic sign in eval mode).
    Gradient: straight-through to W, masked to |W| <= 1 (always true once W is clipped).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 stochastic: bool = False, generator: torch.Generator | None = None):
        quantizer = StochasticSign(generator) if stochastic else Sign()
        super().__init__(in_features, out_features, bias=bias, weight_quantizer=quantizer)


class QuantActivation(nn.Module):
    """Quantized activation (arXiv:1609.07061 Sec. 2.1 binary; k-bit: "Quantized neural networks - more than 1 bit").

    Forward: q(x) with the given quantizer (name, dict spec or module).
    Gradient: that quantizer's straight-through estimator.
    """

    def __init__(self, quantizer="sign"):
        super().__init__()
        self.quantizer = get_quantizer(quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(x)


class BinaryActivation(QuantActivation):
    """Binary activation (arXiv:1609.07061 Sec. 2.1, Eq. 1-3; gradient Eq. 4).

    Forward: sign(x), or stochastic sign when `stochastic` (training mode only).
    Gradient: dL/dx = dL/dq * 1_{|x| <= 1} if saturate else dL/dq.
    """

    def __init__(self, stochastic: bool = False, generator: torch.Generator | None = None,
                 saturate: bool = True):
        quantizer = StochasticSign(generator, saturate) if stochastic else Sign(saturate)
        super().__init__(quantizer)


def squared_hinge_loss(scores: torch.Tensor, labels: torch.Tensor,
                       reduction: str = "mean") -> torch.Tensor:
    """L2-SVM loss of the authors' MNIST code: mean over all N x C entries of
    max(0, 1 - t * scores)**2 with targets t = 2 * onehot(labels) - 1.

    Averaging over classes too (not only the batch) just rescales the loss by 1/C;
    we keep it so learning rates transfer from the paper unchanged.
    `reduction="none"` keeps one loss per example (the mean over the last, class axis;
    any leading shape broadcasts against `labels`), as notebook 03 §5 needs.
    """
    targets = 2 * F.one_hot(labels, scores.shape[-1]).to(scores.dtype) - 1
    per_entry = torch.clamp(1 - targets * scores, min=0).pow(2)
    if reduction == "none":
        return per_entry.mean(-1)
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per_entry.mean()


class SquaredHingeLoss(nn.Module):
    """Module form of `squared_hinge_loss`."""

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return squared_hinge_loss(scores, labels)

"""Quantizers of arXiv:1609.07061 (QNN) as functions, and their straight-through versions.

1. plain functions (`sign`, `linear_quant`, ...): the forward maths, no autograd
   tricks; used by the deploy/kernel code and as references in tests;
2. `ste_*` functions: the same forward, with the straight-through estimator (STE) of
   Sec. 2.3 as backward: grad * 1_{|x| <= 1} ("saturated", Eq. 4) or grad unchanged.

`qnnlib.quantizers` wraps them as modules (the names layers and params.yaml use) and
re-exports them; import them from there. The two k-bit linear grids are described there.
"""
from __future__ import annotations

import torch

__all__ = [
    "sign", "hard_sigmoid", "hard_tanh", "uniform_like", "stochastic_sign", "linear_quant_grid", "linear_quant",
    "quantize_dorefa", "quantize_log", "check_bits", "StraightThrough",
    "ste_sign", "ste_stochastic_sign", "ste_linear_quant", "ste_quantize_dorefa", "ste_quantize_log",
]


# ---------------------------------------------------------------------------
# Plain functions
# ---------------------------------------------------------------------------

def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0 else -1 (Eq. 1). Unlike torch.sign, sign(0) = +1, so the output
    is always a valid binary value, as in the authors' code. (NaN stays NaN.)"""
    # sign(sign(x) + 0.5) maps -1 -> -1 and 0, +1 -> +1 in two cheap in-place passes;
    # torch.where with two filled tensors made binarization a quarter of a training step.
    return torch.sign(x).add_(0.5).sign_()


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """clamp((x + 1) / 2, 0, 1): the probability of +1 in stochastic binarization (Eq. 3)."""
    return torch.clamp((x + 1) / 2, 0, 1)


def hard_tanh(x: torch.Tensor) -> torch.Tensor:
    """clamp(x, -1, 1); its derivative 1_{|x| < 1} is the saturated STE of sign (Eq. 4)."""
    return torch.clamp(x, -1, 1)


def uniform_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """U[0, 1) draws of x's shape and floating dtype, on x's device.

    With a `generator` the draws are made on the *generator's* device and then moved to
    x's: torch refuses a CPU generator for a CUDA draw, and drawing where the generator
    lives makes one seeded generator give the same draws whether the run is on CPU or
    CUDA (a CUDA generator draws on the GPU directly, with no copy).
    Without one, the global RNG of x's device draws in place.
    """
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    if generator is None:
        return torch.rand(x.shape, dtype=dtype, device=x.device)
    u = torch.rand(x.shape, generator=generator, dtype=dtype, device=generator.device)
    return u.to(x.device)


def stochastic_sign(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """+1 with probability hard_sigmoid(x), else -1 (Eq. 2-3).

    E[stochastic_sign(x)] = 2 * hard_sigmoid(x) - 1 = hard_tanh(x). Pass an explicit
    `generator` for reproducible draws independent of the global RNG; it may live on
    another device than x (see `uniform_like`).
    """
    u = uniform_like(x, generator)
    # u lies in [0, 1), so P(u < p) = p exactly, also at p = 0 and p = 1.
    return torch.where(u < hard_sigmoid(x), torch.ones_like(x), -torch.ones_like(x))


def check_bits(bits: int) -> int:
    if int(bits) != bits or bits < 1:
        raise ValueError(f"bits must be a positive integer, got {bits!r}")
    return int(bits)


def linear_quant_grid(bits: int) -> tuple[float, float, float]:
    """(Delta, minV, maxV) of the paper's LinearQuant at `bits` >= 2: the k-bit two's
    complement fixed-point grid on [-1, 1),

        Delta = 2**(1 - k),  minV = -1,  maxV = 1 - Delta,

    i.e. the 2**k levels m * Delta for integers m in [-2**(k-1), 2**(k-1) - 1]. The
    paper (section "Quantized neural networks - more than 1 bit") leaves Delta, minV
    and maxV to the reader; this choice is what a k-bit signed integer scaled by
    2**(1-k) holds, it contains 0, and its step is a power of two (a shift).
    """
    bits = check_bits(bits)
    if bits < 2:
        raise ValueError(f"LinearQuant's grid needs bits >= 2 (1 bit is sign), got {bits}")
    step = 2.0 ** (1 - bits)
    return step, -1.0, 1.0 - step


def linear_quant(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The paper's LinearQuant (section "Quantized neural networks - more than 1 bit"):

        LinearQuant(x, bits) = Clip(round(x / Delta) * Delta, minV, maxV)

    with (Delta, minV, maxV) = `linear_quant_grid(bits)` = (2**(1-k), -1, 1 - 2**(1-k)):
    for k = 2 the levels are {-1, -1/2, 0, 1/2}. bits = 1 is `sign` (a 1-bit two's
    complement grid {-1, 0} would not be a binary network). round is half-up,
    floor(. + 0.5), like sign(0) = +1; since Delta is a power of two, x / Delta and the
    levels are exact in floating point.
    """
    if check_bits(bits) == 1:
        return sign(x)
    step, low, high = linear_quant_grid(bits)
    return torch.clamp(torch.floor(x / step + 0.5) * step, low, high)


def quantize_dorefa(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa-Net's uniform grid (Zhou et al. 2016, arXiv:1606.06160), rescaled to [-1, 1]:

    q = floor(((clamp(x, -1, 1) + 1) / 2) * (2**bits - 1) + 0.5) / (2**bits - 1) * 2 - 1

    2**bits levels spaced 2 / (2**bits - 1) apart, both ends included and no zero: for
    k = 2, {-1, -1/3, 1/3, 1}. Not the paper's LinearQuant (see `linear_quant`). Rounding
    is half-up (floor(. + 0.5)) rather than torch.round's half-to-even, so that bits=1
    is exactly `sign` with sign(0) = +1.
    """
    levels = 2 ** check_bits(bits) - 1
    unit = (hard_tanh(x) + 1) / 2
    return torch.floor(unit * levels + 0.5) / levels * 2 - 1


def quantize_log(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The paper's LogQuant(x) = Clip(AP2(x), minV, maxV), AP2(x) = sign(x) * 2**round(log2|x|)
    (section "Quantized neural networks - more than 1 bit").

    Code layout: 1 sign bit + (bits - 1) exponent bits, so the exponent takes the
    2**(bits-1) values {0, -1, ..., -(2**(bits-1) - 1)}: magnitudes in [2**-(2**(bits-1)-1), 1],
    i.e. the same [-1, 1] range as the other quantizers (weights are clipped there).
    Exponents outside are clipped, not flushed to zero, because this code has no zero.
    For the same reason x == 0 maps to the smallest magnitude with sign +, matching
    sign(0) = +1; bits=1 is then exactly `sign`. round() is torch.round (half-to-even
    in the log domain; ties are measure-zero for real data).
    """
    min_exponent = -(2 ** (check_bits(bits) - 1) - 1)
    magnitude = x.abs()
    # log2(0) = -inf clips to min_exponent, which is the documented x == 0 rule.
    exponent = torch.clamp(torch.round(torch.log2(magnitude)), min_exponent, 0)
    return sign(x) * torch.pow(2.0, exponent).to(x.dtype)


# ---------------------------------------------------------------------------
# Straight-through estimators
# ---------------------------------------------------------------------------

class StraightThrough(torch.autograd.Function):
    """Forward: any quantizer q(x). Backward: dL/dx = dL/dq * 1_{|x| <= 1} (saturate)
    or dL/dq (no saturation). q itself has zero gradient almost everywhere, which is
    why the STE replaces it (Sec. 2.3, after Hinton's lectures / Bengio et al. 2013)."""

    @staticmethod
    def forward(ctx, x, quantize, saturate):
        ctx.saturate = saturate
        if saturate:
            ctx.save_for_backward(x)
        return quantize(x)

    @staticmethod
    def backward(ctx, grad_output):
        if not ctx.saturate:
            return grad_output, None, None
        (x,) = ctx.saved_tensors
        # Cancelling the gradient where |x| > 1 is what made large-|x| units stop
        # moving and improved accuracy in the paper (Sec. 2.3, Eq. 4).
        return grad_output * (x.abs() <= 1).to(grad_output.dtype), None, None


def ste_sign(x: torch.Tensor, saturate: bool = True) -> torch.Tensor:
    """`sign` forward, straight-through backward."""
    return StraightThrough.apply(x, sign, saturate)


def ste_stochastic_sign(x: torch.Tensor, generator: torch.Generator | None = None,
                        saturate: bool = True) -> torch.Tensor:
    """`stochastic_sign` forward, straight-through backward."""
    return StraightThrough.apply(x, lambda t: stochastic_sign(t, generator), saturate)


def ste_linear_quant(x: torch.Tensor, bits: int, saturate: bool = True) -> torch.Tensor:
    """`linear_quant` (the paper's LinearQuant) forward, straight-through backward."""
    return StraightThrough.apply(x, lambda t: linear_quant(t, bits), saturate)


def ste_quantize_dorefa(x: torch.Tensor, bits: int, saturate: bool = True) -> torch.Tensor:
    """`quantize_dorefa` forward, straight-through backward."""
    return StraightThrough.apply(x, lambda t: quantize_dorefa(t, bits), saturate)


def ste_quantize_log(x: torch.Tensor, bits: int, saturate: bool = True) -> torch.Tensor:
    """`quantize_log` forward, straight-through backward."""
    return StraightThrough.apply(x, lambda t: quantize_log(t, bits), saturate)

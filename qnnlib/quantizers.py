"""Quantizers of arXiv:1609.07061 (QNN) and their straight-through gradients.

Three layers, from plain to trainable:

1. plain functions (`sign`, `linear_quant`, ...): the forward maths, no autograd
   tricks; used by the deploy/kernel code and as references in tests;
2. `ste_*` functions: the same forward, with the straight-through estimator (STE) of
   Sec. 2.3 as backward: grad * 1_{|x| <= 1} ("saturated", Eq. 4) or grad unchanged;
3. small `nn.Module` classes, registered in `QUANTIZERS` so `params.yaml` can name a
   quantizer by string (`get_quantizer("sign")`, `{"name": "log", "bits": 4}`).

1 and 2 live in `qnnlib.quantize_ops` and are re-exported here; 3 is this module.

Two k-bit linear grids live here, under their own names:

- `linear_quant` / `LinearQuant` / "linear_quant": the paper's LinearQuant (section
  "Quantized neural networks - more than 1 bit"), a k-bit two's-complement grid that
  contains 0: for k = 2, {-1, -1/2, 0, 1/2}. The models' k-bit default.
- `quantize_dorefa` / `DoReFaQuantizer` / "dorefa": DoReFa-Net's grid rescaled to
  [-1, 1], 2**k levels with both ends and no zero: for k = 2, {-1, -1/3, 1/3, 1}.
  `LinearQuantizer` and "linear" are its former names, kept so that existing configs
  and tests keep their meaning.
"""
from __future__ import annotations

import torch
from torch import nn

from .quantize_ops import (StraightThrough, check_bits, hard_sigmoid, hard_tanh, linear_quant, linear_quant_grid,  # noqa: F401
                           quantize_dorefa, quantize_log, sign, ste_linear_quant, ste_quantize_dorefa,
                           ste_quantize_log, ste_sign, ste_stochastic_sign, stochastic_sign, uniform_like)

__all__ = [
    "sign", "hard_sigmoid", "hard_tanh", "uniform_like", "stochastic_sign", "linear_quant_grid", "linear_quant",
    "quantize_dorefa", "quantize_log",
    "ste_sign", "ste_stochastic_sign", "ste_linear_quant", "ste_quantize_dorefa", "ste_quantize_log",
    "Sign", "StochasticSign", "LinearQuant", "DoReFaQuantizer", "LinearQuantizer", "LogQuantizer",
    "Identity", "HardTanh",
    "QUANTIZERS", "get_quantizer",
]


# ---------------------------------------------------------------------------
# Modules (what layers and params.yaml use)
# ---------------------------------------------------------------------------

class _Quantizer(nn.Module):
    """Common part of the modules: the `saturate` switch of the STE mask, shown in repr."""

    def __init__(self, saturate: bool):
        super().__init__()
        self.saturate = saturate

    def extra_repr(self) -> str:
        return f"saturate={self.saturate}"


class _KBitQuantizer(_Quantizer):
    """Common part of the k-bit modules: a checked `bits`."""

    def __init__(self, bits: int, saturate: bool = True):
        super().__init__(saturate)
        self.bits = check_bits(bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, " + super().extra_repr()


class Sign(_Quantizer):
    """Deterministic binarization (arXiv:1609.07061 Sec. 2.1, Eq. 1).

    Forward: q = +1 if x >= 0 else -1.
    Gradient: dL/dx = dL/dq * 1_{|x| <= 1} if saturate (Sec. 2.3, Eq. 4) else dL/dq.
    """

    def __init__(self, saturate: bool = True):
        super().__init__(saturate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ste_sign(x, self.saturate)


class StochasticSign(_Quantizer):
    """Stochastic binarization (arXiv:1609.07061 Sec. 2.1, Eq. 2-3).

    Forward (training): q = +1 with probability hard_sigmoid(x) = clamp((x+1)/2, 0, 1),
    else -1; draws come from `generator` when given.
    Forward (eval): deterministic sign(x), so `model.eval()` gives reproducible
    inference. (The authors' Theano code instead uses the real-valued weights at test
    time for stochastically binarized weights; this library binarizes so a trained
    net can be bit-packed.)
    Gradient: dL/dx = dL/dq * 1_{|x| <= 1} if saturate (Eq. 4) else dL/dq.
    """

    def __init__(self, generator: torch.Generator | None = None, saturate: bool = True):
        super().__init__(saturate)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return ste_stochastic_sign(x, self.generator, self.saturate)
        return ste_sign(x, self.saturate)


class LinearQuant(_KBitQuantizer):
    """The paper's LinearQuant (arXiv:1609.07061, section "Quantized neural networks -
    more than 1 bit"); the models' k-bit quantizer.

    Forward: q = Clip(round(x / Delta) * Delta, minV, maxV) with Delta = 2**(1-bits),
    minV = -1, maxV = 1 - Delta (k-bit two's complement; see `linear_quant_grid`);
    bits=1 equals Sign.
    Gradient: dL/dx = dL/dq * 1_{|x| <= 1} if saturate (Sec. 2.3) else dL/dq.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ste_linear_quant(x, self.bits, self.saturate)


class DoReFaQuantizer(_KBitQuantizer):
    """DoReFa-Net's uniform grid on [-1, 1] (Zhou et al. 2016): 2**bits levels, both ends,
    no zero; bits=1 equals Sign.

    Forward: q = floor(((clamp(x,-1,1) + 1)/2) * (2**bits - 1) + 0.5) / (2**bits - 1) * 2 - 1.
    Gradient: dL/dx = dL/dq * 1_{|x| <= 1} if saturate (Sec. 2.3) else dL/dq.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ste_quantize_dorefa(x, self.bits, self.saturate)


# Former name of the DoReFa grid (registry "linear"): kept so existing configs and tests
# keep their meaning; new code names "dorefa" or the paper's "linear_quant".
LinearQuantizer = DoReFaQuantizer


class LogQuantizer(_KBitQuantizer):
    """The paper's LogQuant, power-of-two quantization (arXiv:1609.07061, section
    "Quantized neural networks - more than 1 bit").

    Forward: q = sign(x) * 2**clamp(round(log2|x|), -(2**(bits-1) - 1), 0)
    (1 sign bit + bits-1 exponent bits; x == 0 -> +smallest magnitude).
    Gradient: dL/dx = dL/dq * 1_{|x| <= 1} if saturate else dL/dq.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ste_quantize_log(x, self.bits, self.saturate)


class Identity(_Quantizer):
    """Full precision: no quantization (the 32-bit rows of arXiv:1609.07061 "Benchmark results").

    Forward: q = x.  Gradient: dL/dx = dL/dq.
    `saturate` is accepted so every registered quantizer takes the same argument;
    with saturate=True the gradient is masked to |x| <= 1 like the other STEs.
    Default False: a full-precision quantizer keeps its true (identity) gradient.
    """

    def __init__(self, saturate: bool = False):
        super().__init__(saturate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.saturate:
            return StraightThrough.apply(x, torch.clone, True)
        return x


class HardTanh(_Quantizer):
    """Activation of the full-precision control network (arXiv:1609.07061 Sec. 2.3, Eq. 4).

    Forward: q = clamp(x, -1, 1).  Gradient: dL/dx = dL/dq * 1_{|x| <= 1}, its own
    derivative, which is the saturated STE of sign: the full-precision net sees the
    same gradient path as the binary one. (At |x| = 1 the derivative is undefined;
    we take 1 like the STE, where torch.clamp's autograd would take 0.)
    `saturate=False` makes the gradient the identity (a clipped-forward STE),
    mirroring the other quantizers' argument.
    """

    def __init__(self, saturate: bool = True):
        super().__init__(saturate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return StraightThrough.apply(x, hard_tanh, self.saturate)


QUANTIZERS: dict[str, type] = {
    "sign": Sign,
    "stochastic_sign": StochasticSign,
    "linear_quant": LinearQuant,
    "dorefa": DoReFaQuantizer,
    "linear": DoReFaQuantizer,  # former name of "dorefa"
    "log": LogQuantizer,
    "identity": Identity,
    "hard_tanh": HardTanh,
}


def get_quantizer(spec: str | dict | nn.Module) -> nn.Module:
    """Build a quantizer from a registered name, a dict {"name": ..., **kwargs}, or
    return an nn.Module instance as is (so callers can pass their own)."""
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict):
        if "name" not in spec:
            raise ValueError(f"quantizer dict needs a 'name' key, got {spec!r}")
        kwargs = dict(spec)
        name = kwargs.pop("name")
    else:
        raise TypeError(f"quantizer spec must be a name, a dict or an nn.Module, got {type(spec).__name__}")
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; valid names: {sorted(QUANTIZERS)}")
    return QUANTIZERS[name](**kwargs)

"""Number formats for the weight accumulators of notebook 02 (arXiv:1609.07061 Sec. 2.2:
gradient computation and accumulation): IEEE-style floats and fixed point, each rounded
to nearest or stochastically. `qnnlib.accumulators` holds a model's weights in them
during training and re-exports these names.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

__all__ = ["AccumulatorFormat", "FLOAT_FORMATS", "ROUNDINGS", "round_to_format"]

# name -> torch dtype of the IEEE-style float formats.
FLOAT_FORMATS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_FIXED = re.compile(r"^fixed(\d+)(-sr)?$")
ROUNDINGS = ("nearest", "stochastic")


@dataclass(frozen=True)
class AccumulatorFormat:
    """A number format for the weight accumulators (notebook 02, paper Sec. 2.2).

    `kind` is "float" or "fixed"; `bits` is the float's precision p (mantissa bits plus
    the implicit leading one: 24, 11, 8) or the fixed point's fractional bits k. Both
    put the spacing of representable values on [0.5, 1) at 2**-bits, which is why the
    notebook plots both kinds on one "bits of resolution" axis. `rounding` is "nearest"
    (ties to even) or "stochastic" (fixed point only, name suffix "-sr").
    """

    name: str
    kind: str
    bits: int
    rounding: str = "nearest"

    def __post_init__(self):
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.rounding == "stochastic" and self.kind != "fixed":
            raise ValueError("stochastic rounding is implemented for fixed point only")

    @classmethod
    def parse(cls, spec: "str | AccumulatorFormat") -> "AccumulatorFormat":
        """"float32" | "bfloat16" | "float16" | "fixed<k>" | "fixed<k>-sr" (k >= 0)."""
        if isinstance(spec, AccumulatorFormat):
            return spec
        if spec in FLOAT_FORMATS:
            # eps = 2**-(p - 1): the spacing just above 1.
            return cls(spec, "float", 1 - round(math.log2(torch.finfo(FLOAT_FORMATS[spec]).eps)))
        match = _FIXED.match(str(spec))
        if match:
            bits, stochastic = int(match.group(1)), bool(match.group(2))
            return cls(f"fixed{bits}" + ("-sr" if stochastic else ""), "fixed", bits,
                       "stochastic" if stochastic else "nearest")
        raise ValueError(f"unknown accumulator format {spec!r}: use one of "
                         f"{sorted(FLOAT_FORMATS)}, 'fixed<k>' or 'fixed<k>-sr' (e.g. 'fixed8')")

    @property
    def stochastic(self) -> bool:
        """True for stochastic rounding (which needs a `torch.Generator`)."""
        return self.rounding == "stochastic"

    @property
    def dtype(self) -> torch.dtype | None:
        """The torch dtype of a float format, None for fixed point."""
        return FLOAT_FORMATS.get(self.name)

    @property
    def storage_bits(self) -> int:
        """Bits per stored weight: 32 / 16 / 16 for floats, k + 2 for fixed<k>."""
        if self.kind == "float":
            return torch.finfo(self.dtype).bits
        return self.bits + 2

    def round(self, w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """w rounded to the format, as float32.

        Nearest: the nearest representable value, ties to even. Stochastic (fixed point):
        lo = floor(w 2**k), f = w 2**k - lo; lo + 1 with probability f (one uniform draw
        u ~ U[0, 1) per entry from `generator`, up when u < f), so E[round(w)] = w on
        [-1, 1]. Both clamp to [-1, 1].
        """
        if self.kind == "float":
            return w.to(self.dtype).to(w.dtype)
        scale = 2.0 ** self.bits
        if not self.stochastic:
            return torch.clamp(torch.round(w * scale) / scale, -1.0, 1.0)
        if generator is None:
            raise ValueError(f"{self.name} rounds stochastically: pass a torch.Generator")
        scaled = w * scale  # exact: a power-of-two scale
        low = torch.floor(scaled)
        uniform = torch.rand(w.shape, generator=generator, dtype=w.dtype, device=generator.device)
        up = (uniform.to(w.device) < scaled - low).to(w.dtype)
        return torch.clamp((low + up) / scale, -1.0, 1.0)

    __call__ = round

    def spacing(self, x: float) -> float:
        """Distance from |x| to the next larger representable value (the "ulp" at x).

        Float with precision p and smallest normal exponent e_min:
        2**(max(floor(log2|x|), e_min) - (p - 1)); fixed<k>: 2**-k everywhere.
        """
        if self.kind == "fixed":
            return 2.0 ** -self.bits
        info = torch.finfo(self.dtype)
        e_min = round(math.log2(info.tiny))
        exponent = e_min if x == 0 else max(math.floor(math.log2(abs(x))), e_min)
        return 2.0 ** (exponent - (self.bits - 1))


def round_to_format(w: torch.Tensor, fmt: "str | AccumulatorFormat",
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """`AccumulatorFormat.parse(fmt).round(w, generator)` (notebook 02)."""
    return AccumulatorFormat.parse(fmt).round(w, generator)

"""Shift-based AdaMax in one pass over each tensor (arXiv:1609.07061, section
"Shift-based AdaMax"; the optimizer of the paper's Torch7 rows, tried as a lever of the
CPU budget in scripts/budget_search.py, round 14).

`FusedShiftAdaMax` is `qnnlib.shift.ShiftAdaMax` (the algorithm, and where the paper is
ambiguous, are told there) with the per-element update done by one Numba loop, in
float32, in the order the per-op version rounds:

    m = m + (1 - beta1) * (g - m)                 (torch.lerp's formula for a weight < 1/2)
    v = beta2 * v  if  beta2 * v >= |g|  else |g|
    p = p - (m * AP2(1 / (v + eps))) * AP2(lr / (1 - beta1**t))

Why: the per-op step reads and writes every tensor about ten times and allocates four
temporaries, which makes a step of the 3 x 2048 budget net about 2.5 times as long as a
step with the fused Adam of `training.make_optimizer`; at that cost it does not fit the
budget. Fused, it passes over each tensor once.

AP2 of the reciprocal reads its bits: a positive float32 rounds up to the next power of
two exactly when its significand is sqrt(2) or more, that is when its 23 fraction bits
are 0x3504F4 or more; adding 0x800000 - 0x3504F4 to the bits carries into the exponent
exactly then, and masking the fraction leaves the power of two. This is exact, where
`shift.ap2` goes through a float log2 that can land on the wrong side of the boundary
(one value in ten million in the tests). Elsewhere the two optimizers agree bit for bit.
"""
from __future__ import annotations

import numba
import numpy as np
import torch
from torch import nn

from .shift import PAPER_BETAS, ShiftAdaMax, optimizer_groups

__all__ = ["FusedShiftAdaMax", "make_fused_shift_adamax"]

_CHUNK = 2048  # elements per inner block: the reciprocals of a block stay in L1
_FRACTION_UP = 0x800000 - 0x3504F4  # carries into the exponent iff the significand >= sqrt(2)
_SIGN_AND_EXPONENT = np.int32(-0x800000)  # 0xFF800000


@numba.njit(cache=True, nogil=True, error_model="numpy")  # no zero-division checks: v + eps > 0
def _step(param, grad, exp_avg, exp_inf, weight, beta2, eps, step_size):  # pragma: no cover (jitted)
    reciprocal = np.empty(_CHUNK, np.float32)
    bits = reciprocal.view(np.int32)
    one = np.float32(1.0)
    for start in range(0, param.size, _CHUNK):  # block slices: loops LLVM vectorizes
        n = min(_CHUNK, param.size - start)
        p, g, m, v = (param[start:start + n], grad[start:start + n], exp_avg[start:start + n],
                      exp_inf[start:start + n])
        for i in range(n):
            m[i] = m[i] + weight * (g[i] - m[i])
            decayed, magnitude = beta2 * v[i], abs(g[i])
            v[i] = decayed if decayed >= magnitude else magnitude  # a NaN in g stays, as in torch.maximum
            reciprocal[i] = one / (v[i] + eps)
        for i in range(n):
            bits[i] = (bits[i] + _FRACTION_UP) & _SIGN_AND_EXPONENT
        for i in range(n):
            p[i] -= m[i] * reciprocal[i] * step_size


def _flat(tensor: torch.Tensor, what: str) -> np.ndarray:
    if tensor.device.type != "cpu" or tensor.dtype != torch.float32 or not tensor.is_contiguous():
        raise TypeError(f"FusedShiftAdaMax needs contiguous float32 CPU tensors; the {what} is "
                        f"{tensor.dtype} on {tensor.device}, contiguous={tensor.is_contiguous()} "
                        "(use qnnlib.shift.ShiftAdaMax for other tensors)")
    return tensor.detach().view(-1).numpy()


class FusedShiftAdaMax(ShiftAdaMax):
    """`ShiftAdaMax` (arXiv:1609.07061, "Shift-based AdaMax") with each tensor's update
    fused into one pass; same defaults, param groups, state and results (see the module
    docstring for the one place it is more exact). Contiguous float32 CPU tensors only."""

    def _update(self, p, m, v, group, shift: float) -> None:
        beta1, beta2 = group["betas"]
        _step(_flat(p, "parameter"), _flat(p.grad, "gradient"), _flat(m, "state"), _flat(v, "state"),
              np.float32(1 - beta1), np.float32(beta2), np.float32(group["eps"]), np.float32(shift))


def make_fused_shift_adamax(model: nn.Module, lr: float, glorot_scaling: bool = True) -> FusedShiftAdaMax:
    """`FusedShiftAdaMax` with `training.make_optimizer`'s Glorot-scaled groups and the
    paper's betas: an `optimizer_factory` for `training.train`."""
    return FusedShiftAdaMax(optimizer_groups(model, lr, glorot_scaling), lr=lr, betas=PAPER_BETAS)

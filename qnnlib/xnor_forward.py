"""The forward product of a BNN's binary layers as an XNOR-popcount (`matmul: xnor`).

Behind every layer of a BNN but the first, the weights are ±1 and the inputs are
binarized activations: ±1, or with dropout ±s and 0 (s = 1 / (1 - p)). Then
x W^T = s (T W^T) with T ternary, and T W^T is an exact integer. Writing T = (U + V) / 2
with U, V ±1 (U = +1 where T >= 0, V = +1 where T > 0) turns it into two products of ±1
matrices, which `qnnlib.kernels.xnor_gemm` computes with popcounts. The result,
s times that integer rounded once to float32, is the exact product correctly rounded:
the float64 product rounded to float32, in whatever order its sums run, and so the same
bits on every CPU. The ordered kernel (`qnnlib.ordered_matmul`) sums the same ±s terms in
order, rounding each partial sum, so the two can differ in the last bit when s is not a
power of two; without dropout (s = 1, evaluation) they agree bit for bit.

On the budget net (784-2048x3-10, batch 96) it replaces the two hidden-to-hidden float
products of the forward pass, which took a fifth of the training step;
`benchmarks/forward_step.py` races the whole step against the ordered one. `xnor_product`
returns None for inputs of another kind (the pixels entering the first layer), and the
caller falls back.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from qnnlib.bitpack import words_for
from qnnlib.kernels import cpu, prepare_weights

__all__ = ["xnor_product"]

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)
# The XNOR kernel compiled serial: the parallel build's idle OpenMP thread spins after each
# call and takes the core of the run training beside this one (a 91 ms step became 189 ms).
# Not cached: its cache entry would share the parallel build's name.
_serial_xnor_gemm = numba.njit(nogil=True, fastmath=True, boundscheck=False)(
    cpu.xnor_gemm_int32.py_func)


@_jit
def _pack_ternary(x, words):
    """x (M, K) float32 -> words (2M, W): rows of U, then rows of V. Returns the scale s,
    or -1.0 when x is not s times a ternary matrix."""
    m, k = x.shape
    scale = np.float32(0.0)
    for i in range(m):
        for j in range(k):
            scale = max(scale, abs(x[i, j]))
    other = False  # branch-free loops (a flag instead of an early exit) vectorise
    for i in range(m):
        for w in range(words.shape[1]):
            u = np.uint64(0)
            v = np.uint64(0)
            for b in range(min(64, k - 64 * w)):
                value = x[i, 64 * w + b]
                u |= np.uint64(value >= 0) << np.uint64(b)
                v |= np.uint64(value > 0) << np.uint64(b)
                other |= (value != 0) & (abs(value) != scale)
            words[i, w] = u
            words[m + i, w] = v
    return np.float32(-1.0) if other or not np.isfinite(scale) else scale


@_jit
def _pack_signs(weight, words):
    """weight (N, K) float32 of ±1 -> words (N, W), bit set for +1. False if any entry
    is not ±1."""
    n, k = weight.shape
    other = False
    for i in range(n):
        for w in range(words.shape[1]):
            word = np.uint64(0)
            for b in range(min(64, k - 64 * w)):
                value = weight[i, 64 * w + b]
                word |= np.uint64(value > 0) << np.uint64(b)
                other |= abs(value) != 1
            words[i, w] = word
    return not other


def xnor_product(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """x (M, K) @ weight (N, K)^T, float32 CPU tensors, when weight is ±1 and x is
    s times a {-1, 0, 1} matrix: the exact product rounded once to float32 (see the
    module docstring). None when the operands are not of that kind."""
    x_np = x.detach().contiguous().numpy()
    m, k = x_np.shape
    if m == 0 or k == 0:
        return None
    x_words = np.empty((2 * m, words_for(k)), np.uint64)
    scale = _pack_ternary(x_np, x_words)
    if scale < 0:
        return None
    w_words = np.empty((weight.shape[0], words_for(k)), np.uint64)
    if not _pack_signs(weight.detach().contiguous().numpy(), w_words):
        return None
    dots = np.empty((2 * m, len(w_words)), np.int32)
    _serial_xnor_gemm(x_words, prepare_weights(w_words).panels, k, dots)
    ternary = (dots[:m] + dots[m:]) // 2  # U.W + V.W = 2 T.W, exactly
    return torch.from_numpy(ternary.astype(np.float32) * np.float32(scale))

"""CPU XNOR-popcount GEMM (Numba).

Both operands are ±1 matrices packed along K into uint64 words, one row per output
row (A) or output column (B). `dot = k - 2 * popcount(a XOR b)`; padding bits are zero
in both operands, so their XOR is zero and they never count.

Work is split into units of 4 rows x 64 columns. A unit owns whole output words of the
packed epilogue, so threads never write the same word, and there are enough units for
two threads even when M = 1. Inside a unit a 4x4 register-blocked micro-kernel walks
the words of K: every loaded word of A is reused 4 times and every word of B 4 times,
and LLVM vectorises the walk over K into AVX-512 `vpxorq` / `vpopcntq` / `vpaddq`
(checked with `inspect_asm` in the tests).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

ROWS_PER_UNIT = 4
COLS_PER_UNIT = 64
MICRO = 4  # micro-tile is MICRO x MICRO outputs
SIMD_WORDS = 8  # uint64 lanes in an AVX-512 register


@intrinsic
def popcount64(typingctx, word):
    """`llvm.ctpop.i64`: Numba has no popcount of its own."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


_jit = numba.njit(cache=True, fastmath=True, nogil=True, boundscheck=False)


@_jit
def _mismatches_4x4(a0, a1, a2, a3, b0, b1, b2, b3):
    """Popcounts of a_i XOR b_j over all words, for a 4x4 block of rows."""
    c00 = c01 = c02 = c03 = np.uint64(0)
    c10 = c11 = c12 = c13 = np.uint64(0)
    c20 = c21 = c22 = c23 = np.uint64(0)
    c30 = c31 = c32 = c33 = np.uint64(0)
    for w in range(a0.shape[0]):
        x0, x1, x2, x3 = a0[w], a1[w], a2[w], a3[w]
        y0, y1, y2, y3 = b0[w], b1[w], b2[w], b3[w]
        c00 += popcount64(x0 ^ y0)
        c01 += popcount64(x0 ^ y1)
        c02 += popcount64(x0 ^ y2)
        c03 += popcount64(x0 ^ y3)
        c10 += popcount64(x1 ^ y0)
        c11 += popcount64(x1 ^ y1)
        c12 += popcount64(x1 ^ y2)
        c13 += popcount64(x1 ^ y3)
        c20 += popcount64(x2 ^ y0)
        c21 += popcount64(x2 ^ y1)
        c22 += popcount64(x2 ^ y2)
        c23 += popcount64(x2 ^ y3)
        c30 += popcount64(x3 ^ y0)
        c31 += popcount64(x3 ^ y1)
        c32 += popcount64(x3 ^ y2)
        c33 += popcount64(x3 ^ y3)
    return (
        (c00, c01, c02, c03),
        (c10, c11, c12, c13),
        (c20, c21, c22, c23),
        (c30, c31, c32, c33),
    )


@_jit
def _mismatches_1x4(a0, b0, b1, b2, b3):
    """Row-edge (and M = 1) case: one row of A against four rows of B."""
    c0 = c1 = c2 = c3 = np.uint64(0)
    for w in range(a0.shape[0]):
        x = a0[w]
        c0 += popcount64(x ^ b0[w])
        c1 += popcount64(x ^ b1[w])
        c2 += popcount64(x ^ b2[w])
        c3 += popcount64(x ^ b3[w])
    return c0, c1, c2, c3


@_jit
def _mismatches_1x1(a0, b0):
    count = np.uint64(0)
    for w in range(a0.shape[0]):
        count += popcount64(a0[w] ^ b0[w])
    return count


@_jit
def _unit_dots(a_bits, b_bits, k, row0, col0, dots):
    """Fill `dots` (ROWS_PER_UNIT x COLS_PER_UNIT scratch) for one unit; edges clipped."""
    m = min(ROWS_PER_UNIT, a_bits.shape[0] - row0)
    n = min(COLS_PER_UNIT, b_bits.shape[0] - col0)
    n_full = n - n % MICRO
    for c in range(0, n_full, MICRO):
        j = col0 + c
        b0, b1, b2, b3 = b_bits[j], b_bits[j + 1], b_bits[j + 2], b_bits[j + 3]
        if m == MICRO:
            i = row0
            block = _mismatches_4x4(
                a_bits[i], a_bits[i + 1], a_bits[i + 2], a_bits[i + 3], b0, b1, b2, b3
            )
            for r in range(MICRO):
                for s in range(MICRO):
                    dots[r, c + s] = k - 2 * np.int64(block[r][s])
        else:
            for r in range(m):
                row = _mismatches_1x4(a_bits[row0 + r], b0, b1, b2, b3)
                for s in range(MICRO):
                    dots[r, c + s] = k - 2 * np.int64(row[s])
    for c in range(n_full, n):
        for r in range(m):
            dots[r, c] = k - 2 * np.int64(_mismatches_1x1(a_bits[row0 + r], b_bits[col0 + c]))
    return m, n


@numba.njit(parallel=True, cache=True, fastmath=True, boundscheck=False)
def xnor_gemm_int32(a_bits, b_bits, k, out):
    """out[m, n] = dot of row m of A with row n of B (both packed)."""
    n_row_units = (a_bits.shape[0] + ROWS_PER_UNIT - 1) // ROWS_PER_UNIT
    n_col_units = (b_bits.shape[0] + COLS_PER_UNIT - 1) // COLS_PER_UNIT
    for unit in prange(n_row_units * n_col_units):
        row0 = (unit // n_col_units) * ROWS_PER_UNIT
        col0 = (unit % n_col_units) * COLS_PER_UNIT
        dots = np.empty((ROWS_PER_UNIT, COLS_PER_UNIT), np.int64)
        m, n = _unit_dots(a_bits, b_bits, k, row0, col0, dots)
        for r in range(m):
            for c in range(n):
                out[row0 + r, col0 + c] = dots[r, c]


@numba.njit(parallel=True, cache=True, fastmath=True, boundscheck=False)
def xnor_gemm_threshold_packed(a_bits, b_bits, k, thresholds, flip, out):
    """out bit n of row m = (dot[m, n] >= thresholds[n]) XOR flip[n], packed along N.

    One unit covers exactly one output word per row (COLS_PER_UNIT == 64), so the word
    is assembled in a register and stored once; padding bits stay zero.
    """
    n_row_units = (a_bits.shape[0] + ROWS_PER_UNIT - 1) // ROWS_PER_UNIT
    n_col_units = out.shape[1]
    for unit in prange(n_row_units * n_col_units):
        row0 = (unit // n_col_units) * ROWS_PER_UNIT
        word = unit % n_col_units
        col0 = word * COLS_PER_UNIT
        dots = np.empty((ROWS_PER_UNIT, COLS_PER_UNIT), np.int64)
        m, n = _unit_dots(a_bits, b_bits, k, row0, col0, dots)
        for r in range(m):
            bits = np.uint64(0)
            for c in range(n):
                fire = (dots[r, c] >= thresholds[col0 + c]) != flip[col0 + c]
                bits |= np.uint64(fire) << np.uint64(c)
            out[row0 + r, word] = bits


def pad_words_for_simd(bits: np.ndarray) -> np.ndarray:
    """Zero-pad the word axis to a multiple of SIMD_WORDS.

    LLVM vectorises the walk over K 8 words (one zmm) at a time and finishes with a
    scalar loop; at K = 784 (13 words) that scalar tail costs more than the vector part.
    Zero words XOR to zero in both operands, so padding never changes a dot product.
    """
    n_words = bits.shape[1]
    if n_words % SIMD_WORDS == 0:
        return bits
    padded = np.zeros((bits.shape[0], n_words + (-n_words) % SIMD_WORDS), np.uint64)
    padded[:, :n_words] = bits
    return padded


def warm_up():
    """Compile (or load from Numba's cache) both kernels on a tiny problem."""
    a = np.zeros((5, 2), np.uint64)
    b = np.zeros((5, 2), np.uint64)
    xnor_gemm_int32(a, b, 128, np.empty((5, 5), np.int32))
    xnor_gemm_threshold_packed(
        a, b, 128, np.zeros(5, np.int32), np.zeros(5, np.bool_), np.empty((5, 1), np.uint64)
    )

"""CPU bit-plane kernel: a ±1 weight layer on raw uint8 pixels, exactly, with popcounts.

The paper's first layer sees 8-bit inputs (arXiv:1609.07061, "First layer"). With x the uint8
pixels of one row, x^n its n-th bit-plane (0/1) and w+ the 0/1 mask of W_b = +1:

    W_b . x = sum_{n=0..7} 2^n (x^n . W_b),   x^n . W_b = 2 popc(x^n & w+) - popc(x^n),
    so t = W_b . x = 2 sum_n 2^n popc(x^n & w+) - sum(x),

an exact integer. The output is the next layer's packed bits (t >= T) XOR flip.

Same scheme as the GEMM (`qnnlib.kernels.cpu`), with the same vector-IR pieces
(`qnnlib.vector_ir`): the masks w+ are `pack_bits(W_b)` in the GEMM's panel
layout, one plane word of a row is broadcast against a panel, and each `<8 x i64>`
accumulator holds 8 columns. The plane weights 2^n come from Horner's rule: walk the
planes from the most significant down and double the accumulators before each plane, so
the inner loop is and + popcount + add only.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from qnnlib.bitpack import WORD_BITS
from qnnlib.vector_ir import (I64, LANES, V64, accumulate_popcounts, c_array, fire_bits,
                                      is_c_array, lane_flips, lane_thresholds, panel_pointers,
                                      splat, zero_accumulators)

PIXEL_PLANES = 8
TILE_PANELS = 4  # panels per micro-tile (32 columns)
PANELS_PER_WORD = WORD_BITS // LANES  # panels per packed output word
CHUNK_ROWS = 128  # rows per work unit: their planes (104 KiB) stay in L2; fewer panel re-reads than 64 (measured)
INT32_MAX = np.iinfo(np.int32).max


def _bitplane_tile(rows: int):
    """Intrinsic: for `rows` rows from `row` and TILE_PANELS panels from `panel0`, the
    fused threshold epilogue: byte out_bytes[out_row + r, out_col + p] gets bit `lane` =
    (t >= thresholds[c]) XOR flip[c], c = 8 (panel0 + p) + lane, where
    t = 2 (x_r . w+) - pixel_sums[row + r] and x_r . w+ = sum_n 2^n sum_w popc(plane_n[w] & panel[w]).
    Comparing in vector registers avoids a scalar loop over every (row, column)."""

    @intrinsic
    def tile(typingctx, planes, row, panels, panel0, pixel_sums, thresholds, flip, out, out_row, out_col):
        if not (is_c_array(planes, types.uint64, 3) and is_c_array(panels, types.uint64, 3)
                and is_c_array(pixel_sums, types.int64, 1) and is_c_array(thresholds, types.int32, 1)
                and is_c_array(flip, types.boolean, 1) and is_c_array(out, types.uint8, 2)):
            return None
        signature = types.void(planes, types.intp, panels, types.intp, pixel_sums, thresholds, flip,
                               out, types.intp, types.intp)

        def codegen(context, builder, sig, args):
            row, panel0 = args[1], args[3]
            planes_a, panels_a = c_array(context, builder, sig, args, 0), c_array(context, builder, sig, args, 2)
            n_words = builder.extract_value(panels_a.shape, 1)
            row_words = builder.mul(n_words, I64(PIXEL_PLANES))
            acc = zero_accumulators(builder, rows, TILE_PANELS)
            panel_ptrs = panel_pointers(builder, panels_a.data, panel0, n_words, TILE_PANELS)
            for plane in reversed(range(PIXEL_PLANES)):  # Horner: most significant first
                for cell in sum(acc, []):
                    value = builder.load(cell)
                    builder.store(builder.add(value, value), cell)
                plane_ptrs = [builder.gep(planes_a.data, [builder.add(
                    builder.mul(builder.add(row, I64(r)), row_words), builder.mul(I64(plane), n_words))])
                    for r in range(rows)]
                accumulate_popcounts(builder, acc, plane_ptrs, panel_ptrs, n_words, builder.and_)
            _store_fired(context, builder, sig, args, acc, rows)
            return context.get_dummy_value()

        return signature, codegen

    return tile


def _store_fired(context, builder, sig, args, acc, rows):
    """The epilogue of `_bitplane_tile`: t = 2 acc - sum(x), compared in 64-bit lanes."""
    row, panel0, out_row, out_col = args[1], args[3], args[8], args[9]
    sums_a, t_a, f_a, out_a = (c_array(context, builder, sig, args, i) for i in (4, 5, 6, 7))
    out_cols = builder.extract_value(out_a.shape, 1)
    for p in range(TILE_PANELS):
        first = builder.mul(builder.add(panel0, I64(p)), I64(LANES))
        thresholds_p = builder.sext(lane_thresholds(builder, t_a.data, first), V64)  # exact: |t| < 2**31
        flips = lane_flips(builder, f_a.data, first)
        for r in range(rows):
            pixel_sum = builder.load(builder.gep(sums_a.data, [builder.add(row, I64(r))]))
            value = builder.load(acc[r][p])
            t = builder.sub(builder.add(value, value), splat(builder, pixel_sum, V64))
            bits = fire_bits(builder, builder.icmp_signed(">=", t, thresholds_p), flips)
            index = builder.add(builder.mul(builder.add(out_row, I64(r)), out_cols),
                                builder.add(out_col, I64(p)))
            builder.store(bits, builder.gep(out_a.data, [index]))


_tile4 = _bitplane_tile(4)
_tile1 = _bitplane_tile(1)


@numba.njit(parallel=True, cache=True, boundscheck=False)
def pack_bitplanes(pixels, n_words):
    """(N, K) uint8 -> (N, 8, n_words) uint64: word [i, n, w] holds bit n of pixels
    64w .. 64w+63 of row i (pixel 64w + j at bit j): the 8 bit-planes, each packed."""
    n_rows, k = pixels.shape
    planes = np.zeros((n_rows, PIXEL_PLANES, n_words), np.uint64)
    for i in prange(n_rows):
        for w in range(n_words):
            count = min(WORD_BITS, k - w * WORD_BITS)
            for n in range(PIXEL_PLANES):
                word = np.uint64(0)
                for j in range(count):
                    bit = (np.uint64(pixels[i, w * WORD_BITS + j]) >> np.uint64(n)) & np.uint64(1)
                    word |= bit << np.uint64(j)
                planes[i, n, w] = word
    return planes


def pad_epilogue(thresholds, flip, n_panels):
    """int32 thresholds / bool flip over every panel column; the padding never fires
    (t <= 255 K < INT32_MAX), so padding bits of the packed output come out zero."""
    padded_t = np.full(n_panels * LANES, INT32_MAX, np.int32)
    padded_t[: len(thresholds)] = thresholds
    padded_f = np.zeros(n_panels * LANES, np.bool_)
    padded_f[: len(flip)] = flip
    return padded_t, padded_f


@numba.njit(parallel=True, cache=True, fastmath=True, boundscheck=False)
def bitplane_threshold_packed(planes, panels, pixel_sums, thresholds, flip, out_bytes):
    """Packed threshold layer into the bytes of the uint64 output (8 panels per word).

    planes from `pack_bitplanes`, panels from `cpu.prepare_panels(pack_bits(W_b))`,
    pixel_sums the int64 row sums of the pixels, thresholds / flip from `pad_epilogue`.
    Work unit: CHUNK_ROWS rows x one 64-column output word, so threads never share a word.
    """
    n_rows, n_out_words = planes.shape[0], out_bytes.shape[1] // PANELS_PER_WORD
    n_chunks = (n_rows + CHUNK_ROWS - 1) // CHUNK_ROWS
    for unit in prange(n_chunks * n_out_words):
        r0, word = (unit // n_out_words) * CHUNK_ROWS, unit % n_out_words
        r1 = min(n_rows, r0 + CHUNK_ROWS)
        for g in range(0, PANELS_PER_WORD, TILE_PANELS):
            panel = word * PANELS_PER_WORD + g
            r = r0
            while r + 4 <= r1:
                _tile4(planes, r, panels, panel, pixel_sums, thresholds, flip, out_bytes, r, panel)
                r += 4
            for rest in range(r, r1):
                _tile1(planes, rest, panels, panel, pixel_sums, thresholds, flip, out_bytes, rest, panel)

"""CPU XNOR-popcount GEMM (Numba + explicit AVX-512 vector IR).

Both operands are ±1 matrices packed along K into uint64 words. `dot = k - 2 *
popcount(a XOR b)`; padding bits are zero in both operands, so they never count.

Layout. The kernel vectorises across output columns, not along K: B (the weights) is
rearranged once into *panels* of 8 columns, `panels[p, w, lane] = b_bits[8 p + lane, w]`
(`prepare_panels`), so one 512-bit load brings word w of 8 consecutive columns. One
word of A, broadcast to all 8 lanes, is XORed against it, popcounted (`vpopcntq`) and
added to an accumulator that holds 8 output columns. Nothing is ever reduced
horizontally, and K = 784 (13 words) needs no padding: the loop over K is scalar in w.

Micro-tile. ROWS rows of A x PANELS panels of B (4 x 4 = 16 zmm accumulators, plus 4
panel registers) per step of w: each loaded panel is reused ROWS times and each
broadcast word of A PANELS times, so loads stay well below the vector ALU rate and the
inner loop is xor + popcount + add on zmm registers, no spills. Those three vector ops
per 8 words are the bound: on the development EPYC (Zen 5) the micro-kernel runs at
42-46 Gword/s per core with A and B in L1, and the whole GEMM at about the same rate.
Without AVX-512 VPOPCNTDQ, LLVM lowers the same vector IR to narrower instructions:
still exact, only slower; on AVX2, `xnor_gemm` therefore runs the nibble-table kernel
(`qnnlib.kernels.nibble`) for all but a few rows.

Why hand-written vector IR, and the pieces it shares with the bit-plane kernel: see
`qnnlib.vector_ir`.

Blocking and threads. Work is split into units of (a chunk of rows of A) x (64 columns
= 8 panels = one word of the packed epilogue). The row chunk is sized so that its part
of A stays in L2 while the unit's panels cycle through L1. Units are distributed with
`prange`: large M splits mostly over row chunks, small M (down to M = 1) over the
64-column blocks. A unit owns whole output words, so no two threads write the same one.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from qnnlib.vector_ir import (I32, I64, LANES, V32, accumulate_popcounts, c_array, fire_bits,
                                      is_c_array, lane_flips, lane_thresholds, panel_pointers,
                                      splat, zero_accumulators)

ROWS = 4  # rows of A per micro-tile
PANELS = 4  # panels of B per micro-tile
BLOCK_COLS = 64  # columns per work unit: one uint64 word of the packed epilogue
BLOCK_PANELS = BLOCK_COLS // LANES
A_CHUNK_BYTES = 256 * 1024  # part of A a unit walks over: well inside a 1 MiB L2

_jit = numba.njit(cache=True, fastmath=True, nogil=True, boundscheck=False)
_parallel_jit = numba.njit(parallel=True, cache=True, fastmath=True, boundscheck=False)


# --- weights in panel layout -------------------------------------------------------------


def prepare_panels(b_bits: np.ndarray) -> np.ndarray:
    """Rearrange C-contiguous uint64 (N, W) words of B into panels.

    Returns uint64 (ceil(N / 64) * 8, W, 8), 64-byte aligned: column j of B is lane
    j % 8 of panel j // 8. Columns past N are zero; their results are discarded (or,
    in the packed epilogue, never fire).
    """
    n, n_words = b_bits.shape
    n_panels = -(-n // BLOCK_COLS) * BLOCK_PANELS
    size = n_panels * n_words * LANES
    # Over-allocate by one cache line and start on a 64-byte boundary so every panel
    # load is one aligned cache line (the panel stride, W * 64 bytes, keeps it aligned).
    raw = np.zeros(size + LANES, np.uint64)
    start = (-(raw.ctypes.data // 8)) % LANES
    panels = raw[start : start + size].reshape(n_panels, n_words, LANES)
    _fill_panels(b_bits, panels)
    return panels


@_jit
def _fill_panels(b_bits, panels):
    for j in range(b_bits.shape[0]):
        panel, lane = j // LANES, j % LANES
        for w in range(b_bits.shape[1]):
            panels[panel, w, lane] = b_bits[j, w]


# --- the micro-kernel --------------------------------------------------------------------


def _micro_kernel(rows: int, panels: int):
    """Intrinsic for a `rows` x (8 * `panels`) tile of dots over all of K.

    `tile(a, row, b, panel, k, thresholds, flip, dst, dst_row, dst_col)` reads rows
    row.. of A (C-contiguous uint64 (M, W)) and panels panel.. of B (panel layout), and
    - for int32 `dst`: stores the dots at dst[dst_row + r, dst_col + 8 p + lane];
    - for uint8 `dst` (the bytes of packed uint64 output words): stores byte
      dst[dst_row + r, dst_col + p] whose bit `lane` is
      (dot >= thresholds[c]) XOR flip[c] for column c = 8 (panel + p) + lane.
      Little-endian, byte j of a word holds its bits 8j..8j+7, so this is exactly the
      packed layout. thresholds (int32) and flip (bool) must cover every panel.
    """

    @intrinsic
    def tile(typingctx, a, a_row, b, panel0, k, thresholds, flip, dst, dst_row, dst_col):
        ok = (
            is_c_array(a, types.uint64, 2) and is_c_array(b, types.uint64, 3)
            and is_c_array(thresholds, types.int32, 1) and is_c_array(flip, types.boolean, 1)
            and (is_c_array(dst, types.int32, 2) or is_c_array(dst, types.uint8, 2))
        )
        if not ok:
            return None
        signature = types.void(a, types.intp, b, types.intp, types.int64, thresholds, flip,
                               dst, types.intp, types.intp)

        def codegen(context, builder, sig, args):
            a_row, panel0 = args[1], args[3]
            a_arr, b_arr = c_array(context, builder, sig, args, 0), c_array(context, builder, sig, args, 2)
            n_words = builder.extract_value(a_arr.shape, 1)
            a_ptrs = [builder.gep(a_arr.data, [builder.mul(builder.add(a_row, I64(r)), n_words)])
                      for r in range(rows)]
            acc = zero_accumulators(builder, rows, panels)
            accumulate_popcounts(builder, acc, a_ptrs,
                                 panel_pointers(builder, b_arr.data, panel0, n_words, panels),
                                 n_words, builder.xor)
            _store_dots(context, builder, sig, args, acc)
            return context.get_dummy_value()

        return signature, codegen

    return tile


def _store_dots(context, builder, sig, args, acc):
    """The epilogue of `_micro_kernel`: dot = k - 2 * mismatches in int32 lanes
    (|dot| <= k < 2**30), stored as int32 or as the packed threshold bits."""
    panel0, k, dst_row, dst_col = args[3], args[4], args[8], args[9]
    k_lanes = splat(builder, builder.trunc(k, I32), V32)
    one = splat(builder, I32(1), V32)
    dst_arr = c_array(context, builder, sig, args, 7)
    dst_cols = builder.extract_value(dst_arr.shape, 1)
    packed = sig.args[7].dtype == types.uint8
    if packed:
        t_arr, f_arr = c_array(context, builder, sig, args, 5), c_array(context, builder, sig, args, 6)
    for r, row_acc in enumerate(acc):
        dst_row_ptr = builder.gep(dst_arr.data, [builder.mul(builder.add(dst_row, I64(r)), dst_cols)])
        for p, cell in enumerate(row_acc):
            dots = builder.sub(k_lanes, builder.shl(builder.trunc(builder.load(cell), V32), one))
            if not packed:
                ptr = builder.gep(dst_row_ptr, [builder.add(dst_col, I64(LANES * p))])
                builder.store(dots, builder.bitcast(ptr, V32.as_pointer()), align=4)
                continue
            first = builder.mul(builder.add(panel0, I64(p)), I64(LANES))
            fire = builder.icmp_signed(">=", dots, lane_thresholds(builder, t_arr.data, first))
            bits = fire_bits(builder, fire, lane_flips(builder, f_arr.data, first))
            builder.store(bits, builder.gep(dst_row_ptr, [builder.add(dst_col, I64(p))]))


_tile = _micro_kernel(ROWS, PANELS)
_tile_row = _micro_kernel(1, PANELS)  # rows left over at the bottom, and M = 1


# --- blocking and threads ----------------------------------------------------------------


@_jit
def _block(a_bits, r0, r1, panels, g0, k, thresholds, flip, dst, dst_r0, dst_c0, step):
    """Rows r0:r1 of A x the BLOCK_PANELS panels from g0, into dst from (dst_r0, dst_c0).

    `step` is dst's columns per panel: 8 int32 dots, or 1 byte of packed bits. Columns
    outermost: one micro-tile's panels (PANELS x W x 64 bytes) stay in L1 while the
    rows of the chunk stream through from L2.
    """
    for g in range(g0, g0 + BLOCK_PANELS, PANELS):
        col = dst_c0 + (g - g0) * step
        r = r0
        while r + ROWS <= r1:
            _tile(a_bits, r, panels, g, k, thresholds, flip, dst, dst_r0 + r - r0, col)
            r += ROWS
        for rest in range(r, r1):
            _tile_row(a_bits, rest, panels, g, k, thresholds, flip, dst, dst_r0 + rest - r0, col)


@_jit
def work_unit(unit, n_blocks, chunk, m):
    """Rows r0:r1 and the column block of work unit `unit`: units enumerate (row chunks of
    `chunk` rows) x (`n_blocks` 64-column blocks), so each owns whole output words."""
    r0 = (unit // n_blocks) * chunk
    return r0, min(m, r0 + chunk), unit % n_blocks


@_jit
def _chunk_rows(n_words):
    """Rows of A per unit: A_CHUNK_BYTES of A, a multiple of ROWS."""
    return max(ROWS, A_CHUNK_BYTES // (8 * n_words) // ROWS * ROWS)


@_parallel_jit
def xnor_gemm_int32(a_bits, panels, k, out):
    """out[m, n] = dot of row m of A with column n of B (A packed, B in panel layout)."""
    m, n = out.shape
    chunk = _chunk_rows(a_bits.shape[1])
    n_chunks = (m + chunk - 1) // chunk
    n_blocks = panels.shape[0] // BLOCK_PANELS
    no_thresholds = np.zeros(0, np.int32)
    no_flip = np.zeros(0, np.bool_)
    for unit in prange(n_chunks * n_blocks):
        r0, r1, block = work_unit(unit, n_blocks, chunk, m)
        g0 = block * BLOCK_PANELS
        c0 = g0 * LANES
        if c0 + BLOCK_COLS <= n:
            _block(a_bits, r0, r1, panels, g0, k, no_thresholds, no_flip, out, r0, c0, LANES)
        else:  # last, ragged block: whole panels into scratch, then the real columns
            scratch = np.empty((r1 - r0, BLOCK_COLS), np.int32)
            _block(a_bits, r0, r1, panels, g0, k, no_thresholds, no_flip, scratch, 0, 0, LANES)
            out[r0:r1, c0:n] = scratch[:, : n - c0]


@_parallel_jit
def xnor_gemm_threshold_packed(a_bits, panels, k, thresholds, flip, out_bytes):
    """Packed (dot >= thresholds) XOR flip, written as the bytes of the uint64 output.

    `out_bytes` is the (M, 8 * ceil(N / 64)) uint8 view of the packed output; thresholds
    and flip are padded to every panel column, the padding never firing, so padding
    bits come out zero without a separate pass.
    """
    m = out_bytes.shape[0]
    chunk = _chunk_rows(a_bits.shape[1])
    n_chunks = (m + chunk - 1) // chunk
    n_blocks = panels.shape[0] // BLOCK_PANELS
    for unit in prange(n_chunks * n_blocks):
        r0, r1, block = work_unit(unit, n_blocks, chunk, m)
        g0 = block * BLOCK_PANELS
        _block(a_bits, r0, r1, panels, g0, k, thresholds, flip, out_bytes, r0, g0, 1)


def pad_epilogue(thresholds: np.ndarray, flip: np.ndarray, k: int, n_panels: int):
    """Extend int32 thresholds / bool flip to every panel column with a never-firing pad."""
    n_cols = n_panels * LANES
    if thresholds.shape[0] == n_cols:
        return thresholds, flip
    padded_t = np.full(n_cols, k + 1, np.int32)  # dot <= k < k + 1: never fires
    padded_t[: thresholds.shape[0]] = thresholds
    padded_f = np.zeros(n_cols, np.bool_)
    padded_f[: flip.shape[0]] = flip
    return padded_t, padded_f


def warm_up():
    """Compile (or load from Numba's cache) the kernels on a tiny problem."""
    a = np.zeros((5, 2), np.uint64)
    panels = prepare_panels(np.zeros((5, 2), np.uint64))
    xnor_gemm_int32(a, panels, 128, np.empty((5, 5), np.int32))
    t, f = pad_epilogue(np.zeros(5, np.int32), np.zeros(5, np.bool_), 128, panels.shape[0])
    xnor_gemm_threshold_packed(a, panels, 128, t, f, np.empty((5, 1), np.uint64).view(np.uint8))

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
still exact, only slower.

Why hand-written vector IR: written as scalar Numba code over the 8 lanes, LLVM's loop
vectoriser prefers to vectorise along w with strided panel loads and spills most
accumulators. The micro-kernel is therefore an `@intrinsic` that emits `<8 x i64>`
operations directly; Numba keeps the loops around it.

Blocking and threads. Work is split into units of (a chunk of rows of A) x (64 columns
= 8 panels = one word of the packed epilogue). The row chunk is sized so that its part
of A stays in L2 while the unit's panels cycle through L1. Units are distributed with
`prange`: large M splits mostly over row chunks, small M (down to M = 1) over the
64-column blocks. A unit owns whole output words, so no two threads write the same one.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 8  # uint64 lanes of an AVX-512 register = columns of one panel
ROWS = 4  # rows of A per micro-tile
PANELS = 4  # panels of B per micro-tile
BLOCK_COLS = 64  # columns per work unit: one uint64 word of the packed epilogue
BLOCK_PANELS = BLOCK_COLS // LANES
A_CHUNK_BYTES = 256 * 1024  # part of A a unit walks over: well inside a 1 MiB L2

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V64 = ir.VectorType(_I64, LANES)
_V32 = ir.VectorType(_I32, LANES)
_V8 = ir.VectorType(_I8, LANES)


@intrinsic
def popcount64(typingctx, word):
    """`llvm.ctpop.i64`: Numba has no popcount of its own."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


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


def _splat(builder, value, vector_type):
    """Broadcast a scalar to every lane (becomes vpbroadcastq / an embedded {1to8})."""
    lane0 = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, _I32(0))
    zeros = ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES)
    return builder.shuffle_vector(lane0, ir.Constant(vector_type, ir.Undefined), zeros)


def _is_array(ty, dtype, ndim):
    """The micro-kernel computes addresses itself, so it takes C-contiguous arrays only."""
    return (isinstance(ty, types.Array) and ty.dtype == dtype and ty.ndim == ndim
            and ty.layout == "C")


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
            _is_array(a, types.uint64, 2) and _is_array(b, types.uint64, 3)
            and _is_array(thresholds, types.int32, 1) and _is_array(flip, types.boolean, 1)
            and (_is_array(dst, types.int32, 2) or _is_array(dst, types.uint8, 2))
        )
        if not ok:
            return None
        signature = types.void(a, types.intp, b, types.intp, types.int64, thresholds, flip,
                               dst, types.intp, types.intp)

        def codegen(context, builder, sig, args):
            a_val, a_row, b_val, panel0, k, t_val, f_val, dst_val, dst_row, dst_col = args
            a_arr = context.make_array(sig.args[0])(context, builder, a_val)
            b_arr = context.make_array(sig.args[2])(context, builder, b_val)
            n_words = builder.extract_value(a_arr.shape, 1)

            def a_row_ptr(r):
                return builder.gep(a_arr.data, [builder.mul(builder.add(a_row, _I64(r)), n_words)])

            def panel_ptr(p):
                start = builder.mul(builder.add(panel0, _I64(p)), builder.mul(n_words, _I64(LANES)))
                return builder.bitcast(builder.gep(b_arr.data, [start]), _V64.as_pointer())

            a_ptrs = [a_row_ptr(r) for r in range(rows)]
            b_ptrs = [panel_ptr(p) for p in range(panels)]
            # Accumulators live in allocas that LLVM promotes to zmm registers.
            zero = ir.Constant(_V64, [0] * LANES)
            acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(panels)]
                   for _ in range(rows)]
            ctpop = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V64, [_V64]), "llvm.ctpop.v8i64")

            with cgutils.for_range(builder, n_words) as loop:
                w = loop.index
                # align=8 only: prepare_panels aligns panels to cache lines, but a panel
                # array from elsewhere may not be, and unaligned zmm loads cost nothing
                # extra when the data happens to be aligned.
                b_words = [builder.load(builder.gep(b_ptrs[p], [w]), align=8)
                           for p in range(panels)]
                for r in range(rows):
                    a_word = _splat(builder, builder.load(builder.gep(a_ptrs[r], [w])), _V64)
                    for p in range(panels):
                        ones = builder.call(ctpop, [builder.xor(a_word, b_words[p])])
                        builder.store(builder.add(builder.load(acc[r][p]), ones), acc[r][p])

            # dot = k - 2 * mismatches, in int32 lanes (|dot| <= k < 2**31).
            k_lanes = _splat(builder, builder.trunc(k, _I32), _V32)
            one = _splat(builder, _I32(1), _V32)
            dst_arr = context.make_array(sig.args[7])(context, builder, dst_val)
            dst_cols = builder.extract_value(dst_arr.shape, 1)
            packed = sig.args[7].dtype == types.uint8
            if packed:
                t_arr = context.make_array(sig.args[5])(context, builder, t_val)
                f_arr = context.make_array(sig.args[6])(context, builder, f_val)
            for r in range(rows):
                row = builder.add(dst_row, _I64(r))
                dst_row_ptr = builder.gep(dst_arr.data, [builder.mul(row, dst_cols)])
                for p in range(panels):
                    mismatches = builder.trunc(builder.load(acc[r][p]), _V32)
                    dots = builder.sub(k_lanes, builder.shl(mismatches, one))
                    if not packed:
                        ptr = builder.gep(dst_row_ptr, [builder.add(dst_col, _I64(LANES * p))])
                        builder.store(dots, builder.bitcast(ptr, _V32.as_pointer()), align=4)
                        continue
                    first = builder.mul(builder.add(panel0, _I64(p)), _I64(LANES))
                    t_ptr = builder.bitcast(builder.gep(t_arr.data, [first]), _V32.as_pointer())
                    f_ptr = builder.bitcast(builder.gep(f_arr.data, [first]), _V8.as_pointer())
                    fire = builder.icmp_signed(">=", dots, builder.load(t_ptr, align=4))
                    flips = builder.icmp_unsigned("!=", builder.load(f_ptr, align=1),
                                                  ir.Constant(_V8, [0] * LANES))
                    # <8 x i1> -> i8 is a move out of the compare's mask register.
                    bits = builder.bitcast(builder.xor(fire, flips), _I8)
                    builder.store(bits, builder.gep(dst_row_ptr, [builder.add(dst_col, _I64(p))]))
            return context.get_dummy_value()

        return signature, codegen

    return tile


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
        r0 = (unit // n_blocks) * chunk
        r1 = min(m, r0 + chunk)
        g0 = (unit % n_blocks) * BLOCK_PANELS
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
        r0 = (unit // n_blocks) * chunk
        r1 = min(m, r0 + chunk)
        g0 = (unit % n_blocks) * BLOCK_PANELS
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

"""CPU XNOR-popcount GEMM for AVX2 without AVX-512 VPOPCNTDQ: operand-dependent nibble tables.

Without a vector popcount, LLVM counts `llvm.ctpop` with the nibble-table `vpshufb` and
`vpsadbw` (Mula et al.): about nine vector ops per four words. This kernel needs two
per 32 nibbles, the trick of product-quantisation "fast scan" (Andre et al., VLDB 2015):

    popcount(a XOR b) = sum over nibbles q of  T[a_q][b_q],   T[x][y] = popc(x XOR y),

and for one row of A and one nibble position q, T[a_q] is a 16-byte table that is the
same for every column. B is laid out with one byte per nibble, 32 columns side by side
(`prepare_nibbles`: `nibbles[g, q, c]` = nibble q of column 32 g + c), so one `vpshufb`
of the row's table (broadcast to both 128-bit lanes) by one 32-byte vector of B looks up
T[a_q][b_q] for 32 columns at once, and one `vpaddb` adds them to byte counters. Each
counter gains at most 4 per step, so after 63 steps the bytes are widened into int32
accumulators. A is turned into table offsets 16 a_q once per call (`row_offsets`).

Micro-tile: ROWS rows x 2 groups (64 columns, one packed output word): 8 byte counters
and 4 tables in 12 of the 16 ymm registers; per step 2 loads of B, 4 table broadcasts
(load ports only) and 8 `vpshufb` + 8 `vpaddb`. Exact for every input: padding nibbles
are zero in both operands, and columns past N are discarded or never fire.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from qnnlib.kernels.cpu import work_unit
from qnnlib.vector_ir import (I8, I32, I64, fire_bits, is_c_array, lane_flips,
                                      lane_thresholds)

GROUP = 32  # columns per ymm of nibbles
GROUPS = 2  # groups per micro-tile: 64 columns, one word of the packed epilogue
ROWS = 4
BLOCK_COLS = GROUP * GROUPS
STEPS = 63  # nibble steps before the byte counters (+4 per step) are widened
A_CHUNK_BYTES = 256 * 1024  # rows of offsets a unit walks over: inside L2
TABLES = np.array([[bin(x ^ y).count("1") for y in range(16)] for x in range(16)], np.uint8)

_V8 = ir.VectorType(I8, GROUP)
_V32 = ir.VectorType(I32, GROUP)
_V16 = ir.VectorType(I8, 16)

_jit = numba.njit(cache=True, fastmath=True, nogil=True, boundscheck=False)
_parallel_jit = numba.njit(parallel=True, cache=True, fastmath=True, boundscheck=False)


def prepare_nibbles(b_bits: np.ndarray) -> np.ndarray:
    """uint64 (N, W) -> uint8 (ceil(N / 64) * 2, 16 W, 32), one nibble per byte."""
    n, n_words = b_bits.shape
    nibbles = _nibbles(b_bits)  # (N, 16 W)
    n_cols = -(-n // BLOCK_COLS) * BLOCK_COLS
    padded = np.zeros((n_cols, 16 * n_words), np.uint8)
    padded[:n] = nibbles
    return np.ascontiguousarray(padded.reshape(n_cols // GROUP, GROUP, -1).transpose(0, 2, 1))


def row_offsets(a_bits: np.ndarray) -> np.ndarray:
    """uint64 (M, W) -> uint8 (M, 16 W): 16 * nibble q of each row (offsets into TABLES)."""
    return _nibbles(a_bits) << np.uint8(4)


def _nibbles(bits):
    """Nibble q = bits 4q .. 4q+3 of each row's little-endian bit stream."""
    raw = np.ascontiguousarray(bits).astype("<u8", copy=False).view(np.uint8)
    return np.stack([raw & np.uint8(15), raw >> np.uint8(4)], axis=-1).reshape(raw.shape[0], -1)


def _pshufb(builder):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8, _V8]),
                                          "llvm.x86.avx2.pshuf.b")


def _count_block(builder, counters, tables_ptr, offset_ptrs, nibble_ptrs, q0, steps):
    """counters[r][g] += T[a_q] looked up by b_q, for q0 <= q < q0 + steps."""
    pshufb = _pshufb(builder)
    both_lanes = ir.Constant(ir.VectorType(I32, GROUP), list(range(16)) * 2)
    with cgutils.for_range(builder, steps) as loop:
        q = builder.add(q0, loop.index)
        columns = [builder.load(builder.gep(ptr, [q]), align=1) for ptr in nibble_ptrs]
        for r, offsets in enumerate(offset_ptrs):
            offset = builder.zext(builder.load(builder.gep(offsets, [q])), I64)
            table_ptr = builder.bitcast(builder.gep(tables_ptr, [offset]), _V16.as_pointer())
            table = builder.load(table_ptr, align=1)
            table = builder.shuffle_vector(table, table, both_lanes)
            for g, column in enumerate(columns):
                found = builder.call(pshufb, [table, column])
                builder.store(builder.add(builder.load(counters[r][g]), found), counters[r][g])


def _micro_kernel(rows: int):
    """Intrinsic `tile(offsets, row, nibbles, group0, tables, k, thresholds, flip, dst,
    dst_row, dst_col)`: `rows` rows x 64 columns of dots over all of K. int32 dst: the
    dots at dst[dst_row + r, dst_col + c]; uint8 dst (bytes of packed words): 8 bytes at
    dst[dst_row + r, dst_col ..] holding (dot >= thresholds[c]) XOR flip[c], c from 32 group0.
    """

    @intrinsic
    def tile(typingctx, offsets, row, nibbles, group0, tables, k, thresholds, flip, dst, dst_row, dst_col):
        ok = (is_c_array(offsets, types.uint8, 2) and is_c_array(nibbles, types.uint8, 3)
              and is_c_array(tables, types.uint8, 2) and is_c_array(thresholds, types.int32, 1)
              and is_c_array(flip, types.boolean, 1)
              and (is_c_array(dst, types.int32, 2) or is_c_array(dst, types.uint8, 2)))
        if not ok:
            return None
        signature = types.void(offsets, types.intp, nibbles, types.intp, tables, types.int64,
                               thresholds, flip, dst, types.intp, types.intp)

        def codegen(context, builder, sig, args):
            arrays = [context.make_array(sig.args[i])(context, builder, args[i]) if
                      isinstance(sig.args[i], types.Array) else None for i in range(len(args))]
            offsets_a, nibbles_a, tables_a = arrays[0], arrays[2], arrays[4]
            row, group0 = args[1], args[3]
            n_steps = builder.extract_value(offsets_a.shape, 1)
            offset_ptrs = [builder.gep(offsets_a.data, [builder.mul(builder.add(row, I64(r)), n_steps)])
                           for r in range(rows)]
            nibble_ptrs = [builder.bitcast(builder.gep(nibbles_a.data, [builder.mul(builder.mul(
                builder.add(group0, I64(g)), n_steps), I64(GROUP))]), _V8.as_pointer())
                for g in range(GROUPS)]
            zero8, zero32 = ir.Constant(_V8, [0] * GROUP), ir.Constant(_V32, [0] * GROUP)
            totals = [[cgutils.alloca_once_value(builder, zero32) for _ in range(GROUPS)] for _ in range(rows)]
            counters = [[cgutils.alloca_once_value(builder, zero8) for _ in range(GROUPS)] for _ in range(rows)]
            n_blocks = builder.udiv(builder.add(n_steps, I64(STEPS - 1)), I64(STEPS))
            with cgutils.for_range(builder, n_blocks) as block:
                q0 = builder.mul(block.index, I64(STEPS))
                remaining = builder.sub(n_steps, q0)
                steps = builder.select(builder.icmp_signed("<", remaining, I64(STEPS)), remaining, I64(STEPS))
                _count_block(builder, counters, tables_a.data, offset_ptrs, nibble_ptrs, q0, steps)
                for cell, total in zip(sum(counters, []), sum(totals, [])):
                    widened = builder.zext(builder.load(cell), _V32)
                    builder.store(builder.add(builder.load(total), widened), total)
                    builder.store(zero8, cell)
            _store(builder, sig, args, arrays, totals, rows)
            return context.get_dummy_value()

        return signature, codegen

    return tile


def _store(builder, sig, args, arrays, totals, rows):
    """dot = k - 2 * mismatches; int32 dots, or the packed threshold bits."""
    k, dst_row, dst_col, group0 = args[5], args[9], args[10], args[3]
    t_a, f_a, dst_a = arrays[6], arrays[7], arrays[8]
    k_lanes = builder.insert_element(ir.Constant(_V32, ir.Undefined), builder.trunc(k, I32), I32(0))
    k_lanes = builder.shuffle_vector(k_lanes, k_lanes, ir.Constant(_V32, [0] * GROUP))
    dst_cols = builder.extract_value(dst_a.shape, 1)
    packed = sig.args[8].dtype == types.uint8
    for r in range(rows):
        row_ptr = builder.gep(dst_a.data, [builder.mul(builder.add(dst_row, I64(r)), dst_cols)])
        for g in range(GROUPS):
            total = builder.load(totals[r][g])
            dots = builder.sub(k_lanes, builder.add(total, total))
            if not packed:
                ptr = builder.gep(row_ptr, [builder.add(dst_col, I64(GROUP * g))])
                builder.store(dots, builder.bitcast(ptr, _V32.as_pointer()), align=4)
                continue
            first = builder.mul(builder.add(group0, I64(g)), I64(GROUP))
            fire = builder.icmp_signed(">=", dots, lane_thresholds(builder, t_a.data, first, GROUP))
            bits = fire_bits(builder, fire, lane_flips(builder, f_a.data, first, GROUP))
            ptr = builder.gep(row_ptr, [builder.add(dst_col, I64(4 * g))])
            builder.store(bits, builder.bitcast(ptr, I32.as_pointer()), align=1)


_tile = _micro_kernel(ROWS)
_tile_row = _micro_kernel(1)


@_jit
def _block(offsets, r0, r1, nibbles, group0, tables, k, thresholds, flip, dst, dst_r0, dst_c0):
    r = r0
    while r + ROWS <= r1:
        _tile(offsets, r, nibbles, group0, tables, k, thresholds, flip, dst, dst_r0 + r - r0, dst_c0)
        r += ROWS
    for rest in range(r, r1):
        _tile_row(offsets, rest, nibbles, group0, tables, k, thresholds, flip, dst, dst_r0 + rest - r0, dst_c0)


@_parallel_jit
def gemm(offsets, nibbles, tables, k, thresholds, flip, out, packed):
    """Units of (a chunk of rows) x (64 columns), as in `cpu.xnor_gemm_int32`.
    int32 `out` (M, N) when not `packed`, else the uint8 bytes of the packed words."""
    m = offsets.shape[0]
    chunk = max(ROWS, A_CHUNK_BYTES // max(1, offsets.shape[1]) // ROWS * ROWS)
    n_chunks = (m + chunk - 1) // chunk
    n_blocks = nibbles.shape[0] // GROUPS
    for unit in prange(n_chunks * n_blocks):
        r0, r1, block = work_unit(unit, n_blocks, chunk, m)
        c0 = block * BLOCK_COLS
        if packed:
            _block(offsets, r0, r1, nibbles, block * GROUPS, tables, k, thresholds, flip, out, r0, block * 8)
        elif c0 + BLOCK_COLS <= out.shape[1]:
            _block(offsets, r0, r1, nibbles, block * GROUPS, tables, k, thresholds, flip, out, r0, c0)
        else:  # last, ragged block: whole groups into scratch, then the real columns
            scratch = np.empty((r1 - r0, BLOCK_COLS), out.dtype)
            _block(offsets, r0, r1, nibbles, block * GROUPS, tables, k, thresholds, flip, scratch, 0, 0)
            out[r0:r1, c0:] = scratch[:, : out.shape[1] - c0]


def run(a_bits, nibbles, k, epilogue, out):
    """int32 dots into `out` (epilogue None), or the packed bits of (thresholds, flip)
    padded to every column of `nibbles` (`cpu.pad_epilogue`) into uint64 `out`."""
    offsets = row_offsets(a_bits)
    if epilogue is None:
        gemm(offsets, nibbles, TABLES, k, _NO_THRESHOLDS, _NO_FLIP, out, False)
    else:
        gemm(offsets, nibbles, TABLES, k, epilogue[0], epilogue[1], out.view(np.uint8), True)
    return out


_NO_THRESHOLDS = np.zeros(0, np.int32)
_NO_FLIP = np.zeros(0, np.bool_)

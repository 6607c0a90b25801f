"""Ordered float32 matrix product: the same bits on every x86-64 CPU, at vector speed.

`ordered_matmul(a, b)` computes C = A @ B where every C[m, n] is the float32 sum
`((0 + A[m, 0] B[0, n]) + A[m, 1] B[1, n]) + ...`, in the order of k, each product
rounded before it is added (no fused multiply-add). That is the rule a textbook triple
loop follows, so a plain NumPy loop is the reference (`reference_matmul`), and nothing
depends on which CPU computes it: BLAS libraries sum in blocks whose shape depends on the
CPU, which is why the pinned numerics (`qnnlib.numerics`) must send MKL down its slow
SSE2 branch to get the same bits on Intel and AMD.

The kernel vectorises across output columns, never along K, so the vector width changes
how many columns are summed at once but not the order of any sum. B is rearranged into
panels of `PANEL` columns (`panels[p, k, j] = B[k, PANEL p + j]`), and a micro-tile of
`ROWS` rows x one panel keeps its accumulators in vector registers: per k it loads the
panel's row once, broadcasts A[m, k] for each row and does one multiply and one add per
accumulator (separate `fmul` and `fadd` in the IR: LLVM fuses them only when told it
may). K is walked in blocks of `K_BLOCK`, in order, the partial sums held in C between
blocks, so the block of the panel being read stays in L1.

Used for the training step of the MLP (`qnnlib.ordered_linear`), where one
factor of every product is ±1: the products are exact and only the order of the sums
could differ from one CPU to another.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from qnnlib.vector_ir import I32, I64, c_array, is_c_array, target_features

# Tile shapes by target, chosen by timing a few on a Zen 4 EPYC (the whole training step:
# `benchmarks/train_step.py --numerics`). They change the speed, never the bits.
FLOATS = 16 if "avx512f" in target_features() else 8  # lanes of one vector register
VECTORS = 3 if FLOATS == 16 else 2  # vectors per panel row
PANEL = VECTORS * FLOATS  # columns per panel
ROWS = 6  # rows per micro-tile: ROWS x VECTORS accumulators (18 of 32 zmm, 12 of 16 ymm)
K_BLOCK = 128  # K_BLOCK x PANEL floats of B (8-24 KiB) stay in L1 while the rows pass

F32 = ir.FloatType()
VF = ir.VectorType(F32, FLOATS)

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)  # no fastmath: order matters


def _splat(builder, value):
    lane0 = builder.insert_element(ir.Constant(VF, ir.Undefined), value, I32(0))
    return builder.shuffle_vector(lane0, ir.Constant(VF, ir.Undefined),
                                  ir.Constant(ir.VectorType(I32, FLOATS), [0] * FLOATS))


def _micro_kernel(rows: int, from_zero: bool):
    """Intrinsic `tile(a, row, panels, panel, k0, k1, c, col)`: for r < rows and the
    PANEL columns of `panel`, c[row + r, col + j] += A[row + r, k] * panels[panel, k, j]
    for k = k0 .. k1 - 1 in order, the sums held in registers; `from_zero`: the sums
    start at 0 instead of c's values (the first block of K)."""

    @intrinsic
    def tile(typingctx, a, row, panels, panel, k0, k1, c, col):
        if not (is_c_array(a, types.float32, 2) and is_c_array(panels, types.float32, 3)
                and is_c_array(c, types.float32, 2)):
            return None
        signature = types.void(a, types.intp, panels, types.intp, types.intp, types.intp, c, types.intp)

        def codegen(context, builder, sig, args):
            row, panel, k0, k1, col = args[1], args[3], args[4], args[5], args[7]
            a_arr = c_array(context, builder, sig, args, 0)
            p_arr = c_array(context, builder, sig, args, 2)
            c_arr = c_array(context, builder, sig, args, 6)
            k_total = builder.extract_value(a_arr.shape, 1)
            c_cols = builder.extract_value(c_arr.shape, 1)
            a_rows = [builder.gep(a_arr.data, [builder.mul(builder.add(row, I64(r)), k_total)])
                      for r in range(rows)]
            panel_data = builder.gep(p_arr.data, [builder.mul(panel, builder.mul(k_total, I64(PANEL)))])
            c_cells = [[builder.bitcast(
                builder.gep(c_arr.data, [builder.add(builder.mul(builder.add(row, I64(r)), c_cols),
                                                     builder.add(col, I64(v * FLOATS)))]),
                VF.as_pointer()) for v in range(VECTORS)] for r in range(rows)]
            zero = ir.Constant(VF, [0.0] * FLOATS)
            acc = [[cgutils.alloca_once_value(builder, zero if from_zero else builder.load(cell, align=4))
                    for cell in cells] for cells in c_cells]
            with cgutils.for_range(builder, builder.sub(k1, k0)) as loop:
                k = builder.add(k0, loop.index)
                panel_row = builder.gep(panel_data, [builder.mul(k, I64(PANEL))])
                b = [builder.load(builder.bitcast(builder.gep(panel_row, [I64(v * FLOATS)]),
                                                  VF.as_pointer()), align=4) for v in range(VECTORS)]
                for r in range(rows):
                    a_rk = _splat(builder, builder.load(builder.gep(a_rows[r], [k])))
                    for v in range(VECTORS):
                        total = builder.fadd(builder.load(acc[r][v]), builder.fmul(a_rk, b[v]))
                        builder.store(total, acc[r][v])
            for r in range(rows):
                for v in range(VECTORS):
                    builder.store(builder.load(acc[r][v]), c_cells[r][v], align=4)
            return context.get_dummy_value()

        return signature, codegen

    return tile


_tile_first = _micro_kernel(ROWS, True)
_tile = _micro_kernel(ROWS, False)
_tile_row_first = _micro_kernel(1, True)
_tile_row = _micro_kernel(1, False)


@_jit
def _fill_panels(b, panels):
    k, n = b.shape
    for p in range(panels.shape[0]):
        width = min(PANEL, n - p * PANEL)
        for kk in range(k):
            for j in range(width):
                panels[p, kk, j] = b[kk, p * PANEL + j]
            for j in range(width, PANEL):
                panels[p, kk, j] = 0.0


def prepare_panels(b: np.ndarray) -> np.ndarray:
    """B (K, N) float32, any strides (a transposed view is read in place) -> panels
    (ceil(N / PANEL), K, PANEL), the last one zero-padded."""
    if b.ndim != 2 or b.dtype != np.float32:
        raise TypeError(f"B must be a 2-D float32 array, got {b.dtype} {b.shape}")
    k, n = b.shape
    panels = np.empty(((n + PANEL - 1) // PANEL, k, PANEL), np.float32)
    _fill_panels(b, panels)
    return panels


@_jit
def _ordered_panels(a, panels, out, ragged):
    m, k = a.shape
    n = out.shape[1]
    for p in range(panels.shape[0]):
        # whole panels go straight into `out`; a ragged last one into `ragged`, then the
        # columns that exist are copied over, so `out` is (M, N) with no padding
        target, col = (out, p * PANEL) if (p + 1) * PANEL <= n else (ragged, 0)
        for k0 in range(0, k, K_BLOCK):
            k1 = min(k, k0 + K_BLOCK)
            r = 0
            while r + ROWS <= m:
                if k0 == 0:
                    _tile_first(a, r, panels, p, k0, k1, target, col)
                else:
                    _tile(a, r, panels, p, k0, k1, target, col)
                r += ROWS
            for rest in range(r, m):
                if k0 == 0:
                    _tile_row_first(a, rest, panels, p, k0, k1, target, col)
                else:
                    _tile_row(a, rest, panels, p, k0, k1, target, col)
        if (p + 1) * PANEL > n:
            for row in range(m):
                for j in range(n - p * PANEL):
                    out[row, p * PANEL + j] = ragged[row, j]


def ordered_matmul_panels(a: np.ndarray, panels: np.ndarray, n: int) -> np.ndarray:
    """A (M, K) @ B for B given as `prepare_panels(B)` with N columns: float32 (M, N),
    C-contiguous."""
    if panels.ndim != 3 or panels.shape[1] != a.shape[1] or panels.shape[2] != PANEL \
            or not 0 <= n <= panels.shape[0] * PANEL:  # the kernel reads without bounds checks
        raise ValueError(f"panels {panels.shape} do not hold B ({a.shape[1]}, {n}) for A {a.shape}")
    m = a.shape[0]
    if a.shape[1] == 0:  # an empty sum
        return np.zeros((m, n), np.float32)
    out = np.empty((m, n), np.float32)
    ragged = np.empty((m, PANEL), np.float32)
    used = np.ascontiguousarray(panels[:(n + PANEL - 1) // PANEL])  # panels past N: not computed
    _ordered_panels(np.ascontiguousarray(a, dtype=np.float32), used, out, ragged)
    return out


def ordered_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A (M, K) @ B (K, N), float32, each sum in the order of k (see the module docstring)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"ordered_matmul needs A (M, K) and B (K, N), got {a.shape} and {b.shape}")
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"ordered_matmul takes float32 arrays, got {a.dtype} and {b.dtype}")
    return ordered_matmul_panels(a, prepare_panels(b), b.shape[1])


def reference_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The textbook loop over k in float32 (NumPy's elementwise ops round each step)."""
    out = np.zeros((a.shape[0], b.shape[1]), np.float32)
    for kk in range(a.shape[1]):
        out += a[:, kk:kk + 1] * b[kk:kk + 1, :]
    return out

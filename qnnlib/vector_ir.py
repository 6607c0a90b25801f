"""LLVM vector-IR pieces shared by the hand-written CPU kernels: the XNOR ones
(`qnnlib.kernels.cpu`, `bitplane`, `nibble`) and the ordered float product
(`qnnlib.ordered_matmul`), which lives outside the kernels package so that a training
run imports only what it executes.

The XNOR kernels keep B in the column-panel layout of `cpu.prepare_panels`: one `<8 x i64>`
load brings word w of 8 consecutive columns, one word of A (or of a pixel bit-plane) is
broadcast to all 8 lanes, combined with it (XOR for ±1 dots, AND for 0/1 masks),
popcounted and added to an accumulator holding 8 output columns. Written as scalar Numba
code, LLVM's loop vectoriser would vectorise along w instead and spill the accumulators,
so the micro-kernels emit this IR directly; Numba keeps the loops around them.

`llvm.ctpop.v8i64` is lowered by LLVM for the target: AVX-512 VPOPCNTDQ gives one
`vpopcntq %zmm` per 8 words; AVX2 the nibble-table `vpshufb` count summed by `vpsadbw`
(Mula et al.); other targets narrower code. All of them are exact.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils

LANES = 8  # uint64 lanes of a 512-bit vector = columns of one panel

I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
V64 = ir.VectorType(I64, LANES)
V32 = ir.VectorType(I32, LANES)
V8 = ir.VectorType(I8, LANES)


def splat(builder, value, vector_type):
    """Broadcast a scalar to every lane (becomes vpbroadcastq / an embedded {1to8})."""
    lane0 = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, I32(0))
    zeros = ir.Constant(ir.VectorType(I32, LANES), [0] * LANES)
    return builder.shuffle_vector(lane0, ir.Constant(vector_type, ir.Undefined), zeros)


def is_c_array(ty, dtype, ndim) -> bool:
    """The micro-kernels compute addresses themselves, so they take C-contiguous arrays only."""
    return (isinstance(ty, types.Array) and ty.dtype == dtype and ty.ndim == ndim
            and ty.layout == "C")


def panel_pointers(builder, data, panel0, n_words, count):
    """`<8 x i64>*` to word 0 of panels panel0 .. panel0 + count - 1 (panel stride 8 W)."""
    stride = builder.mul(n_words, I64(LANES))
    return [builder.bitcast(builder.gep(data, [builder.mul(builder.add(panel0, I64(p)), stride)]),
                            V64.as_pointer())
            for p in range(count)]


def zero_accumulators(builder, rows: int, panels: int):
    """rows x panels `<8 x i64>` accumulators in allocas, which LLVM promotes to registers."""
    zero = ir.Constant(V64, [0] * LANES)
    return [[cgutils.alloca_once_value(builder, zero) for _ in range(panels)] for _ in range(rows)]


def accumulate_popcounts(builder, acc, row_pointers, panel_ptrs, n_words, combine):
    """The popcount tile: for w < n_words, acc[r][p] += popcount(combine(splat(row_r[w]),
    panel_p[w])) lane by lane. `combine` is `builder.xor` (±1 dots) or `builder.and_`.

    Each panel word is loaded once and reused by every row, each broadcast row word by
    every panel, so the loop body is combine + popcount + add per accumulator.
    """
    ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V64, [V64]),
                                           "llvm.ctpop.v8i64")
    with cgutils.for_range(builder, n_words) as loop:
        w = loop.index
        # align=8 only: prepare_panels aligns panels to cache lines, but a panel array
        # from elsewhere may not be, and unaligned loads cost nothing extra when the
        # data happens to be aligned.
        panel_words = [builder.load(builder.gep(ptr, [w]), align=8) for ptr in panel_ptrs]
        for r, row_ptr in enumerate(row_pointers):
            row_word = splat(builder, builder.load(builder.gep(row_ptr, [w])), V64)
            for p, panel_word in enumerate(panel_words):
                ones = builder.call(ctpop, [combine(row_word, panel_word)])
                builder.store(builder.add(builder.load(acc[r][p]), ones), acc[r][p])


def c_array(context, builder, sig, args, index):
    """The Numba array structure of a codegen's argument `index` (data, shape, ...)."""
    return context.make_array(sig.args[index])(context, builder, args[index])


def lane_flips(builder, flip_data, first, lanes=LANES):
    """`<lanes x i1>`: flip[first .. first + lanes - 1] != 0 (bool bytes)."""
    bytes_type = ir.VectorType(I8, lanes)
    ptr = builder.bitcast(builder.gep(flip_data, [first]), bytes_type.as_pointer())
    return builder.icmp_unsigned("!=", builder.load(ptr, align=1), ir.Constant(bytes_type, [0] * lanes))


def lane_thresholds(builder, threshold_data, first, lanes=LANES):
    """`<lanes x i32>`: thresholds[first .. first + lanes - 1] (int32)."""
    ptr = builder.bitcast(builder.gep(threshold_data, [first]), ir.VectorType(I32, lanes).as_pointer())
    return builder.load(ptr, align=4)


def fire_bits(builder, fire, flips):
    """An integer of `lanes` bits whose bit `lane` is fire XOR flip (`<8 x i1>` -> i8 is a
    move out of the compare's mask register); little-endian, byte j of a packed word
    holds its bits 8j..8j+7."""
    return builder.bitcast(builder.xor(fire, flips), ir.IntType(fire.type.count))


def target_features() -> set[str]:
    """The CPU features Numba compiles for: $NUMBA_CPU_FEATURES when set, else the
    host's (as Numba does: a CPU name alone keeps the host's features)."""
    from numba.core import codegen, config

    flags = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    return {flag[1:] for flag in flags.split(",") if flag.startswith("+")}

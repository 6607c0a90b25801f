"""CUDA XNOR-popcount GEMM through CuPy (kernels in `xnor_gemm.cu` and `naive_gemm.cu`,
shipped with the package).

Called by `qnnlib.kernels.xnor_gemm` with validated, contiguous CuPy operands. CuPy is
imported lazily so the package works without it. Besides the two tuned kernels the
module launches the unoptimised pair of the paper's 23x comparison (`naive_sgemm`,
`naive_xnor_gemm`) and the bit-plane first layer of the GPU inference engine.

Launch geometry is computed by pure functions (`tile_grid`, `flat_grid`), so CPU tests
check the limits: an empty output launches nothing (a zero grid dimension is an invalid
launch); row tiles go on grid x (up to 2^31 - 1 blocks) and column tiles on grid y,
whose limit of 65535 blocks bounds N at 65535 * 64 = 4,194,240. The bit-plane kernels
have limits of their own (`check_bitplane_sizes`).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("xnor_gemm.cu")
NAIVE_SOURCE = Path(__file__).with_name("naive_gemm.cu")
TILE = 64  # output tile per block, fixed in the .cu source
FLAT_BLOCK = 256  # threads per block of the one-thread-per-item kernels
TENSOR_CORE_MIN_CC = 80
MAX_GRID_X = 2**31 - 1
MAX_GRID_Y = 65535
INT32_MAX = 2**31 - 1
# The bit-plane kernel's t = W_b . x of uint8 pixels, and the count of ones behind it, reach
# 255 K in int32 (the pixel sums too): K <= 8,421,504 pixels per row.
MAX_PIXEL_K = INT32_MAX // 255
NULL = np.uint64(0)  # a pointer-sized zero for unused kernel arguments


@functools.cache
def _compiled(source: Path):
    import cupy

    return cupy.RawModule(code=source.read_text(), options=("--std=c++17",))


def _module():
    return _compiled(SOURCE)


def _naive_module():
    return _compiled(NAIVE_SOURCE)


def compute_capability() -> int:
    import cupy

    return int(cupy.cuda.Device().compute_capability)


def choose_variant(variant: str, capability: int) -> str:
    """"auto" means tensor cores where `mma ... b1 .and.popc` exists (sm_80+)."""
    if variant == "auto":
        return "tensor_core" if capability >= TENSOR_CORE_MIN_CC else "cuda_core"
    if variant == "tensor_core" and capability < TENSOR_CORE_MIN_CC:
        raise ValueError(f"tensor_core needs compute capability >= 8.0, device has {capability}")
    return variant


def tile_grid(m: int, n: int) -> tuple[int, int] | None:
    """Grid (row tiles, column tiles) of the 64 x 64-tile kernels for an (m, n) output;
    None when the output is empty (nothing to launch). ValueError beyond the limits."""
    if m < 0 or n < 0:
        raise ValueError(f"sizes must be >= 0, got m={m}, n={n}")
    if m == 0 or n == 0:
        return None
    if m > INT32_MAX or n > INT32_MAX:
        raise ValueError(f"m={m} and n={n} must fit in int32 (the kernels index rows with int)")
    grid = (-(-m // TILE), -(-n // TILE))
    if grid[1] > MAX_GRID_Y:
        raise ValueError(f"n={n} columns need {grid[1]} column tiles, more than gridDim.y "
                         f"allows ({MAX_GRID_Y}); split B into parts of at most "
                         f"{MAX_GRID_Y * TILE} rows")
    return grid


def flat_grid(count: int, block: int = FLAT_BLOCK) -> tuple[int] | None:
    """1-D grid of `block`-thread blocks covering `count` items; None when count is 0."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count == 0:
        return None
    blocks = -(-count // block)
    if blocks > MAX_GRID_X:
        raise ValueError(f"{count} items need {blocks} blocks, more than gridDim.x allows")
    return (blocks,)


def check_bitplane_sizes(m: int, k: int) -> None:
    """M pixel rows of K pixels that the bit-plane kernels compute exactly, else ValueError.

    M is an int kernel parameter, so M <= 2^31 - 1; the (M * 8, W) planes are indexed in
    64 bits, so any such M whose planes fit in memory works (16 GiB of planes from
    M = 2^28). K <= MAX_PIXEL_K, for the int32 dots (see there)."""
    if m > INT32_MAX:
        raise ValueError(f"m={m} pixel rows: the bit-plane kernels take M as int32 (at most "
                         f"{INT32_MAX}); split the batch")
    if k > MAX_PIXEL_K:
        raise ValueError(f"k={k} pixels per row: the bit-plane kernels' int32 dots reach 255 k, "
                         f"so k must be at most {MAX_PIXEL_K}; split the input into parts")


def _sizes(m, n, n_words, k):
    return np.int32(m), np.int32(n), np.int32(n_words), np.int32(k)


def _epilogue_args(epilogue, out):
    """(thresholds, flip, out_dots, out_bits): kernels skip the epilogue when
    `thresholds` is a null pointer."""
    if epilogue is None:
        return NULL, NULL, out, NULL
    thresholds, flip = epilogue
    return thresholds, flip, NULL, out


def xnor_gemm(a_bits, b_bits, k, epilogue, out, variant):
    """Launch one kernel (asynchronously, like any CuPy call) and return `out`."""
    m, n_words = a_bits.shape
    n = b_bits.shape[0]
    grid = tile_grid(m, n)
    if grid is None:
        return out
    chosen = choose_variant(variant, compute_capability())
    thresholds, flip, out_dots, out_bits = _epilogue_args(epilogue, out)
    size = _sizes(m, n, n_words, k)
    if chosen == "cuda_core":
        kernel = _module().get_function("xnor_gemm_cuda_core")
        kernel(grid, (256,), (a_bits, b_bits, *size, thresholds, flip, out_dots, out_bits))
        return out
    a_popc = row_popcounts(a_bits, k)
    b_popc = row_popcounts(b_bits, k)
    kernel = _module().get_function("xnor_gemm_tensor_core")
    kernel(grid, (128,),
           (a_bits, b_bits, *size, a_popc, b_popc, thresholds, flip, out_dots, out_bits))
    return out


def row_popcounts(words, k):
    """int32 popcount of every row of packed words (bits beyond k not counted)."""
    import cupy

    rows, n_words = words.shape
    counts = cupy.zeros(rows, dtype=cupy.int32)
    grid = flat_grid(rows)
    if grid is not None:
        _module().get_function("row_popcount")(
            grid, (FLAT_BLOCK,), (words, np.int32(rows), np.int32(n_words), np.int32(k), counts))
    return counts


def pack_bitplanes(pixels):
    """uint8 (M, K) CuPy pixels -> uint64 (M, 8, ceil(K/64)) bit-planes (as
    `qnnlib.deploy._pack_bitplanes` on the CPU)."""
    import cupy

    m, k = pixels.shape
    check_bitplane_sizes(m, k)
    n_words = -(-k // 64)
    planes = cupy.zeros((m, 8, n_words), dtype=cupy.uint64)
    grid = flat_grid(m * n_words)
    if grid is not None:
        _module().get_function("pack_bitplanes")(
            grid, (FLAT_BLOCK,), (pixels, np.int32(m), np.int32(k), np.int32(n_words), planes))
    return planes


def bitplane_gemm(planes, masks, k, pixel_sums, epilogue, out):
    """t = W_b . x for bit-planes (M, 8, W) of uint8 x and the 0/1 masks (N, W) of W_b = +1:
    int32 (M, N) into `out`, or with `epilogue` (thresholds, flip) its packed bits."""
    m, _, n_words = planes.shape
    n = masks.shape[0]
    check_bitplane_sizes(m, k)
    grid = tile_grid(m, n)
    if grid is None:
        return out
    thresholds, flip, out_dots, out_bits = _epilogue_args(epilogue, out)
    _module().get_function("bitplane_gemm")(
        grid, (256,), (planes, masks, *_sizes(m, n, n_words, k), pixel_sums, thresholds, flip,
                       out_dots, out_bits))
    return out


def naive_sgemm(a, bt):
    """float32 A (M, K) @ BT (K, N) by the unoptimised one-thread-per-output kernel."""
    import cupy

    (m, k), n = a.shape, bt.shape[1]
    out = cupy.zeros((m, n), dtype=cupy.float32)
    grid = flat_grid(m * n)
    if grid is not None:
        _naive_module().get_function("naive_sgemm")(
            grid, (FLAT_BLOCK,), (a, bt, np.int32(m), np.int32(n), np.int32(k), out))
    return out


def naive_xnor_gemm(a_bits, bt_bits, k):
    """int32 dot products of A (M, W) and B given transposed, BT (W, N), by the
    unoptimised one-thread-per-output XNOR-popcount kernel."""
    import cupy

    (m, n_words), n = a_bits.shape, bt_bits.shape[1]
    out = cupy.zeros((m, n), dtype=cupy.int32)
    grid = flat_grid(m * n)
    if grid is not None:
        _naive_module().get_function("naive_xnor_gemm")(
            grid, (FLAT_BLOCK,), (a_bits, bt_bits, *_sizes(m, n, n_words, k), out))
    return out

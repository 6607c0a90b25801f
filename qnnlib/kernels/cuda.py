"""CUDA XNOR-popcount GEMM through CuPy (kernels in `xnor_gemm.cu`, shipped with the package).

Called by `qnnlib.kernels.xnor_gemm` with validated, contiguous CuPy operands. CuPy is
imported lazily so the package works without it.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("xnor_gemm.cu")
TILE = 64  # output tile per block, fixed in the .cu source
TENSOR_CORE_MIN_CC = 80
NULL = np.uint64(0)  # a pointer-sized zero for unused kernel arguments


@functools.cache
def _module():
    import cupy

    return cupy.RawModule(code=SOURCE.read_text(), options=("--std=c++17",))


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


def grid_for(m: int, n: int) -> tuple[int, int]:
    return ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE)


def xnor_gemm(a_bits, b_bits, k, epilogue, out, variant):
    """Launch one kernel (asynchronously, like any CuPy call) and return `out`."""
    m, n_words = a_bits.shape
    n = b_bits.shape[0]
    if epilogue is None:
        # Kernels skip the epilogue when `thresholds` is a null pointer.
        thresholds = flip = NULL
        out_dots, out_bits = out, NULL
    else:
        thresholds, flip = epilogue
        out_dots, out_bits = NULL, out
    size = (np.int32(m), np.int32(n), np.int32(n_words), np.int32(k))
    grid = grid_for(m, n)
    if choose_variant(variant, compute_capability()) == "cuda_core":
        kernel = _module().get_function("xnor_gemm_cuda_core")
        kernel(grid, (256,), (a_bits, b_bits, *size, thresholds, flip, out_dots, out_bits))
        return out
    a_popc = _row_popcounts(a_bits)
    b_popc = _row_popcounts(b_bits)
    kernel = _module().get_function("xnor_gemm_tensor_core")
    kernel(
        grid, (128,),
        (a_bits, b_bits, *size, a_popc, b_popc, thresholds, flip, out_dots, out_bits),
    )
    return out


def _row_popcounts(words):
    import cupy

    rows, n_words = words.shape
    counts = cupy.empty(rows, dtype=cupy.int32)
    kernel = _module().get_function("row_popcount")
    kernel(((rows + 255) // 256,), (256,), (words, np.int32(rows), np.int32(n_words), counts))
    return counts

"""XNOR-popcount GEMM on bit-packed ±1 matrices.

`xnor_gemm(a_bits, b_bits, k)` returns the int32 matrix A @ B.T for A (M, K) and
B (N, K) with entries ±1, both packed along K by `qnnlib.bitpack.pack_bits` (shapes
(M, W) and (N, W), W = ceil(K / 64)). NumPy inputs run the Numba CPU kernel
(`qnnlib.kernels.cpu`), CuPy inputs the CUDA kernels (`qnnlib.kernels.cuda`).

With `thresholds` the result is instead the next layer's packed activations: bit n of
row m is `(dot[m, n] >= thresholds[n]) XOR flip[n]`, packed along N into uint64
(M, ceil(N / 64)). `flip` handles batch norm with a negative scale. Float thresholds
are rounded up to integers first, which is exact because every dot is an integer.

The CPU kernel reads B in a column-panel layout. `prepare_weights(b_bits)` builds it
once (a `PackedWeights`), and `xnor_gemm` accepts that in place of `b_bits`; plain
`b_bits` still work and are rearranged on every call.

Checks at this boundary (`qnnlib.kernels.checks`) name the argument and what was
expected; they also refuse padding bits past K that are not zero and `flip` values other
than 0/1, for both backends. `XnorLayer` and `PixelLayer` (`qnnlib.kernels.layers`) are
layers prepared once, for repeated calls such as a deployed model's forward pass; the
pixel layer runs the bit-plane kernel (`qnnlib.kernels.bitplane`) on uint8 inputs.
"""
from __future__ import annotations

import contextlib

import numpy as np

from qnnlib.bitpack import words_for
from qnnlib.kernels import checks, cpu, nibble
from qnnlib.vector_ir import target_features

__all__ = ["PackedWeights", "PixelLayer", "XnorLayer", "numba_threads", "prepare_weights",
           "xnor_gemm"]

VARIANTS = ("auto", "tensor_core", "cuda_core")
# The CPU kernel by target: vpopcntq where AVX-512 VPOPCNTDQ exists, else on AVX2 the
# nibble-table kernel for all but small M (measured crossover; see `cpu_run`).
_FEATURES = target_features()
NIBBLE_KERNEL = "avx2" in _FEATURES and "avx512vpopcntdq" not in _FEATURES
NIBBLE_MIN_ROWS = 8


class PackedWeights:
    """B (N, K) of an `xnor_gemm`, rearranged once for the CPU kernel.

    Made by `prepare_weights`; `shape` is that of the `b_bits` it came from, (N, W).
    `panels` is the kernel's layout (see `qnnlib.kernels.cpu.prepare_panels`).
    `padding_from` is the lowest K whose padding bits are all zero in every row: K values
    from it up to 64 W are valid with these weights.
    """

    def __init__(self, panels: np.ndarray, n: int, padding_from: int = 0):
        self.panels = panels
        self.n = int(n)
        self.padding_from = int(padding_from)
        self._nibbles = None

    @property
    def nibbles(self) -> np.ndarray:
        """The nibble layout of the AVX2 kernel (`qnnlib.kernels.nibble`), built on first use."""
        if self._nibbles is None:
            self._nibbles = nibble.prepare_nibbles(panels_to_bits(self.panels, self.n))
        return self._nibbles

    @property
    def n_words(self) -> int:
        return self.panels.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.n_words

    def __repr__(self) -> str:
        return f"PackedWeights(n={self.n}, n_words={self.n_words})"


def prepare_weights(b_bits) -> PackedWeights:
    """Rearrange packed weights, uint64 (N, W) from `pack_bits`, for the CPU kernel.

    Do it once per weight matrix (e.g. when a deployed model is built) and pass the
    result to `xnor_gemm` as `b_bits`; the result does not follow later changes to
    `b_bits`. CPU (NumPy) only.
    """
    if isinstance(b_bits, PackedWeights):
        return b_bits
    if not isinstance(b_bits, np.ndarray):
        raise TypeError(f"prepare_weights takes a NumPy uint64 array, got {type(b_bits).__name__}")
    checks.check_bits("b_bits", b_bits)
    last = b_bits[:, -1]
    # the highest set bit of the last words: K must reach past it
    top = int(np.bitwise_or.reduce(last)) if len(last) else 0
    padding_from = 64 * (b_bits.shape[1] - 1) + max(top.bit_length(), 1)
    return PackedWeights(cpu.prepare_panels(np.ascontiguousarray(b_bits)), b_bits.shape[0],
                         padding_from)


def xnor_gemm(a_bits, b_bits, k, *, thresholds=None, flip=None, out=None, threads=None,
              variant="auto"):
    """A @ B.T of packed ±1 matrices (int32), or its thresholded, packed bits.

    `b_bits` may be a `PackedWeights` from `prepare_weights` (CPU), which saves
    rearranging B on every call.
    `threads` sets Numba's thread count for this call only (CPU). `variant` picks the
    CUDA kernel for CuPy inputs: "auto" (tensor cores on compute capability >= 8.0),
    "tensor_core" or "cuda_core".
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    on_gpu = _check_kinds(a_bits, b_bits)
    xp = _cupy() if on_gpu else np
    threads = checks.check_threads(threads)
    a_bits, b_bits, k = _validated_operands(xp, a_bits, b_bits, k)
    m, n = a_bits.shape[0], b_bits.shape[0]
    if thresholds is None:
        if flip is not None:
            raise ValueError("flip needs thresholds")
        out = _output(xp, out, (m, n), np.int32)
        epilogue = None
    else:
        epilogue = (checks.check_thresholds(xp, thresholds, n, k), checks.check_flip(xp, flip, n))
        out = _output(xp, out, (m, words_for(n)), np.uint64)
    if m == 0 or n == 0:  # nothing to compute (and an empty CUDA grid is an invalid launch)
        return out
    if on_gpu:
        from qnnlib.kernels import cuda

        return cuda.xnor_gemm(a_bits, b_bits, k, epilogue, out, variant)
    return _cpu_gemm(a_bits, b_bits, k, epilogue, out, threads)


def _cpu_gemm(a_bits, b_bits, k, epilogue, out, threads):
    weights = prepare_weights(b_bits)
    if epilogue is not None:
        epilogue = cpu.pad_epilogue(*epilogue, k, weights.panels.shape[0])
    with numba_threads(threads):
        return cpu_run(a_bits, weights, k, epilogue, out)


def cpu_run(a_bits, weights: PackedWeights, k, epilogue, out):
    """The CPU kernel for checked operands: int32 dots into `out` (epilogue None), or the
    packed bits of a padded (thresholds, flip) epilogue into uint64 `out`.

    Targets without AVX-512 VPOPCNTDQ but with AVX2 run the nibble-table kernel
    (`qnnlib.kernels.nibble`) from NIBBLE_MIN_ROWS rows on; below that, its B layout
    (one byte per nibble, twice the packed size) costs more memory traffic than it saves.
    """
    if NIBBLE_KERNEL and a_bits.shape[0] >= NIBBLE_MIN_ROWS:
        return nibble.run(a_bits, weights.nibbles, k, epilogue, out)
    if epilogue is None:
        cpu.xnor_gemm_int32(a_bits, weights.panels, k, out)
    else:
        cpu.xnor_gemm_threshold_packed(a_bits, weights.panels, k, *epilogue, out.view(np.uint8))
    return out


def panels_to_bits(panels: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `cpu.prepare_panels`: the (N, W) packed words."""
    return np.ascontiguousarray(panels.transpose(0, 2, 1).reshape(-1, panels.shape[1])[:n])


def _check_kinds(a_bits, b_bits) -> bool:
    """True for CuPy operands, False for NumPy ones; TypeError for any other mix."""
    if isinstance(b_bits, PackedWeights) and not isinstance(a_bits, np.ndarray):
        raise TypeError(
            "PackedWeights are for the CPU kernel: a_bits must be a NumPy array, got "
            f"{type(a_bits).__name__}"
        )
    on_gpu = _is_cupy(a_bits) or _is_cupy(b_bits)
    if on_gpu and not (_is_cupy(a_bits) and _is_cupy(b_bits)):
        raise TypeError("a_bits and b_bits must both be NumPy arrays or both CuPy arrays")
    if not on_gpu and not (isinstance(a_bits, np.ndarray)
                           and isinstance(b_bits, (np.ndarray, PackedWeights))):
        raise TypeError(
            "xnor_gemm takes NumPy (CPU) or CuPy (GPU) uint64 arrays, got "
            f"{type(a_bits).__name__} and {type(b_bits).__name__}"
        )
    return on_gpu


def _validated_operands(xp, a_bits, b_bits, k):
    checks.check_bits("a_bits", a_bits)
    if not isinstance(b_bits, PackedWeights):
        checks.check_bits("b_bits", b_bits)
    if a_bits.shape[1] != b_bits.shape[1]:
        raise ValueError(
            f"a_bits and b_bits must have the same number of words along K, got "
            f"{a_bits.shape[1]} and {b_bits.shape[1]}"
        )
    k = checks.check_k(k, a_bits.shape[1])
    checks.check_padding(xp, "a_bits", a_bits, k)
    if isinstance(b_bits, PackedWeights):
        if k < b_bits.padding_from:
            raise ValueError(
                f"b_bits has nonzero padding bits past k={k} in its last word; pack with "
                "pack_bits, which leaves them zero")
    else:
        checks.check_padding(xp, "b_bits", b_bits, k)
        b_bits = xp.ascontiguousarray(b_bits)
    return xp.ascontiguousarray(a_bits), b_bits, k


def _output(xp, out, shape, dtype):
    if out is None:
        return xp.empty(shape, dtype=dtype)
    return checks.check_out(out, shape, dtype)


@contextlib.contextmanager
def numba_threads(threads):
    """Run the Numba kernels inside on `threads` threads, then restore (None: leave as is)."""
    if threads is None:
        yield
        return
    import numba

    previous = numba.get_num_threads()
    if previous == threads:  # set_num_threads costs microseconds: skip it when unchanged
        yield
        return
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _is_cupy(x) -> bool:
    return type(x).__module__.startswith("cupy")


def _cupy():
    import cupy

    return cupy


from qnnlib.kernels.layers import PixelLayer, XnorLayer  # noqa: E402  (they use PackedWeights)

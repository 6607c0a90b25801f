"""The array operations the GPU benchmarks and engine need, on CUDA or (dry run) on a CPU.

`CudaOps` launches the kernels of `qnnlib/kernels/xnor_gemm.cu` on CuPy arrays.
`NumpyOps` has the same methods on NumPy arrays: the tuned XNOR GEMM is the Numba CPU
kernel, the others are plain NumPy statements of what each CUDA kernel computes. The
dry run of `make gpu` uses it, so every line of the GPU scripts runs on a machine
without a GPU (where the numbers mean nothing; the code paths are what is checked).

Both take the same packed layouts: A (M, W) and B (N, W) uint64 words along K from
`qnnlib.bitpack.pack_bits`; the unoptimised pair reads its second operand transposed,
BT (K, N) float32 or (W, N) words, so that its naive kernels read memory coalesced.
"""
from __future__ import annotations

import numpy as np
import torch

from qnnlib.kernels import xnor_gemm

__all__ = ["CudaOps", "NumpyOps", "get_ops"]

PIXEL_PLANES = 8


class NumpyOps:
    """CPU reference implementations (see the module docstring)."""

    name = "cpu"
    xp = np
    torch_device = torch.device("cpu")

    def capability(self) -> int:
        return 0

    def variants(self) -> tuple[str, ...]:
        return ("cuda_core", "tensor_core")  # both name the one CPU kernel here

    def xnor(self, a_bits, b_bits, k, variant="auto", thresholds=None, flip=None):
        del variant  # one CPU kernel
        return xnor_gemm(a_bits, b_bits, k, thresholds=thresholds, flip=flip)

    def naive_sgemm(self, a, bt):
        return np.matmul(a, bt, dtype=np.float32)

    def naive_xnor(self, a_bits, bt_bits, k):
        mismatches = np.bitwise_count(a_bits[:, :, None] ^ bt_bits[None, :, :]).sum(axis=1)
        return (k - 2 * mismatches.astype(np.int64)).astype(np.int32)

    def pack_bitplanes(self, pixels):
        m, k = pixels.shape
        n_words = -(-k // 64)
        bits = np.zeros((m, PIXEL_PLANES, n_words * 64), np.uint8)
        bits[:, :, :k] = (pixels[:, None, :] >> np.arange(PIXEL_PLANES, dtype=np.uint8)[:, None]) & 1
        # bit j of word w is element 64 w + j: little-endian bit order within each word
        return np.packbits(bits, axis=-1, bitorder="little").view(np.uint64)

    def bitplane(self, planes, masks, k, pixel_sums, thresholds=None, flip=None):
        """t = 2 sum_n 2^n popc(plane_n & w+) - sum(x) (= W_b . x), int32 or packed bits."""
        ones = np.zeros((planes.shape[0], masks.shape[0]), np.int64)
        for n in range(PIXEL_PLANES):
            ones += np.bitwise_count(planes[:, n, None, :] & masks[None]).sum(-1).astype(np.int64) << n
        t = (2 * ones - pixel_sums[:, None]).astype(np.int32)
        if thresholds is None:
            return t
        fires = (t >= thresholds) != flip.astype(bool)
        return np.packbits(_pad_columns(fires), axis=-1, bitorder="little").view(np.uint64)

    def to_torch(self, array):
        return torch.from_numpy(np.ascontiguousarray(array))

    def from_torch(self, tensor):
        return tensor.detach().cpu().numpy()


class CudaOps:
    """The CUDA kernels on CuPy arrays (launches are asynchronous)."""

    name = "cuda"
    torch_device = torch.device("cuda")

    def __init__(self):
        import cupy

        self.xp = cupy

    def capability(self) -> int:
        from qnnlib.kernels import cuda

        return cuda.compute_capability()

    def variants(self) -> tuple[str, ...]:
        from qnnlib.kernels import cuda

        return ("cuda_core", "tensor_core") if self.capability() >= cuda.TENSOR_CORE_MIN_CC else ("cuda_core",)

    def xnor(self, a_bits, b_bits, k, variant="auto", thresholds=None, flip=None):
        """The kernel itself, as a deployed engine calls it: operands from `pack_bits` and
        epilogues (int32 thresholds clipped to [-k, k + 1], bool flip) prepared once, so
        `xnor_gemm`'s argument checks (each a device reduction and a host sync) are skipped."""
        from qnnlib.bitpack import words_for
        from qnnlib.kernels import cuda

        m, n = a_bits.shape[0], b_bits.shape[0]
        if thresholds is None:
            out = self.xp.empty((m, n), self.xp.int32)
            return cuda.xnor_gemm(a_bits, b_bits, k, None, out, variant)
        out = self.xp.empty((m, words_for(n)), self.xp.uint64)
        return cuda.xnor_gemm(a_bits, b_bits, k, (thresholds, flip), out, variant)

    def naive_sgemm(self, a, bt):
        from qnnlib.kernels import cuda

        return cuda.naive_sgemm(self.xp.ascontiguousarray(a), self.xp.ascontiguousarray(bt))

    def naive_xnor(self, a_bits, bt_bits, k):
        from qnnlib.kernels import cuda

        return cuda.naive_xnor_gemm(a_bits, self.xp.ascontiguousarray(bt_bits), k)

    def pack_bitplanes(self, pixels):
        from qnnlib.kernels import cuda

        return cuda.pack_bitplanes(self.xp.ascontiguousarray(pixels))

    def bitplane(self, planes, masks, k, pixel_sums, thresholds=None, flip=None):
        from qnnlib.bitpack import words_for
        from qnnlib.kernels import cuda

        m, n = planes.shape[0], masks.shape[0]
        sums = self.xp.ascontiguousarray(pixel_sums, dtype=self.xp.int32)
        if thresholds is None:
            out = self.xp.empty((m, n), self.xp.int32)
            return cuda.bitplane_gemm(planes, masks, k, sums, None, out)
        out = self.xp.empty((m, words_for(n)), self.xp.uint64)
        return cuda.bitplane_gemm(planes, masks, k, sums, (thresholds, flip), out)

    def to_torch(self, array):
        return torch.from_dlpack(array)

    def from_torch(self, tensor):
        return self.xp.from_dlpack(tensor.detach())


def _pad_columns(bits):
    """Pad a bool (M, N) matrix with False columns to a multiple of 64."""
    pad = -bits.shape[1] % 64
    return np.pad(bits, ((0, 0), (0, pad))) if pad else bits


def get_ops(dry_run: bool):
    """`NumpyOps` for a dry run, else `CudaOps` (needs CuPy and a CUDA device)."""
    if dry_run:
        return NumpyOps()
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError("the GPU run needs CuPy (cupy-cuda13x or cupy-cuda12x); "
                           "use --dry-run on a machine without a GPU") from error
    if cupy.cuda.runtime.getDeviceCount() == 0 or not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible to CuPy and torch; use --dry-run")
    return CudaOps()

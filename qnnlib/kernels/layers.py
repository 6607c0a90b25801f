"""Layers prepared once for the CPU kernels, for repeated calls (a deployed model).

`xnor_gemm` checks and rearranges its arguments on every call, which costs several
microseconds: a large share of a batch-1 forward pass. A prepared layer checks the
weights, thresholds and flips once, keeps the kernels' layouts (column panels, epilogues
padded to every panel column), and per call checks only its input, by attributes.

- `XnorLayer(b_bits, k, thresholds=None, flip=None)`: ±1 input bits (M, W) -> int32
  dots A @ B.T, or with thresholds the packed bits (dot >= T) XOR flip (the next
  layer's input), as `xnor_gemm` computes them.
- `PixelLayer(b_bits, k, thresholds, flip)`: uint8 inputs x (M, k) -> packed bits
  (W_b . x >= T) XOR flip, with W_b . x exact (the bit-plane kernel,
  `qnnlib.kernels.bitplane`). Thresholds are int32 and used as they are.
"""
from __future__ import annotations

import numpy as np

from qnnlib.kernels import PackedWeights, checks, cpu_run, prepare_weights
from qnnlib.kernels import bitplane, cpu

# t = W_b . x lies in [-255 k, 255 k] and is compared with int32 thresholds.
MAX_PIXEL_K = np.iinfo(np.int32).max // 255 - 1


class _PreparedLayer:
    """Weights in panel layout and the padded epilogue, checked once."""

    def __init__(self, b_bits, k):
        if isinstance(b_bits, PackedWeights):
            raise TypeError("b_bits must be the packed uint64 weights (N, W), not PackedWeights")
        if not isinstance(b_bits, np.ndarray):
            raise TypeError(f"b_bits must be a NumPy uint64 array, got {type(b_bits).__name__}")
        checks.check_bits("b_bits", b_bits)
        self.k = checks.check_k(k, b_bits.shape[1])
        checks.check_padding(np, "b_bits", b_bits, self.k)
        self.weights = prepare_weights(b_bits)
        self.n = b_bits.shape[0]
        self.n_words = b_bits.shape[1]

    @property
    def panels(self):
        return self.weights.panels

    def _packed_out(self, m):
        # ceil(N / 64) words: one per 8 panels, so the padding columns' bits come out zero
        return np.empty((m, self.panels.shape[0] // bitplane.PANELS_PER_WORD), np.uint64)

    def _check_input(self, name, x, dtype, width):
        if not isinstance(x, np.ndarray) or x.dtype != dtype or x.ndim != 2 or x.shape[1] != width:
            got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{name} must be a NumPy {np.dtype(dtype).name} array of shape "
                             f"(M, {width}), got {got}")
        return np.ascontiguousarray(x)


class XnorLayer(_PreparedLayer):
    """A ±1 layer on packed ±1 inputs (see the module docstring)."""

    def __init__(self, b_bits, k, thresholds=None, flip=None):
        super().__init__(b_bits, k)
        self.epilogue = None
        if thresholds is not None:
            t = checks.check_thresholds(np, thresholds, self.n, self.k)
            f = checks.check_flip(np, flip, self.n)
            self.epilogue = cpu.pad_epilogue(t, f, self.k, self.panels.shape[0])
        elif flip is not None:
            raise ValueError("flip needs thresholds")

    def __call__(self, a_bits):
        """int32 (M, N) dots, or packed uint64 (M, ceil(N / 64)) bits with thresholds."""
        a_bits = self._check_input("a_bits", a_bits, np.uint64, self.n_words)
        checks.check_padding(np, "a_bits", a_bits, self.k)
        if self.epilogue is None:
            out = np.empty((a_bits.shape[0], self.n), np.int32)
        else:
            out = self._packed_out(a_bits.shape[0])
        return cpu_run(a_bits, self.weights, self.k, self.epilogue, out)


class PixelLayer(_PreparedLayer):
    """A ±1 layer on uint8 inputs, thresholded and packed (see the module docstring)."""

    def __init__(self, b_bits, k, thresholds, flip):
        super().__init__(b_bits, k)
        if self.k > MAX_PIXEL_K:
            raise ValueError(f"k={self.k} is too large for int32 pixel sums: need k <= {MAX_PIXEL_K}")
        thresholds = np.asarray(thresholds)
        if thresholds.dtype != np.int32 or thresholds.shape != (self.n,):
            raise ValueError(f"thresholds must be int32 of shape ({self.n},), got "
                             f"{thresholds.dtype} {thresholds.shape}")
        self.epilogue = bitplane.pad_epilogue(thresholds, checks.check_flip(np, flip, self.n),
                                              self.panels.shape[0])

    def __call__(self, pixels):
        """Packed uint64 (M, ceil(N / 64)) bits for uint8 pixels (M, k)."""
        pixels = self._check_input("pixels", pixels, np.uint8, self.k)
        planes = bitplane.pack_bitplanes(pixels, self.n_words)
        pixel_sums = pixels.sum(axis=1, dtype=np.int64)
        out = self._packed_out(pixels.shape[0])
        bitplane.bitplane_threshold_packed(planes, self.panels, pixel_sums, *self.epilogue,
                                           out.view(np.uint8))
        return out

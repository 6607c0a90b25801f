"""Pack ±1 tensors into 64-bit words and back, for NumPy, PyTorch and CuPy.

Layout (shared by every kernel in `qnnlib.kernels`): along the packed axis, element
`64 * w + j` is bit `j` (least significant first) of word `w`; the bit is 1 where the
element is >= 0 (so sign(0) = +1, as in the paper; -inf and +inf have their signs). The
last word is padded with 0 bits; `xnor_gemm` relies on the padding being zero in both
operands.

Input is checked: real numbers only (integer or float; bool and complex have no sign
to take), no NaN (it has no sign either), at least one dimension, a non-empty packed
axis. Errors name the argument and what was expected.

Return types:
- NumPy in, NumPy out: `pack_bits` gives uint64, `unpack_bits` gives float32 ±1.
- PyTorch in, PyTorch out, on the input's device: `pack_bits` gives a `torch.uint64`
  tensor (torch has few uint64 ops; `.view(torch.int64)` shares the bits);
  `unpack_bits` accepts uint64 or int64 words and gives float32 ±1. Torch tensors are
  converted through NumPy on the CPU, because torch has no bit-packing primitives.
- CuPy in, CuPy out: same dtypes as NumPy, computed on the device.
"""
from __future__ import annotations

import sys

import numpy as np

WORD_BITS = 64


def words_for(k: int) -> int:
    """Number of 64-bit words that hold k bits."""
    return (k + WORD_BITS - 1) // WORD_BITS


def pack_bits(x, axis: int = -1):
    """Pack `x >= 0` along `axis` into uint64 words (see the module docstring)."""
    kind = _array_kind(x)
    if kind == "torch":
        import torch

        if x.dtype in (torch.bfloat16, torch.float16):  # NumPy has no bfloat16: widen, exactly
            x = x.float()
        return _torch_via_numpy(x, lambda a: _pack_numpy(_checked_signs(np, a, axis), axis))
    xp = np if kind == "numpy" else _cupy()
    x = _checked_signs(xp, xp.asarray(x), axis)
    if kind == "numpy":
        return _pack_numpy(x, axis)
    return _pack_with_shifts(xp, x, axis)


def _checked_signs(xp, x, axis):
    """x must be real numbers without NaN, with a non-empty axis `axis`."""
    if x.dtype.kind not in "iuf":
        raise TypeError(f"pack_bits takes integer or float x (their signs), got {x.dtype}")
    _check_axis(x, axis, "x")
    if x.shape[axis] == 0:
        raise ValueError(f"cannot pack an empty axis: x has shape {tuple(x.shape)}, axis {axis}")
    # min() propagates NaN: one pass and no temporary array, unlike isnan(x).any()
    if x.dtype.kind == "f" and x.size and bool(xp.isnan(x.min())):
        raise ValueError("x contains NaN, which has no sign to pack")
    return x


def _check_axis(array, axis, name) -> None:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    if not -array.ndim <= axis < array.ndim:
        raise ValueError(f"axis {axis} is out of range for {name} with shape {tuple(array.shape)} "
                         f"(at least one dimension is needed)")


def unpack_bits(words, k: int, axis: int = -1):
    """Inverse of `pack_bits`: the first `k` bits along `axis` as float32 ±1."""
    kind = _array_kind(words)
    if kind == "torch":
        import torch

        if words.dtype not in (torch.uint64, torch.int64):
            raise TypeError(f"unpack_bits expects uint64 or int64 words, got {words.dtype}")
        return _torch_via_numpy(words.view(torch.int64),
                                lambda a: unpack_bits(a.view(np.uint64), k, axis))
    xp = np if kind == "numpy" else _cupy()
    words = xp.asarray(words)
    if words.dtype != np.uint64:
        raise TypeError(f"unpack_bits expects uint64 words, got {words.dtype}")
    _check_axis(words, axis, "words")
    _check_k(words.shape[axis], k)
    if kind == "numpy":
        return _unpack_numpy(words, k, axis)
    return _unpack_with_shifts(xp, words, k, axis)


def _check_k(n_words: int, k) -> None:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if not words_for(k) == n_words or k < 1:
        raise ValueError(
            f"k={k} does not fit {n_words} words: need {WORD_BITS * (n_words - 1)} < k <= "
            f"{WORD_BITS * n_words}"
        )


def _array_kind(x) -> str:
    if isinstance(x, np.ndarray):
        return "numpy"
    module = type(x).__module__
    if module.startswith("torch"):
        return "torch"
    if module.startswith("cupy"):
        return "cupy"
    if isinstance(x, (list, tuple, np.generic, int, float)):
        return "numpy"
    raise TypeError(f"expected a NumPy, PyTorch or CuPy array, got {type(x).__name__}")


def _cupy():
    import cupy  # optional dependency: only needed when CuPy arrays come in

    return cupy


def _pack_numpy(x: np.ndarray, axis: int) -> np.ndarray:
    # np.packbits is SIMD-vectorised; packing 8 bytes per word little-endian and
    # viewing them as uint64 gives exactly "element 64w+j is bit j of word w".
    moved = np.moveaxis(x, axis, -1)
    k = moved.shape[-1]
    packed = np.packbits(moved >= 0, axis=-1, bitorder="little")
    n_bytes = 8 * words_for(k)
    if packed.shape[-1] != n_bytes:
        padded = np.zeros(moved.shape[:-1] + (n_bytes,), np.uint8)
        padded[..., : packed.shape[-1]] = packed
        packed = padded
    # packbits keeps a transposed input's memory order; the uint64 view needs C order
    words = np.ascontiguousarray(packed).view(np.uint64)
    if sys.byteorder != "little":
        words = words.byteswap()
    return np.moveaxis(words, -1, axis)


def _unpack_numpy(words: np.ndarray, k: int, axis: int) -> np.ndarray:
    moved = np.ascontiguousarray(np.moveaxis(words, axis, -1))
    if sys.byteorder != "little":
        moved = moved.byteswap()
    bits = np.unpackbits(moved.view(np.uint8), axis=-1, count=k, bitorder="little")
    signs = bits.astype(np.float32) * 2 - 1
    return np.moveaxis(signs, -1, axis)


def _torch_via_numpy(tensor, numpy_function):
    import torch

    result = numpy_function(tensor.detach().cpu().numpy())
    out = torch.from_numpy(np.ascontiguousarray(result))
    return out.to(tensor.device)


def _shifts(xp):
    return xp.left_shift(xp.ones(WORD_BITS, dtype=np.uint64), xp.arange(WORD_BITS, dtype=np.uint64))


def _pack_with_shifts(xp, x, axis: int):
    """Array-API style packing (used for CuPy; tested with NumPy as `xp`).

    Bits in distinct positions never carry, so summing `bit << j` equals OR-ing them.
    """
    moved = xp.moveaxis(xp.asarray(x), axis, -1)
    k = moved.shape[-1]
    n_words = words_for(k)
    bits = xp.zeros(moved.shape[:-1] + (n_words * WORD_BITS,), dtype=np.uint64)
    bits[..., :k] = moved >= 0
    bits = bits.reshape(moved.shape[:-1] + (n_words, WORD_BITS))
    words = (bits * _shifts(xp)).sum(axis=-1, dtype=np.uint64)
    return xp.moveaxis(words, -1, axis)


def _unpack_with_shifts(xp, words, k: int, axis: int):
    moved = xp.moveaxis(words, axis, -1)
    bits = (moved[..., None] >> xp.arange(WORD_BITS, dtype=np.uint64)) & np.uint64(1)
    bits = bits.reshape(moved.shape[:-1] + (moved.shape[-1] * WORD_BITS,))[..., :k]
    signs = bits.astype(np.float32) * 2 - 1
    return xp.moveaxis(signs, -1, axis)

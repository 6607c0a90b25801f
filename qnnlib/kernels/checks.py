"""Argument checks at the kernels' API boundary, shared by the CPU and CUDA paths.

Every check names the argument and what was expected. They are cheap (attribute
tests and O(rows) or O(columns) passes, never O(M N K)), so `xnor_gemm` runs them on
every call; a prepared layer runs the weight-side ones once.

The kernels count mismatching bits of whole words, so padding bits past K must be zero
in both operands (as `pack_bits` and the packed epilogue leave them): a word with a 1
there would add to the count. They are checked here rather than masked in the kernels'
inner loops, which would cost an AND per word.
"""
from __future__ import annotations

import numpy as np

from qnnlib.bitpack import WORD_BITS

# |dot| <= k and the kernels form k - 2 * mismatches in int32 lanes.
MAX_K = 2**30 - 1


def check_bits(name, bits):
    """uint64, 2-D (rows, words), with at least one word per row."""
    if bits.dtype != np.uint64:
        raise TypeError(f"{name} must be uint64 packed words (see pack_bits), got {bits.dtype}")
    if bits.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, words), got shape {tuple(bits.shape)}")
    if bits.shape[1] == 0:
        raise ValueError(f"{name} must have at least one word per row, got shape {tuple(bits.shape)}")


def check_k(k, n_words: int) -> int:
    """k: an integer with 64 (n_words - 1) < k <= 64 n_words (and k <= MAX_K)."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    k = int(k)
    if not WORD_BITS * (n_words - 1) < k <= WORD_BITS * n_words:
        raise ValueError(
            f"k={k} is out of range for {n_words} words per row: need "
            f"{WORD_BITS * (n_words - 1)} < k <= {WORD_BITS * n_words}"
        )
    if k > MAX_K:
        raise ValueError(f"k={k} is too large: the int32 dots need k <= {MAX_K}")
    return k


def padding_mask(k: int) -> np.uint64:
    """The bits of the last word that lie past K."""
    used = k % WORD_BITS
    return np.uint64(0) if used == 0 else ~np.uint64(0) << np.uint64(used)


def check_padding(xp, name, bits, k: int) -> None:
    """Padding bits past K in the last word of every row must be zero."""
    if k % WORD_BITS == 0 or bits.shape[0] == 0:  # no padding bits (the common case: fast)
        return
    if bool((bits[:, -1] & padding_mask(k)).any()):
        raise ValueError(
            f"{name} has nonzero padding bits past k={k} in its last word; pack with "
            "pack_bits, which leaves them zero"
        )


def check_flip(xp, flip, n: int):
    """flip: n values that are each 0 or 1 (bool or integer), returned as a bool array.

    A bool array can hold other bytes (a uint8 array viewed as bool); the kernels would
    read those as true, or XOR them in whole, so they are refused too.
    """
    if flip is None:
        return xp.zeros(n, dtype=np.bool_)
    flip = xp.asarray(flip)
    if flip.shape != (n,):
        raise ValueError(f"flip must have shape ({n},), got {tuple(flip.shape)}")
    if flip.dtype == np.bool_:
        as_ints = flip.view(np.uint8)
    elif flip.dtype.kind in "iu":
        as_ints = flip
    else:
        raise TypeError(f"flip must be boolean or integer 0/1, got {flip.dtype}")
    if n and bool(((as_ints != 0) & (as_ints != 1)).any()):
        raise ValueError("flip must hold only 0/1 (False/True) values")
    return xp.ascontiguousarray(as_ints.astype(np.bool_))


def check_thresholds(xp, thresholds, n: int, k: int):
    """n integer or float thresholds as int32, clipped to [-k, k + 1].

    dot >= t <=> dot >= ceil(t) for integer dots; clipping keeps "always" (-inf) and
    "never" (+inf) while making int32 safe.
    """
    thresholds = xp.asarray(thresholds)
    if thresholds.shape != (n,):
        raise ValueError(f"thresholds must have shape ({n},), got {tuple(thresholds.shape)}")
    if thresholds.dtype.kind == "f":
        if bool(xp.isnan(thresholds).any()):
            raise ValueError("thresholds contain NaN")
        thresholds = xp.clip(xp.ceil(thresholds), -k, k + 1)
    elif thresholds.dtype.kind in "iu":
        thresholds = xp.clip(thresholds.astype(np.int64), -k, k + 1)
    else:
        raise TypeError(f"thresholds must be integer or float, got {thresholds.dtype}")
    return xp.ascontiguousarray(thresholds.astype(np.int32))


def check_out(out, shape, dtype):
    """A caller's output array: C-contiguous, writeable, of exactly this dtype and shape."""
    # CuPy arrays have no `writeable` flag: device memory is always writeable
    writeable = getattr(out.flags, "writeable", True)
    ok = (tuple(out.shape) == shape and out.dtype == dtype and out.flags.c_contiguous
          and writeable)
    if not ok:
        raise ValueError(
            f"out must be a writeable C-contiguous {np.dtype(dtype).name} array of shape "
            f"{shape}, got {out.dtype} {tuple(out.shape)}"
        )
    return out


def check_threads(threads):
    """None, or an integer from 1 to Numba's thread-pool size."""
    if threads is None:
        return None
    import numba

    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an integer or None, got {type(threads).__name__}")
    if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"threads must be between 1 and {numba.config.NUMBA_NUM_THREADS}, got {threads}")
    return int(threads)

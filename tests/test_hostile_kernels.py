"""Hostile input to pack_bits / unpack_bits / xnor_gemm / prepare_weights / XnorLayer.

Every call either raises TypeError / ValueError with a message naming the argument, or
returns exactly what an independent reference (NumPy integer matmul, np.sign) gives.
"""
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hostile import expect_error, hostile_counts, tried  # noqa: F401  (autouse fixture)

from qnnlib.bitpack import pack_bits, unpack_bits
from qnnlib.kernels import XnorLayer, checks, prepare_weights, xnor_gemm


def signs(rng, shape):
    return rng.choice(np.array([-1, 1], np.int64), size=shape)


def reference_bits(dots, thresholds, flip):
    return pack_bits(np.where((dots >= thresholds) != flip, 1, -1))


# --- pack_bits / unpack_bits -------------------------------------------------------------

@pytest.mark.parametrize("x, error, match", [
    (np.array([True, False]), TypeError, "integer or float x"),
    (np.array([1 + 1j]), TypeError, "integer or float x"),
    (np.array(["a", "b"]), TypeError, "integer or float x"),
    (np.array([None, 1], dtype=object), TypeError, "integer or float x"),
    (torch.tensor([True]), TypeError, "integer or float x"),
    (np.float32(1.0), ValueError, "axis -1 is out of range for x with shape"),
    (np.zeros((3, 0)), ValueError, "cannot pack an empty axis"),
    (np.array([0.5, np.nan]), ValueError, "x contains NaN"),
    (torch.tensor([np.nan, 1.0]), ValueError, "x contains NaN"),
    ("text", TypeError, "NumPy, PyTorch or CuPy"),
    ({1: 2}, TypeError, "NumPy, PyTorch or CuPy"),
])
def test_pack_bits_refuses(x, error, match):
    expect_error("pack_bits bad x", error, match, pack_bits, x)


@pytest.mark.parametrize("axis, error, match", [
    (2, ValueError, "axis 2 is out of range"), (-3, ValueError, "axis -3 is out of range"),
    (0.5, TypeError, "axis must be an integer"), (True, TypeError, "axis must be an integer"),
])
def test_pack_and_unpack_refuse_bad_axes(axis, error, match):
    expect_error("pack/unpack bad axis", error, match, pack_bits, np.ones((2, 3)), axis=axis)
    expect_error("pack/unpack bad axis", error, match, unpack_bits, np.zeros((2, 3), np.uint64), 64, axis=axis)


@pytest.mark.parametrize("words, k, error, match", [
    (np.zeros(2, np.int64), 100, TypeError, "uint64"),
    (np.zeros(2, np.float64), 100, TypeError, "uint64"),
    (np.zeros(2, ">u8"), 100, TypeError, "uint64"),
    (np.zeros(2, np.uint64), 200, ValueError, "k=200 does not fit 2 words"),
    (np.zeros(2, np.uint64), 64, ValueError, "k=64 does not fit 2 words"),
    (np.zeros(2, np.uint64), 0, ValueError, "k=0 does not fit"),
    (np.zeros(2, np.uint64), -5, ValueError, "k=-5 does not fit"),
    (np.zeros(2, np.uint64), 10**30, ValueError, "does not fit 2 words"),
    (np.zeros(2, np.uint64), 100.0, TypeError, "k must be an integer"),
    (np.zeros(2, np.uint64), True, TypeError, "k must be an integer"),
    (np.zeros((0,), np.uint64), 1, ValueError, "k=1 does not fit 0 words"),
    (np.uint64(3), 1, ValueError, "axis -1 is out of range for words"),
    (torch.zeros(2, dtype=torch.float32), 100, TypeError, "uint64 or int64"),
])
def test_unpack_bits_refuses(words, k, error, match):
    expect_error("unpack_bits bad words/k", error, match, unpack_bits, words, k)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_pack_bits_property_sign_or_error(data):
    """Any real array: the packed bits are x >= 0, or NaN / empty axis is refused."""
    dtype = data.draw(st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8]))
    shape = data.draw(st.lists(st.integers(0, 70), min_size=1, max_size=3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    if dtype in (np.float16, np.float32, np.float64) and x.size and data.draw(st.booleans()):
        x.flat[rng.integers(x.size)] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    if x.ndim > 1 and data.draw(st.booleans()):
        x = x.T  # non-contiguous
    if x.shape[-1] == 0:
        expect_error("pack_bits property", ValueError, "cannot pack an empty axis", pack_bits, x)
        return
    if np.isnan(x.astype(np.float64)).any():
        expect_error("pack_bits property", ValueError, "x contains NaN", pack_bits, x)
        return
    words = pack_bits(x)
    np.testing.assert_array_equal(unpack_bits(words, x.shape[-1]), np.where(x >= 0, 1.0, -1.0))
    tried("pack_bits property", "exact")


# --- xnor_gemm -------------------------------------------------------------------------

def _operand(data, rng, rows, n_words, k, name):
    """Packed ±1 rows; sometimes hostile: wrong dtype or ndim, padding bits, a view."""
    bits = pack_bits(signs(rng, (rows, k))) if k > 0 else np.zeros((rows, n_words), np.uint64)
    hostility = data.draw(st.sampled_from(["none", "none", "dtype", "ndim", "padding", "view"]),
                          label=name)
    if hostility == "dtype":
        return bits.astype(data.draw(st.sampled_from([np.int64, np.float64, np.uint32]))), "dtype"
    if hostility == "ndim":
        return bits[None], "ndim"
    if hostility == "padding" and k % 64 and rows:
        bits = bits.copy()
        bits[rng.integers(rows), -1] |= np.uint64(1) << np.uint64(63)
        return bits, "padding"
    if hostility == "view":
        return np.asfortranarray(bits), "none"
    return bits, "none"


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_xnor_gemm_property_exact_or_clear_error(data):
    m, n = data.draw(st.integers(0, 9)), data.draw(st.integers(0, 70))
    k_true = data.draw(st.integers(1, 200))
    n_words = -(-k_true // 64)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    a, a_kind = _operand(data, rng, m, n_words, k_true, "a")
    b, b_kind = _operand(data, rng, n, n_words, k_true, "b")
    k = data.draw(st.sampled_from([k_true, k_true, 0, -1, 64 * n_words + 1, 64 * (n_words - 1), 2**40]))
    use_epilogue = data.draw(st.booleans())
    flip_values = data.draw(st.sampled_from([[0, 1], [0, 1], [0, 2], [1, 255]]))
    flip = rng.choice(np.array(flip_values, np.uint8), n).view(np.bool_)
    thresholds = rng.integers(-k_true, k_true + 1, n).astype(np.float64)
    if n and data.draw(st.booleans()):
        thresholds[rng.integers(n)] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    kwargs = {"thresholds": thresholds, "flip": flip} if use_epilogue else {}
    problems = [kind for kind in (a_kind, b_kind) if kind != "none"]
    if k != k_true:  # every other drawn k lies outside the words' range
        problems.append("k")
    if use_epilogue and n and (np.isnan(thresholds).any() or set(flip.view(np.uint8)) - {0, 1}):
        problems.append("epilogue")
    kind = "xnor_gemm " + (problems[0] if problems else "valid")
    if problems:
        with pytest.raises((TypeError, ValueError),
                           match="a_bits|b_bits|k=|k must|thresholds|flip|same number of words"):
            xnor_gemm(a, b, k, **kwargs)
        tried(kind, "error")
        return
    a_signs = unpack_bits(a, k).astype(np.int64) if m else np.zeros((0, k), np.int64)
    b_signs = unpack_bits(b, k).astype(np.int64) if n else np.zeros((0, k), np.int64)
    dots = a_signs @ b_signs.T
    result = xnor_gemm(a, b, k, **kwargs)
    if use_epilogue:
        expected = reference_bits(dots, thresholds, flip) if m and n else np.zeros((m, -(-n // 64)), np.uint64)
        np.testing.assert_array_equal(result, expected)
    else:
        np.testing.assert_array_equal(result, dots)
    tried(kind, "exact")


@pytest.mark.parametrize("flip", [
    np.array([0, 2, 1], np.uint8).view(np.bool_), np.array([0, 1, 2]), np.array([-1, 0, 1]),
    np.array([255, 0, 0], np.uint8),
])
def test_flip_values_other_than_0_1_are_refused(flip):
    bits = pack_bits(np.ones((3, 100)))
    expect_error("flip not 0/1", ValueError, "flip must hold only 0/1", xnor_gemm,
                 bits, bits, 100, thresholds=np.zeros(3), flip=flip)
    expect_error("flip not 0/1", ValueError, "flip must hold only 0/1", XnorLayer,
                 bits, 100, np.zeros(3), flip)


def test_integer_flips_0_1_work_like_bools():
    rng = np.random.default_rng(1)
    a, b = signs(rng, (4, 70)), signs(rng, (5, 70))
    flip = np.array([0, 1, 1, 0, 1])
    bits = xnor_gemm(pack_bits(a), pack_bits(b), 70, thresholds=np.zeros(5), flip=flip)
    np.testing.assert_array_equal(bits, reference_bits(a @ b.T, 0, flip.astype(bool)))
    tried("flip integer 0/1", "exact")


def test_padding_bits_are_refused_everywhere():
    rng = np.random.default_rng(2)
    clean = pack_bits(signs(rng, (3, 100)))
    dirty = clean.copy()
    dirty[1, -1] |= np.uint64(1) << np.uint64(100 % 64)
    for a, b, name in ((dirty, clean, "a_bits"), (clean, dirty, "b_bits")):
        expect_error("padding bits", ValueError, f"{name} has nonzero padding bits past k=100",
                     xnor_gemm, a, b, 100)
    expect_error("padding bits", ValueError, "b_bits has nonzero padding bits past k=100",
                 xnor_gemm, clean, prepare_weights(dirty), 100)
    expect_error("padding bits", ValueError, "b_bits has nonzero padding bits",
                 XnorLayer, dirty, 100)
    expect_error("padding bits", ValueError, "a_bits has nonzero padding bits",
                 XnorLayer(clean, 100), dirty)
    # the same words are valid for a K that covers the set bit
    a, b = signs(rng, (3, 101)), signs(rng, (2, 101))
    np.testing.assert_array_equal(xnor_gemm(pack_bits(a), prepare_weights(pack_bits(b)), 101), a @ b.T)
    tried("padding bits", "exact")


@pytest.mark.parametrize("m, n", [(0, 5), (5, 0), (0, 0)])
def test_empty_operands_give_empty_results(m, n):
    a, b = np.zeros((m, 2), np.uint64), np.zeros((n, 2), np.uint64)
    assert xnor_gemm(a, b, 100).shape == (m, n)
    assert xnor_gemm(a, prepare_weights(b), 100, thresholds=np.zeros(n)).shape == (m, -(-n // 64))
    assert XnorLayer(b, 100)(a).shape == (m, n)
    tried("empty M or N", "exact")


@pytest.mark.parametrize("a, b, k, error, match", [
    (np.zeros((2, 0), np.uint64), np.zeros((2, 0), np.uint64), 0, ValueError, "at least one word per row"),
    (np.zeros((2, 1), np.uint64), np.zeros((2, 1), np.uint64), 2**40, ValueError, "k=1099511627776 is out of range"),
    (np.zeros((2, 1), np.uint64), np.zeros((2, 1), np.uint64), np.float64(3), TypeError, "k must be an integer"),
    (np.zeros((2, 1), np.uint64), np.zeros((2, 1), np.uint64), None, TypeError, "k must be an integer"),
    (np.zeros((2, 1), np.uint64), np.zeros((2, 1), np.uint64), np.True_, TypeError, "k must be an integer"),
    (np.zeros(1, np.uint64), np.zeros((2, 1), np.uint64), 1, ValueError, "a_bits must be 2-D"),
    (np.zeros((2, 1), np.uint64), torch.zeros(2, 1), 1, TypeError, "NumPy .* or CuPy"),
])
def test_xnor_gemm_refuses(a, b, k, error, match):
    expect_error("xnor_gemm bad operands", error, match, xnor_gemm, a, b, k)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"thresholds": np.array([True, False])}, TypeError, "thresholds must be integer or float"),
    ({"thresholds": np.array(["1", "2"])}, TypeError, "thresholds must be integer or float"),
    ({"thresholds": np.zeros((2, 1))}, ValueError, r"thresholds must have shape \(2,\)"),
    ({"thresholds": np.zeros(2), "flip": np.zeros(2, np.float32)}, TypeError, "flip must be boolean or integer"),
    ({"thresholds": np.zeros(2), "flip": np.zeros(3, bool)}, ValueError, r"flip must have shape \(2,\)"),
    ({"out": np.empty((2, 2), np.int32)[:, ::-1]}, ValueError, "out must be a writeable C-contiguous"),
    ({"out": np.empty((2, 2), np.int32).view()}, None, None),
    ({"threads": 0}, ValueError, "threads must be between 1 and"),
    ({"threads": 10**6}, ValueError, "threads must be between 1 and"),
    ({"threads": 1.5}, TypeError, "threads must be an integer or None"),
])
def test_xnor_gemm_refuses_bad_keywords(kwargs, error, match):
    bits = pack_bits(np.ones((2, 100)))
    if error is None:  # a valid writeable view works
        np.testing.assert_array_equal(xnor_gemm(bits, bits, 100, **kwargs), 100)
        tried("xnor_gemm keywords", "exact")
        return
    expect_error("xnor_gemm keywords", error, match, xnor_gemm, bits, bits, 100, **kwargs)


def test_read_only_out_is_refused():
    bits = pack_bits(np.ones((2, 100)))
    out = np.empty((2, 2), np.int32)
    out.flags.writeable = False
    expect_error("xnor_gemm keywords", ValueError, "writeable", xnor_gemm, bits, bits, 100, out=out)


def cupy_like(shape, dtype, c_contiguous=True):
    """What the out check sees of a CuPy array: shape, dtype and flags with c_contiguous
    but no `writeable` (device memory is always writeable)."""
    return types.SimpleNamespace(shape=shape, dtype=np.dtype(dtype),
                                 flags=types.SimpleNamespace(c_contiguous=c_contiguous))


def test_out_check_takes_cupy_arrays():
    out = cupy_like((2, 3), np.int32)
    assert checks.check_out(out, (2, 3), np.int32) is out
    for bad in (cupy_like((2, 3), np.int32, c_contiguous=False), cupy_like((3, 2), np.int32),
                cupy_like((2, 3), np.int64)):
        expect_error("CuPy-like out", ValueError, "out must be a writeable C-contiguous int32",
                     checks.check_out, bad, (2, 3), np.int32)


def test_huge_output_is_a_clear_memory_error():
    rows = np.zeros((2**21, 1), np.uint64)  # 16 MiB each; the product would be 16 TiB
    with pytest.raises(MemoryError, match="Unable to allocate"):
        xnor_gemm(rows, rows, 64)
    tried("huge sizes", "MemoryError")


@pytest.mark.parametrize("b, k, error, match", [
    (np.zeros((3, 2), np.int64), 100, TypeError, "b_bits must be uint64"),
    ([[0, 0]], 100, TypeError, "NumPy uint64 array"),
    (np.zeros(3, np.uint64), 100, ValueError, "b_bits must be 2-D"),
    (np.zeros((3, 2), np.uint64), 300, ValueError, "k=300 is out of range for 2 words"),
])
def test_prepared_layers_refuse(b, k, error, match):
    expect_error("XnorLayer/prepare_weights", error, match, XnorLayer, b, k)
    if isinstance(b, np.ndarray) and b.dtype == np.uint64 and b.ndim == 2:
        return
    expect_error("XnorLayer/prepare_weights", error, match, prepare_weights, b)


def test_prepared_layer_checks_its_input():
    layer = XnorLayer(np.zeros((3, 2), np.uint64), 100)
    for bad in (np.zeros((2, 3), np.uint64), np.zeros((2, 2), np.int64), np.zeros(2, np.uint64), [[0, 0]]):
        expect_error("XnorLayer input", ValueError, r"a_bits must be a NumPy uint64 array of shape \(M, 2\)",
                     layer, bad)

"""pack_bits / unpack_bits: layout, round trips, padding, NumPy and PyTorch."""
import numpy as np
import pytest
import torch

from qnnlib import bitpack
from qnnlib.bitpack import pack_bits, unpack_bits


def random_signs(rng, shape):
    return rng.choice(np.array([-1.0, 1.0], np.float32), size=shape)


def test_bit_layout_is_little_endian_within_each_word():
    x = -np.ones(130, np.float32)
    x[[0, 3, 63, 64, 129]] = 1.0
    words = pack_bits(x)
    assert words.dtype == np.uint64
    assert words.tolist() == [(1 << 0) | (1 << 3) | (1 << 63), 1 << 0, 1 << 1]


def test_zero_packs_as_plus_one_and_infinities_keep_their_sign():
    words = pack_bits(np.array([0.0, -0.0, -np.inf, -1e-30, np.inf], np.float32))
    assert words.tolist() == [0b10011]


def test_nan_has_no_sign_and_is_refused():
    with pytest.raises(ValueError, match="x contains NaN"):
        pack_bits(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="x contains NaN"):
        pack_bits(torch.tensor([[np.nan]], dtype=torch.bfloat16))


@pytest.mark.parametrize("k", [1, 63, 64, 65, 784, 4097])
def test_numpy_round_trip_and_zero_padding(k):
    rng = np.random.default_rng(k)
    x = random_signs(rng, (3, k))
    words = pack_bits(x)
    assert words.shape == (3, -(-k // 64))
    unpacked = unpack_bits(words, k)
    assert unpacked.dtype == np.float32
    np.testing.assert_array_equal(unpacked, x)
    padding_mask = ~np.uint64(0) << np.uint64(k % 64) if k % 64 else np.uint64(0)
    assert not np.any(words[:, -1] & padding_mask)


def test_all_positive_input_leaves_padding_zero():
    words = pack_bits(np.ones(70, np.float32))
    assert words.tolist() == [2**64 - 1, 0b111111]


@pytest.mark.parametrize("axis", [0, 1, -3])
def test_axis_argument(axis):
    rng = np.random.default_rng(1)
    x = random_signs(rng, (70, 5, 66))
    words = pack_bits(x, axis=axis)
    moved = np.moveaxis(x, axis, -1)
    np.testing.assert_array_equal(np.moveaxis(words, axis, -1), pack_bits(moved))
    np.testing.assert_array_equal(unpack_bits(words, x.shape[axis], axis=axis), x)


def test_non_contiguous_input():
    rng = np.random.default_rng(2)
    x = random_signs(rng, (100, 80))
    view = x.T[::2]
    np.testing.assert_array_equal(pack_bits(view), pack_bits(np.ascontiguousarray(view)))


def test_torch_round_trip_and_dtype():
    rng = np.random.default_rng(3)
    x = random_signs(rng, (4, 100))
    words = pack_bits(torch.from_numpy(x))
    assert isinstance(words, torch.Tensor) and words.dtype == torch.uint64
    np.testing.assert_array_equal(words.view(torch.int64).numpy().view(np.uint64), pack_bits(x))
    back = unpack_bits(words, 100)
    assert back.dtype == torch.float32
    np.testing.assert_array_equal(back.numpy(), x)
    np.testing.assert_array_equal(unpack_bits(words.view(torch.int64), 100).numpy(), x)


def test_shift_based_path_used_for_cupy_matches_numpy_path():
    # The CuPy code path is array-API style; NumPy stands in for CuPy here.
    rng = np.random.default_rng(4)
    x = random_signs(rng, (3, 7, 130))
    for axis in (-1, 0):
        words = bitpack._pack_with_shifts(np, x, axis)
        np.testing.assert_array_equal(words, pack_bits(x, axis=axis))
        back = bitpack._unpack_with_shifts(np, words, x.shape[axis], axis)
        np.testing.assert_array_equal(back, x)


def test_unpack_rejects_bad_inputs():
    with pytest.raises(TypeError, match="uint64"):
        unpack_bits(np.zeros(2, np.int64), 100)
    with pytest.raises(ValueError, match="k=200 does not fit 2 words"):
        unpack_bits(np.zeros(2, np.uint64), 200)
    with pytest.raises(TypeError, match="NumPy, PyTorch or CuPy"):
        pack_bits("not an array")

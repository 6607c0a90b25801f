"""xnor_gemm: exact agreement with integer matrix products, epilogue, validation."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qnnlib.bitpack import pack_bits, unpack_bits
from qnnlib.kernels import PackedWeights, prepare_weights, xnor_gemm
from qnnlib.vector_ir import target_features


def random_signs(rng, shape):
    return rng.choice(np.array([-1, 1], np.int64), size=shape)


def packed_problem(m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    a, b = random_signs(rng, (m, k)), random_signs(rng, (n, k))
    return a, b, pack_bits(a), pack_bits(b)


def reference_epilogue(dots, thresholds, flip):
    return pack_bits(np.where((dots >= thresholds) != flip, 1, -1))


@pytest.mark.parametrize("k", [1, 63, 64, 65, 784, 4097])
@pytest.mark.parametrize("m, n", [(1, 9), (9, 1), (13, 70), (4, 64)])
def test_matches_integer_matmul(m, k, n):
    a, b, a_bits, b_bits = packed_problem(m, k, n, seed=k)
    dots = xnor_gemm(a_bits, b_bits, k)
    assert dots.dtype == np.int32 and dots.shape == (m, n)
    np.testing.assert_array_equal(dots, a @ b.T)


def test_all_ones_and_all_minus_ones():
    k = 100
    plus, minus = np.ones((2, k)), -np.ones((3, k))
    np.testing.assert_array_equal(xnor_gemm(pack_bits(plus), pack_bits(minus), k), -k)
    np.testing.assert_array_equal(xnor_gemm(pack_bits(plus), pack_bits(plus), k), k)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 300), n=st.integers(1, 140), seed=st.integers(0, 99))
def test_random_shapes(m, k, n, seed):
    a, b, a_bits, b_bits = packed_problem(m, k, n, seed)
    np.testing.assert_array_equal(xnor_gemm(a_bits, b_bits, k), a @ b.T)


@pytest.mark.parametrize("m, k, n", [(1, 65, 1), (7, 130, 200), (9, 64, 64), (5, 784, 129)])
def test_threshold_epilogue_matches_reference(m, k, n):
    a, b, a_bits, b_bits = packed_problem(m, k, n, seed=n)
    rng = np.random.default_rng(m)
    thresholds = rng.integers(-k // 4, k // 4 + 1, n).astype(np.int32)
    flip = rng.random(n) < 0.5
    bits = xnor_gemm(a_bits, b_bits, k, thresholds=thresholds, flip=flip)
    assert bits.dtype == np.uint64 and bits.shape == (m, -(-n // 64))
    np.testing.assert_array_equal(bits, reference_epilogue(a @ b.T, thresholds, flip))


def test_float_thresholds_round_up_exactly():
    a, b, a_bits, b_bits = packed_problem(6, 200, 70, seed=5)
    dots = a @ b.T
    thresholds = dots[0] + np.where(np.arange(70) % 2 == 0, -0.5, 0.5)  # both sides of a tie
    bits = xnor_gemm(a_bits, b_bits, 200, thresholds=thresholds)
    np.testing.assert_array_equal(bits, reference_epilogue(dots, thresholds, np.zeros(70, bool)))
    np.testing.assert_array_equal(
        xnor_gemm(a_bits, b_bits, 200, thresholds=np.full(70, 1e12)), 0
    )


def test_epilogue_output_feeds_the_next_layer():
    a, b, a_bits, b_bits = packed_problem(3, 100, 130, seed=6)
    c = random_signs(np.random.default_rng(7), (20, 130))
    hidden_bits = xnor_gemm(a_bits, b_bits, 100, thresholds=np.zeros(130, np.int32))
    hidden = np.where(a @ b.T >= 0, 1, -1)
    np.testing.assert_array_equal(unpack_bits(hidden_bits, 130), hidden)
    np.testing.assert_array_equal(xnor_gemm(hidden_bits, pack_bits(c), 130), hidden @ c.T)


def test_non_contiguous_inputs():
    a, b, a_bits, b_bits = packed_problem(10, 300, 12, seed=8)
    a_view = np.asfortranarray(a_bits)[::2]
    b_view = np.ascontiguousarray(b_bits.T).T
    assert not a_view.flags.c_contiguous and not b_view.flags.c_contiguous
    np.testing.assert_array_equal(xnor_gemm(a_view, b_view, 300), a[::2] @ b.T)


def test_out_and_threads_arguments():
    import numba

    a, b, a_bits, b_bits = packed_problem(8, 128, 64, seed=9)
    before = numba.get_num_threads()
    out = np.empty((8, 64), np.int32)
    assert xnor_gemm(a_bits, b_bits, 128, out=out, threads=1) is out
    np.testing.assert_array_equal(out, a @ b.T)
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous int32 array of shape"):
        xnor_gemm(a_bits, b_bits, 128, out=np.empty((8, 64), np.int64))


def test_rejects_bad_operands():
    words = np.zeros((3, 2), np.uint64)
    with pytest.raises(TypeError, match="a_bits must be uint64"):
        xnor_gemm(words.astype(np.int64), words, 128)
    with pytest.raises(ValueError, match="b_bits must be 2-D"):
        xnor_gemm(words, words[0], 128)
    with pytest.raises(ValueError, match="same number of words along K, got 2 and 3"):
        xnor_gemm(words, np.zeros((3, 3), np.uint64), 128)
    for k in (64, 129, 0):
        with pytest.raises(ValueError, match=f"k={k} is out of range for 2 words"):
            xnor_gemm(words, words, k)
    with pytest.raises(TypeError, match="NumPy .* or CuPy"):
        xnor_gemm(words.tolist(), words, 128)
    with pytest.raises(ValueError, match=r"thresholds must have shape \(3,\)"):
        xnor_gemm(words, words, 128, thresholds=np.zeros(4))
    with pytest.raises(ValueError, match="flip needs thresholds"):
        xnor_gemm(words, words, 128, flip=np.zeros(3, bool))
    with pytest.raises(ValueError, match="variant must be one of"):
        xnor_gemm(words, words, 128, variant="fast")


@pytest.mark.parametrize("k", [1, 64, 65, 784])
@pytest.mark.parametrize("m", [1, 3, 4, 9])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 65, 130])
def test_prepared_weights_match_integer_matmul(m, k, n):
    a, b, a_bits, b_bits = packed_problem(m, k, n, seed=m * n + k)
    weights = prepare_weights(b_bits)
    assert isinstance(weights, PackedWeights) and weights.shape == b_bits.shape
    np.testing.assert_array_equal(xnor_gemm(a_bits, weights, k), a @ b.T)
    rng = np.random.default_rng(n)
    thresholds = rng.integers(-k // 4, k // 4 + 1, n).astype(np.int32)
    flip = rng.random(n) < 0.5
    np.testing.assert_array_equal(
        xnor_gemm(a_bits, weights, k, thresholds=thresholds, flip=flip),
        reference_epilogue(a @ b.T, thresholds, flip),
    )


def test_prepared_weights_are_reusable_and_snapshot_b():
    a, b, a_bits, b_bits = packed_problem(6, 300, 70, seed=10)
    weights = prepare_weights(b_bits)
    assert prepare_weights(weights) is weights
    b_bits[:] = 0  # later changes to b_bits do not reach the prepared copy
    for _ in range(2):
        np.testing.assert_array_equal(xnor_gemm(a_bits, weights, 300), a @ b.T)


def test_many_row_chunks_and_ragged_edges():
    # K = 8192 makes a unit's row chunk 256 rows, so 523 rows span three chunks, the
    # last one ending in rows that do not fill a micro-tile; N = 9 is a ragged panel.
    a, b, a_bits, b_bits = packed_problem(523, 8192, 9, seed=11)
    np.testing.assert_array_equal(xnor_gemm(a_bits, b_bits, 8192, threads=2), a @ b.T)
    bits = xnor_gemm(a_bits, prepare_weights(b_bits), 8192, thresholds=np.zeros(9, np.int32))
    np.testing.assert_array_equal(bits, reference_epilogue(a @ b.T, 0, np.zeros(9, bool)))


def test_prepared_weights_validation():
    words = np.zeros((3, 2), np.uint64)
    weights = prepare_weights(words)
    with pytest.raises(ValueError, match="same number of words along K, got 3 and 2"):
        xnor_gemm(np.zeros((1, 3), np.uint64), weights, 150)
    with pytest.raises(ValueError, match=r"thresholds must have shape \(3,\)"):
        xnor_gemm(words, weights, 128, thresholds=np.zeros(4))
    with pytest.raises(TypeError, match="b_bits must be uint64"):
        prepare_weights(words.astype(np.int64))
    with pytest.raises(TypeError, match="NumPy uint64 array"):
        prepare_weights(words.tolist())
    with pytest.raises(TypeError, match="PackedWeights are for the CPU kernel"):
        xnor_gemm(words.tolist(), weights, 128)


def block_assembly():
    """Assembly of the blocked loop, which inlines the micro-kernels (inspect_asm is
    unavailable for cached code, so this compiles an uncached twin)."""
    import numba

    from qnnlib.kernels import cpu

    kernel = numba.njit(fastmath=True, boundscheck=False)(cpu._block.py_func)
    a = np.zeros((5, 3), np.uint64)
    panels = cpu.prepare_panels(np.zeros((9, 3), np.uint64))
    no_t, no_f = np.zeros(0, np.int32), np.zeros(0, np.bool_)
    kernel(a, 0, 5, panels, 0, 192, no_t, no_f, np.empty((5, 64), np.int32), 0, 0, 8)
    return next(iter(kernel.inspect_asm().values()))


FEATURES = target_features()


@pytest.mark.skipif(not {"avx512f", "avx512vpopcntdq"} <= FEATURES,
                    reason="the target has no AVX-512 VPOPCNTDQ")
def test_cpu_kernel_is_avx512_popcount_without_scalar_fallback():
    import re

    from qnnlib.kernels import cpu

    asm = block_assembly()
    assert len(re.findall(r"vpopcntq\s+%zmm", asm)) >= cpu.ROWS * cpu.PANELS
    assert not re.search(r"\bpopcnt[lq]?\s", asm)  # no scalar popcount anywhere


@pytest.mark.skipif("avx2" not in FEATURES or "avx512f" in FEATURES,
                    reason="the target is not AVX2 without AVX-512")
def test_cpu_kernel_is_avx2_nibble_table_popcount():
    import re

    asm = block_assembly()
    assert not re.search(r"%zmm|vpopcntq", asm)  # a true AVX2 build: no AVX-512 at all
    assert re.search(r"vpshufb\s+.*%ymm", asm)  # the nibble-table count (Mula et al.)
    assert re.search(r"vpsadbw\s+.*%ymm", asm)  # bytes summed into 64-bit lanes
    assert not re.search(r"\bpopcnt[lq]?\s", asm)


@pytest.mark.skipif("avx2" not in FEATURES, reason="the nibble-table kernel needs AVX2")
@pytest.mark.parametrize("k", [1, 63, 65, 784, 4097])
@pytest.mark.parametrize("m, n", [(1, 1), (5, 9), (17, 64), (4, 130)])
def test_nibble_kernel_matches_integer_matmul(m, k, n):
    """The AVX2 kernel directly (xnor_gemm picks it only on AVX2-without-VPOPCNTDQ targets):
    K = 4097 spans 17 blocks of 63 nibble steps, the last one ragged."""
    from qnnlib.kernels import cpu, nibble

    a, b, a_bits, b_bits = packed_problem(m, k, n, seed=m + k + n)
    nibbles = prepare_weights(b_bits).nibbles
    np.testing.assert_array_equal(nibble.run(a_bits, nibbles, k, None, np.empty((m, n), np.int32)), a @ b.T)
    rng = np.random.default_rng(k)
    thresholds = rng.integers(-k // 4, k // 4 + 1, n).astype(np.int32)
    flip = rng.random(n) < 0.5
    epilogue = cpu.pad_epilogue(thresholds, flip, k, nibbles.shape[0] * 4)
    bits = nibble.run(a_bits, nibbles, k, epilogue, np.empty((m, -(-n // 64)), np.uint64))
    np.testing.assert_array_equal(bits, reference_epilogue(a @ b.T, thresholds, flip))


@pytest.mark.skipif("avx2" not in FEATURES, reason="the nibble-table kernel needs AVX2")
def test_nibble_byte_counters_do_not_overflow():
    """Every bit differs: each byte counter gains the maximum, 4, on all 63 steps of a block."""
    from qnnlib.kernels import nibble

    k = 64 * 70
    plus, minus = pack_bits(np.ones((5, k))), pack_bits(-np.ones((3, k)))
    dots = nibble.run(plus, prepare_weights(minus).nibbles, k, None, np.empty((5, 3), np.int32))
    np.testing.assert_array_equal(dots, -k)


@pytest.mark.skipif("avx2" not in FEATURES or "avx512f" in FEATURES,
                    reason="the target is not AVX2 without AVX-512")
def test_avx2_nibble_kernel_is_table_lookups():
    import re

    import numba

    from qnnlib.kernels import nibble

    kernel = numba.njit(fastmath=True, boundscheck=False)(nibble._block.py_func)
    a, b = pack_bits(np.ones((5, 200))), pack_bits(np.ones((64, 200)))
    kernel(nibble.row_offsets(a), 0, 5, nibble.prepare_nibbles(b), 0, nibble.TABLES, 200,
           np.zeros(0, np.int32), np.zeros(0, np.bool_), np.empty((5, 64), np.int32), 0, 0)
    asm = next(iter(kernel.inspect_asm().values()))
    assert len(re.findall(r"vpshufb\s+.*%ymm", asm)) >= 2 * nibble.ROWS
    assert re.search(r"vbroadcasti128", asm) and not re.search(r"%zmm|vpsadbw", asm)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["cuda_core", "tensor_core"])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (70, 300, 130), (64, 512, 64), (3, 4097, 65)])
def test_cuda_kernels_match_integer_matmul(variant, m, k, n):
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no CUDA device")
    from qnnlib.kernels import cuda

    if variant == "tensor_core" and cuda.compute_capability() < cuda.TENSOR_CORE_MIN_CC:
        pytest.skip("tensor-core kernel needs sm_80+")
    a, b, a_bits, b_bits = packed_problem(m, k, n, seed=k)
    dots = xnor_gemm(cupy.asarray(a_bits), cupy.asarray(b_bits), k, variant=variant)
    np.testing.assert_array_equal(cupy.asnumpy(dots), a @ b.T)
    rng = np.random.default_rng(n)
    thresholds = rng.integers(-5, 6, n).astype(np.int32)
    flip = rng.random(n) < 0.5
    bits = xnor_gemm(
        cupy.asarray(a_bits), cupy.asarray(b_bits), k, variant=variant,
        thresholds=cupy.asarray(thresholds), flip=cupy.asarray(flip),
    )
    np.testing.assert_array_equal(cupy.asnumpy(bits), reference_epilogue(a @ b.T, thresholds, flip))
    packed = pack_bits(cupy.asarray(a.astype(np.float32)))
    np.testing.assert_array_equal(cupy.asnumpy(packed), a_bits)


@pytest.mark.gpu
def test_cuda_operands_are_checked_like_cpu_ones():
    """flip values other than 0/1, nonzero padding bits and empty outputs, on CuPy arrays."""
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no CUDA device")
    bits = cupy.asarray(pack_bits(np.ones((3, 100))))
    bad_flip = cupy.asarray(np.array([0, 2, 1], np.uint8).view(np.bool_))
    with pytest.raises(ValueError, match="flip must hold only 0/1"):
        xnor_gemm(bits, bits, 100, thresholds=cupy.zeros(3), flip=bad_flip)
    dirty = bits.copy()
    dirty[0, -1] |= np.uint64(1) << np.uint64(63)
    with pytest.raises(ValueError, match="a_bits has nonzero padding bits past k=100"):
        xnor_gemm(dirty, bits, 100)
    assert xnor_gemm(bits[:0], bits, 100).shape == (0, 3)
    assert xnor_gemm(bits, bits[:0], 100, thresholds=cupy.zeros(0)).shape == (3, 0)

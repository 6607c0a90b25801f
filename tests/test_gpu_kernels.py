"""The CUDA kernels, engine and captured training step on a real device (`gpu` marker;
skipped without CuPy and a CUDA device). References are independent: integer matmul in
NumPy, the CPU `BinaryMLP`, and the same epoch run eagerly.

Run on a GPU node with `make gpu` (imports only the numerical stack and pytest).
"""
import numpy as np
import pytest
import torch

from qnnlib.bitpack import pack_bits
from qnnlib.kernels import cuda, xnor_gemm

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cupy():
    cupy = pytest.importorskip("cupy")
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        devices = 0
    if devices == 0 or not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return cupy


def _problem(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = np.where(rng.random((m, k)) < 0.5, -1, 1).astype(np.int64)
    b = np.where(rng.random((n, k)) < 0.5, -1, 1).astype(np.int64)
    return a, b, pack_bits(a.astype(np.float32)), pack_bits(b.astype(np.float32))


def _unpack_columns(words, n):
    return np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")[:, :n].astype(bool)


def _variants():
    return ["cuda_core", "tensor_core"]


def _skip_without(variant):
    if variant == "tensor_core" and cuda.compute_capability() < cuda.TENSOR_CORE_MIN_CC:
        pytest.skip("tensor-core kernel needs sm_80+")


# K not a multiple of 64 or 256, M = 1, N = 1, tiles cut at both edges
SHAPES = [(1, 1, 1), (1, 300, 1), (1, 4097, 70), (70, 63, 1), (65, 255, 129), (130, 257, 64),
          (3, 1000, 200)]


@pytest.mark.parametrize("variant", _variants())
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_xnor_kernels_are_the_integer_product(cupy, variant, m, k, n):
    _skip_without(variant)
    a, b, a_bits, b_bits = _problem(m, k, n, seed=m + k + n)
    dots = xnor_gemm(cupy.asarray(a_bits), cupy.asarray(b_bits), k, variant=variant)
    np.testing.assert_array_equal(cupy.asnumpy(dots), a @ b.T)


@pytest.mark.parametrize("variant", _variants())
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_packed_epilogue(cupy, variant, m, k, n):
    _skip_without(variant)
    a, b, a_bits, b_bits = _problem(m, k, n, seed=k)
    rng = np.random.default_rng(n)
    thresholds = rng.integers(-k // 4 - 1, k // 4 + 2, n).astype(np.int32)
    flip = rng.random(n) < 0.5
    bits = xnor_gemm(cupy.asarray(a_bits), cupy.asarray(b_bits), k, variant=variant,
                     thresholds=cupy.asarray(thresholds), flip=cupy.asarray(flip))
    bits = cupy.asnumpy(bits)
    np.testing.assert_array_equal(_unpack_columns(bits, n), (a @ b.T >= thresholds) != flip)
    padding = _unpack_columns(bits, bits.shape[1] * 64)[:, n:]
    assert not padding.any()


@pytest.mark.parametrize("variant", _variants())
def test_kernels_ignore_padding_bits_and_flip_bytes(cupy, variant):
    _skip_without(variant)
    m, k, n = 33, 100, 40
    a, b, a_bits, b_bits = _problem(m, k, n, seed=5)
    dirty_a, dirty_b = a_bits.copy(), b_bits.copy()
    dirty_a[:, -1] |= np.uint64(0xFFFF) << np.uint64(48)  # bits 100..127 are padding
    dirty_b[:, -1] |= np.uint64(0xF) << np.uint64(60)
    # the kernels themselves (xnor_gemm refuses such operands before launching)
    dots = cuda.xnor_gemm(cupy.asarray(dirty_a), cupy.asarray(dirty_b), k, None,
                          cupy.empty((m, n), cupy.int32), variant)
    np.testing.assert_array_equal(cupy.asnumpy(dots), a @ b.T)
    flip = cupy.zeros(n, dtype=cupy.uint8)
    flip[::2] = 2  # a "true" that is not 1
    out = cupy.empty((m, 1), dtype=cupy.uint64)
    cuda.xnor_gemm(cupy.asarray(a_bits), cupy.asarray(b_bits), k,
                   (cupy.zeros(n, dtype=cupy.int32), flip), out, variant)
    expected = (a @ b.T >= 0) != (cupy.asnumpy(flip) != 0)
    np.testing.assert_array_equal(_unpack_columns(cupy.asnumpy(out), n), expected)


@pytest.mark.parametrize("m, n", [(0, 5), (5, 0)])
def test_empty_products_launch_nothing(cupy, m, n):
    a_bits = cupy.zeros((m, 2), dtype=cupy.uint64)
    b_bits = cupy.zeros((n, 2), dtype=cupy.uint64)
    for variant in ("cuda_core", "auto"):
        assert xnor_gemm(a_bits, b_bits, 100, variant=variant).shape == (m, n)


def test_unoptimised_pair(cupy):
    a, b, a_bits, b_bits = _problem(37, 300, 45, seed=9)
    bt = cupy.asarray(np.ascontiguousarray(b.T.astype(np.float32)))
    floats = cuda.naive_sgemm(cupy.asarray(a.astype(np.float32)), bt)
    np.testing.assert_array_equal(cupy.asnumpy(floats), a @ b.T)
    dots = cuda.naive_xnor_gemm(cupy.asarray(a_bits), cupy.asarray(np.ascontiguousarray(b_bits.T)), 300)
    np.testing.assert_array_equal(cupy.asnumpy(dots), a @ b.T)


def test_bitplane_layer(cupy):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (70, 784), dtype=np.uint8)
    weights = np.where(rng.random((130, 784)) < 0.5, -1, 1)
    planes = cuda.pack_bitplanes(cupy.asarray(pixels))
    sums = cupy.asarray(pixels.sum(axis=1).astype(np.int32))
    masks = cupy.asarray(pack_bits(weights.astype(np.float32)))
    t = cuda.bitplane_gemm(planes, masks, 784, sums, None, cupy.empty((70, 130), cupy.int32))
    exact = pixels.astype(np.int64) @ weights.T
    np.testing.assert_array_equal(cupy.asnumpy(t), exact)
    thresholds = rng.integers(-3000, 3000, 130).astype(np.int32)
    flip = rng.random(130) < 0.5
    out = cupy.empty((70, 3), cupy.uint64)
    cuda.bitplane_gemm(planes, masks, 784, sums, (cupy.asarray(thresholds), cupy.asarray(flip)), out)
    np.testing.assert_array_equal(_unpack_columns(cupy.asnumpy(out), 130), (exact >= thresholds) != flip)


def test_device_engine_matches_cpu_engine(cupy):
    from qnnlib.deploy import BinaryMLP
    from qnnlib.gpu.engine import DeviceMLP
    from qnnlib.gpu.ops import CudaOps
    from qnnlib.models import mnist_mlp

    torch.manual_seed(0)
    model = mnist_mlp(hidden=200, depth=2)
    images = np.random.default_rng(0).integers(0, 256, (300, 784), dtype=np.uint8)
    with torch.no_grad():
        for _ in range(5):
            model(torch.from_numpy(images).float() * 2 / 255 - 1)
    binary = BinaryMLP.from_torch(model.eval())
    engine = DeviceMLP(binary, CudaOps())
    scores = engine.scores(cupy.asarray(images))
    assert isinstance(scores, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(scores), binary.scores(images))
    labels = binary.predict(cupy.asarray(images))  # BinaryMLP's own GPU path
    assert isinstance(labels, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(labels), binary.predict(images))


def test_captured_epoch_replays_the_eager_steps(cupy):
    from qnnlib.determinism import deterministic_algorithms
    from qnnlib.gpu.graphed_training import GraphedEpoch, fused_adam
    from qnnlib.models import mnist_mlp
    from qnnlib.training import TrainConfig

    def run(capture):
        with deterministic_algorithms("cuda"):  # as inside training.train
            return _run(capture)

    def _run(capture):
        torch.manual_seed(1)
        model = mnist_mlp(hidden=128, depth=2, dropout_in=0.0, dropout_hidden=0.0).cuda()
        optimizer = fused_adam(model, 0.003)
        x = torch.rand(1000, 784, generator=torch.Generator().manual_seed(0)).cuda() * 2 - 1
        y = x[:, :10].argmax(dim=1)
        epoch, shuffle = GraphedEpoch(capture=capture), torch.Generator().manual_seed(2)
        history = [epoch(model, optimizer, x, y, TrainConfig(batch_size=100), shuffle)
                   for _ in range(3)]
        return history, model, epoch

    (graphed, model, epoch), (eager, reference, _) = run(True), run(False)
    assert epoch.graph is not None
    # same kernels in the same order; a tolerance in case cuBLAS picks another algorithm
    # under capture (a skipped or repeated minibatch would be far outside it)
    assert graphed == pytest.approx(eager, rel=1e-3)
    for value, ref in zip(model.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(value.float(), ref.float(), rtol=1e-3, atol=1e-4)


def test_training_loop_with_cuda_graph_stops_and_resumes(cupy, tmp_path):
    """`train` with cuda_graph on CUDA: fused capturable Adam state in the checkpoint,
    cut by its time budget after one epoch, resumed by the next call."""
    from qnnlib.gpu.graphed_training import train_graphed as train
    from qnnlib.models import mnist_mlp

    x = torch.rand(900, 784, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = x[:, :10].argmax(dim=1)
    splits = {"train": (x[:600], y[:600]), "val": (x[600:750], y[600:750]),
              "test": (x[750:], y[750:])}
    config = {"epochs": 3, "progress": False, "cuda_graph": True, "device": "cuda",
              "checkpoint": str(tmp_path / "resume.pt"), "checkpoint_seconds": 1e9}
    first = train(mnist_mlp(hidden=128, depth=2), splits, {**config, "max_seconds": 0})
    assert list(first.history["epoch"]) == [1]
    second = train(mnist_mlp(hidden=128, depth=2), splits, config)
    assert list(second.history["epoch"]) == [1, 2, 3]
    assert second.history["train_loss"].iloc[-1] < second.history["train_loss"].iloc[0]


@pytest.mark.parametrize("variant", _variants())
def test_more_row_tiles_than_grid_y_allows(cupy, variant):
    """65,536 row tiles + 1 (M = 4,194,305): beyond gridDim.y, fine on grid x."""
    _skip_without(variant)
    rng = np.random.default_rng(4)
    m, n = 65535 * 64 + 65, 3
    a_bits = rng.integers(0, 2**64, (m, 1), dtype=np.uint64)
    b_bits = rng.integers(0, 2**64, (n, 1), dtype=np.uint64)
    expected = 64 - 2 * np.bitwise_count(a_bits ^ b_bits.T).astype(np.int32)
    dots = xnor_gemm(cupy.asarray(a_bits), cupy.asarray(b_bits), 64, variant=variant)
    np.testing.assert_array_equal(cupy.asnumpy(dots), expected)

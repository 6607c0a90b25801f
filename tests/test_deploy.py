"""qnnlib.deploy: the bit-packed BinaryMLP reproduces the torch BNN in eval mode exactly."""
import copy
import os

import numpy as np
import pytest
import torch

from qnnpipeline import paths
from qnnlib.bitpack import pack_bits
from qnnlib.data import DataError, load_mnist, scale_inputs
from qnnlib.deploy import BinaryMLP, DeployError
from qnnlib.deploy.folding import hidden_thresholds, pixel_thresholds
from qnnlib.kernels import PixelLayer, xnor_gemm
from qnnlib.kernels.bitplane import pack_bitplanes
from qnnlib.layers import QuantLinear, squared_hinge_loss
from qnnlib.models import full_precision_mlp, mnist_mlp, quant_linears

SMALL = dict(hidden=256, depth=3)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    mirror = os.environ.get("QNN_DATA_MIRROR") or paths.root().parent / "shared" / "datasets"
    try:
        return load_mnist(root=tmp_path_factory.mktemp("data"), mirror=mirror, download=False)
    except DataError as err:
        pytest.skip(f"MNIST mirror not available: {err}")


@pytest.fixture(scope="module")
def trained(mnist):
    """A small BNN after 300 Adam steps on 5000 training images (seeded, a few s on one core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: more threads only fight over shared cores
    try:
        torch.manual_seed(0)
        model = mnist_mlp(**SMALL)
        # the paper's Glorot-scaled steps, else few binary weights flip in 300 steps
        scaled = [{"params": [layer.weight], "lr": 3e-3 * layer.lr_scale} for layer in quant_linears(model)]
        weights = {id(layer.weight) for layer in quant_linears(model)}
        rest = [p for p in model.parameters() if id(p) not in weights]
        optimizer = torch.optim.Adam(scaled + [{"params": rest}], lr=3e-3)
        inputs, labels = mnist["train"].inputs()[:5000], mnist["train"].labels[:5000]
        for step in range(300):
            batch = slice((step % 50) * 100, (step % 50 + 1) * 100)
            loss = squared_hinge_loss(model(inputs[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for layer in quant_linears(model):
                layer.clip_()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def torch_scores(model, images):
    with torch.inference_mode():
        return model.eval()(scale_inputs(images)).numpy()


def torch_hidden_bits(model, images):
    """Packed sign activations after each hidden block of the torch model."""
    outputs, x = [], scale_inputs(images)
    with torch.inference_mode():
        for module in model.eval():
            x = module(x)
            if type(module).__name__ == "QuantActivation":
                outputs.append(pack_bits(x.numpy()))
    return outputs


def engine_hidden_bits(engine, images):
    bits = engine.hidden_bits(images)[:1]
    for layer in engine.layers[1:-1]:
        bits.append(xnor_gemm(bits[-1], layer["weights"], layer["k"],
                              thresholds=layer["thresholds"], flip=layer["flip"]))
    return bits


def assert_same_as_torch(model, images):
    engine = BinaryMLP.from_torch(model)
    for layer, (ours, theirs) in enumerate(zip(engine_hidden_bits(engine, images),
                                               torch_hidden_bits(model, images))):
        differing = np.count_nonzero(ours != theirs)
        assert differing == 0, f"hidden layer {layer}: {differing} activation words differ"
    expected = torch_scores(model, images)
    scores = engine.scores(images)
    assert scores.dtype == np.float32 and scores.shape == expected.shape
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    labels = engine.predict(images)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))
    return engine, labels


@pytest.mark.slow
def test_same_labels_as_torch_on_all_mnist_test_images(trained, mnist):
    images = mnist["test"].images.numpy()
    _, labels = assert_same_as_torch(trained, images)
    accuracy = np.mean(labels == mnist["test"].labels.numpy())
    assert accuracy > 0.8, f"the fixture model is barely trained (accuracy {accuracy:.3f})"


@pytest.mark.slow
def test_negative_and_zero_batch_norm_scales(trained, mnist):
    model = copy.deepcopy(trained)
    with torch.no_grad():
        for bn in (m for m in model if isinstance(m, torch.nn.BatchNorm1d)):
            units = torch.arange(bn.num_features)
            bn.weight[units % 3 == 1] *= -1
            bn.weight[units % 7 == 2] = 0
            bn.bias[units % 14 == 2] = -bn.bias[units % 14 == 2].abs() - 0.1  # constant -1
            bn.bias[units % 14 == 9] = 0.0  # gamma = 0, beta = 0: sign(0) = +1
    engine, _ = assert_same_as_torch(model, mnist["test"].images[:3000])
    first = engine.layers[0]
    assert first["flip"].any() and (first["thresholds"] == np.iinfo(np.int32).min).any()


def test_thresholds_match_torch_on_every_integer_including_exact_ties():
    """Exhaustive over all reachable pre-activations s of a narrow layer, with batch norms
    built so that BN(s + b) is exactly 0 at integer s (the sign(0) = +1 boundary)."""
    torch.manual_seed(1)
    k, units = 40, 64
    linear, bn = QuantLinear(k, units), torch.nn.BatchNorm1d(units, eps=1e-4).eval()
    with torch.no_grad():
        linear.bias.uniform_(-2, 2)
        bn.weight.normal_(0, 1)
        bn.weight[::5] = 0
        bn.bias.normal_(0, 1)
        bn.bias[1::4] = 0  # root at the integer below: z(s) is exactly zero there
        bn.running_var.uniform_(0.5, 30)
        offsets = torch.randint(-k, k + 1, (units,))
        bn.running_mean.copy_(linear.bias + offsets)
    weights = np.where(linear.weight.detach().numpy() >= 0, 1.0, -1.0)
    thresholds, flip = hidden_thresholds(weights, linear.bias.detach(), bn)
    s = torch.arange(-k, k + 1, dtype=torch.float32)[:, None]
    with torch.no_grad():
        expected = (bn(s + linear.bias) >= 0).numpy()
    ours = (s.numpy().astype(np.int64) >= thresholds) != flip
    np.testing.assert_array_equal(ours, expected)
    tied = ((bn.bias == 0) & (bn.weight != 0)).nonzero().flatten()
    with torch.no_grad():
        z_at_ties = bn(s + linear.bias)[offsets[tied] + k, tied]
    assert len(tied) > 5 and z_at_ties.abs().max() < 1e-6  # the boundary cases were exercised


def test_pixel_layer_is_the_exact_integer_product():
    rng = np.random.default_rng(3)
    k, units, rows = 100, 70, 301  # k, units not multiples of 64; rows: two full row chunks + a ragged one
    pixels = rng.integers(0, 256, (rows, k), dtype=np.uint8)
    pixels[0] = 255
    pixels[1] = 0
    signs = rng.choice([-1.0, 1.0], (units, k))
    t = pixels.astype(np.int64) @ signs.T.astype(np.int64)
    flip = rng.random(units) < 0.5
    for step in (0, 1):  # thresholds at some row's exact t, and one above: off-by-ones show
        thresholds = (t[np.arange(units) % rows, np.arange(units)] + step).astype(np.int32)
        out = PixelLayer(pack_bits(signs), k, thresholds, flip)(pixels)
        np.testing.assert_array_equal(out, pack_bits(np.where((t >= thresholds) != flip, 1, -1)))


def test_bitplanes_layout():
    pixels = np.random.default_rng(4).integers(0, 256, (3, 130), dtype=np.uint8)
    planes = pack_bitplanes(pixels, 3)  # (rows, plane, words)
    for n in range(8):
        bits = (pixels >> n) & 1
        np.testing.assert_array_equal(planes[:, n], pack_bits(bits.astype(np.int8) * 2 - 1))


@pytest.mark.slow
def test_save_load_round_trip(trained, mnist, tmp_path):
    engine = BinaryMLP.from_torch(trained)
    path = tmp_path / "bnn.bin"  # any name: save must not append a suffix
    engine.save(path)
    loaded = BinaryMLP.load(path)
    images = mnist["test"].images[:2000].numpy()
    np.testing.assert_array_equal(loaded.predict(images), engine.predict(images))
    np.testing.assert_array_equal(loaded.scores(images), engine.scores(images))
    assert loaded.nbytes == engine.nbytes and loaded.input_scaling == "symmetric"


def test_corrupt_or_foreign_files_are_refused(tmp_path):
    engine = BinaryMLP.from_torch(mnist_mlp(hidden=16, depth=1).eval())
    good = tmp_path / "good.npz"
    engine.save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a model at all")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    for path in (truncated, garbage, foreign, single, tmp_path / "missing.npz"):
        with pytest.raises(DeployError, match="BinaryMLP"):
            BinaryMLP.load(path)
    arrays = dict(np.load(good))
    newer = tmp_path / "newer.npz"
    np.savez(newer, **{**arrays, "meta": np.frombuffer(
        arrays["meta"].tobytes().replace(b'"version": 1', b'"version": 99'), np.uint8)})
    with pytest.raises(DeployError, match="version 99"):
        BinaryMLP.load(newer)
    broken = tmp_path / "broken.npz"
    np.savez(broken, **{**arrays, "weights1": arrays["weights1"][:, :0]})
    with pytest.raises(DeployError, match="weights1"):
        BinaryMLP.load(broken)


def test_file_stores_one_bit_per_weight(tmp_path):
    """Weights at 1 bit each (32x below float32 when K is a multiple of 64); the file adds
    only the per-unit thresholds, flip bits, output affine and a small zip overhead."""
    torch.manual_seed(0)
    model = mnist_mlp(hidden=128, depth=2).eval()  # 784-128-128-10
    engine = BinaryMLP.from_torch(model)
    packed = [layer["weights"].nbytes for layer in engine.layers]
    assert packed == [128 * 13 * 8, 128 * 2 * 8, 10 * 2 * 8]  # ceil(K / 64) words per unit
    float_weights = [layer.weight.numel() * 4 for layer in quant_linears(model)]
    assert float_weights[1] / packed[1] == 32 and float_weights[2] / packed[2] == 32
    per_unit = 2 * (128 * 4 + 128 // 8) + 3 * 10 * 4  # int32 thresholds, flip bits, affine
    assert engine.nbytes == sum(packed) + per_unit
    engine.save(tmp_path / "packed.npz")
    assert engine.nbytes <= (tmp_path / "packed.npz").stat().st_size <= engine.nbytes + 4096
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(engine.predict(images), torch_scores(model, images).argmax(1))


def test_inputs_are_validated():
    model = mnist_mlp(hidden=16, depth=1).eval()
    engine = BinaryMLP.from_torch(model)
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    labels = engine.predict(images)
    np.testing.assert_array_equal(engine.predict(images.reshape(4, 784)), labels)
    np.testing.assert_array_equal(engine.predict(torch.from_numpy(images)), labels)
    with pytest.raises(TypeError, match="uint8"):
        engine.predict(images.astype(np.float32))
    with pytest.raises(TypeError, match="uint8"):
        engine.predict(scale_inputs(images))
    with pytest.raises(TypeError, match="NumPy"):
        engine.predict(images.tolist())
    for shape in [(4, 28, 27), (4, 785), (784,), (28, 28), (4, 1, 28, 28)]:
        with pytest.raises(ValueError, match="shape"):
            engine.predict(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("model, message", [
    (mnist_mlp(hidden=16, depth=1, weight_bits=2), "weight quantizer .* is not a sign"),
    (mnist_mlp(hidden=16, depth=1, act_bits=2), "activation quantizer .* is not a sign"),
    (full_precision_mlp(hidden=16, depth=1), "activation quantizer HardTanh"),
    (torch.nn.Sequential(torch.nn.Linear(784, 10), torch.nn.BatchNorm1d(10)),
     r"expected \(QuantLinear, BatchNorm1d, QuantActivation\)\+ .* got \['Linear'"),
    (mnist_mlp(hidden=16, depth=1)[1:4], r"got \['QuantLinear', 'BatchNorm1d', 'QuantActivation'\]"),
])
def test_non_binary_models_are_refused(model, message):
    with pytest.raises(DeployError, match=message):
        BinaryMLP.from_torch(model)


def test_unknown_input_scaling_is_refused():
    with pytest.raises(ValueError, match="input_scaling"):
        BinaryMLP.from_torch(mnist_mlp(hidden=16, depth=1), input_scaling="unit")


def test_pixel_thresholds_respect_the_training_scaling():
    """A unit whose real root lies between two integers t must switch at the ceiling."""
    torch.manual_seed(2)
    linear, bn = QuantLinear(784, 8), torch.nn.BatchNorm1d(8).eval()
    weights = np.where(linear.weight.detach().numpy() >= 0, 1.0, -1.0)
    thresholds, flip = pixel_thresholds(weights, linear.bias.detach(), bn)  # gamma = 1, beta = mu = b = 0
    # fire <=> 2t/255 - sum(W) >= 0 <=> t >= ceil(255 sum(W) / 2)
    np.testing.assert_array_equal(thresholds, np.ceil(255 * weights.sum(1) / 2).astype(np.int32))
    assert not flip.any()

"""The GPU modules' code paths on a CPU: the NumPy reference ops, the engine, the
graphed training epoch run eagerly. Each is checked against an independent computation
(integer matmul, the CPU `BinaryMLP`, `training.train_epoch`)."""
import sys

import numpy as np
import pytest
import torch

from qnnlib.bitpack import pack_bits
from qnnlib.deploy import BinaryMLP
from qnnlib.gpu.engine import DeviceMLP
from qnnlib.gpu.graphed_training import GraphedEpoch, fused_adam
from qnnlib.gpu.ops import NumpyOps
from qnnlib.models import mnist_mlp
from qnnlib.training import TrainConfig, make_optimizer, train_epoch
from support import synthetic_splits


def _signs(rng, rows, cols):
    return np.where(rng.random((rows, cols)) < 0.5, -1.0, 1.0)


@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (3, 70, 65), (9, 2, 200)])
def test_numpy_ops_naive_xnor_is_the_integer_product(m, n, k):
    rng = np.random.default_rng(k)
    a, b = _signs(rng, m, k), _signs(rng, n, k)
    bt_bits = np.ascontiguousarray(pack_bits(b).T)
    np.testing.assert_array_equal(NumpyOps().naive_xnor(pack_bits(a), bt_bits, k), a @ b.T)


def test_numpy_ops_bitplanes_give_the_exact_pixel_product():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 130), dtype=np.uint8)
    weights = _signs(rng, 7, 130)
    ops = NumpyOps()
    planes = ops.pack_bitplanes(pixels)
    assert planes.shape == (5, 8, 3)
    sums = pixels.sum(axis=1).astype(np.int64)
    t = ops.bitplane(planes, pack_bits(weights), 130, sums)
    np.testing.assert_array_equal(t, pixels.astype(np.int64) @ weights.T.astype(np.int64))
    thresholds = rng.integers(-500, 500, 7).astype(np.int32)
    flip = rng.random(7) < 0.5
    bits = ops.bitplane(planes, pack_bits(weights), 130, sums, thresholds, flip)
    expected = (t >= thresholds) != flip
    np.testing.assert_array_equal(np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, :7],
                                  expected)


def _calibrated_bnn(seed=0, hidden=96):
    torch.manual_seed(seed)
    model = mnist_mlp(hidden=hidden, depth=2)
    images = np.random.default_rng(seed).integers(0, 256, (150, 784), dtype=np.uint8)
    with torch.no_grad():
        for _ in range(5):
            model(torch.from_numpy(images).float() * 2 / 255 - 1)
    return model.eval(), images


def test_device_engine_matches_the_cpu_engine_exactly():
    model, images = _calibrated_bnn()
    binary = BinaryMLP.from_torch(model)
    engine = DeviceMLP(binary, NumpyOps())
    np.testing.assert_array_equal(engine.scores(images), binary.scores(images))
    np.testing.assert_array_equal(engine.predict(images), binary.predict(images))
    with pytest.raises(ValueError, match=r"images must be uint8 \(N, 784\)"):
        engine.scores(images.astype(np.int16))


def test_fused_adam_keeps_the_glorot_groups():
    model = mnist_mlp(hidden=32, depth=2)
    reference = make_optimizer(model, 0.01).param_groups
    fused = fused_adam(model, 0.01)
    assert fused.defaults["fused"] is True
    assert [(g["lr"], g["lr_scale"], [id(p) for p in g["params"]]) for g in fused.param_groups] == \
        [(g["lr"], g["lr_scale"], [id(p) for p in g["params"]]) for g in reference]


def _one_epoch(epoch_fn, seed=3):
    torch.manual_seed(seed)
    model = mnist_mlp(hidden=32, depth=2)
    optimizer = fused_adam(model, 0.003)
    for group in optimizer.param_groups:  # what training.set_base_lr does each epoch
        group["lr"] = 0.002 * group["lr_scale"]
    x, y = synthetic_splits(450)["train"]
    config = TrainConfig(batch_size=50)
    shuffle = torch.Generator().manual_seed(seed)
    result = epoch_fn(model, optimizer, x, y, config, shuffle)
    return result, model, optimizer


def test_graphed_epoch_eager_is_train_epoch(one_thread):
    (loss, error), model, optimizer = _one_epoch(GraphedEpoch(capture=False))
    (ref_loss, ref_error), ref_model, _ = _one_epoch(train_epoch)
    assert loss == pytest.approx(ref_loss, rel=1e-6) and error == ref_error
    # fused Adam reads its lr from a float32 tensor here, from a float there: an ulp apart
    for value, ref in zip(model.state_dict().values(), ref_model.state_dict().values()):
        torch.testing.assert_close(value, ref, rtol=0, atol=1e-6)
    assert all(isinstance(group["lr"], float) for group in optimizer.param_groups)


def test_mnist_reads_without_torchvision(tmp_path, monkeypatch):
    """GPU nodes may lack torchvision: the loader then reads the IDX files itself."""
    from support import mnist_mirror

    from qnnlib.data import load_mnist

    with_torchvision = load_mnist(root=tmp_path, mirror=mnist_mirror())
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` fails
    without = load_mnist(root=tmp_path, mirror=mnist_mirror())
    for name, split in with_torchvision.items():
        assert torch.equal(without[name].images, split.images)
        assert torch.equal(without[name].labels, split.labels) and split.labels.dtype == torch.int64


def test_time_budget_checkpoints_and_stops_then_resumes(tmp_path, one_thread):
    from qnnlib.gpu.graphed_training import train_graphed as train

    splits = synthetic_splits(300)
    config = {"epochs": 3, "batch_size": 50, "progress": False, "cuda_graph": True,
              "checkpoint": str(tmp_path / "resume.pt"), "checkpoint_seconds": 1e9}
    first = train(mnist_mlp(hidden=32, depth=1), splits, {**config, "max_seconds": 0})
    assert list(first.history["epoch"]) == [1]  # out of time after one epoch, saved anyway
    second = train(mnist_mlp(hidden=32, depth=1), splits, config)
    assert list(second.history["epoch"]) == [1, 2, 3]
    assert second.history["train_loss"][0] == first.history["train_loss"][0]


@pytest.mark.parametrize("field, value", [("max_seconds", -1), ("checkpoint_seconds", "60"),
                                          ("max_seconds", float("nan"))])
def test_time_fields_are_validated(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a number of seconds >= 0"):
        TrainConfig(**{field: value})
    with pytest.raises(TypeError, match="cuda_graph must be true or false"):
        TrainConfig(cuda_graph="yes")


def test_the_loop_does_not_know_the_gpu_module():
    """Issue 20: training and graphed_training imported each other. The loop asks for
    the captured epoch to be plugged in from above, and refuses cuda_graph without it."""
    import ast
    from pathlib import Path

    from qnnlib import training

    source = Path(training.__file__).read_text()
    imported = [node.module for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom) and node.module]
    assert not [name for name in imported if "gpu" in name]
    with pytest.raises(ValueError, match="train_graphed"):
        training.train(mnist_mlp(hidden=8, depth=1), synthetic_splits(100),
                       {"epochs": 1, "batch_size": 50, "progress": False, "cuda_graph": True})

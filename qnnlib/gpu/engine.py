"""The bit-packed MNIST engine on a GPU: `BinaryMLP`'s layers, run by the CUDA kernels.

`DeviceMLP(model, ops)` takes a `qnnlib.deploy.BinaryMLP` (its packed weights, integer
thresholds and flips, output affine; nothing is recomputed) and runs the same integer
network on CuPy arrays (`CudaOps`) or, for the dry run, NumPy (`NumpyOps`):

* pixel layer: uint8 images -> 8 bit-planes -> t = W_b . x = 2 sum_n 2^n popc(x^n & w+)
  - sum(x), exact (see `qnnlib.deploy`), then bits (t >= T) XOR flip, packed;
* hidden layers: `xnor_gemm` with the threshold/flip epilogue, packed bits to packed bits;
* output layer: integer scores s = W_b . a, then (s + b) * scale + shift in float32.

Images in, scores or labels out, all on the device: no host round trip between layers.
"""
from __future__ import annotations

import numpy as np

__all__ = ["DeviceMLP", "device_engine"]


class DeviceMLP:
    """A `BinaryMLP` whose arrays live on `ops`'s device (see the module docstring)."""

    def __init__(self, model, ops):
        xp = ops.xp
        self.ops = ops
        first, *hidden, last = model.layers
        self.in_features = model.in_features
        self.pixel_layer = _device_layer(xp, first, first["thresholds"])
        # the clipping xnor_gemm applies to integer thresholds, done once: [-k, k + 1]
        self.hidden = [_device_layer(xp, layer, np.clip(layer["thresholds"].astype(np.int64),
                                                        -layer["k"], layer["k"] + 1))
                       for layer in hidden]
        self.last = _device_layer(xp, last, None)
        self.out_bias, self.out_scale, self.out_shift = (
            xp.asarray(value) for value in (model.out_bias, model.out_scale, model.out_shift))

    def scores(self, images):
        """float32 (N, classes) scores for uint8 (N, in_features) images on the device."""
        xp, ops = self.ops.xp, self.ops
        images = xp.ascontiguousarray(images.reshape(images.shape[0], -1))
        if images.dtype != np.uint8 or images.shape[1] != self.in_features:
            raise ValueError(f"images must be uint8 (N, {self.in_features}), got "
                             f"{images.dtype} {tuple(images.shape)}")
        weights, k, thresholds, flip = self.pixel_layer
        sums = images.sum(axis=1, dtype=np.int32)
        bits = ops.bitplane(ops.pack_bitplanes(images), weights, k, sums, thresholds, flip)
        for weights, k, thresholds, flip in self.hidden:
            bits = ops.xnor(bits, weights, k, thresholds=thresholds, flip=flip)
        weights, k, _, _ = self.last
        dots = ops.xnor(bits, weights, k)
        return (dots.astype(np.float32) + self.out_bias) * self.out_scale + self.out_shift

    def predict(self, images):
        """int64 (N,) labels on the device: argmax of `scores` (first index on ties)."""
        return self.scores(images).argmax(axis=1).astype(np.int64)


def device_engine(model) -> DeviceMLP:
    """The `DeviceMLP` of a `BinaryMLP` on the current CUDA device, built on first use and
    kept on the model (what `BinaryMLP.scores` calls for CuPy images)."""
    engine = model.__dict__.get("_device_engine")
    if engine is None:
        from qnnlib.gpu.ops import CudaOps

        engine = model._device_engine = DeviceMLP(model, CudaOps())
    return engine


def _device_layer(xp, layer, thresholds):
    """(weights, k, int32 thresholds, bool flip) on the device; thresholds None for the
    output layer."""
    weights = xp.ascontiguousarray(xp.asarray(layer["weights"]))
    if thresholds is None:
        return weights, layer["k"], None, None
    return (weights, layer["k"], xp.ascontiguousarray(xp.asarray(thresholds, dtype=np.int32)),
            xp.ascontiguousarray(xp.asarray(layer["flip"], dtype=np.bool_)))

"""`BinaryMLP`: integer-only inference of a trained binarized MLP on raw uint8 pixels.

Layers (weights packed along K with `qnnlib.bitpack.pack_bits`, bit = W_b >= 0), each
run by a layer of `qnnlib.kernels` prepared once:
  pixel layer   t = W_b . x (uint8 x, exact int)   -> bits (t >= T) XOR flip   (PixelLayer)
  hidden layers s = W_b . a (a = ±1 bits)           -> bits (s >= T) XOR flip   (XnorLayer)
  output layer  s = W_b . a                          -> (s + bias) * scale + shift, argmax
"""
from __future__ import annotations

import math

import numpy as np
import torch

from qnnlib.deploy import convert, fileformat
from qnnlib.deploy.errors import DeployError
from qnnlib.deploy.fileformat import INPUT_SCALINGS
from qnnlib.deploy.folding import affine
from qnnlib.kernels import PixelLayer, XnorLayer, checks, numba_threads


class BinaryMLP:
    """Bit-packed inference model: 8-bit-plane first layer, XNOR-popcount hidden layers."""

    def __init__(self, layers, out_bias, out_scale, out_shift, in_features, input_scaling="symmetric"):
        """layers: list of dicts {weights (H, words) uint64, k, thresholds int32, flip bool};
        the first is the pixel layer, the last the output layer (thresholds None).
        DeployError if they do not form a valid model (`fileformat.check_model`)."""
        if not isinstance(input_scaling, str) or input_scaling not in INPUT_SCALINGS:
            raise DeployError(f"unknown input_scaling {input_scaling!r}; known: {sorted(INPUT_SCALINGS)}")
        self.layers = layers
        self.out_bias = np.ascontiguousarray(out_bias, np.float32)
        self.out_scale = np.ascontiguousarray(out_scale, np.float32)
        self.out_shift = np.ascontiguousarray(out_shift, np.float32)
        self.in_features = int(in_features)
        self.input_scaling = input_scaling
        self._threads = None
        try:
            fileformat.check_model(layers, self.out_bias, self.out_scale, self.out_shift,
                                   self.in_features, input_scaling)
            first = layers[0]
            # kernel layouts and padded epilogues, built once
            self._kernels = [PixelLayer(first["weights"], first["k"], first["thresholds"], first["flip"])]
            self._kernels += [XnorLayer(layer["weights"], layer["k"], layer["thresholds"], layer["flip"])
                              for layer in layers[1:]]
        except (ValueError, TypeError) as err:
            raise DeployError(f"not a valid BinaryMLP: {err}") from err

    @property
    def threads(self):
        """Numba threads per call; None = Numba's default."""
        return self._threads

    @threads.setter
    def threads(self, value):
        self._threads = checks.check_threads(value)

    # --- conversion and storage ----------------------------------------------------

    @classmethod
    def from_torch(cls, model, input_scaling: str = "symmetric") -> "BinaryMLP":
        """Convert a trained `qnnlib.models.mnist_mlp` BNN (eval semantics: dropout off,
        batch norm on its running statistics).

        Raises DeployError (a ValueError) for anything but sign weights, sign
        activations and finite batch norm with running statistics, or an unknown scaling.
        """
        if not isinstance(input_scaling, str) or input_scaling not in INPUT_SCALINGS:
            raise DeployError(f"unknown input_scaling {input_scaling!r}; known: {sorted(INPUT_SCALINGS)}")
        return cls(**convert.convert(model), input_scaling=input_scaling)

    def save(self, path) -> None:
        """Write one .npz (see `qnnlib.deploy.fileformat`); atomic: a failed save leaves
        any previous file at `path` as it was."""
        fileformat.save(path, self.layers, (self.out_bias, self.out_scale, self.out_shift),
                        self.in_features, self.input_scaling)

    @classmethod
    def load(cls, path) -> "BinaryMLP":
        """Read a file written by `save`; DeployError if it is not a valid one."""
        return cls(**fileformat.load(path))

    @property
    def nbytes(self) -> int:
        """Parameter bytes in the compact form `save` writes: packed weights, int32
        thresholds, flip bits, float32 output affine. (For speed the runtime also keeps the
        flips as bools and the weights in the kernels' panel layout.)"""
        total = self.out_bias.nbytes + self.out_scale.nbytes + self.out_shift.nbytes
        for layer in self.layers:
            total += layer["weights"].nbytes
            if layer["thresholds"] is not None:
                total += layer["thresholds"].nbytes + (len(layer["flip"]) + 7) // 8
        return total

    # --- inference ------------------------------------------------------------------

    def scores(self, images) -> np.ndarray:
        """float32 (N, classes): the model's output scores for uint8 images. CuPy images
        run on their GPU and give CuPy scores (`qnnlib.gpu.engine.DeviceMLP`)."""
        if type(images).__module__.startswith("cupy"):
            from qnnlib.gpu.engine import device_engine
            return device_engine(self).scores(images)
        pixels = self._pixels(images)
        with numba_threads(self._threads):
            bits = pixels
            for kernel in self._kernels:
                bits = kernel(bits)
        return affine(bits, self.out_bias, self.out_scale, self.out_shift)

    def predict(self, images) -> np.ndarray:
        """int64 (N,) labels: argmax of `scores` (first index on ties, like torch)."""
        return self.scores(images).argmax(axis=1).astype(np.int64)

    def hidden_bits(self, images) -> list:
        """Packed uint64 activations after the pixel layer and each hidden layer."""
        bits = [self._pixels(images)]
        with numba_threads(self._threads):
            for kernel in self._kernels[:-1]:
                bits.append(kernel(bits[-1]))
        return bits[1:]

    def _pixels(self, images) -> np.ndarray:
        """Validate and flatten uint8 images to a C-contiguous (N, in_features) array."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        if not isinstance(images, np.ndarray):
            raise TypeError(f"images must be a NumPy array or torch tensor, got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise TypeError(
                f"images must be raw uint8 pixels (0..255), got {images.dtype}; the engine applies "
                f"the training scaling {INPUT_SCALINGS[self.input_scaling]} itself, exactly")
        side = math.isqrt(self.in_features)
        shapes = [(self.in_features,)] + ([(side, side)] if side * side == self.in_features else [])
        if images.ndim < 2 or images.shape[1:] not in shapes:
            wanted = " or ".join(str(("N",) + s) for s in shapes)
            raise ValueError(f"images must have shape {wanted}, got {images.shape}")
        return np.ascontiguousarray(images.reshape(images.shape[0], self.in_features))

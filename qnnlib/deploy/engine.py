"""Bit-packed inference for a trained binarized MLP (arXiv:1609.07061 Sec. 3-5).

`BinaryMLP.from_torch(model)` turns the paper's MNIST BNN (`qnnlib.models.mnist_mlp`
with sign weights and sign activations) into integer-only hidden layers, reproducing
the torch model in eval mode (dropout off, batch norm on its running statistics):

* First layer, on raw uint8 pixels x (the model saw x_f = 2x/255 - 1):
  W_b . x_f = (2/255) W_b . x - sum(W_b), and W_b . x = sum_{n=1..8} 2^(n-1) (x^n . W_b)
  with x^n the n-th bit-plane (0/1). With w+ the 0/1 mask of W_b = +1,
  x^n . W_b = 2 popc(x^n & w+) - popc(x^n), so
  W_b . x = 2 sum_n 2^(n-1) popc(x^n & w+) - sum(x):  an exact integer t.
* Batch norm followed by sign, sign(gamma (y - mu) / sqrt(var + eps) + beta) with
  y = s + b, is a comparison of the integer pre-activation s with one integer per unit:
  +1 <=> s >= T (gamma > 0), or s <= T' <=> NOT (s >= T' + 1) (gamma < 0, "flip"),
  or constant sign(beta) (gamma = 0, threshold -inf). T is found by evaluating torch's
  own float32 batch norm at the integers around the real root (see `_fold_bn_sign`).
* Hidden layers: `qnnlib.kernels.xnor_gemm` with that threshold/flip epilogue, which
  emits the next layer's packed activations directly.
* Last layer: integer scores s from `xnor_gemm`, then the float32 batch-norm affine
  (s + b) * scale + shift, computed the way torch's CPU batch norm does; argmax.

Remaining difference from torch: torch sums W_b . x_f in float32, in an order of its
BLAS's choosing, so when the exact pre-activation lies within float32 rounding (~1e-5)
of a unit's switch point torch may fire where the exact integer model does not. This
engine computes the exact value; on MNIST the two agree on every test image (tested).
"""
from __future__ import annotations

import json
import math
import zipfile

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from torch import nn

from qnnlib.bitpack import WORD_BITS, pack_bits, words_for
from qnnlib.kernels import cpu, numba_threads, prepare_weights
from qnnlib.layers import QuantActivation, QuantLinear
from qnnlib.quantizers import Sign, StochasticSign

__all__ = ["BinaryMLP", "DeployError", "FORMAT", "FORMAT_VERSION", "INPUT_SCALINGS"]

FORMAT = "qnnlib.deploy.BinaryMLP"
FORMAT_VERSION = 1
# name -> the map from uint8 pixels x to the network's training input
INPUT_SCALINGS = {"symmetric": "2*x/255 - 1"}
PIXEL_PLANES = 8
INT32_MIN = np.iinfo(np.int32).min
INT32_MAX = np.iinfo(np.int32).max
# Eval-mode behaviour of both quantizers is the deterministic sign (sign(0) = +1).
SIGN_QUANTIZERS = (Sign, StochasticSign)
_SEARCH_RADIUS = 3  # integers tried on each side of the real-valued switch point


class DeployError(ValueError):
    """The model cannot be deployed, or a saved file is not a valid BinaryMLP."""


class BinaryMLP:
    """Bit-packed inference model: 8-bit-plane first layer, XNOR-popcount hidden layers.

    Layers (all weights packed along K with `qnnlib.bitpack.pack_bits`, bit = W_b >= 0):
      pixel layer   t = W_b . x (uint8 x, exact int)   -> bits (t >= T) XOR flip
      hidden layers s = W_b . a (a = ±1 bits)           -> bits (s >= T) XOR flip
      output layer  s = W_b . a                          -> (s + bias) * scale + shift
    """

    def __init__(self, layers, out_bias, out_scale, out_shift, in_features, input_scaling="symmetric"):
        """layers: list of dicts {weights (H, words) uint64, k, thresholds int32, flip bool};
        the first is the pixel layer, the last the output layer (thresholds None)."""
        if input_scaling not in INPUT_SCALINGS:
            raise DeployError(f"unknown input_scaling {input_scaling!r}; known: {sorted(INPUT_SCALINGS)}")
        self.layers = layers
        self.out_bias = np.ascontiguousarray(out_bias, np.float32)
        self.out_scale = np.ascontiguousarray(out_scale, np.float32)
        self.out_shift = np.ascontiguousarray(out_shift, np.float32)
        self.in_features = int(in_features)
        self.input_scaling = input_scaling
        self.threads = None  # Numba threads per call; None = Numba's default
        # Kernel layouts (xnor_gemm's column panels), built once.
        self._plane_panels = prepare_weights(layers[0]["weights"]).panels
        self._panels = [prepare_weights(layer["weights"]) for layer in layers[1:]]
        # Epilogues padded to every panel column once, so `scores` can call the CPU
        # kernels directly: xnor_gemm's validation, clipping and padding cost several
        # microseconds per call, a large share of a batch-1 forward pass.
        first = layers[0]
        self._plane_epilogue = _pad_pixel_epilogue(first["thresholds"], first["flip"],
                                                   self._plane_panels.shape[0])
        self._hidden = []
        for layer, packed in zip(layers[1:-1], self._panels):
            k = layer["k"]
            # the same clipping as xnor_gemm: keeps "always"/"never" and fits int32
            thresholds = np.clip(layer["thresholds"].astype(np.int64), -k, k + 1).astype(np.int32)
            padded = cpu.pad_epilogue(thresholds, layer["flip"], k, packed.panels.shape[0])
            self._hidden.append((packed.panels, k, *padded))

    # --- conversion ---------------------------------------------------------------

    @classmethod
    def from_torch(cls, model: nn.Module, input_scaling: str = "symmetric") -> "BinaryMLP":
        """Convert a trained `qnnlib.models.mnist_mlp` BNN (eval semantics).

        Raises DeployError (a ValueError) for anything but sign weights, sign
        activations and batch norm with running statistics, or an unknown scaling.
        """
        if input_scaling not in INPUT_SCALINGS:
            raise DeployError(f"unknown input_scaling {input_scaling!r}; known: {sorted(INPUT_SCALINGS)}")
        if any(t.device.type != "cpu" for t in list(model.parameters()) + list(model.buffers())):
            raise DeployError("convert a CPU model: call model.cpu() first")
        blocks, (last_linear, last_bn) = _binary_blocks(model)
        layers = []
        with torch.no_grad():
            for index, (linear, bn) in enumerate(blocks):
                weights = _binary_weights(linear)
                if index == 0:
                    thresholds, flip = _pixel_thresholds(weights, linear, bn)
                else:
                    thresholds, flip = _hidden_thresholds(weights, linear, bn)
                layers.append(_layer(weights, thresholds, flip))
            weights = _binary_weights(last_linear)
            layers.append(_layer(weights, None, None))
            scale, shift = _torch_bn_affine(last_bn)
            bias = _bias(last_linear).float().numpy()
        return cls(layers, bias, scale, shift, blocks[0][0].in_features, input_scaling)

    # --- inference ------------------------------------------------------------------

    def scores(self, images) -> np.ndarray:
        """float32 (N, classes): the model's output scores for uint8 images."""
        pixels = self._pixels(images)
        n = pixels.shape[0]
        with numba_threads(self.threads):
            bits = self._pixel_layer(pixels)
            # Direct kernel calls with the epilogues prepared in __init__ (shapes are
            # consistent by construction); each output is fresh, so nothing is shared.
            for panels, k, thresholds, flip in self._hidden:
                out = np.empty((n, panels.shape[0] // PANELS_PER_WORD), np.uint64)
                cpu.xnor_gemm_threshold_packed(bits, panels, k, thresholds, flip, out.view(np.uint8))
                bits = out
            last = self._panels[-1]
            dots = np.empty((n, last.n), np.int32)
            cpu.xnor_gemm_int32(bits, last.panels, self.layers[-1]["k"], dots)
        return _affine(dots, self.out_bias, self.out_scale, self.out_shift)

    def predict(self, images) -> np.ndarray:
        """int64 (N,) labels: argmax of `scores` (first index on ties, like torch)."""
        return self.scores(images).argmax(axis=1).astype(np.int64)

    def _pixel_layer(self, pixels: np.ndarray) -> np.ndarray:
        planes = _pack_bitplanes(pixels, words_for(self.in_features))
        pixel_sums = pixels.sum(axis=1, dtype=np.int64)
        # one word per 8 panels: the padding columns' bits come out zero
        out = np.empty((pixels.shape[0], self._plane_panels.shape[0] // PANELS_PER_WORD), np.uint64)
        _bitplane_kernel(planes, self._plane_panels, pixel_sums, *self._plane_epilogue, out.view(np.uint8))
        return out

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

    # --- size and storage --------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Parameter bytes in the compact form `save` writes: packed weights, int32
        thresholds, flip bits, float32 output affine. (For speed the runtime also keeps the
        flips as bools and the pixel-layer masks repeated per bit-plane, +8x that layer.)"""
        total = self.out_bias.nbytes + self.out_scale.nbytes + self.out_shift.nbytes
        for layer in self.layers:
            total += layer["weights"].nbytes
            if layer["thresholds"] is not None:
                total += layer["thresholds"].nbytes + (len(layer["flip"]) + 7) // 8
        return total

    def save(self, path) -> None:
        """Write one uncompressed .npz (packed bits do not compress); flips stored as bits."""
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "input_scaling": self.input_scaling,
                "input_map": INPUT_SCALINGS[self.input_scaling], "in_features": self.in_features,
                "k": [layer["k"] for layer in self.layers],
                "units": [int(layer["weights"].shape[0]) for layer in self.layers]}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
                  "out_bias": self.out_bias, "out_scale": self.out_scale, "out_shift": self.out_shift}
        for i, layer in enumerate(self.layers):
            arrays[f"weights{i}"] = layer["weights"]
            if layer["thresholds"] is not None:
                arrays[f"thresholds{i}"] = layer["thresholds"]
                arrays[f"flip{i}"] = np.packbits(layer["flip"])
        with open(path, "wb") as file:  # a file object: np.savez would append ".npz" to a name
            np.savez(file, **arrays)

    @classmethod
    def load(cls, path) -> "BinaryMLP":
        """Read a file written by `save`; DeployError if it is not a valid one."""
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise DeployError(f"{path} is not a readable BinaryMLP file (.npz expected): {err}") from err
        if "meta" not in arrays:
            raise DeployError(f"{path} is not a BinaryMLP file: no metadata")
        try:
            return cls._from_arrays(arrays)
        except (KeyError, ValueError, TypeError, AttributeError) as err:
            raise DeployError(f"{path} is not a valid BinaryMLP file: {err}") from err

    @classmethod
    def _from_arrays(cls, arrays: dict) -> "BinaryMLP":
        meta = json.loads(arrays["meta"].tobytes().decode())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {meta.get('version')} is not supported (this is {FORMAT_VERSION})")
        layers = []
        last = len(meta["k"]) - 1
        for i, (k, units) in enumerate(zip(meta["k"], meta["units"])):
            weights = arrays[f"weights{i}"]
            _check_array(f"weights{i}", weights, np.uint64, (units, words_for(k)))
            thresholds = flip = None
            if i < last:
                thresholds = arrays[f"thresholds{i}"]
                _check_array(f"thresholds{i}", thresholds, np.int32, (units,))
                flip = np.unpackbits(arrays[f"flip{i}"], count=units).astype(bool)
            layers.append(_layer_arrays(weights, k, thresholds, flip))
        for name in ("out_bias", "out_scale", "out_shift"):
            _check_array(name, arrays[name], np.float32, (meta["units"][-1],))
        for previous, layer in zip(meta["units"], meta["k"][1:]):
            if previous != layer:
                raise ValueError(f"layer sizes do not chain: {meta['units']} vs fan-ins {meta['k']}")
        if meta["k"][0] != meta["in_features"]:
            raise ValueError("first layer fan-in differs from in_features")
        return cls(layers, arrays["out_bias"], arrays["out_scale"], arrays["out_shift"],
                   meta["in_features"], meta["input_scaling"])


# --- conversion helpers --------------------------------------------------------------


def _binary_blocks(model: nn.Module):
    """[(QuantLinear, BatchNorm1d) per hidden block], (last QuantLinear, last BatchNorm1d).

    Expects Dropout* -> (QuantLinear -> BatchNorm1d -> QuantActivation(sign) -> Dropout*)+
    -> QuantLinear -> BatchNorm1d; dropout is the identity in eval mode.
    """
    if not isinstance(model, nn.Sequential):
        raise DeployError(f"expected the nn.Sequential of qnnlib.models.mnist_mlp, got {type(model).__name__}")
    modules = [m for m in model if not isinstance(m, (nn.Dropout, nn.Identity))]
    names = [type(m).__name__ for m in modules]
    layout_error = DeployError(
        "expected (QuantLinear, BatchNorm1d, QuantActivation)+ then QuantLinear, BatchNorm1d "
        f"(dropout aside), got {names}")
    if len(modules) < 5 or (len(modules) - 2) % 3:
        raise layout_error
    blocks = []
    for start in range(0, len(modules) - 2, 3):
        linear, bn, act = modules[start:start + 3]
        if not (isinstance(linear, QuantLinear) and isinstance(bn, nn.BatchNorm1d)
                and isinstance(act, QuantActivation)):
            raise layout_error
        if not isinstance(act.quantizer, SIGN_QUANTIZERS):
            raise DeployError(
                f"activation quantizer {act.quantizer!r} is not a sign: only binary activations "
                "(act_bits=1) can be bit-packed and fed to XNOR-popcount")
        blocks.append((linear, bn))
    last_linear, last_bn = modules[-2:]
    if not (isinstance(last_linear, QuantLinear) and isinstance(last_bn, nn.BatchNorm1d)):
        raise layout_error
    for linear, bn in blocks + [(last_linear, last_bn)]:
        _check_linear_and_bn(linear, bn)
    return blocks, (last_linear, last_bn)


def _check_linear_and_bn(linear: QuantLinear, bn: nn.BatchNorm1d) -> None:
    if not isinstance(linear.weight_quantizer, SIGN_QUANTIZERS):
        raise DeployError(
            f"weight quantizer {linear.weight_quantizer!r} is not a sign: only binary weights "
            "(weight_bits=1) can be bit-packed; k-bit or full-precision nets need float kernels")
    if bn.running_mean is None or bn.running_var is None:
        raise DeployError("batch norm without running statistics cannot be folded into thresholds")
    if bn.num_features != linear.out_features:
        raise DeployError(f"batch norm width {bn.num_features} != layer width {linear.out_features}")


def _binary_weights(linear: QuantLinear) -> np.ndarray:
    """W_b = sign(W) in {-1, +1} (sign(0) = +1, the eval-mode quantizer) as float64."""
    if not torch.isfinite(linear.weight).all():
        raise DeployError("layer weights contain NaN or infinity")
    return torch.where(linear.weight >= 0, 1.0, -1.0).double().numpy()


def _bias(linear: QuantLinear) -> torch.Tensor:
    if linear.bias is None:
        return torch.zeros(linear.out_features)
    return linear.bias.detach().float()


def _layer(weights: np.ndarray, thresholds, flip) -> dict:
    return _layer_arrays(pack_bits(weights, axis=-1), weights.shape[1], thresholds, flip)


def _layer_arrays(packed, k, thresholds, flip) -> dict:
    if thresholds is not None:
        thresholds = np.ascontiguousarray(thresholds, np.int32)
        flip = np.ascontiguousarray(flip, np.bool_)
    return {"weights": np.ascontiguousarray(packed, np.uint64), "k": int(k),
            "thresholds": thresholds, "flip": flip}


def _pixel_thresholds(weights, linear, bn):
    """Thresholds on t = W_b . x (uint8 x), where the model's pre-activation is
    W_b . (2x/255 - 1) + b = (2/255) t - sum(W_b) + b."""
    weight_sums = weights.sum(axis=1)
    k_max = 255 * weights.shape[1]
    return _fold_bn_sign(lambda t: 2.0 * t / 255.0 - weight_sums, 2.0 / 255.0, -weight_sums,
                         linear, bn, k_max)


def _hidden_thresholds(weights, linear, bn):
    """Thresholds on s = W_b . a, a in {-1, +1}^K; clipped to [-K, K+1] like xnor_gemm."""
    k_max = weights.shape[1]
    zeros = np.zeros(weights.shape[0])
    thresholds, flip = _fold_bn_sign(lambda s: s * 1.0, 1.0, zeros, linear, bn, k_max)
    return np.clip(thresholds, -k_max, k_max + 1), flip


def _fold_bn_sign(preactivation, slope, offset, linear, bn, k_max):
    """Integer thresholds T and flips with sign(BN(pre(k) + b)) = +1 <=> (k >= T) XOR flip.

    pre(k) = slope * k + offset is the exact linear output without bias. The real root of
    gamma (pre(k) + b - mu) / sqrt(var + eps) + beta = 0 is
        k* = (mu - b - beta sqrt(var + eps) / gamma - offset) / slope.
    Rounding k* is not enough: torch evaluates the same expression in float32. So the
    integers k* - R .. k* + R are pushed through torch's own batch norm (eval mode) as
    float32(pre(k) + b), and the switch point is read off; this is monotone in k because
    every float32 step is. gamma = 0 gives the constant sign(beta) (threshold INT32_MIN).
    """
    gamma, beta, mu, var = (t.detach().double().numpy() for t in _bn_parameters(bn))
    bias = _bias(linear).double().numpy()
    gamma_safe = np.where(gamma == 0, 1.0, gamma)
    root = (mu - bias - beta * np.sqrt(var + bn.eps) / gamma_safe - offset) / slope
    center = np.round(np.clip(np.nan_to_num(root), -k_max - _SEARCH_RADIUS - 1, k_max + _SEARCH_RADIUS + 1))
    candidates = center[None, :] + np.arange(-_SEARCH_RADIUS, _SEARCH_RADIUS + 1)[:, None]
    fires = _torch_fires(preactivation(candidates) + bias, bn)  # (2R+1, units) bool
    thresholds = np.empty(len(gamma), np.int64)
    flip = gamma < 0
    for unit in range(len(gamma)):
        column = fires[:, unit]
        if gamma[unit] == 0:
            thresholds[unit] = INT32_MIN
            flip[unit] = not column[0]
            continue
        rising = column if gamma[unit] > 0 else ~column
        if np.any(rising[1:] < rising[:-1]):
            raise DeployError(f"batch norm of unit {unit} is not monotone in its input; cannot threshold it")
        switch = int(np.argmax(rising)) if rising.any() else len(rising)
        inside = 0 < switch < len(rising)
        if not inside and abs(root[unit]) <= k_max:
            raise DeployError(f"could not locate the switch point of unit {unit} near {root[unit]:.3f}")
        # first firing k (gamma > 0) or first non-firing k (gamma < 0: fire <=> k < it)
        thresholds[unit] = int(center[unit]) - _SEARCH_RADIUS + switch
    return np.clip(thresholds, INT32_MIN, INT32_MAX).astype(np.int32), flip


def _bn_parameters(bn: nn.BatchNorm1d):
    ones = torch.ones(bn.num_features)
    gamma = bn.weight if bn.weight is not None else ones
    beta = bn.bias if bn.bias is not None else ones * 0
    return gamma, beta, bn.running_mean, bn.running_var


def _torch_fires(y: np.ndarray, bn: nn.BatchNorm1d) -> np.ndarray:
    """sign(BN(y)) >= 0 evaluated by torch in float32, eval mode (y: (rows, units))."""
    y32 = torch.from_numpy(y).float()
    z = nn.functional.batch_norm(y32, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                 training=False, eps=bn.eps)
    return (z >= 0).numpy()


def _torch_bn_affine(bn: nn.BatchNorm1d):
    """float32 scale, shift with BN(y) = y * scale + shift, as torch's CPU kernel forms them:
    invstd = 1 / sqrt(var + eps), scale = invstd * gamma, shift = beta - mean * invstd * gamma."""
    gamma, beta, mu, var = (t.detach().float().numpy() for t in _bn_parameters(bn))
    invstd = np.float32(1) / np.sqrt(var + np.float32(bn.eps))
    return invstd * gamma, beta - mu * invstd * gamma


def _affine(dots: np.ndarray, bias, scale, shift) -> np.ndarray:
    """(s + b) * scale + shift in float32: the last batch norm on integer scores."""
    return (dots.astype(np.float32) + bias) * scale + shift


def _check_array(name, array, dtype, shape) -> None:
    if array.dtype != dtype or array.shape != shape:
        raise ValueError(f"{name} is {array.dtype} {array.shape}, expected {np.dtype(dtype).name} {shape}")




# --- Numba kernels for the pixel layer --------------------------------------------------
#
# Same scheme as qnnlib.kernels.cpu: the 0/1 masks w+ are kept in xnor_gemm's panel
# layout (`prepare_weights(...).panels`, 8 columns per 512-bit load), one plane word of a
# row is broadcast against a panel, and each <8 x i64> accumulator holds 8 columns, so
# nothing is reduced horizontally. The plane weights 2^n come from Horner's rule: walk the
# planes from the most significant down and double the accumulators before each plane,
# so the inner loop is and + popcount + add only.

LANES = 8  # uint64 lanes of a 512-bit register = columns of one panel
TILE_PANELS = 4  # panels per micro-tile (32 columns)
PANELS_PER_WORD = WORD_BITS // LANES  # panels per packed output word
CHUNK_ROWS = 128  # rows per work unit: their planes (104 KiB) stay in L2; fewer panel re-reads than 64 (measured)

_V64 = ir.VectorType(ir.IntType(64), LANES)


def _bitplane_tile(rows: int):
    """Intrinsic: for `rows` rows from `row` and TILE_PANELS panels from `panel0`, the
    fused threshold epilogue: byte out_bytes[out_row + r, out_col + p] gets bit `lane` =
    (t >= thresholds[c]) XOR flip[c], c = 8 (panel0 + p) + lane, where
    t = 2 (x_r . w+) - pixel_sums[row + r] and x_r . w+ = sum_n 2^n sum_w popc(plane_n[w] & panel[w]).
    Comparing in vector registers avoids a scalar loop over every (row, column)."""

    @intrinsic
    def tile(typingctx, planes, row, panels, panel0, pixel_sums, thresholds, flip, out, out_row, out_col):
        def is_c(ty, ndim, dtype):
            return isinstance(ty, types.Array) and ty.ndim == ndim and ty.layout == "C" and ty.dtype == dtype

        if not (is_c(planes, 3, types.uint64) and is_c(panels, 3, types.uint64)
                and is_c(pixel_sums, 1, types.int64) and is_c(thresholds, 1, types.int32)
                and is_c(flip, 1, types.boolean) and is_c(out, 2, types.uint8)):
            return None
        signature = types.void(planes, types.intp, panels, types.intp, pixel_sums, thresholds, flip,
                               out, types.intp, types.intp)

        def codegen(context, builder, sig, args):
            planes_v, row, panels_v, panel0, sums_v, t_v, f_v, out_v, out_row, out_col = args
            planes_a = context.make_array(sig.args[0])(context, builder, planes_v)
            panels_a = context.make_array(sig.args[2])(context, builder, panels_v)
            sums_a = context.make_array(sig.args[4])(context, builder, sums_v)
            t_a = context.make_array(sig.args[5])(context, builder, t_v)
            f_a = context.make_array(sig.args[6])(context, builder, f_v)
            out_a = context.make_array(sig.args[7])(context, builder, out_v)
            i64 = ir.IntType(64)
            n_words = builder.extract_value(panels_a.shape, 1)
            row_words = builder.mul(n_words, i64(PIXEL_PLANES))
            ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V64, [_V64]),
                                                   "llvm.ctpop.v8i64")
            zero = ir.Constant(_V64, [0] * LANES)
            acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(TILE_PANELS)]
                   for _ in range(rows)]  # promoted to zmm registers by LLVM
            panel_ptrs = [builder.bitcast(builder.gep(panels_a.data, [builder.mul(
                builder.add(panel0, i64(p)), builder.mul(n_words, i64(LANES)))]), _V64.as_pointer())
                for p in range(TILE_PANELS)]
            for plane in reversed(range(PIXEL_PLANES)):  # Horner: most significant first
                for cell in sum(acc, []):
                    value = builder.load(cell)
                    builder.store(builder.add(value, value), cell)
                plane_ptrs = [builder.gep(planes_a.data, [builder.add(
                    builder.mul(builder.add(row, i64(r)), row_words), builder.mul(i64(plane), n_words))])
                    for r in range(rows)]
                with cgutils.for_range(builder, n_words) as loop:
                    masks = [builder.load(builder.gep(ptr, [loop.index])) for ptr in panel_ptrs]
                    for r in range(rows):
                        word = builder.load(builder.gep(plane_ptrs[r], [loop.index]))
                        splat = _splat64(builder, word)
                        for p in range(TILE_PANELS):
                            ones = builder.call(ctpop, [builder.and_(splat, masks[p])])
                            builder.store(builder.add(builder.load(acc[r][p]), ones), acc[r][p])
            out_cols = builder.extract_value(out_a.shape, 1)
            v8 = ir.VectorType(ir.IntType(8), LANES)
            v32 = ir.VectorType(ir.IntType(32), LANES)
            for p in range(TILE_PANELS):
                first = builder.mul(builder.add(panel0, i64(p)), i64(LANES))
                t_ptr = builder.bitcast(builder.gep(t_a.data, [first]), v32.as_pointer())
                thresholds_p = builder.sext(builder.load(t_ptr, align=4), _V64)  # exact: |t| < 2**31
                f_ptr = builder.bitcast(builder.gep(f_a.data, [first]), v8.as_pointer())
                flips = builder.icmp_unsigned("!=", builder.load(f_ptr, align=1), ir.Constant(v8, [0] * LANES))
                for r in range(rows):
                    pixel_sum = builder.load(builder.gep(sums_a.data, [builder.add(row, i64(r))]))
                    value = builder.load(acc[r][p])
                    t = builder.sub(builder.add(value, value), _splat64(builder, pixel_sum))
                    bits = builder.bitcast(builder.xor(builder.icmp_signed(">=", t, thresholds_p), flips),
                                           ir.IntType(8))
                    index = builder.add(builder.mul(builder.add(out_row, i64(r)), out_cols),
                                        builder.add(out_col, i64(p)))
                    builder.store(bits, builder.gep(out_a.data, [index]))
            return context.get_dummy_value()

        return signature, codegen

    return tile


def _splat64(builder, word):
    """Broadcast an i64 to all 8 lanes."""
    lane0 = builder.insert_element(ir.Constant(_V64, ir.Undefined), word, ir.IntType(32)(0))
    return builder.shuffle_vector(lane0, ir.Constant(_V64, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


_tile4 = _bitplane_tile(4)
_tile1 = _bitplane_tile(1)


@numba.njit(parallel=True, cache=True, boundscheck=False)
def _pack_bitplanes(pixels, n_words):
    """(N, K) uint8 -> (N, 8, n_words) uint64: word [i, n, w] holds bit n of pixels
    64w .. 64w+63 of row i (pixel 64w + j at bit j): the 8 bit-planes, each packed."""
    n_rows, k = pixels.shape
    planes = np.zeros((n_rows, PIXEL_PLANES, n_words), np.uint64)
    for i in prange(n_rows):
        for w in range(n_words):
            count = min(WORD_BITS, k - w * WORD_BITS)
            for n in range(PIXEL_PLANES):
                word = np.uint64(0)
                for j in range(count):
                    bit = (np.uint64(pixels[i, w * WORD_BITS + j]) >> np.uint64(n)) & np.uint64(1)
                    word |= bit << np.uint64(j)
                planes[i, n, w] = word
    return planes


def _bitplane_threshold_layer(planes, panels, pixel_sums, thresholds, flip, out):
    """out bit j of row i = (t_ij >= thresholds[j]) XOR flip[j], t = W_b . x exactly:
    t = 2 (x . w+) - sum(x), x . w+ from the bit-planes (see the module docstring).
    out: C-contiguous uint64 (N, ceil(units / 64)). Pads the epilogue on every call;
    `BinaryMLP` pads once (`_pad_pixel_epilogue`) and calls `_bitplane_kernel` itself."""
    thresholds, flip = _pad_pixel_epilogue(thresholds, flip, panels.shape[0])
    _bitplane_kernel(planes, panels, pixel_sums, thresholds, flip, out.view(np.uint8))


def _pad_pixel_epilogue(thresholds, flip, n_panels):
    """int32 thresholds / bool flip over every panel column; the padding never fires
    (t <= 255 K < INT32_MAX), so padding bits of the packed output come out zero."""
    padded_t = np.full(n_panels * LANES, INT32_MAX, np.int32)
    padded_t[: len(thresholds)] = thresholds
    padded_f = np.zeros(n_panels * LANES, np.bool_)
    padded_f[: len(flip)] = flip
    return padded_t, padded_f


@numba.njit(parallel=True, cache=True, fastmath=True, boundscheck=False)
def _bitplane_kernel(planes, panels, pixel_sums, thresholds, flip, out_bytes):
    """Packed threshold layer into the bytes of the uint64 output (8 panels per word).

    Work unit: CHUNK_ROWS rows x one 64-column output word, so threads never share a word.
    """
    n_rows, n_out_words = planes.shape[0], out_bytes.shape[1] // PANELS_PER_WORD
    n_chunks = (n_rows + CHUNK_ROWS - 1) // CHUNK_ROWS
    for unit in prange(n_chunks * n_out_words):
        r0, word = (unit // n_out_words) * CHUNK_ROWS, unit % n_out_words
        r1 = min(n_rows, r0 + CHUNK_ROWS)
        for g in range(0, PANELS_PER_WORD, TILE_PANELS):
            panel = word * PANELS_PER_WORD + g
            r = r0
            while r + 4 <= r1:
                _tile4(planes, r, panels, panel, pixel_sums, thresholds, flip, out_bytes, r, panel)
                r += 4
            for rest in range(r, r1):
                _tile1(planes, rest, panels, panel, pixel_sums, thresholds, flip, out_bytes, rest, panel)

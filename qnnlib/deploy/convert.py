"""From a trained torch BNN (`qnnlib.models.mnist_mlp`, eval semantics) to packed layers.

`convert(model)` checks that the model is a binary MLP (sign weights, sign activations,
batch norm with running statistics; dropout is the identity in eval mode), packs each
layer's sign weights along K with `pack_bits`, and folds each hidden batch norm + sign
into integer thresholds (`qnnlib.deploy.folding`). The first layer's thresholds are on
t = W_b . x for raw uint8 pixels x, the hidden layers' on s = W_b . a.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from qnnlib.bitpack import pack_bits
from qnnlib.deploy import folding
from qnnlib.deploy.errors import DeployError
from qnnlib.layers import QuantActivation, QuantLinear
from qnnlib.quantizers import Sign, StochasticSign

# Eval-mode behaviour of both quantizers is the deterministic sign (sign(0) = +1).
SIGN_QUANTIZERS = (Sign, StochasticSign)


def convert(model: nn.Module) -> dict:
    """The keyword arguments of `BinaryMLP` (but input_scaling) for a trained BNN."""
    if not isinstance(model, nn.Module):
        raise DeployError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if any(t.device.type != "cpu" for t in list(model.parameters()) + list(model.buffers())):
        raise DeployError("convert a CPU model: call model.cpu() first")
    blocks, (last_linear, last_bn) = binary_blocks(model)
    layers = []
    with torch.no_grad():
        for index, (linear, bn) in enumerate(blocks):
            weights = binary_weights(linear)
            fold = folding.pixel_thresholds if index == 0 else folding.hidden_thresholds
            thresholds, flip = fold(weights, bias(linear), bn)
            layers.append(layer(weights, thresholds, flip))
        layers.append(layer(binary_weights(last_linear), None, None))
        scale, shift = folding.bn_affine(last_bn)
        out_bias = bias(last_linear).numpy()
    return {"layers": layers, "out_bias": out_bias, "out_scale": scale, "out_shift": shift,
            "in_features": blocks[0][0].in_features}


def binary_blocks(model: nn.Module):
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
    previous = blocks[0][0].in_features
    for linear, bn in blocks + [(last_linear, last_bn)]:
        check_linear_and_bn(linear, bn, previous)
        previous = linear.out_features
    return blocks, (last_linear, last_bn)


def check_linear_and_bn(linear: QuantLinear, bn: nn.BatchNorm1d, in_features: int) -> None:
    if not isinstance(linear.weight_quantizer, SIGN_QUANTIZERS):
        raise DeployError(
            f"weight quantizer {linear.weight_quantizer!r} is not a sign: only binary weights "
            "(weight_bits=1) can be bit-packed; k-bit or full-precision nets need float kernels")
    if linear.in_features != in_features:
        raise DeployError(f"layer fan-in {linear.in_features} != previous width {in_features}")
    if bn.running_mean is None or bn.running_var is None:
        raise DeployError("batch norm without running statistics cannot be folded into thresholds")
    if bn.num_features != linear.out_features:
        raise DeployError(f"batch norm width {bn.num_features} != layer width {linear.out_features}")


def binary_weights(linear: QuantLinear) -> np.ndarray:
    """W_b = sign(W) in {-1, +1} (sign(0) = +1, the eval-mode quantizer) as float64."""
    if not torch.isfinite(linear.weight).all():
        raise DeployError("layer weights contain NaN or infinity")
    return torch.where(linear.weight >= 0, 1.0, -1.0).double().numpy()


def bias(linear: QuantLinear) -> torch.Tensor:
    """The layer's float32 bias (zeros without one); DeployError if not finite."""
    if linear.bias is None:
        return torch.zeros(linear.out_features)
    if not torch.isfinite(linear.bias).all():
        raise DeployError("layer bias contains NaN or infinity")
    return linear.bias.detach().float()


def layer(weights: np.ndarray, thresholds, flip) -> dict:
    """One layer as `BinaryMLP` keeps it: packed weights, K, int32 thresholds, bool flips."""
    if thresholds is not None:
        thresholds = np.ascontiguousarray(thresholds, np.int32)
        flip = np.ascontiguousarray(flip, np.bool_)
    return {"weights": pack_bits(weights, axis=-1), "k": int(weights.shape[1]),
            "thresholds": thresholds, "flip": flip}

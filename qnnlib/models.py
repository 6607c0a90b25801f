"""The paper's MNIST multilayer perceptron and its full-precision control.

Layout (arXiv:1609.07061 "Benchmark results" / 1602.02830 and the authors' Theano
Train-time/mnist.py):

    Dropout(0.2) -> depth x [QuantLinear(., 4096) -> BatchNorm -> QuantActivation -> Dropout(0.5)]
                 -> QuantLinear(4096, 10) -> BatchNorm            (scores for the L2-SVM loss)

The input (pixels scaled to [-1, 1]) is not binarized: the first layer sees real inputs.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from .layers import QuantActivation, QuantLinear
from .quantizers import (DoReFaQuantizer, HardTanh, Identity, LinearQuant, LogQuantizer, Sign,
                         StochasticSign, get_quantizer)

__all__ = ["mnist_mlp", "full_precision_mlp", "build_model", "quant_linears"]

MODES = ("deterministic", "stochastic")
KINDS = ("bnn", "full_precision")
# Quantizers whose gradient is an STE: ste_saturate / generator only concern these;
# Identity and HardTanh keep their true gradients in the full-precision control.
_STE_QUANTIZERS = (Sign, StochasticSign, LinearQuant, DoReFaQuantizer, LogQuantizer)
# The k-bit grids `kbit_quantizer` may name (registry names of quantizers.QUANTIZERS).
KBIT_QUANTIZERS = ("linear_quant", "dorefa", "log")


def _quantizer_from_bits(bits: int, mode: str, saturate: bool, generator, full_precision,
                         kbit_quantizer: str = "linear_quant"):
    """1 -> (stochastic) sign, 2..31 -> `kbit_quantizer` at `bits` (default the paper's
    LinearQuant), 32 -> `full_precision()`.

    `mode` only matters at 1 bit, so one config can build both a BNN and its control.
    """
    if kbit_quantizer not in KBIT_QUANTIZERS:
        raise ValueError(f"kbit_quantizer must be one of {KBIT_QUANTIZERS}, got {kbit_quantizer!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if int(bits) != bits or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer in 1..32, got {bits!r}")
    if bits == 32:
        return full_precision()
    if bits > 1:
        return get_quantizer({"name": kbit_quantizer, "bits": bits, "saturate": saturate})
    if mode == "stochastic":
        return StochasticSign(generator, saturate)
    return Sign(saturate)


def _quantizer_from_spec(spec, saturate: bool, generator) -> nn.Module:
    """Override spec (name / dict / module) -> a fresh module; the model-wide
    saturate and generator fill in what a name or dict leaves unsaid."""
    module = get_quantizer(spec)
    if isinstance(spec, nn.Module) or not isinstance(module, _STE_QUANTIZERS):
        return module
    kwargs = {"name": spec} if isinstance(spec, str) else dict(spec)
    kwargs.setdefault("saturate", saturate)
    if isinstance(module, StochasticSign):
        kwargs.setdefault("generator", generator)
    return get_quantizer(kwargs)


def mnist_mlp(hidden: int = 4096, depth: int = 3, weight_bits: int = 1, act_bits: int = 1,
              weight_mode: str = "deterministic", act_mode: str = "deterministic",
              ste_saturate: bool = True, dropout_in: float = 0.2, dropout_hidden: float = 0.5,
              bn_momentum: float = 0.1, bn_eps: float = 1e-4, in_features: int = 784,
              num_classes: int = 10, generator: torch.Generator | None = None,
              weight_quantizer=None, act_quantizer=None,
              kbit_quantizer: str = "linear_quant", matmul: str = "torch") -> nn.Sequential:
    """The paper's MNIST MLP (defaults: 784-3x4096-10 BNN, deterministic sign).

    bits: 1 -> sign (stochastic sign when the mode is "stochastic"), 2..31 -> the k-bit
    grid `kbit_quantizer` ("linear_quant": the paper's LinearQuant, the default;
    "dorefa": DoReFa's grid; "log": LogQuant), 32 -> full precision (Identity weights,
    HardTanh activations).
    `weight_quantizer` / `act_quantizer` (name, dict or module) override the bits.
    BatchNorm momentum 0.1 is PyTorch's convention for the Theano code's alpha = 0.1:
    both weight the new batch statistics by 0.1.
    `matmul="ordered"`: the dense layers sum their products in a fixed order, the same
    bits on every CPU and faster than the pinned BLAS (`qnnlib.ordered_linear`).
    `matmul="xnor"`: as "ordered", but the forward products of the binary layers (all
    but the first) are XNOR-popcounts (`qnnlib.xnor_forward`).
    """
    # Weights are clipped to [-1, 1] after every step, so a saturating mask on them would
    # be all ones: skip it, as the authors' code passes dL/dWb straight to W.
    # `ste_saturate` therefore concerns the activations (Sec. 2.3).
    def weight_q():
        if weight_quantizer is not None:
            return _quantizer_from_spec(weight_quantizer, False, generator)
        return _quantizer_from_bits(weight_bits, weight_mode, False, generator, Identity,
                                    kbit_quantizer)

    def act_q():
        if act_quantizer is not None:
            return _quantizer_from_spec(act_quantizer, ste_saturate, generator)
        return _quantizer_from_bits(act_bits, act_mode, ste_saturate, generator, HardTanh,
                                    kbit_quantizer)

    def batch_norm(width):
        return nn.BatchNorm1d(width, eps=bn_eps, momentum=bn_momentum)

    layers: list[nn.Module] = [nn.Dropout(dropout_in)]
    fan_in = in_features
    for _ in range(depth):
        layers += [QuantLinear(fan_in, hidden, weight_quantizer=weight_q(), matmul=matmul),
                   batch_norm(hidden), QuantActivation(act_q()), nn.Dropout(dropout_hidden)]
        fan_in = hidden
    layers += [QuantLinear(fan_in, num_classes, weight_quantizer=weight_q(), matmul=matmul),
               batch_norm(num_classes)]
    return nn.Sequential(*layers)


def full_precision_mlp(**kwargs) -> nn.Sequential:
    """The same MLP with 32-bit weights and hard-tanh activations (the full-precision control).

    Quantizer overrides are dropped too, so a BNN config can build its control as is.
    """
    kwargs.update(weight_bits=32, act_bits=32, weight_quantizer=None, act_quantizer=None)
    return mnist_mlp(**kwargs)


_MLP_KEYS = frozenset(inspect.signature(mnist_mlp).parameters)


def build_model(config: dict) -> nn.Sequential:
    """Build from a params.yaml-style dict: mnist_mlp's keyword arguments plus an
    optional "kind": "bnn" (default) or "full_precision"."""
    config = dict(config)
    kind = config.pop("kind", "bnn")
    unknown = sorted(set(config) - _MLP_KEYS)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; valid: {sorted(_MLP_KEYS | {'kind'})}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for key in ("hidden", "depth", "in_features", "num_classes"):
        value = config.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model {key} must be a positive integer, got {value!r}")
    for key in ("dropout_in", "dropout_hidden"):
        value = config.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"model {key} must be a number in [0, 1), got {value!r}")
    return full_precision_mlp(**config) if kind == "full_precision" else mnist_mlp(**config)


def quant_linears(model: nn.Module) -> list[QuantLinear]:
    """The model's QuantLinear layers, input to output (for LR scales and clipping)."""
    return [m for m in model.modules() if isinstance(m, QuantLinear)]

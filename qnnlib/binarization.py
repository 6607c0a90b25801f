"""Binarized networks read with their real-valued weights (notebook 01 §5).

The authors' code evaluates a network trained with stochastic weight binarization with
its real-valued weights W in place of their binarization (arXiv:1609.07061 Sec. 2.1, on
test-time inference); notebook 01_binarization compares that with the binarized network.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .models import quant_linears
from .quantizers import Identity
from .training import evaluate

__all__ = ["real_weights", "real_weight_error"]


@contextmanager
def real_weights(model: nn.Module):
    """Within the block, every QuantLinear of `model` uses W itself instead of q(W);
    the quantizers come back afterwards, also after an exception (notebook 01 §5)."""
    layers = quant_linears(model)
    saved = [layer.weight_quantizer for layer in layers]
    for layer in layers:
        layer.weight_quantizer = Identity()
    try:
        yield model
    finally:
        for layer, quantizer in zip(layers, saved):
            layer.weight_quantizer = quantizer


def real_weight_error(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Error rate in [0, 1] of `model` in eval mode with real-valued weights (notebook 01 §5);
    inputs and labels move to the model's device."""
    device = next(model.parameters()).device
    with real_weights(model):
        return evaluate(model, inputs.to(device), labels.to(device))

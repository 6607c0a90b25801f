"""qnnlib.binarization against a float network built by hand from the same weights, and
its evidence helpers (Welch verdicts, binomial coverage range) against hand computations."""

import pytest
import torch
from torch import nn

from qnnlib import binarization, models


def float_copy(model):
    """The same network with plain nn.Linear layers holding the real-valued weights."""
    layers = []
    for module in model:
        if isinstance(module, nn.Linear):
            linear = nn.Linear(module.in_features, module.out_features)
            linear.load_state_dict({"weight": module.weight.detach(), "bias": module.bias.detach()})
            layers.append(linear)
        else:
            layers.append(module)
    return nn.Sequential(*layers).eval()


def test_real_weight_error_is_the_float_network_error_and_restores_binarization():
    torch.manual_seed(0)
    model = models.mnist_mlp(hidden=32, depth=2, weight_mode="stochastic",
                             dropout_in=0.0, dropout_hidden=0.0).eval()
    with torch.no_grad():
        model(torch.rand(64, 784) * 2 - 1)          # eval: no statistics change, just a call
    inputs = torch.rand(300, 784) * 2 - 1
    labels = torch.randint(10, (300,))
    with torch.no_grad():
        reference = (float_copy(model)(inputs).argmax(1) != labels).sum().item() / len(labels)
    quantizers = [layer.weight_quantizer for layer in models.quant_linears(model)]
    with torch.no_grad():
        error = binarization.real_weight_error(model, inputs, labels)
    assert error == reference
    assert [layer.weight_quantizer for layer in models.quant_linears(model)] == quantizers


def test_real_weights_restores_the_quantizers_after_an_exception():
    model = models.mnist_mlp(hidden=8, depth=1)
    before = [layer.weight_quantizer for layer in models.quant_linears(model)]
    try:
        with binarization.real_weights(model):
            raise RuntimeError
    except RuntimeError:
        pass
    assert [layer.weight_quantizer for layer in models.quant_linears(model)] == before


def test_coverage_range_by_hand():
    # Binomial(20, 0.95): P(X <= 16) = 0.016 <= 0.05 < P(X <= 17) = 0.075; P(X = 20) = 0.358
    assert binarization.coverage_range(20, level=0.95, mass=0.9) == (17 / 20, 1.0)
    assert binarization.coverage_range(1) == (0.0, 1.0)
    low, high = binarization.coverage_range(79)
    assert 0.8 < low < 0.9 and high == 1.0


def test_coverage_range_rejects_bad_arguments():
    with pytest.raises(ValueError, match="need points >= 1"):
        binarization.coverage_range(0)

"""qnnlib.binarization against a float network built by hand from the same weights."""
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

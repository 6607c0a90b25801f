"""The MNIST MLP builder: layout, quantizer choice, determinism, config validation."""
import pytest
import torch
from torch import nn

from qnnlib.layers import QuantActivation, QuantLinear
from qnnlib.models import build_model, full_precision_mlp, mnist_mlp, quant_linears
from qnnlib.quantizers import (DoReFaQuantizer, HardTanh, Identity, LinearQuant, LogQuantizer,
                               Sign, StochasticSign)

SMALL = dict(hidden=32, depth=3)


def test_paper_layout_with_default_sizes():
    """The default (paper) net, built on the meta device: shapes without 37 M weights."""
    with torch.device("meta"):
        model = mnist_mlp()
    kinds = [type(m) for m in model]
    hidden_block = [QuantLinear, nn.BatchNorm1d, QuantActivation, nn.Dropout]
    assert kinds == [nn.Dropout] + 3 * hidden_block + [QuantLinear, nn.BatchNorm1d]
    shapes = [tuple(layer.weight.shape) for layer in quant_linears(model)]
    assert shapes == [(4096, 784), (4096, 4096), (4096, 4096), (10, 4096)]
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.2, 0.5, 0.5, 0.5]
    for bn in (m for m in model if isinstance(m, nn.BatchNorm1d)):
        assert bn.eps == 1e-4 and bn.momentum == 0.1
    for layer in quant_linears(model):
        assert isinstance(layer.weight_quantizer, Sign) and layer.bias is not None
    assert all(isinstance(m.quantizer, Sign) for m in model if isinstance(m, QuantActivation))
    # sqrt((fan_in + fan_out) / 1.5), by hand: sqrt(4880/1.5), sqrt(8192/1.5), sqrt(4106/1.5)
    assert [layer.lr_scale for layer in quant_linears(model)] == pytest.approx(
        [57.038, 73.901, 73.901, 52.320], abs=5e-4)


def test_weights_start_uniform_in_plus_minus_one_with_zero_bias():
    torch.manual_seed(0)
    for layer in quant_linears(mnist_mlp(**SMALL)):
        assert layer.weight.abs().max() <= 1.0 and layer.weight.abs().max() > 0.9
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_depth_and_output_shape(depth):
    model = mnist_mlp(hidden=16, depth=depth)
    assert len(quant_linears(model)) == depth + 1
    assert model(torch.rand(5, 784) * 2 - 1).shape == (5, 10)


def test_bits_select_quantizers():
    """k bits -> the paper's LinearQuant by default (weights keep no saturation mask:
    they are clipped to [-1, 1] anyway; activations follow ste_saturate)."""
    model = mnist_mlp(**SMALL, weight_bits=2, act_bits=4, ste_saturate=False)
    assert all(type(l.weight_quantizer) is LinearQuant and l.weight_quantizer.bits == 2
               and l.weight_quantizer.saturate is False for l in quant_linears(model))
    acts = [m.quantizer for m in model if isinstance(m, QuantActivation)]
    assert all(type(a) is LinearQuant and a.bits == 4 and a.saturate is False for a in acts)


def test_two_bit_model_weights_sit_on_the_paper_grid_with_zero():
    """Hand-computed 2-bit LinearQuant levels {-1, -1/2, 0, 1/2}; DoReFa's {-1, -1/3, 1/3, 1}."""
    torch.manual_seed(0)
    paper = quant_linears(mnist_mlp(**SMALL, weight_bits=2))[0].quantized_weight()
    assert set(paper.unique().tolist()) == {-1.0, -0.5, 0.0, 0.5}
    torch.manual_seed(0)
    dorefa = quant_linears(mnist_mlp(**SMALL, weight_bits=2, kbit_quantizer="dorefa"))[0]
    assert type(dorefa.weight_quantizer) is DoReFaQuantizer
    torch.testing.assert_close(dorefa.quantized_weight().unique(),
                               torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))


@pytest.mark.parametrize("grid, cls", [("linear_quant", LinearQuant), ("dorefa", DoReFaQuantizer),
                                       ("log", LogQuantizer)])
def test_kbit_quantizer_picks_the_grid_but_not_one_or_32_bits(grid, cls):
    model = mnist_mlp(**SMALL, weight_bits=3, act_bits=1, kbit_quantizer=grid)
    assert all(type(l.weight_quantizer) is cls and l.weight_quantizer.bits == 3 for l in quant_linears(model))
    assert all(type(m.quantizer) is Sign for m in model if isinstance(m, QuantActivation))
    control = mnist_mlp(**SMALL, weight_bits=32, act_bits=32, kbit_quantizer=grid)
    assert all(type(l.weight_quantizer) is Identity for l in quant_linears(control))


def test_unknown_kbit_quantizer_is_refused():
    with pytest.raises(ValueError, match="kbit_quantizer must be one of .*'ternary'"):
        mnist_mlp(**SMALL, weight_bits=2, kbit_quantizer="ternary")


def test_overrides_win_over_bits_and_get_model_settings():
    gen = torch.Generator().manual_seed(0)
    model = mnist_mlp(**SMALL, weight_quantizer={"name": "log", "bits": 4},
                      act_quantizer="stochastic_sign", ste_saturate=False, generator=gen)
    weights = [l.weight_quantizer for l in quant_linears(model)]
    assert all(isinstance(w, LogQuantizer) and w.bits == 4 and not w.saturate for w in weights)
    acts = [m.quantizer for m in model if isinstance(m, QuantActivation)]
    assert all(isinstance(a, StochasticSign) and a.generator is gen for a in acts)
    assert len({id(a) for a in acts}) == len(acts)  # one module per layer


def test_stochastic_modes_share_generator_and_eval_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    model = mnist_mlp(**SMALL, weight_mode="stochastic", act_mode="stochastic", generator=gen)
    quantizers = [l.weight_quantizer for l in quant_linears(model)]
    quantizers += [m.quantizer for m in model if isinstance(m, QuantActivation)]
    assert all(isinstance(q, StochasticSign) and q.generator is gen for q in quantizers)
    x = torch.rand(8, 784) * 2 - 1
    model.train()
    model(x)  # give BatchNorm running statistics
    assert not torch.equal(model(x), model(x))  # training: dropout + stochastic draws
    model.eval()
    assert torch.equal(model(x), model(x))


def test_full_precision_twin_uses_no_sign():
    model = full_precision_mlp(**SMALL, act_mode="stochastic")
    assert all(isinstance(l.weight_quantizer, Identity) for l in quant_linears(model))
    assert all(isinstance(m.quantizer, HardTanh) for m in model if isinstance(m, QuantActivation))
    assert not any(isinstance(m, (Sign, StochasticSign)) for m in model.modules())
    model.eval()
    x = torch.rand(4, 784) * 2 - 1
    # full precision: the forward equals a plain float MLP on the same parameters
    h = x
    layers = list(model)
    for i, m in enumerate(layers):
        if isinstance(m, QuantLinear):
            h = torch.nn.functional.linear(h, m.weight, m.bias)
        elif isinstance(m, QuantActivation):
            h = torch.clamp(h, -1, 1)
        else:
            h = m(h)
    torch.testing.assert_close(model(x), h)


def test_build_model_kinds_and_validation():
    bnn = build_model({**SMALL, "act_bits": 2})
    assert isinstance(quant_linears(bnn)[0].weight_quantizer, Sign)
    twin = build_model({**SMALL, "kind": "full_precision", "weight_quantizer": "sign"})
    assert isinstance(quant_linears(twin)[0].weight_quantizer, Identity)
    with pytest.raises(ValueError, match="unknown model config keys \\['learning_rate'\\]"):
        build_model({**SMALL, "learning_rate": 0.003})
    with pytest.raises(ValueError, match="kind must be one of"):
        build_model({**SMALL, "kind": "cnn"})
    with pytest.raises(ValueError, match="bits must be an integer in 1..32, got 33"):
        mnist_mlp(**SMALL, weight_bits=33)
    with pytest.raises(ValueError, match="mode must be one of"):
        mnist_mlp(**SMALL, act_mode="random")


def test_input_layer_is_not_binarized():
    """The first layer multiplies the real-valued input (only weights are binary)."""
    model = mnist_mlp(**SMALL).eval()
    x = torch.rand(3, 784) * 2 - 1
    first = quant_linears(model)[0]
    expected = torch.nn.functional.linear(x, torch.where(first.weight >= 0, 1.0, -1.0), first.bias)
    torch.testing.assert_close(model[:2](x), expected)

"""Layers: accumulator semantics, clipping, Glorot LR scales, squared hinge loss."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qnnlib.layers import (BinaryActivation, BinaryLinear, QuantActivation, QuantLinear,
                           SquaredHingeLoss, glorot_lr_scale, squared_hinge_loss)
from qnnlib.quantizers import DoReFaQuantizer, Sign, StochasticSign, sign


def test_binary_linear_forward_equals_f_linear_with_sign_weights():
    torch.manual_seed(0)
    layer = BinaryLinear(20, 7)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, 20)
    expected = F.linear(x, torch.where(layer.weight >= 0, 1.0, -1.0), layer.bias)
    torch.testing.assert_close(layer(x), expected)


def test_init_uniform_in_range_and_zero_bias():
    torch.manual_seed(0)
    layer = QuantLinear(300, 200, init_range=0.5)
    assert layer.weight.abs().max() <= 0.5
    assert layer.weight.abs().max() > 0.45  # spread over the whole range, not default init
    assert torch.equal(layer.bias, torch.zeros(200))
    assert QuantLinear(3, 2, bias=False).bias is None


def test_optimizer_step_moves_accumulators_while_weights_stay_binary():
    torch.manual_seed(0)
    layer = BinaryLinear(16, 8)
    before = layer.weight.detach().clone()
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x, labels = torch.randn(32, 16), torch.randint(0, 8, (32,))
    for _ in range(3):
        optimizer.zero_grad()
        squared_hinge_loss(layer(x), labels).backward()
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
        optimizer.step()
        layer.clip_()
    assert not torch.equal(layer.weight, before)
    assert set(layer.quantized_weight().unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(layer.quantized_weight(), sign(layer.weight))


def test_weight_gradient_is_ste_of_quantized_weight():
    """dL/dW equals the gradient a plain float layer would get at W_b = sign(W)."""
    torch.manual_seed(1)
    layer = BinaryLinear(6, 4)
    x = torch.randn(3, 6)
    layer(x).pow(2).sum().backward()
    wb = sign(layer.weight.detach()).requires_grad_(True)
    F.linear(x, wb, layer.bias.detach()).pow(2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, wb.grad)  # |W| <= 1 so no mask


def test_clip_holds_bounds():
    layer = QuantLinear(10, 10)
    with torch.no_grad():
        layer.weight.mul_(5)
    layer.clip_()
    assert layer.weight.abs().max() <= 1.0
    assert layer.weight.abs().max() == 1.0
    layer.clip_(0.25)
    assert layer.weight.abs().max() <= 0.25


def test_glorot_scales_of_the_paper_mlp():
    """1/sqrt(1.5/(fan_in+fan_out)) = sqrt((fan_in+fan_out)/1.5), by hand:
    sqrt(4880/1.5) = sqrt(3253.33) = 57.038, sqrt(8192/1.5) = 73.901, sqrt(4106/1.5) = 52.320."""
    sizes = [784, 4096, 4096, 4096, 10]
    scales = [glorot_lr_scale(a, b) for a, b in zip(sizes, sizes[1:])]
    assert scales == pytest.approx([57.038, 73.901, 73.901, 52.320], abs=5e-4)


def test_lr_scale_of_a_layer_is_its_glorot_factor():
    """QuantLinear(6, 4): sqrt(10 / 1.5) = sqrt(6.667) = 2.58199; (20, 12): sqrt(32/1.5) = 4.6188."""
    assert QuantLinear(6, 4).lr_scale == pytest.approx(2.58199, abs=1e-5)
    assert BinaryLinear(20, 12).lr_scale == pytest.approx(4.61880, abs=1e-5)


def test_quantizer_specs_in_layers():
    layer = QuantLinear(4, 3, weight_quantizer={"name": "dorefa", "bits": 2})
    assert isinstance(layer.weight_quantizer, DoReFaQuantizer)
    assert len(layer.quantized_weight().unique()) <= 4
    assert isinstance(BinaryLinear(4, 3, stochastic=True).weight_quantizer, StochasticSign)
    assert isinstance(BinaryLinear(4, 3).weight_quantizer, Sign)


def test_binary_activation():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = BinaryActivation()(x)
    assert torch.equal(y, torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))
    unsaturated = BinaryActivation(saturate=False)
    assert unsaturated.quantizer.saturate is False
    stochastic = BinaryActivation(stochastic=True, generator=torch.Generator().manual_seed(0))
    assert set(stochastic(torch.randn(100)).unique().tolist()) <= {-1.0, 1.0}
    x.grad = None
    y = QuantActivation("hard_tanh")(x)
    assert torch.equal(y, torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))  # clamp(x, -1, 1)
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))  # 1 on |x| <= 1


def test_two_bit_layer_equals_float_linear_with_hand_quantized_weights():
    """Levels of 2-bit DoReFa quantization on [-1, 1]: -1, -1/3, 1/3, 1; each weight goes
    to the nearest. The layer must equal float F.linear with those weights, and its
    weight gradient the float gradient at them (STE)."""
    layer = QuantLinear(4, 2, weight_quantizer={"name": "dorefa", "bits": 2})
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-0.9, -0.2, 0.1, 0.5], [0.7, -0.6, 0.0, 1.0]]))
        layer.bias.copy_(torch.tensor([0.25, -0.5]))
    third = 1 / 3
    hand = torch.tensor([[-1.0, -third, third, third], [1.0, -third, third, 1.0]])
    x = torch.tensor([[1.0, 2.0, -1.0, 0.5], [-0.5, 0.0, 3.0, 1.0]])
    reference = hand.clone().requires_grad_(True)
    expected = F.linear(x, reference, layer.bias.detach())
    got = layer(x)
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.grad)


def squared_hinge_reference(scores: np.ndarray, labels: np.ndarray) -> float:
    """Plain loops over batch and classes, following the authors' Theano formula."""
    total = 0.0
    n, c = scores.shape
    for i in range(n):
        for j in range(c):
            target = 1.0 if labels[i] == j else -1.0
            total += max(0.0, 1.0 - target * scores[i, j]) ** 2
    return total / (n * c)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_squared_hinge_loss_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(scale=2.0, size=(17, 10))
    labels = rng.integers(0, 10, size=17)
    expected = squared_hinge_reference(scores, labels)
    got = squared_hinge_loss(torch.from_numpy(scores), torch.from_numpy(labels))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert SquaredHingeLoss()(torch.from_numpy(scores), torch.from_numpy(labels)).item() == pytest.approx(expected)


def test_squared_hinge_loss_is_zero_for_confident_correct_scores():
    labels = torch.tensor([0, 2, 1])
    scores = 3 * (2 * F.one_hot(labels, 3).float() - 1)
    assert squared_hinge_loss(scores, labels).item() == 0.0

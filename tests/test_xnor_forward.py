"""The XNOR-popcount forward of the binary layers (`qnnlib.xnor_forward`, `matmul: xnor`)
against the exact product: float64 (where every sum of ±s terms is exact), rounded once
to float32."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qnnlib.layers import QuantLinear
from qnnlib.models import mnist_mlp
from qnnlib.ordered_linear import ordered_mm
from qnnlib.xnor_forward import xnor_product


def exact(x, w):
    return (x.double() @ w.double().T).float()


def operands(m, k, n, drop, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=generator).sign()
    if drop:
        keep = torch.rand(m, k, generator=generator) >= drop
        x = x * keep / (1 - drop)  # inverted dropout, as F.dropout scales
    w = torch.randn(n, k, generator=generator).sign()
    return x.float(), w


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (1, 65, 3), (7, 64, 5), (96, 100, 10),
                                     (13, 200, 130), (96, 2048, 70)])
@pytest.mark.parametrize("drop", [0.0, 0.3, 0.5, 0.2])
def test_equals_the_exact_product_rounded_once(m, k, n, drop):
    x, w = operands(m, k, n, drop)
    assert torch.equal(xnor_product(x, w), exact(x, w))


def test_without_dropout_it_is_the_ordered_product_bit_for_bit():
    x, w = operands(96, 2048, 130, 0.0, seed=1)
    assert torch.equal(xnor_product(x, w), ordered_mm(x, w.t()))


def test_with_dropout_it_differs_from_the_ordered_sums_so_the_check_can_fail():
    x, w = operands(96, 2048, 130, 0.3, seed=2)
    assert not torch.equal(ordered_mm(x, w.t()), exact(x, w))  # the ordered sums round each step


def test_all_dropped_gives_zeros():
    x, w = torch.zeros(4, 70), operands(1, 70, 9, 0.0)[1]
    assert torch.equal(xnor_product(x, w), torch.zeros(4, 9))


@pytest.mark.parametrize("case", ["pixels", "two magnitudes", "nan", "inf", "real weights",
                                  "zero weight"])
def test_other_operands_are_declined(case):
    x, w = operands(5, 80, 6, 0.3, seed=3)
    if case == "pixels":
        x = torch.rand(5, 80)
    elif case == "two magnitudes":
        x[0, 0] = 0.5
    elif case == "nan":
        x[2, 3] = float("nan")
    elif case == "inf":
        x = x.sign() * float("inf")
    elif case == "real weights":
        w = w * 0.5
    else:
        w[1, 2] = 0.0
    assert xnor_product(x, w) is None


@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_layer_forward_is_exact_and_its_gradients_are_the_ordered_layers(drop):
    """matmul="xnor" changes the forward product only; pixel inputs fall back to the
    ordered sums."""
    x, _ = operands(9, 150, 1, drop, seed=4)
    torch.manual_seed(5)
    xnor, ordered = QuantLinear(150, 20, matmul="xnor"), QuantLinear(150, 20, matmul="ordered")
    with torch.no_grad():
        xnor.bias.uniform_(-1, 1)
    ordered.load_state_dict(xnor.state_dict())
    upstream = torch.randn(9, 20, generator=torch.Generator().manual_seed(6))
    results = {}
    for layer in (xnor, ordered):
        inputs = x.clone().requires_grad_()
        y = layer(inputs)
        results[layer.matmul] = (y, *torch.autograd.grad(y, (inputs, layer.weight), upstream))
    y, grad_x, grad_w = results["xnor"]
    assert torch.equal(y, exact(x, xnor.quantized_weight()) + xnor.bias)
    assert torch.equal(grad_x, results["ordered"][1]) and torch.equal(grad_w, results["ordered"][2])
    pixels = torch.rand(4, 150)
    assert torch.equal(xnor(pixels), ordered(pixels))


def test_eval_mode_model_is_the_ordered_model_bit_for_bit():
    """No dropout at evaluation: every product is of ±1 terms, exact either way."""
    torch.manual_seed(7)
    xnor = mnist_mlp(hidden=256, depth=2, dropout_in=0.0, dropout_hidden=0.3, matmul="xnor")
    ordered = mnist_mlp(hidden=256, depth=2, dropout_in=0.0, dropout_hidden=0.3, matmul="ordered")
    ordered.load_state_dict(xnor.state_dict())
    xnor.eval(), ordered.eval()
    images = torch.rand(33, 784) * 2 - 1
    with torch.no_grad():
        assert torch.equal(xnor(images), ordered(images))


def test_training_step_runs_on_the_xnor_path():
    torch.manual_seed(8)
    model = mnist_mlp(hidden=128, depth=2, dropout_in=0.0, dropout_hidden=0.3, matmul="xnor")
    images, labels = torch.rand(20, 784) * 2 - 1, torch.randint(0, 10, (20,))
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))

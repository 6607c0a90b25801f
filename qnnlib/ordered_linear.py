"""A linear layer whose products sum in a fixed order: the same bits on any x86-64 CPU.

`ordered_linear(x, weight, bias)` is `F.linear` with its three matrix products (forward
x W^T, backward grad W and grad^T x) computed by `qnnlib.kernels.ordered`, where every
sum runs over k in order with each product rounded first. The training step of the
binarized MLP then gives the same bits on every CPU without MKL's slow portable branch
(`qnnlib.numerics`), at the speed of a vector kernel. Chosen per model:
`mnist_mlp(matmul="ordered")` (params.yaml `model.matmul`); "torch" is the default.
`matmul="xnor"` computes the forward product of the binary layers (±1 weights, binarized
inputs) as an XNOR-popcount instead, exact and about six times faster
(`qnnlib.xnor_forward`); the backward products stay ordered.

Why the order is all that matters here: in a BNN one factor of every product is ±1
(binarized weights; binarized activations in the weight gradients of the hidden
layers), so each product is exact and only the sum's order could differ.

CPU tensors only: on a GPU the layer falls back to `F.linear` (CUDA's own products).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from qnnlib.xnor_forward import xnor_product

__all__ = ["MATMULS", "ordered_mm", "ordered_linear", "OrderedLinear"]

MATMULS = ("torch", "ordered", "xnor")


def ordered_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, K) @ b (K, N) for float32 CPU tensors, each sum in the order of k."""
    from qnnlib.ordered_matmul import ordered_matmul_panels, prepare_panels

    a_np = a.detach().contiguous().numpy()
    out = ordered_matmul_panels(a_np, prepare_panels(b.detach().numpy()), b.shape[1])
    return torch.from_numpy(out)


def _ordered_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if weight.shape[0] > x.shape[0]:
        # y^T = W x^T: the same sums, but the big W is read in place and only the small
        # x^T is rearranged into panels
        return ordered_mm(weight, x.t()).t().contiguous()
    return ordered_mm(x, weight.t())


class OrderedLinear(torch.autograd.Function):
    """y = x W^T + b; dL/dx = g W, dL/dW = g^T x, dL/db = sum of g over the batch."""

    @staticmethod
    def forward(ctx, x, weight, bias, xnor=False):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = xnor_product(x, weight) if xnor else None
        if y is None:
            y = _ordered_forward(x, weight)
        return y + bias if bias is not None else y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = ordered_mm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = ordered_mm(grad.t(), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def ordered_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   xnor: bool = False):
    """`F.linear(x, weight, bias)` with ordered sums (CPU float32; elsewhere F.linear).
    `xnor`: the forward product by XNOR-popcount where x and weight allow it."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return F.linear(x, weight, bias)
    if x.ndim != 2 or weight.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"ordered_linear needs x (N, in) and weight (out, in), got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    return OrderedLinear.apply(x, weight, bias, xnor)

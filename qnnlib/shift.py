"""Multiplication-free training: shift-based batch normalization and shift-based AdaMax
(arXiv:1609.07061, sections "Shift-based Batch Normalization" and "Shift-based AdaMax",
the algorithms "Shift based Batch Normalizing Transform" and "Shift based AdaMax";
studied in notebooks/04_round_quantization).

Both replace multiplications and divisions by *shifts*: a product x * y where y is
rounded to a power of two, y -> AP2(y) = sign(y) * 2**round(log2|y|), is a binary
shift of x by round(log2|y|) places (the paper's "x <<>> y"). In floating point we
simulate the shift by multiplying with AP2(y); the values are the same.

Where the paper's pseudo-code is ambiguous, this module chooses, and says so:

Shift-based BN (`ShiftBatchNorm1d`), per feature over the minibatch B of size m:

    mu     = mean_B(x)                              exact (a sum and one shift if m = 2**k)
    C(x)   = x - mu                                 centred input
    var    ~ mean_B( C(x) * AP2(C(x)) )             "apx variance": one factor of C^2 shifted
    x_hat  = C(x) * AP2( 1 / sqrt(var + eps) )      normalize by a shift
    y      = AP2(gamma) * x_hat + beta              scale by a shift, then shift by beta

- The paper's last line reads y = AP2(gamma) <<>> x_hat under the caption "scale and
  shift" without beta; we add beta (as exact BN does): an addition costs no multiply.
- 1/sqrt(var + eps) itself is computed exactly and then rounded (the paper does not say
  how the hardware gets the square root; only the *use* of the result is a shift).
- Backward: AP2 has zero derivative almost everywhere, so gradients pass through each
  AP2 straight-through (d AP2(y) / dy := 1), i.e. autograd differentiates the same
  graph as exact BN evaluated at the approximated values. The paper does not specify
  the backward pass of its approximations.
- Eval mode uses running statistics, updated like `nn.BatchNorm1d`'s (momentum, the
  unbiased m/(m-1) correction of the *approximate* batch variance), and applies the
  same AP2 normalization and AP2(gamma) scale, so train and eval see the same kind of
  arithmetic.

Error bound: AP2(y) / y lies in [2**-0.5, 2**0.5] (rounding in the log domain). So the
approximate variance is within a factor sqrt(2) of the exact one, AP2(1/sqrt(var+eps))
within 2**0.25 * 2**0.5 = 2**0.75 of the exact 1/sqrt(var + eps), and y - beta within
2**1.25 of exact BN's (2**0.75 when gamma is a power of two). When every |C(x)|, and
sqrt(var + eps), and gamma are powers of two, the output equals exact BN's.

Shift-based AdaMax (`ShiftAdaMax`), per parameter with gradient g_t at step t:

    m_t     = beta1 * m_{t-1} + (1 - beta1) * g_t
    v_t     = max(beta2 * v_{t-1}, |g_t|)
    theta_t = theta_{t-1} - AP2(lr / (1 - beta1**t)) * m_t * AP2(1 / v_t)

- The paper writes the step as (alpha <<>> (1 - beta1)) * m_hat <<>> v_t^-1, with
  m_hat undefined. We read (1 - beta1) as AdaMax's bias correction (1 - beta1**t) and
  m_hat as m_t: with that reading the algorithm is exactly AdaMax (Kingma & Ba 2015,
  Alg. 2) with its two per-parameter multiplications (by the step size and by 1/v_t)
  made shifts. Our AP2 rounds the whole scalar step lr / (1 - beta1**t), so a
  per-layer learning-rate scale that is not a power of two is rounded as well.
- With the paper's defaults beta1 = 1 - 2**-3, beta2 = 1 - 2**-10 the moment updates
  are themselves shift-and-subtract operations (beta * m = m - (m >> k)), exact in the
  fixed-point arithmetic the paper has in mind; we compute them in floating point.
- 1 / v_t uses v_t + eps (eps = 1e-8) so that a parameter that never saw a gradient
  (m = v = 0) does not produce 0 * inf.

Training with these: `train_with_optimizer(model, splits, optimizer_factory, config)`
is `training.train` with the optimizer injected, so the protocol (shuffling, LR decay,
Glorot scaling, clipping, best-validation selection, checkpoints) is the same.
`training_optimizer(factory)` injects it into every `training.train` call of a block,
e.g. into `experiments.run_grid` through its `context` argument.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from . import training
from .quantizers import sign

__all__ = ["ap2", "ste_ap2", "ShiftBatchNorm1d", "shift_batchnorm", "ShiftAdaMax",
           "optimizer_groups", "make_shift_adamax", "make_adamax", "make_adam", "train_with_optimizer",
           "training_optimizer"]

PAPER_BETAS = (1 - 2.0 ** -3, 1 - 2.0 ** -10)
# The paper's Adam with Glorot groups, bound at import: `training_optimizer` swaps the
# name `training.make_optimizer`, and the factories below must not call the swapped one.
_paper_adam = training.make_optimizer


def ap2(x: torch.Tensor) -> torch.Tensor:
    """Approximate power of two, AP2(x) = sign(x) * 2**round(log2|x|) (arXiv:1609.07061,
    sections "Shift-based Batch Normalization" and "Quantized neural networks - more than
    1 bit", LogQuant; notebook 04).

    Rounding happens in the log domain (half-to-even at exact ties), so the switch from
    2**k to 2**(k+1) is at 2**(k + 1/2) = sqrt(2) * 2**k, not at the arithmetic midpoint
    1.5 * 2**k; hence AP2(x) / x lies in [2**-0.5, 2**0.5]. AP2(0) = 0. Unlike
    `quantizers.quantize_log` (a k-bit code on [-1, 1]), the exponent is unbounded:
    quantize_log(x, bits) equals ap2(x) wherever the exponent falls in its range.
    Shares `quantizers.sign` (sign(0) = +1; irrelevant here since the magnitude is 0).
    """
    magnitude = torch.pow(2.0, torch.round(torch.log2(x.abs()))).to(x.dtype)
    return sign(x) * magnitude


def _ap2_scalar(value: float) -> float:
    """`ap2` of a python number (round() is half-to-even, like torch.round)."""
    if value == 0:
        return 0.0
    return math.copysign(2.0 ** round(math.log2(abs(value))), value)


def ste_ap2(x: torch.Tensor) -> torch.Tensor:
    """`ap2` forward, identity (straight-through) backward: x + (AP2(x) - x).detach()."""
    return x + (ap2(x) - x).detach()


class ShiftBatchNorm1d(nn.BatchNorm1d):
    """Shift-based batch normalization (arXiv:1609.07061, section "Shift-based Batch
    Normalization", algorithm "Shift based Batch Normalizing Transform"; notebook 04). Drop-in for `nn.BatchNorm1d`
    (same parameters, buffers and state dict), inputs (N, C) or (N, C, L).

    Forward (training): mu = mean(x); c = x - mu; var = mean(c * AP2(c));
    y = AP2(gamma) * c * AP2(1 / sqrt(var + eps)) + beta. Eval: the same with the
    running mean / variance. Gradient: straight-through each AP2 (see module docstring
    for the approximations and where the paper is ambiguous).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        dims = [0] if x.dim() == 2 else [0, 2]
        shape = [1, -1] + [1] * (x.dim() - 2)
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            mean = x.mean(dim=dims)
            centred = x - mean.reshape(shape)
            var = (centred * ste_ap2(centred)).mean(dim=dims)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, x.numel() // x.shape[1])
        else:
            mean, var = self.running_mean, self.running_var
            centred = x - mean.reshape(shape)
        inv_std = ste_ap2(torch.rsqrt(var + self.eps))
        out = centred * inv_std.reshape(shape)
        if self.affine:
            out = out * ste_ap2(self.weight).reshape(shape) + self.bias.reshape(shape)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        """As nn.BatchNorm1d: exponential average (cumulative when momentum is None),
        the variance corrected by m / (m - 1)."""
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var.detach() * count / max(count - 1, 1)
        self.running_mean.lerp_(mean.detach(), momentum)
        self.running_var.lerp_(unbiased, momentum)


def shift_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every `nn.BatchNorm1d` in `model` by a `ShiftBatchNorm1d` with the same
    settings, parameters and running statistics (in place; returns `model`).
    Notebook 04's ablation of arXiv:1609.07061 "Shift-based Batch Normalization"."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm1d) and not isinstance(child, ShiftBatchNorm1d):
            shifted = ShiftBatchNorm1d(child.num_features, eps=child.eps, momentum=child.momentum,
                                       affine=child.affine,
                                       track_running_stats=child.track_running_stats)
            shifted.load_state_dict(child.state_dict())
            tensors = list(child.parameters()) + list(child.buffers())
            if tensors:
                shifted.to(tensors[0].device)
            shifted.train(child.training)
            setattr(model, name, shifted)
        else:
            shift_batchnorm(child)
    return model


class ShiftAdaMax(torch.optim.Optimizer):
    """Shift-based AdaMax (arXiv:1609.07061, section "Shift-based AdaMax", algorithm
    "Shift based AdaMax"; notebook 04).

    m = beta1 * m + (1 - beta1) * g;  v = max(beta2 * v, |g|);
    theta -= AP2(lr / (1 - beta1**t)) * m * AP2(1 / (v + eps)).

    Defaults are the paper's: lr = 2**-10, betas = (1 - 2**-3, 1 - 2**-10). Param groups
    may carry an `lr_scale` entry (as `training.make_optimizer`'s do) so that
    `training.set_base_lr` keeps each group's Glorot scaling when the LR decays.
    """

    def __init__(self, params, lr: float = 2.0 ** -10, betas=PAPER_BETAS,
                 eps: float = 1e-8):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, lr_scale=1.0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_inf"] = torch.zeros_like(p)
                state["step"] += 1
                shift = _ap2_scalar(group["lr"] / (1 - group["betas"][0] ** state["step"]))
                self._update(p, state["exp_avg"], state["exp_inf"], group, shift)
        return loss

    def _update(self, p, m, v, group, shift: float) -> None:
        """One parameter's m, v and value, in place; `shift` is the AP2-rounded step size
        (`qnnlib.fused_shift_adamax` overrides this with a one-pass kernel)."""
        beta1, beta2 = group["betas"]
        m.lerp_(p.grad, 1 - beta1)
        torch.maximum(v.mul_(beta2), p.grad.abs(), out=v)
        p.sub_(m * ap2(torch.reciprocal(v + group["eps"])) * shift)


def optimizer_groups(model: nn.Module, lr: float, glorot_scaling: bool = True) -> list[dict]:
    """The param groups of `training.make_optimizer` (one per QuantLinear weight with its
    Glorot `lr_scale`, one for the rest), for building any optimizer with them."""
    adam = _paper_adam(model, lr, glorot_scaling)
    return [{"params": g["params"], "lr": g["lr"], "lr_scale": g["lr_scale"]} for g in adam.param_groups]


def make_shift_adamax(model: nn.Module, lr: float, glorot_scaling: bool = True) -> ShiftAdaMax:
    """`ShiftAdaMax` with `training.make_optimizer`'s Glorot-scaled groups: an
    `optimizer_factory` for `train_with_optimizer`."""
    return ShiftAdaMax(optimizer_groups(model, lr, glorot_scaling), lr=lr)


def make_adamax(model: nn.Module, lr: float, glorot_scaling: bool = True) -> torch.optim.Adamax:
    """Exact AdaMax (`torch.optim.Adamax`) with the paper's betas and the same groups as
    `make_shift_adamax`: the control that isolates the cost of the AP2 rounding."""
    return torch.optim.Adamax(optimizer_groups(model, lr, glorot_scaling), lr=lr, betas=PAPER_BETAS)


def make_adam(model: nn.Module, lr: float, glorot_scaling: bool = True) -> torch.optim.Adam:
    """The paper's Adam (`training.make_optimizer`), as an `optimizer_factory`."""
    return _paper_adam(model, lr, glorot_scaling)


def train_with_optimizer(model: nn.Module, splits: dict, optimizer_factory,
                         config: training.TrainConfig | dict | None = None) -> training.TrainResult:
    """`training.train(model, splits, config, optimizer_factory=optimizer_factory)`
    (notebook 04's shift ablation): the one training loop, with the optimizer injected.

    `optimizer_factory(model, lr, glorot_scaling)` builds the optimizer; its groups must
    hold `lr_scale` (see `optimizer_groups`). With `make_adam` it is `training.train`.
    """
    return training.train(model, splits, config, optimizer_factory=optimizer_factory)


@contextmanager
def training_optimizer(optimizer_factory):
    """Within the block, `training.train` builds its optimizer with `optimizer_factory`
    (e.g. `make_shift_adamax`) wherever it is not given one, instead of the paper's Adam.

    This is how notebook 04 trains its shift-AdaMax runs through `experiments.run_grid`
    (pass `context=lambda config, seed, model: training_optimizer(...)`), which calls
    `training.train` without an optimizer argument. It rebinds `training.make_optimizer`
    for the block, in this process only (run_grid's workers are separate processes).
    CPU training only: `graphed_training.train_graphed` passes its fused Adam
    explicitly, so the rebound name would not be used.
    """
    original = training.make_optimizer
    training.make_optimizer = optimizer_factory
    try:
        yield optimizer_factory
    finally:
        training.make_optimizer = original

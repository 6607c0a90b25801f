"""The fused shift-based AdaMax (`qnnlib.fused_shift_adamax`) against an elementwise NumPy
float32 reference with AP2 taken exactly from frexp, against the per-op `ShiftAdaMax`, and
at the AP2 boundary itself."""
import math

import numpy as np
import pytest
import torch

from qnnlib.fused_shift_adamax import FusedShiftAdaMax, make_fused_shift_adamax
from qnnlib.models import mnist_mlp
from qnnlib.shift import PAPER_BETAS, ShiftAdaMax, make_shift_adamax

F32 = np.float32
SHAPES = [(1,), (5, 3), (2047,), (2049,), (64, 65), (4100,)]  # around and across the kernel's blocks


def exact_ap2(x: np.ndarray) -> np.ndarray:
    """2**round(log2 x) for positive float32 x: up when the significand is >= sqrt(2),
    decided in float64 (no float32 lies between float64 sqrt(0.5) and the true value)."""
    fraction, exponent = np.frexp(x.astype(np.float64))  # fraction in [0.5, 1)
    return np.ldexp(1.0, exponent - 1 + (fraction >= math.sqrt(0.5))).astype(F32)


def exact_ap2_scalar(value: float) -> float:
    fraction, exponent = math.frexp(value)
    return math.ldexp(1.0, exponent - 1 + (fraction >= math.sqrt(0.5)))


def random_gradients(shapes, steps, seed=0):
    """Gradients of mixed magnitudes (1e-6 to 10) with some exact zeros, per step."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        grads = []
        for shape in shapes:
            g = rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 2, size=shape)
            g[rng.random(shape) < 0.05] = 0.0
            grads.append(g.astype(F32))
        yield grads


def reference(params, gradient_steps, lr, betas, eps):
    """The algorithm of `qnnlib.shift` in NumPy float32, one operation at a time."""
    beta1, beta2 = betas
    p = [x.copy() for x in params]
    m, v = [np.zeros_like(x) for x in params], [np.zeros_like(x) for x in params]
    for t, grads in enumerate(gradient_steps, start=1):
        step = F32(exact_ap2_scalar(lr / (1 - beta1 ** t)))
        for i, g in enumerate(grads):
            m[i] = m[i] + F32(1 - beta1) * (g - m[i])
            v[i] = np.maximum(F32(beta2) * v[i], np.abs(g))
            p[i] = p[i] - (m[i] * exact_ap2(F32(1) / (v[i] + F32(eps)))) * step
    return p, m, v


def run(optimizer_class, params, gradient_steps, lr, **options):
    tensors = [torch.tensor(x, requires_grad=True) for x in params]
    optimizer = optimizer_class([{"params": tensors, "lr": lr, "lr_scale": 1.0}], lr=lr, **options)
    for grads in gradient_steps:
        for tensor, g in zip(tensors, grads):
            tensor.grad = torch.from_numpy(g.copy())
        optimizer.step()
    states = [optimizer.state[t] for t in tensors]
    return ([t.detach().numpy() for t in tensors], [s["exp_avg"].numpy() for s in states],
            [s["exp_inf"].numpy() for s in states])


@pytest.mark.parametrize("lr, betas", [(3e-3, PAPER_BETAS), (2.0 ** -10, (0.9, 0.999))])
def test_fused_step_equals_the_float32_reference_bit_for_bit(lr, betas):
    params = [np.random.default_rng(7).standard_normal(shape).astype(F32) for shape in SHAPES]
    gradient_steps = list(random_gradients(SHAPES, steps=6))
    got = run(FusedShiftAdaMax, params, gradient_steps, lr, betas=betas)
    expected = reference(params, gradient_steps, lr, betas, eps=1e-8)
    for got_tensors, expected_tensors in zip(got, expected):  # parameters, m, v
        for a, b in zip(got_tensors, expected_tensors):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(got[0][-1], params[-1])  # it did move the parameters


def test_fused_and_per_op_agree_except_where_the_per_op_log2_misses_the_boundary():
    shapes = [(4_000_000,)]
    params = [np.zeros(shapes[0], F32)]
    gradient_steps = list(random_gradients(shapes, steps=1, seed=5))
    fused = run(FusedShiftAdaMax, params, gradient_steps, 3e-3, betas=PAPER_BETAS)
    per_op = run(ShiftAdaMax, params, gradient_steps, 3e-3, betas=PAPER_BETAS)
    np.testing.assert_array_equal(fused[1][0], per_op[1][0])  # m: the same lerp formula
    np.testing.assert_array_equal(fused[2][0], per_op[2][0])  # v
    differ = np.flatnonzero(fused[0][0] != per_op[0][0])
    assert len(differ) <= 40  # of 4e6 elements
    # each one is an AP2 a power of two apart, at a reciprocal next to sqrt(2) * 2**k
    ratio = fused[0][0][differ] / per_op[0][0][differ]
    assert set(ratio.tolist()) <= {0.5, 2.0}
    reciprocal = (F32(1) / (fused[2][0][differ] + F32(1e-8))).view(np.int32) & 0x7FFFFF
    assert np.all(np.abs(reciprocal - 0x3504F4) <= 8)


@pytest.mark.parametrize("fraction_bits, rounded", [(0x3504F3, 1.0), (0x3504F4, 2.0)])
def test_ap2_switches_exactly_at_the_first_float32_above_sqrt2(fraction_bits, rounded):
    target = np.array([0x3F800000 | fraction_bits], dtype=np.int32).view(F32)  # 1.f in [1, 2)
    gradient = F32(1) / target  # one step from zero state, eps 0: v = |g|, 1 / v is the target
    while F32(1) / gradient != target[0]:
        gradient = np.nextafter(gradient, F32(1) if F32(1) / gradient > target[0] else F32(0))
    p, m, _ = run(FusedShiftAdaMax, [np.zeros(1, F32)], [[gradient]], 2.0 ** -3, eps=0.0,
                  betas=(0.5, 0.5))
    step = 2.0 ** -3 / (1 - 0.5)  # a power of two: the step itself is not rounded
    assert -p[0][0] / (m[0][0] * step) == rounded


def test_refuses_tensors_it_cannot_fuse_and_names_them():
    double = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    double.grad = torch.ones(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="float32 CPU.*parameter is torch.float64"):
        FusedShiftAdaMax([double]).step()
    weight = torch.zeros(5, 3, requires_grad=True)
    weight.grad = torch.ones(3, 5).t()  # the right shape, not contiguous
    with pytest.raises(TypeError, match="gradient is torch.float32 on cpu, contiguous=False"):
        FusedShiftAdaMax([weight]).step()


def test_factory_builds_the_per_op_optimizers_groups_and_the_papers_betas():
    model = mnist_mlp(hidden=32, depth=2)
    fused, per_op = make_fused_shift_adamax(model, 1e-2), make_shift_adamax(model, 1e-2)
    assert [g["lr_scale"] for g in fused.param_groups] == [g["lr_scale"] for g in per_op.param_groups]
    assert [g["lr"] for g in fused.param_groups] == [g["lr"] for g in per_op.param_groups]
    assert all(g["betas"] == PAPER_BETAS for g in fused.param_groups)
    assert len({g["lr_scale"] for g in fused.param_groups}) > 1  # Glorot scales, not one lr

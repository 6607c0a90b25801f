"""Quantizers against plain float PyTorch / math references."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qnnlib import quantizers as q


def grad_of(fn, x):
    """d(sum(fn(x)))/dx via autograd: the per-element backward mask of fn."""
    x = x.clone().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad


def test_sign_exact_values_and_zero_is_plus_one():
    x = torch.tensor([-2.0, -1.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 3.0])
    expected = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert torch.equal(q.sign(x), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_sign_keeps_dtype(dtype):
    assert q.sign(torch.zeros(3, dtype=dtype)).dtype == dtype


def test_hard_sigmoid_and_hard_tanh_match_torch():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    torch.testing.assert_close(q.hard_tanh(x), torch.nn.functional.hardtanh(x))
    torch.testing.assert_close(q.hard_sigmoid(x), (torch.nn.functional.hardtanh(x) + 1) / 2)


BOUNDARY_INPUTS = torch.tensor([-3.0, -1.0001, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 3.0])
INSIDE = (BOUNDARY_INPUTS.abs() <= 1).float()  # boundary |x| = 1 included


@pytest.mark.parametrize("ste", [
    q.ste_sign,
    lambda x, saturate: q.ste_stochastic_sign(x, torch.Generator().manual_seed(0), saturate),
    lambda x, saturate: q.ste_linear_quant(x, 3, saturate),
    lambda x, saturate: q.ste_quantize_dorefa(x, 3, saturate),
    lambda x, saturate: q.ste_quantize_log(x, 3, saturate),
])
def test_ste_gradient_masks(ste):
    saturated = grad_of(lambda t: ste(t, saturate=True), BOUNDARY_INPUTS)
    unsaturated = grad_of(lambda t: ste(t, saturate=False), BOUNDARY_INPUTS)
    assert torch.equal(saturated, INSIDE)
    assert torch.equal(unsaturated, torch.ones_like(BOUNDARY_INPUTS))


def test_ste_passes_upstream_gradient_through():
    x = torch.tensor([-2.0, -0.3, 0.7, 2.0], requires_grad=True)
    upstream = torch.tensor([5.0, -7.0, 11.0, 13.0])
    q.ste_sign(x).backward(upstream)
    assert torch.equal(x.grad, upstream * torch.tensor([0.0, 1.0, 1.0, 0.0]))


def test_module_gradients_follow_saturate_flag():
    for module in [q.Sign(), q.LinearQuant(2), q.DoReFaQuantizer(2), q.LogQuantizer(2), q.StochasticSign()]:
        assert torch.equal(grad_of(module, BOUNDARY_INPUTS), INSIDE)
    assert torch.equal(grad_of(q.Sign(saturate=False), BOUNDARY_INPUTS), torch.ones(9))
    # full precision: true gradients (identity; hard_tanh's own derivative)
    assert torch.equal(grad_of(q.Identity(), BOUNDARY_INPUTS), torch.ones(9))
    assert torch.equal(q.Identity()(BOUNDARY_INPUTS), BOUNDARY_INPUTS)
    assert torch.equal(grad_of(q.HardTanh(), BOUNDARY_INPUTS), INSIDE)
    assert torch.equal(q.HardTanh()(BOUNDARY_INPUTS), BOUNDARY_INPUTS.clamp(-1, 1))


def test_stochastic_sign_is_unbiased_for_hard_tanh():
    x = torch.linspace(-1.5, 1.5, 31)
    draws = 20_000
    gen = torch.Generator().manual_seed(1234)
    samples = q.stochastic_sign(x.expand(draws, -1).contiguous(), generator=gen)
    assert set(samples.unique().tolist()) <= {-1.0, 1.0}
    mean = samples.mean(0)
    p = q.hard_sigmoid(x)
    # each draw is +-1, so std of the mean is 2 * sqrt(p(1-p)/n); allow 5 sigma
    # (plus a tiny floor so p = 0 or 1 demands exactness up to float error)
    tolerance = 5 * 2 * torch.sqrt(p * (1 - p) / draws) + 1e-6
    assert torch.all((mean - q.hard_tanh(x)).abs() <= tolerance)


def test_stochastic_sign_reproducible_with_generator():
    x = torch.randn(1000)
    a = q.stochastic_sign(x, generator=torch.Generator().manual_seed(7))
    b = q.stochastic_sign(x, generator=torch.Generator().manual_seed(7))
    c = q.stochastic_sign(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_stochastic_sign_draws_on_the_generators_device(monkeypatch):
    """Regression (issue 9.1): a CPU generator with a CUDA tensor crashed, because torch
    refuses a generator of another device. Emulate that rule on CPU: x on the meta
    device, a CPU generator, and a torch.rand that refuses mismatched devices."""
    real_rand = torch.rand

    def strict_rand(*args, generator=None, device=None, **kwargs):
        if generator is not None and torch.device(device or "cpu") != generator.device:
            raise RuntimeError(f"generator on {generator.device}, draw on {device}")
        return real_rand(*args, generator=generator, device=device, **kwargs)

    monkeypatch.setattr(torch, "rand", strict_rand)
    x = torch.zeros(4, 5, device="meta")
    y = q.stochastic_sign(x, generator=torch.Generator().manual_seed(0))
    assert y.device == x.device and y.shape == x.shape
    assert q.uniform_like(x).device == x.device  # global RNG: drawn where x lives


def test_uniform_like_gives_the_generators_stream_unchanged():
    """The draws are exactly torch.rand's stream of the seeded generator (CPU draws of
    earlier runs unchanged), in x's floating dtype (the default dtype for integer x)."""
    x = torch.zeros(3, 7, dtype=torch.float64)
    expected = torch.rand(3, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(q.uniform_like(x, torch.Generator().manual_seed(5)), expected)
    assert q.uniform_like(torch.zeros(2, dtype=torch.long)).dtype == torch.get_default_dtype()


@pytest.mark.gpu
def test_stochastic_sign_on_cuda_with_a_cpu_generator_matches_the_cpu_run():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.randn(64, 33)
    on_cpu = q.stochastic_sign(x, torch.Generator().manual_seed(11))
    on_gpu = q.stochastic_sign(x.cuda(), torch.Generator().manual_seed(11))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), on_cpu)  # the same run on either device
    cuda_gen = torch.Generator("cuda").manual_seed(11)
    again = q.StochasticSign(torch.Generator("cuda").manual_seed(11))(x.cuda())
    assert torch.equal(q.stochastic_sign(x.cuda(), cuda_gen), again)  # reproducible on GPU


def test_stochastic_sign_module_is_deterministic_in_eval():
    module = q.StochasticSign(torch.Generator().manual_seed(0))
    x = torch.randn(500) * 0.3
    assert not torch.equal(module(x), module(x))  # training: fresh draws
    module.eval()
    assert torch.equal(module(x), q.sign(x))


def test_linear_quant_hand_computed_levels():
    """The paper's LinearQuant with k-bit two's complement: Delta = 2**(1-k), levels
    m * Delta for m in [-2**(k-1), 2**(k-1) - 1], by hand for k = 2 and 3."""
    x = torch.linspace(-1.5, 1.5, 30001)
    assert q.linear_quant(x, 2).unique().tolist() == [-1.0, -0.5, 0.0, 0.5]
    assert q.linear_quant(x, 3).unique().tolist() == [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75]
    assert q.linear_quant_grid(2) == (0.5, -1.0, 0.5)
    assert q.linear_quant_grid(4) == (0.125, -1.0, 0.875)
    # nearest level, ties half up, clipped to [minV, maxV]
    inputs = torch.tensor([-3.0, -0.8, -0.74, -0.26, -0.25, 0.0, 0.1, 0.25, 0.3, 0.9, 7.0])
    expected = torch.tensor([-1.0, -1.0, -0.5, -0.5, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    assert torch.equal(q.linear_quant(inputs, 2), expected)


@pytest.mark.parametrize("bits", range(2, 9))
def test_linear_quant_matches_float_integer_reference(bits):
    """Against an independent float64 computation: the nearest of the explicit integer
    grid m / 2**(k-1) (torch.round away from ties), and a step-size error bound."""
    x = torch.rand(5000, dtype=torch.float64, generator=torch.Generator().manual_seed(bits)) * 2.4 - 1.2
    half = 2 ** (bits - 1)
    integers = torch.clamp(torch.round(x * half), -half, half - 1)
    torch.testing.assert_close(q.linear_quant(x, bits), integers / half, rtol=0, atol=0)
    inside = (x >= -1) & (x <= 1 - 1 / half)
    assert (q.linear_quant(x, bits) - x)[inside].abs().max() <= 0.5 / half + 1e-12
    assert q.linear_quant(torch.zeros(3), bits).eq(0).all()  # the grid contains 0


def test_linear_quant_one_bit_is_sign_and_grid_needs_two_bits():
    x = torch.cat([torch.randn(1000), torch.tensor([0.0, -0.0, 1.0, -1.0])])
    assert torch.equal(q.linear_quant(x, 1), q.sign(x))
    assert torch.equal(q.LinearQuant(1)(x), q.sign(x))
    with pytest.raises(ValueError, match="needs bits >= 2 \\(1 bit is sign\\), got 1"):
        q.linear_quant_grid(1)


def test_linear_quant_module_gradient_is_float_gradient_at_quantized_values():
    """LinearQuant's STE: the gradient of sum(w * LinearQuant(x)) is w inside |x| <= 1."""
    x = torch.tensor([-1.3, -0.6, 0.2, 0.9, 1.1], requires_grad=True)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (w * q.LinearQuant(2)(x)).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 3.0, 4.0, 0.0]))


@pytest.mark.parametrize("bits", range(1, 9))
def test_quantize_dorefa_levels_and_error(bits):
    x = torch.linspace(-1, 1, 20001, dtype=torch.float64)
    y = q.quantize_dorefa(x, bits)
    step = 2 / (2**bits - 1)
    expected_levels = torch.tensor([-1 + k * step for k in range(2**bits)], dtype=torch.float64)
    torch.testing.assert_close(y.unique(), expected_levels)
    assert (y - x).abs().max() <= step / 2 + 1e-12
    # outside [-1, 1] inputs are clipped first
    assert torch.equal(q.quantize_dorefa(torch.tensor([-5.0, 5.0]), bits), torch.tensor([-1.0, 1.0]))


def test_quantize_dorefa_one_bit_is_sign():
    x = torch.cat([torch.randn(1000), torch.tensor([0.0, -0.0, 1.0, -1.0])])
    assert torch.equal(q.quantize_dorefa(x, 1), q.sign(x))


def test_bits_must_be_positive_integer():
    with pytest.raises(ValueError, match="bits must be a positive integer, got 0"):
        q.linear_quant(torch.zeros(1), 0)
    with pytest.raises(ValueError, match="bits must be a positive integer, got 1.5"):
        q.LogQuantizer(1.5)


def ap2_reference(value: float, bits: int) -> float:
    """Independent scalar AP2 with the documented clipping, via the math module."""
    min_exponent = -(2 ** (bits - 1) - 1)
    if value == 0:
        return 2.0 ** min_exponent
    exponent = min(0, max(min_exponent, round(math.log2(abs(value)))))
    return math.copysign(2.0 ** exponent, value)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5])
def test_quantize_log_powers_of_two_in_range(bits):
    x = torch.cat([torch.randn(2000, dtype=torch.float64) * 2, torch.tensor([0.0], dtype=torch.float64)])
    y = q.quantize_log(x, bits)
    exponents = torch.log2(y.abs())
    assert torch.equal(exponents, exponents.round())  # exact powers of two
    assert exponents.min() >= -(2 ** (bits - 1) - 1) and exponents.max() <= 0
    assert len(exponents.unique()) <= 2 ** (bits - 1)
    assert torch.equal(torch.sign(y[x != 0]), torch.sign(x[x != 0]))
    expected = torch.tensor([ap2_reference(v, bits) for v in x.tolist()], dtype=torch.float64)
    assert torch.equal(y, expected)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1, max_value=1, allow_nan=False).filter(lambda v: abs(v) > 2**-6))
def test_quantize_log_matches_ap2_inside_range(value):
    # 4 bits: exponents 0..-7, so |x| >= 2**-6 never clips; AP2 = sign * 2**round(log2|x|)
    expected = math.copysign(2.0 ** round(math.log2(abs(value))), value)
    assert q.quantize_log(torch.tensor([value], dtype=torch.float64), 4).item() == expected


def test_quantize_log_one_bit_is_sign():
    x = torch.cat([torch.randn(1000), torch.tensor([0.0])])
    assert torch.equal(q.quantize_log(x, 1), q.sign(x))


KBIT = ("linear_quant", "dorefa", "linear", "log")


def test_get_quantizer_by_name_dict_module_and_unknown():
    assert isinstance(q.get_quantizer("sign"), q.Sign)
    linear = q.get_quantizer({"name": "linear_quant", "bits": 3, "saturate": False})
    assert type(linear) is q.LinearQuant and linear.bits == 3 and linear.saturate is False
    # "linear" is the former name of the DoReFa grid (kept for old configs)
    assert type(q.get_quantizer({"name": "linear", "bits": 2})) is q.DoReFaQuantizer
    assert q.LinearQuantizer is q.DoReFaQuantizer
    module = q.LogQuantizer(4)
    assert q.get_quantizer(module) is module
    for name, cls in q.QUANTIZERS.items():
        assert isinstance(q.get_quantizer({"name": name, "bits": 2} if name in KBIT else name), cls)
    with pytest.raises(ValueError, match="stochastic_sign"):  # message lists valid names
        q.get_quantizer("ternary")
    with pytest.raises(TypeError, match="got int"):
        q.get_quantizer(3)


def test_every_registered_quantizer_computes_its_documented_forward():
    """Each name builds a module whose forward is the math of its docstring (one bit
    where bits apply, eval mode so the stochastic one is deterministic), and every
    quantizer module the package exports is reachable by some name."""
    x = torch.tensor([-3.0, -1.0, -0.4, 0.0, 0.3, 1.0, 2.5])
    binary = torch.where(x >= 0, 1.0, -1.0)
    expected = {"sign": binary, "stochastic_sign": binary, "linear_quant": binary, "dorefa": binary,
                "linear": binary, "log": binary, "identity": x, "hard_tanh": torch.clamp(x, -1, 1)}
    assert set(q.QUANTIZERS) == set(expected)
    for name in q.QUANTIZERS:
        spec = {"name": name, "bits": 1} if name in KBIT else name
        assert torch.equal(q.get_quantizer(spec).eval()(x), expected[name]), name
    exported = [getattr(q, n) for n in q.__all__]
    modules = {c for c in exported if isinstance(c, type) and issubclass(c, torch.nn.Module)}
    assert modules == set(q.QUANTIZERS.values())


def test_hard_tanh_module_unsaturated_is_clipped_forward_identity_backward():
    module = q.HardTanh(saturate=False)
    assert torch.equal(module(BOUNDARY_INPUTS), BOUNDARY_INPUTS.clamp(-1, 1))
    assert torch.equal(grad_of(module, BOUNDARY_INPUTS), torch.ones(9))
    assert torch.equal(grad_of(q.Identity(saturate=True), BOUNDARY_INPUTS), INSIDE)

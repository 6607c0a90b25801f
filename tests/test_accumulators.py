"""Reduced-precision weight accumulators (qnnlib.accumulators, notebook 02)."""
import numpy as np
import pytest
import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from qnnlib.accumulators import (AccumulatorFormat, low_precision_accumulators,
                                 round_to_format)
from qnnlib.layers import BinaryLinear
from qnnlib.models import mnist_mlp


def _values(n=20_000, seed=0):
    """Weights in [-1, 1] with many tiny ones, plus exact ties and edge values."""
    g = torch.Generator().manual_seed(seed)
    uniform = torch.rand(n, generator=g) * 2 - 1
    tiny = (torch.rand(n, generator=g) * 2 - 1) * 1e-3
    edges = torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5, 2.0 ** -9 * 3, 1 - 2.0 ** -30, 1e-8, -1e-8])
    return torch.cat([uniform, tiny, edges]).float()


# -- independent NumPy references ------------------------------------------------

def np_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 -> float32, round to nearest even, by integer bit arithmetic."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def np_fixed(x: np.ndarray, k: int) -> np.ndarray:
    return np.clip(np.round(x.astype(np.float64) * 2**k) / 2**k, -1, 1).astype(np.float32)


# -- formats ----------------------------------------------------------------------

def test_parse_names_bits_and_storage():
    assert AccumulatorFormat.parse("float32") == AccumulatorFormat("float32", "float", 24)
    assert AccumulatorFormat.parse("bfloat16").bits == 8
    assert AccumulatorFormat.parse("float16").bits == 11
    assert AccumulatorFormat.parse("fixed8") == AccumulatorFormat("fixed8", "fixed", 8)
    assert AccumulatorFormat.parse("fixed8").storage_bits == 10
    assert AccumulatorFormat.parse("float16").storage_bits == 16
    fmt = AccumulatorFormat.parse("fixed4")
    assert AccumulatorFormat.parse(fmt) is fmt
    for bad in ("float8", "fixed", "fixed-3", "int8"):
        with pytest.raises(ValueError, match=f"unknown accumulator format '{bad}'"):
            AccumulatorFormat.parse(bad)


def test_float32_is_identity():
    x = _values()
    assert torch.equal(round_to_format(x, "float32"), x)


def test_bfloat16_matches_numpy_bit_reference():
    x = _values()
    np.testing.assert_array_equal(round_to_format(x, "bfloat16").numpy(), np_bfloat16(x.numpy()))


def test_float16_matches_numpy_cast():
    x = _values()
    expected = x.numpy().astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(round_to_format(x, "float16").numpy(), expected)


@pytest.mark.parametrize("name, p", [("float16", 11), ("bfloat16", 8)])
def test_float_ties_round_to_even_on_the_grid_spacing(name, p):
    """Hand-computed from the format: on [1, 2) values are 1 + j * 2**(1-p). Halfway
    points go to the even j; float16 is subnormal below 2**-14 with spacing 2**-24."""
    ulp = 2.0 ** (1 - p)
    x = torch.tensor([1 + ulp / 2, 1 + 3 * ulp / 2, 1 + 0.4 * ulp, 1 + 0.6 * ulp, -(1 + ulp / 2)])
    expected = [1.0, 1 + 2 * ulp, 1.0, 1 + ulp, -1.0]
    assert round_to_format(x, name).tolist() == expected
    if name == "float16":
        tiny = torch.tensor([2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -24 * 1.4])
        assert round_to_format(tiny, name).tolist() == [0.0, 2.0 ** -23, 2.0 ** -24]


@pytest.mark.parametrize("k", [0, 1, 4, 6, 8, 10, 12, 16, 20])
def test_fixed_point_matches_numpy_reference(k):
    x = torch.cat([_values(), torch.tensor([1.3, -2.0])])
    out = round_to_format(x, f"fixed{k}")
    np.testing.assert_array_equal(out.numpy(), np_fixed(x.numpy(), k))
    assert out.abs().max() <= 1.0
    assert torch.equal(out * 2**k, torch.round(out * 2**k))  # on the 2^-k grid


def test_fixed_point_ties_go_to_even():
    half = 2.0 ** -5  # half a step of fixed4
    x = torch.tensor([half, 3 * half, -half])
    assert round_to_format(x, "fixed4").tolist() == [0.0, 4 * half, 0.0]


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16", "fixed4", "fixed8", "fixed16"])
def test_rounding_is_monotone_idempotent_and_commutes_with_clipping(name):
    fmt = AccumulatorFormat.parse(name)
    x = torch.sort(torch.cat([_values(), torch.linspace(-1.5, 1.5, 1001)])).values
    r = fmt(x)
    assert torch.all(r[1:] >= r[:-1])
    assert torch.equal(fmt(r), r)
    assert torch.equal(fmt(torch.tensor([1.0, -1.0])), torch.tensor([1.0, -1.0]))
    assert torch.equal(fmt(x.clamp(-1, 1)), fmt(x).clamp(-1, 1))


@pytest.mark.parametrize("name", ["float32", "float16"])
def test_spacing_matches_numpy(name):
    fmt = AccumulatorFormat.parse(name)
    np_type = {"float32": np.float32, "float16": np.float16}[name]
    for x in (1.0, 0.75, 0.01, 0.3, 2.0 ** -20, 0.0):
        assert fmt.spacing(x) == float(np.spacing(np_type(x))), x


@pytest.mark.parametrize("x", [1.0, 0.75, 0.01, 0.3])
def test_bfloat16_spacing_by_experiment(x):
    fmt = AccumulatorFormat.parse("bfloat16")
    base = fmt(torch.tensor(x)).item()
    step = fmt.spacing(base)
    assert fmt(torch.tensor(base + 0.75 * step)).item() == base + step
    assert fmt(torch.tensor(base + 0.25 * step)).item() == base


def test_spacing_of_fixed_point_and_eps():
    assert AccumulatorFormat.parse("fixed10").spacing(0.01) == 2.0 ** -10
    for name in ("float32", "bfloat16", "float16"):
        fmt = AccumulatorFormat.parse(name)
        assert fmt.spacing(1.0) == torch.finfo(fmt.dtype).eps


# -- stochastic rounding -------------------------------------------------------------

def np_stochastic_fixed(x: np.ndarray, k: int, uniform: np.ndarray) -> np.ndarray:
    """Independent float64 reference of fixed<k>-sr given the uniform draws: up one grid
    step with probability equal to the distance from the lower neighbour, in steps."""
    scaled = x.astype(np.float64) * 2.0**k
    low = np.floor(scaled)
    return np.clip((low + (uniform < scaled - low)) / 2.0**k, -1, 1).astype(np.float32)


def test_parse_stochastic_rounding_names():
    fmt = AccumulatorFormat.parse("fixed8-sr")
    assert fmt == AccumulatorFormat("fixed8-sr", "fixed", 8, "stochastic")
    assert fmt.stochastic and fmt.storage_bits == 10 and fmt.spacing(0.3) == 2.0 ** -8
    assert not AccumulatorFormat.parse("fixed8").stochastic
    assert AccumulatorFormat.parse("fixed8").rounding == "nearest"
    with pytest.raises(ValueError, match="unknown accumulator format 'bfloat16-sr'"):
        AccumulatorFormat.parse("bfloat16-sr")
    with pytest.raises(ValueError, match="fixed point only"):
        AccumulatorFormat("bfloat16", "float", 8, "stochastic")
    with pytest.raises(ValueError, match="rounding must be one of"):
        AccumulatorFormat("fixed8", "fixed", 8, "up")
    with pytest.raises(ValueError, match="pass a torch.Generator"):
        round_to_format(torch.zeros(3), "fixed8-sr")


@pytest.mark.parametrize("k", [0, 2, 4, 8])
def test_stochastic_rounding_replays_the_reference_draw_for_draw(k):
    x = torch.cat([_values(), torch.tensor([1.3, -2.0])])
    out = round_to_format(x, f"fixed{k}-sr", torch.Generator().manual_seed(7))
    uniform = torch.rand(x.shape, generator=torch.Generator().manual_seed(7)).numpy()
    np.testing.assert_array_equal(out.numpy(), np_stochastic_fixed(x.numpy(), k, uniform))


def test_stochastic_rounding_hits_the_exact_probabilities_on_the_grid():
    """fixed4 (grid 1/16): x = lo + f/16 goes up with probability f; checked on 200 000
    draws per value against the binomial standard deviation (5 sigma)."""
    draws = 200_000
    lo = torch.tensor([0.5, -0.25, 0.0, -1.0 / 16, 0.9375])
    fractions = torch.tensor([0.1, 0.5, 0.75, 0.3, 0.9])
    x = (lo + fractions / 16).repeat(draws, 1)
    out = round_to_format(x, "fixed4-sr", torch.Generator().manual_seed(1))
    went_up = (out == lo + 1.0 / 16).double().mean(dim=0)
    stayed = (out == lo).double().mean(dim=0)
    assert torch.all(went_up + stayed == 1)  # only the two neighbours ever appear
    sigma = torch.sqrt(fractions.double() * (1 - fractions.double()) / draws)
    assert torch.all((went_up - fractions.double()).abs() < 5 * sigma), went_up


def test_stochastic_rounding_is_unbiased_on_the_grid_and_keeps_grid_values():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2_000, generator=g) * 2 - 1
    samples = torch.stack([round_to_format(x, "fixed6-sr", g) for _ in range(2_000)])
    assert torch.equal(samples * 64, torch.round(samples * 64))  # always on the grid
    low, high = torch.floor(x * 64) / 64, torch.ceil(x * 64) / 64
    assert torch.all((samples >= low) & (samples <= high))  # one of the two neighbours
    # mean of 2000 draws: sd <= (1/64) / 2 / sqrt(2000) = 1.7e-4 per value
    assert (samples.double().mean(0) - x.double()).abs().max() < 6 * 1.75e-4
    assert abs(float((samples.double().mean(0) - x.double()).mean())) < 1e-5
    on_grid = torch.tensor([-1.0, -0.5, 0.0, 3 / 64, 1.0])
    for _ in range(20):
        assert torch.equal(round_to_format(on_grid, "fixed6-sr", g), on_grid)
    assert torch.equal(round_to_format(torch.tensor([1.3, -1.01]), "fixed6-sr", g),
                       torch.tensor([1.0, -1.0]))


def test_stochastic_rounding_is_reproducible_from_the_generator():
    x = _values(2_000)
    first = round_to_format(x, "fixed8-sr", torch.Generator().manual_seed(11))
    again = round_to_format(x, "fixed8-sr", torch.Generator().manual_seed(11))
    other = round_to_format(x, "fixed8-sr", torch.Generator().manual_seed(12))
    assert torch.equal(first, again) and not torch.equal(first, other)


# -- the context manager -----------------------------------------------------------

class _SetTo(torch.optim.Optimizer):
    """A hand-made optimizer: its step writes chosen values into the parameter."""

    def __init__(self, params, target):
        super().__init__(params, {})
        self.target = target

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.copy_(self.target)


def _layer(values):
    layer = BinaryLinear(len(values), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))
    return layer


def test_lost_updates_counted_on_a_hand_made_step():
    k = 4  # grid 1/16 = 0.0625; half a step 0.03125
    old = [0.5, 0.5, 0.5, 0.5, 1.0, -0.25]
    new = [0.52, 0.54, 0.5, 0.40, 1.2, -0.25 - 0.0625]
    # 0.52: real, rounds back -> lost; 0.54: real, rounds to 0.5625 -> kept;
    # 0.5: no update; 0.40: rounds to 0.375 -> kept; 1.2: clipped back to 1 -> no update;
    # -0.3125: on the grid -> kept.
    layer = _layer(old)
    optimizer = _SetTo(layer.parameters(), torch.tensor([new]))
    with low_precision_accumulators(layer, f"fixed{k}") as acc:
        optimizer.step()
    assert (acc.steps, acc.updates, acc.lost, acc.flips) == (1, 4, 1, 0)
    assert acc.lost_fraction == pytest.approx(0.25)
    assert acc.step_counts == [(4, 1, 0)]
    expected = torch.tensor([[0.5, 0.5625, 0.5, 0.375, 1.0, -0.3125]])
    torch.testing.assert_close(layer.weight.detach().clamp(-1, 1), expected, rtol=0, atol=0)
    assert acc.counts() == {"format": "fixed4", "steps": 1, "updates": 4, "lost": 1,
                            "lost_fraction": 0.25, "flips": 0}
    assert acc.updates_by_magnitude == [] and acc.lost_by_magnitude == []


def test_sign_flips_and_counts_by_magnitude():
    # fixed4: grid 0.0625. Bins of |w| before the step: [0, 0.1), [0.1, 0.6), [0.6, 1].
    old = [0.0625, 0.0625, 0.0, -0.0625, 0.5, 0.5, 1.0, 0.75]
    new = [-0.02, -0.04, -0.01, 0.2, 0.51, 0.45, 0.99, 0.75]
    # 0.0625 -> -0.02 rounds to -0.0 (sign(-0.0) = +1): real, no lost, no flip;
    # 0.0625 -> -0.04 -> -0.0625: flip; 0.0 -> -0.01 -> -0.0: lost (== 0.0), no flip;
    # -0.0625 -> 0.2 -> 0.1875: flip; 0.5 -> 0.51: lost; 0.5 -> 0.45 -> 0.4375: kept;
    # 1.0 -> 0.99: lost; 0.75: no update.
    layer = _layer(old)
    optimizer = _SetTo(layer.parameters(), torch.tensor([new]))
    with low_precision_accumulators(layer, "fixed4", magnitude_edges=[0, 0.1, 0.6, 1]) as acc:
        optimizer.step()
    assert (acc.updates, acc.lost, acc.flips) == (7, 3, 2)
    assert acc.updates_by_magnitude == [4, 2, 1]
    assert acc.lost_by_magnitude == [1, 1, 1]
    with pytest.raises(ValueError, match="magnitude_edges must increase"):
        low_precision_accumulators(layer, "fixed4", magnitude_edges=[0, 0.5, 0.5, 1])


def test_without_clip_a_push_beyond_one_is_an_update():
    layer = _layer([1.0, 0.0])
    optimizer = _SetTo(layer.parameters(), torch.tensor([[1.01, 0.0]]))
    with low_precision_accumulators(layer, "fixed4", clip=None) as acc:
        optimizer.step()
    assert (acc.updates, acc.lost) == (1, 1)


def test_entry_rounds_the_initial_weights_and_float32_loses_nothing():
    torch.manual_seed(0)
    model = mnist_mlp(hidden=16, depth=1, dropout_in=0, dropout_hidden=0, in_features=8)
    with low_precision_accumulators(model, "fixed6"):
        for layer in [model[1], model[5]]:
            w = layer.weight.detach()
            assert torch.equal(w * 64, torch.round(w * 64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 8), torch.randint(0, 10, (32,))
    with low_precision_accumulators(model, "float32") as acc:
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    assert acc.steps == 3 and acc.updates > 0 and acc.lost == 0


def test_adam_steps_keep_weights_on_grid_and_other_optimizers_are_ignored():
    torch.manual_seed(0)
    layer = BinaryLinear(32, 4)
    other = torch.nn.Linear(3, 3)
    adam = torch.optim.Adam(layer.parameters(), lr=1e-3)
    sgd = torch.optim.SGD(other.parameters(), lr=0.1)
    x, y = torch.randn(64, 32), torch.randint(0, 4, (64,))
    with low_precision_accumulators(layer, "fixed8") as acc:
        for _ in range(5):
            adam.zero_grad()
            torch.nn.functional.cross_entropy(layer(x), y).backward()
            adam.step()
            sgd.zero_grad()
            other(torch.randn(2, 3)).sum().backward()
            sgd.step()
    w = layer.weight.detach()
    assert torch.equal(w * 256, torch.round(w * 256))
    assert acc.steps == 5
    # lr 1e-3 steps are far below half the 2^-8 grid: almost every update is lost.
    assert acc.lost_fraction > 0.9
    assert not torch.equal(other.bias.detach() * 256, torch.round(other.bias.detach() * 256))


def test_stochastic_accumulator_keeps_small_updates_in_expectation():
    """fixed4-sr, 40 000 entries at 0.5 each stepped by a quarter of the 1/16 grid: round to
    nearest would lose every update; stochastic rounding keeps a quarter of them (those
    that moved one full step), and the stored mean equals the float32 result."""
    n, step = 40_000, 0.25 / 16
    layer = _layer([0.5] * n)
    optimizer = _SetTo(layer.parameters(), torch.full((1, n), 0.5 + step))
    with pytest.raises(ValueError, match="pass a torch.Generator"):
        low_precision_accumulators(layer, "fixed4-sr")
    with low_precision_accumulators(layer, "fixed4-sr", generator=torch.Generator().manual_seed(0)) as acc:
        optimizer.step()
    w = layer.weight.detach()
    moved = int((w != 0.5).sum())
    assert acc.updates == n and acc.lost == n - moved  # counted from the stored draw
    assert torch.all((w == 0.5) | (w == 0.5 + 1 / 16))
    assert abs(acc.lost_fraction - 0.75) < 5 * (0.75 * 0.25 / n) ** 0.5
    assert abs(float(w.double().mean()) - (0.5 + step)) < 5 * (1 / 16) * (0.75 * 0.25 / n) ** 0.5
    with low_precision_accumulators(_layer([0.5] * n), "fixed4") as nearest:
        _SetTo(nearest.weights, torch.full((1, n), 0.5 + step)).step()
    assert nearest.lost_fraction == 1.0


def test_hooks_removed_on_exit_also_after_an_exception():
    layer = BinaryLinear(4, 2, bias=False)
    n_pre, n_post = len(_global_optimizer_pre_hooks), len(_global_optimizer_post_hooks)
    with low_precision_accumulators(layer, "bfloat16"):
        assert len(_global_optimizer_pre_hooks) == n_pre + 1
        assert len(_global_optimizer_post_hooks) == n_post + 1
    assert (len(_global_optimizer_pre_hooks), len(_global_optimizer_post_hooks)) == (n_pre, n_post)
    with pytest.raises(RuntimeError, match="boom"):
        with low_precision_accumulators(layer, "bfloat16"):
            raise RuntimeError("boom")
    assert (len(_global_optimizer_pre_hooks), len(_global_optimizer_post_hooks)) == (n_pre, n_post)
    # After exit, steps are no longer rounded or counted.
    acc = low_precision_accumulators(layer, "fixed2")
    with acc:
        pass
    optimizer = _SetTo(layer.parameters(), torch.full((2, 4), 0.3))
    optimizer.step()
    assert acc.steps == 0 and torch.allclose(layer.weight, torch.full((2, 4), 0.3))


def test_model_without_quant_linear_is_an_error():
    with pytest.raises(ValueError, match="no QuantLinear layers"):
        low_precision_accumulators(torch.nn.Linear(2, 2), "fixed8")

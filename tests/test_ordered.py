"""The ordered float32 product: bit-equal to the textbook loop on every CPU target.

`make test-cpu-targets` runs this file again under a true AVX2 and a baseline SSE2
target: equality with the NumPy loop on each of them is what makes a training step
built on it give the same bits on any CPU.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qnnlib import ordered_matmul as ordered
from qnnlib.ordered_matmul import ordered_matmul, prepare_panels, reference_matmul
from qnnlib.ordered_linear import ordered_linear


def problem(m, k, n, seed, signs_b=True):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    return a, np.sign(b) + (b == 0) if signs_b else b


def test_reference_is_the_textbook_loop():
    """The reference itself, against plain Python floats rounded to float32 at every step."""
    a, b = problem(3, 5, 4, seed=1, signs_b=False)
    for i in range(3):
        for j in range(4):
            total = np.float32(0)
            for kk in range(5):
                total = np.float32(total + np.float32(a[i, kk] * b[kk, j]))
            assert reference_matmul(a, b)[i, j] == total


@pytest.mark.parametrize("signs_b", [True, False])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (1, 784, 2048), (100, 784, 10), (13, 257, 37),
                                     (ordered.ROWS + 1, ordered.K_BLOCK, ordered.PANEL + 1),
                                     (2 * ordered.ROWS, 2 * ordered.K_BLOCK + 1, 3 * ordered.PANEL)])
def test_matches_the_loop_bit_for_bit(m, k, n, signs_b):
    """Awkward shapes: M = 1, K = 1, K across K blocks and ragged, N across panels."""
    a, b = problem(m, k, n, seed=m + k + n, signs_b=signs_b)
    out = ordered_matmul(a, b)
    # C-contiguous, no padding: autograd would copy a strided gradient into .grad
    assert out.dtype == np.float32 and out.shape == (m, n) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, reference_matmul(a, b))


def test_order_matters_so_the_test_can_fail():
    """BLAS sums in another order: on this problem its bits differ from the loop's, which
    is what the equality above rules out for the ordered kernel."""
    a, b = problem(64, 2048, 64, seed=3, signs_b=False)
    assert not np.array_equal(a @ b, reference_matmul(a, b))


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 20), k=st.integers(0, 300), n=st.integers(1, 70), seed=st.integers(0, 99))
def test_random_shapes(m, k, n, seed):
    a, b = problem(m, k, n, seed, signs_b=bool(seed % 2))
    np.testing.assert_array_equal(ordered_matmul(a, b), reference_matmul(a, b))


def test_panels_beyond_n_are_ignored():
    """Panels for a wider B than N: only the columns asked for are computed."""
    a, b = problem(7, 33, 3 * ordered.PANEL, seed=6)
    out = ordered.ordered_matmul_panels(a, prepare_panels(b), ordered.PANEL + 2)
    np.testing.assert_array_equal(out, reference_matmul(a, b[:, :ordered.PANEL + 2]))


def test_transposed_views_are_read_in_place():
    a, b = problem(9, 70, 40, seed=4)
    np.testing.assert_array_equal(ordered.ordered_matmul_panels(a, prepare_panels(b.T.copy().T), 40),
                                  reference_matmul(a, b))


def test_rejects_bad_operands():
    a, b = problem(4, 6, 5, seed=5)
    with pytest.raises(ValueError, match=r"A \(M, K\) and B \(K, N\)"):
        ordered_matmul(a, b[:5])
    with pytest.raises(TypeError, match="float32"):
        ordered_matmul(a.astype(np.float64), b)
    with pytest.raises(TypeError, match="float32"):
        prepare_panels(b[0])
    with pytest.raises(ValueError, match="do not hold B"):
        ordered.ordered_matmul_panels(a, prepare_panels(b[:5]), 5)


@pytest.mark.parametrize("batch, out", [(7, 33), (40, 10)])  # both orientations of the forward
def test_linear_layer_products_and_gradients(batch, out):
    """Forward and both gradient products equal the loop; the bias gradient is the batch sum."""
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.standard_normal((batch, 50)).astype(np.float32)).requires_grad_()
    w = torch.from_numpy(np.sign(rng.standard_normal((out, 50))).astype(np.float32)).requires_grad_()
    bias = torch.from_numpy(rng.standard_normal(out).astype(np.float32)).requires_grad_()
    g = rng.standard_normal((batch, out)).astype(np.float32)
    y = ordered_linear(x, w, bias)
    y.backward(torch.from_numpy(g))
    xn, wn = x.detach().numpy(), w.detach().numpy()
    np.testing.assert_array_equal(y.detach().numpy(), reference_matmul(xn, wn.T) + bias.detach().numpy())
    np.testing.assert_array_equal(x.grad.numpy(), reference_matmul(g, wn))
    np.testing.assert_array_equal(w.grad.numpy(), reference_matmul(g.T, xn))
    np.testing.assert_allclose(bias.grad.numpy(), g.sum(0), rtol=1e-5, atol=1e-5)


def test_linear_layer_agrees_with_torch_in_float64():
    """The whole autograd path against torch's F.linear in double precision."""
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.standard_normal((5, 20)).astype(np.float32)).requires_grad_()
    w = torch.from_numpy(rng.standard_normal((8, 20)).astype(np.float32)).requires_grad_()
    (ordered_linear(x, w) ** 2).sum().backward()
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    (torch.nn.functional.linear(x64, w64) ** 2).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-5)


def test_linear_layer_checks_shapes():
    with pytest.raises(ValueError, match=r"x \(N, in\) and weight \(out, in\)"):
        ordered_linear(torch.zeros(3, 4), torch.zeros(5, 6))

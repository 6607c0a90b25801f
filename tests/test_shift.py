"""Tests of qnnlib.shift: AP2, shift-based batch norm, shift-based AdaMax and the
optimizer-injectable training loop (arXiv:1609.07061, sections "Shift-based Batch
Normalization" and "Shift-based AdaMax"; notebook 04)."""
import math

import pytest
import torch
from torch import nn

from qnnlib import experiments, training
from qnnlib.models import mnist_mlp
from qnnlib.quantizers import quantize_log
from qnnlib.shift import (PAPER_BETAS, ShiftAdaMax, ShiftBatchNorm1d, ap2, make_adam, make_adamax,
                          make_shift_adamax,
                          optimizer_groups, shift_batchnorm, ste_ap2, train_with_optimizer,
                          training_optimizer)
from support import synthetic_splits

SQRT2 = math.sqrt(2.0)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------
# AP2
# ---------------------------------------------------------------------------

def test_ap2_exact_on_powers_of_two():
    powers = torch.pow(2.0, torch.arange(-20, 21, dtype=torch.float32))
    values = torch.cat([powers, -powers])
    assert torch.equal(ap2(values), values)


def test_ap2_of_zero_is_zero():
    assert ap2(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_ap2_rounds_in_the_log_domain():
    # The switch from 2**k to 2**(k+1) is at sqrt(2) * 2**k, not at 1.5 * 2**k:
    # 1.45 is nearer to 1 than to 2 on the line, but log2(1.45) = 0.536 rounds to 1.
    x = torch.tensor([1.40, 1.45, 2.80, 2.90, -3.0, 0.70, 0.68, -0.3])
    expected = torch.tensor([1.0, 2.0, 2.0, 4.0, -4.0, 0.5, 0.5, -0.25])
    assert torch.equal(ap2(x), expected)
    just_below = torch.tensor([SQRT2 * 0.999, 4 * SQRT2 * 0.999])
    just_above = torch.tensor([SQRT2 * 1.001, 4 * SQRT2 * 1.001])
    assert ap2(just_below).tolist() == [1.0, 4.0]
    assert ap2(just_above).tolist() == [2.0, 8.0]


def test_ap2_ratio_within_sqrt2_and_keeps_sign():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10000, generator=g) * torch.exp(torch.randn(10000, generator=g) * 3)
    ratio = ap2(x) / x
    assert ratio.min() >= 1 / SQRT2 - 1e-6
    assert ratio.max() <= SQRT2 + 1e-6
    # Both ends of the bound are nearly reached on this many samples.
    assert ratio.min() < 0.72 and ratio.max() > 1.40


def test_ap2_matches_quantize_log_inside_its_range():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(5000, generator=g) * 2 - 1)
    bits = 4  # exponents 0 .. -7
    inside = x.abs() >= 2.0 ** -7.5
    assert torch.equal(ap2(x)[inside], quantize_log(x, bits)[inside])


def test_ste_ap2_forward_is_ap2_backward_is_identity():
    x = torch.tensor([0.3, -1.7, 5.0], requires_grad=True)
    y = ste_ap2(x)
    assert torch.equal(y.detach(), ap2(x.detach()))
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


# ---------------------------------------------------------------------------
# Shift-based batch norm
# ---------------------------------------------------------------------------

def paired_bn(features=6, eps=1e-4, gamma=None, beta=None):
    exact = nn.BatchNorm1d(features, eps=eps, momentum=0.1)
    shifted = ShiftBatchNorm1d(features, eps=eps, momentum=0.1)
    with torch.no_grad():
        if gamma is not None:
            exact.weight.copy_(gamma)
        if beta is not None:
            exact.bias.copy_(beta)
    shifted.load_state_dict(exact.state_dict())
    return exact, shifted


def test_shift_bn_exact_when_statistics_are_powers_of_two():
    # Each feature takes mu +- a with a a power of two, half the batch each: |C(x)| = a,
    # var = a**2 exactly, 1/sqrt(var) = 1/a a power of two; gamma powers of two too.
    # (eps must be > 0 for torch's BN; 1e-12 vanishes next to a**2 in float32.)
    a = torch.tensor([0.25, 1.0, 4.0, 0.5])
    mu = torch.tensor([0.3, -1.2, 7.0, 0.0])
    signs = torch.tensor([1.0, -1.0] * 8).unsqueeze(1)
    x = mu + signs * a
    gamma = torch.tensor([1.0, 0.5, -2.0, 0.125])
    beta = torch.tensor([0.1, -0.2, 0.3, 0.0])
    exact, shifted = paired_bn(4, eps=1e-12, gamma=gamma, beta=beta)
    torch.testing.assert_close(shifted(x), exact(x), rtol=1e-6, atol=1e-6)


def test_shift_bn_within_the_ap2_error_bound_of_exact_bn():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(100, 6, generator=g) * torch.tensor([0.01, 0.3, 1.0, 3.0, 17.0, 250.0]) + 5
    exact, shifted = paired_bn(6)
    y_exact, y_shift = exact(x), shifted(x)
    # Shift BN is exact BN times one constant per feature (a shift per channel):
    ratio = (y_shift * y_exact).sum(0) / (y_exact ** 2).sum(0)
    torch.testing.assert_close(y_shift, ratio * y_exact, rtol=1e-4, atol=1e-4)
    # gamma = 1 is a power of two, so only the variance and the 1/std shifts err:
    # sqrt(2)**(1/2) * sqrt(2) = 2**0.75.
    assert ratio.min() >= 2 ** -0.75 - 1e-5 and ratio.max() <= 2 ** 0.75 + 1e-5
    assert not torch.allclose(y_shift, y_exact, rtol=1e-3)  # it is an approximation


def test_shift_bn_with_learned_gamma_beta_within_bound():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 5, generator=g) * 2
    gamma = torch.tensor([0.3, 1.7, -0.9, 2.5, 0.05])
    beta = torch.tensor([0.5, -0.5, 0.0, 1.0, 2.0])
    exact, shifted = paired_bn(5, gamma=gamma, beta=beta)
    y_exact, y_shift = exact(x) - beta, shifted(x) - beta
    ratio = (y_shift * y_exact).sum(0) / (y_exact ** 2).sum(0)
    torch.testing.assert_close(y_shift, ratio * y_exact, rtol=1e-4, atol=1e-4)
    assert ratio.min() >= 2 ** -1.25 - 1e-5 and ratio.max() <= 2 ** 1.25 + 1e-5
    # Every multiplication is a shift: y - beta = C(x) * 2**integer, per feature.
    scale = y_shift[0] / (x[0] - x.mean(0))
    torch.testing.assert_close(torch.log2(scale.abs()), torch.log2(scale.abs()).round(), rtol=0, atol=1e-4)
    assert torch.equal(torch.sign(scale), torch.sign(gamma))


def test_shift_bn_uses_the_papers_approximate_variance():
    # var ~ mean(C(x) * AP2(C(x))); with momentum 1 the running variance is that
    # batch variance with the unbiased m / (m - 1) correction, as in nn.BatchNorm1d.
    g = torch.Generator().manual_seed(9)
    x = torch.randn(40, 8, generator=g) * 3 + 1
    shifted = ShiftBatchNorm1d(8, eps=1e-4, momentum=1.0)
    y = shifted(x)
    centred = x - x.mean(0)
    approx = (centred * ap2(centred)).mean(0)
    torch.testing.assert_close(shifted.running_var, approx * 40 / 39, rtol=1e-6, atol=0)
    assert not torch.allclose(approx, centred.pow(2).mean(0), rtol=1e-3)
    torch.testing.assert_close(y, centred * ap2(torch.rsqrt(approx + 1e-4)), rtol=1e-6, atol=1e-6)


def test_shift_bn_running_stats_and_eval_mode():
    g = torch.Generator().manual_seed(4)
    exact, shifted = paired_bn(3)
    for _ in range(20):
        x = torch.randn(50, 3, generator=g) * torch.tensor([0.5, 2.0, 8.0]) + torch.tensor([1.0, -3.0, 0.0])
        exact(x)
        shifted(x)
    torch.testing.assert_close(shifted.running_mean, exact.running_mean)
    ratio = shifted.running_var / exact.running_var
    assert ratio.min() >= 2 ** -0.5 - 1e-4 and ratio.max() <= 2 ** 0.5 + 1e-4
    assert int(shifted.num_batches_tracked) == 20
    shifted.eval()
    x = torch.randn(7, 3, generator=g)
    expected = (x - shifted.running_mean) * ap2(torch.rsqrt(shifted.running_var + shifted.eps))
    expected = expected * ap2(shifted.weight.detach()) + shifted.bias.detach()
    torch.testing.assert_close(shifted(x), expected)
    # Eval mode does not move the running statistics.
    before = shifted.running_var.clone()
    shifted(x)
    assert torch.equal(before, shifted.running_var)


def test_shift_bn_3d_input_normalises_over_batch_and_length():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 4, 16, generator=g) * 3 + 1
    exact, shifted = paired_bn(4)
    y_exact, y_shift = exact(x), shifted(x)
    ratio = (y_shift * y_exact).sum((0, 2)) / (y_exact ** 2).sum((0, 2))
    torch.testing.assert_close(y_shift, ratio[:, None] * y_exact, rtol=1e-4, atol=1e-4)
    assert ratio.min() >= 2 ** -0.75 - 1e-4 and ratio.max() <= 2 ** 0.75 + 1e-4


def test_shift_bn_gradients_reach_input_gamma_and_beta():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(32, 4, generator=g, requires_grad=True)
    _, shifted = paired_bn(4)
    (shifted(x) * torch.randn(32, 4, generator=g)).sum().backward()
    for grad in (x.grad, shifted.weight.grad, shifted.bias.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_shift_batchnorm_swaps_every_bn_and_keeps_state():
    torch.manual_seed(0)
    model = mnist_mlp(hidden=32, depth=2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.fill_(0.25)
                module.weight.fill_(0.75)
    nested = nn.Sequential(model, nn.Sequential(nn.BatchNorm1d(10, eps=1e-3, momentum=0.2)))
    before = {k: v.clone() for k, v in nested.state_dict().items()}
    assert shift_batchnorm(nested) is nested
    bns = [m for m in nested.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 4 and all(isinstance(m, ShiftBatchNorm1d) for m in bns)
    assert bns[-1].eps == 1e-3 and bns[-1].momentum == 0.2
    after = nested.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert nested(torch.randn(4, 784)).shape == (4, 10)


# ---------------------------------------------------------------------------
# Shift-based AdaMax
# ---------------------------------------------------------------------------

def test_shift_adamax_minimises_a_quadratic():
    g = torch.Generator().manual_seed(7)
    target = torch.randn(50, generator=g)
    curvature = torch.exp(torch.randn(50, generator=g))
    theta = torch.zeros(50, requires_grad=True)
    optimizer = ShiftAdaMax([theta], lr=2.0 ** -6)

    def loss_fn():
        return (curvature * (theta - target) ** 2).sum()

    start = loss_fn().item()
    for _ in range(1000):
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    assert loss_fn().item() < 1e-3 * start


def test_shift_adamax_follows_adamax_step_for_step():
    # Same gradient sequence into both: the moments are identical, so every update
    # agrees in sign and is within AP2(step) * AP2(1/v), a factor 2 either way.
    g = torch.Generator().manual_seed(8)
    a = torch.zeros(200, requires_grad=True)
    b = torch.zeros(200, requires_grad=True)
    lr, betas = 3e-3, (0.9, 0.999)
    shift = ShiftAdaMax([a], lr=lr, betas=betas, eps=0.0)
    exact = torch.optim.Adamax([b], lr=lr, betas=betas, eps=0.0)
    for _ in range(30):
        grad = torch.randn(200, generator=g) * 0.1 + 0.05
        a_before, b_before = a.detach().clone(), b.detach().clone()
        a.grad, b.grad = grad.clone(), grad.clone()
        shift.step()
        exact.step()
        da, db = a.detach() - a_before, b.detach() - b_before
        ratio = da / db
        assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 2.0 + 1e-4
        cosine = torch.dot(da, db) / (da.norm() * db.norm())
        assert cosine > 0.9
        # The step is a shift of the first moment: da / m = -2**integer, element-wise.
        # (atol: da is a difference of float32 parameters, so a few ulps of theta.)
        exponent = torch.log2(-da / shift.state[a]["exp_avg"])
        torch.testing.assert_close(exponent, exponent.round(), rtol=0, atol=1e-2)


def test_shift_adamax_is_exact_adamax_when_everything_is_a_power_of_two():
    # First step with the paper's defaults: lr / (1 - beta1) = 2**-10 / 2**-3 = 2**-7
    # and v = |g| with |g| a power of two: the update is exactly AdaMax's, -2**-10 sign(g).
    theta = torch.zeros(4, requires_grad=True)
    optimizer = ShiftAdaMax([theta], eps=0.0)
    theta.grad = torch.tensor([0.5, -2.0, 4.0, -0.125])
    optimizer.step()
    assert theta.detach().tolist() == [-2.0 ** -10, 2.0 ** -10, -2.0 ** -10, 2.0 ** -10]


def test_shift_adamax_skips_params_without_grad_and_checks_args():
    theta = torch.ones(3, requires_grad=True)
    ShiftAdaMax([theta]).step()
    assert theta.detach().tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="lr must be >= 0, got -1.0"):
        ShiftAdaMax([theta], lr=-1.0)
    with pytest.raises(ValueError, match=r"betas must lie in \[0, 1\)"):
        ShiftAdaMax([theta], betas=(0.9, 1.0))


def test_make_shift_adamax_keeps_glorot_groups_through_lr_decay():
    torch.manual_seed(0)
    model = mnist_mlp(hidden=64, depth=2)
    optimizer = make_shift_adamax(model, lr=1e-3)
    reference = training.make_optimizer(model, 1e-3)
    assert [g["lr_scale"] for g in optimizer.param_groups] == [g["lr_scale"] for g in reference.param_groups]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    assert len(optimizer_groups(model, 1e-3, glorot_scaling=False)) == len(reference.param_groups)
    training.set_base_lr(optimizer, 1e-4)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-4 * group["lr_scale"])
    assert max(g["lr_scale"] for g in optimizer.param_groups) > 1
    control = make_adamax(model, lr=1e-3)
    assert isinstance(control, torch.optim.Adamax)
    assert control.defaults["betas"] == PAPER_BETAS == optimizer.defaults["betas"]
    assert [g["lr"] for g in control.param_groups] == [g["lr"] for g in reference.param_groups]


# ---------------------------------------------------------------------------
# The training loop with an injectable optimizer
# ---------------------------------------------------------------------------


def cluster_splits(n=1500, seed=0):
    """Ten noisy +-1 prototypes: learnable from a few hundred examples."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randint(0, 2, (10, 784), generator=g).float() * 2 - 1
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.clamp(0.3 * prototypes[y] + torch.randn(n, 784, generator=g), -1, 1)
    third = n // 3
    return {"train": (x[:third], y[:third]), "val": (x[third:2 * third], y[third:2 * third]),
            "test": (x[2 * third:], y[2 * third:])}


CONFIG = dict(epochs=3, batch_size=50, lr_end=3e-4, progress=False, seed=5, threads=1)


def test_train_with_adam_reproduces_training_train():
    splits = synthetic_splits(900)
    torch.manual_seed(1)
    a = mnist_mlp(hidden=64, depth=1)
    torch.manual_seed(1)
    b = mnist_mlp(hidden=64, depth=1)
    ours = train_with_optimizer(a, splits, make_adam, CONFIG)
    theirs = training.train(b, splits, CONFIG)
    columns = ["epoch", "lr", "train_loss", "train_error", "val_error", "test_error"]
    assert ours.history[columns].equals(theirs.history[columns])
    assert ours.best_epoch == theirs.best_epoch and ours.test_error == theirs.test_error
    # and the factory is really the one used: exact AdaMax gives another run
    torch.manual_seed(1)
    adamax = train_with_optimizer(mnist_mlp(hidden=64, depth=1), splits, make_adamax, CONFIG)
    assert not adamax.history["train_loss"].equals(ours.history["train_loss"])


def test_shift_bnn_learns_with_shift_adamax():
    splits = cluster_splits()
    torch.manual_seed(2)
    model = shift_batchnorm(mnist_mlp(hidden=128, depth=1, dropout_in=0.0, dropout_hidden=0.0))
    result = train_with_optimizer(model, splits, make_shift_adamax, dict(CONFIG, epochs=4))
    assert len(result.history) == 4
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]
    assert result.test_error < 0.2  # chance is 0.9
    weights = [m.weight for m in model.modules() if hasattr(m, "clip_")]
    assert all(w.abs().max() <= 1.0 for w in weights)  # clipping still applied


def test_shift_adamax_run_resumes_bit_identical_from_its_checkpoint(tmp_path):
    """The ablation goes through the one training loop, checkpoints included: an
    interrupted shift-AdaMax run resumed from its checkpoint equals an uninterrupted one
    (the optimizer's m, v and step count come back from the file)."""
    def run(checkpoint=None, stop_after=None, init_seed=2):
        torch.manual_seed(init_seed)
        model = shift_batchnorm(mnist_mlp(hidden=32, depth=1))
        config = dict(CONFIG, checkpoint=str(checkpoint) if checkpoint else None)
        return training.train(model, synthetic_splits(300), config, stop_after=stop_after,
                              optimizer_factory=make_shift_adamax)
    whole = run()
    run(tmp_path / "shift.pt", stop_after=1)
    resumed = run(tmp_path / "shift.pt", init_seed=99)  # the init must come from the file
    columns = ["epoch", "lr", "train_loss", "train_error", "val_error", "test_error"]
    assert resumed.history[columns].equals(whole.history[columns])
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_training_optimizer_injects_the_factory_into_run_grid():
    """run_grid with the context trains exactly what train_with_optimizer trains with that
    factory (same seed, same model), for exact and shift AdaMax alike, and restores the
    paper's Adam afterwards (a later Adam run equals a plain one)."""
    splits = synthetic_splits(300)
    spec = dict(hidden=32, depth=1)
    config = dict(CONFIG, epochs=2)
    for factory in (make_adamax, make_shift_adamax):
        grid = experiments.run_grid([{"name": "run", "model": spec}], splits, seeds=[3], train=config,
                                    context=lambda c, s, m, f=factory: training_optimizer(f))
        direct = train_with_optimizer(experiments.seeded_model(spec, 3), splits, factory,
                                      dict(config, seed=3))
        assert grid.runs["test_error"].iloc[0] == direct.test_error
        assert list(grid.history["train_loss"]) == list(direct.history["train_loss"])
    assert training.make_optimizer.__module__ == "qnnlib.training"  # restored
    adam = training.train(experiments.seeded_model(spec, 3), splits, dict(config, seed=3))
    assert list(adam.history["train_loss"]) != list(direct.history["train_loss"])

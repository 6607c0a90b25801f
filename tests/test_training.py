"""Tests of the training loop (qnnlib.training): the paper's optimizer details, the
schedule, best-validation selection, bit-identical reruns and resumes."""

import pandas as pd
import pytest
import torch

from qnnlib.data import load_mnist
from qnnlib.models import mnist_mlp, quant_linears
from qnnlib.training import (TrainConfig, best_epoch, evaluate, finish, lr_at_epoch, make_optimizer,
                             seed_everything, train, train_step)
from support import mnist_mirror, synthetic_splits


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return load_mnist(root=tmp_path_factory.mktemp("data"), mirror=mnist_mirror(), download=False)


def small_net(seed=0, hidden=512):
    """A 2-layer BNN with a seeded initialisation."""
    torch.manual_seed(seed)
    return mnist_mlp(hidden=hidden, depth=2)


# A few thousand images, a few epochs: enough to see learning in seconds. lr_end is
# raised from the paper's 3e-7 because over 3 epochs the paper's decay would stop
# learning after the first one.
QUICK = dict(epochs=3, n_train=5000, n_val=2000, n_test=2000, lr_end=3e-4, progress=False, seed=3,
             threads=1)


def assert_same_run(a, b):
    """Bit-identical history (wall-clock seconds aside) and final weights."""
    pd.testing.assert_frame_equal(a.history.drop(columns="seconds"),
                                  b.history.drop(columns="seconds"), check_exact=True)
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


# --- configuration and optimizer -----------------------------------------------------


def test_from_dict_rejects_unknown_keys():
    assert TrainConfig.from_dict({"epochs": 2}).epochs == 2
    with pytest.raises(ValueError, match="epoch_count"):
        TrainConfig.from_dict({"epoch_count": 2})
    with pytest.raises(TypeError, match="lr_start must be a number, got '3e-3'"):
        TrainConfig.from_dict({"lr_start": "3e-3"})  # what yaml.safe_load makes of 3e-3
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig.from_dict({"loss": "hinge"})


def test_glorot_lr_scales_per_layer():
    """784-64-64-10: 1/sqrt(1.5/(fan_in+fan_out)) = sqrt(848/1.5), sqrt(128/1.5),
    sqrt(74/1.5) = 23.777, 9.238, 7.024 (the paper's 4096-wide values are checked in
    test_layers)."""
    model = mnist_mlp(hidden=64, depth=2)
    optimizer = make_optimizer(model, lr=1e-3)
    scaled = [g for g in optimizer.param_groups if g["lr_scale"] != 1.0]
    assert [round(g["lr_scale"], 3) for g in scaled] == [23.777, 9.238, 7.024]
    for group, layer in zip(scaled, quant_linears(model)):
        assert group["params"] == [layer.weight]
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"])
    # Everything else (biases, BN) at the plain lr, and every parameter exactly once.
    plain = [g for g in optimizer.param_groups if g["lr_scale"] == 1.0]
    assert len(plain) == 1 and plain[0]["lr"] == 1e-3
    in_groups = [p for g in optimizer.param_groups for p in g["params"]]
    assert sorted(map(id, in_groups)) == sorted(map(id, model.parameters()))


def test_glorot_scaling_can_be_switched_off():
    optimizer = make_optimizer(mnist_mlp(hidden=32, depth=1), lr=1e-3, glorot_scaling=False)
    assert {g["lr"] for g in optimizer.param_groups} == {1e-3}


def test_one_step_clips_accumulators_and_moves_them():
    model = mnist_mlp(hidden=64, depth=2)
    splits = synthetic_splits()
    x, y = splits["train"][0][:100], splits["train"][1][:100]
    before = [layer.weight.detach().clone() for layer in quant_linears(model)]
    # A huge lr pushes many weights past +-1, so the clipping has work to do.
    optimizer = make_optimizer(model, lr=1.0)
    train_step(model, optimizer, x, y, clip_layers=quant_linears(model))
    for layer, old in zip(quant_linears(model), before):
        assert layer.weight.abs().max() <= 1.0
        assert (layer.weight.abs() == 1.0).any()
        assert not torch.equal(layer.weight, old)
    # Without clipping the same step leaves weights outside [-1, 1].
    unclipped = mnist_mlp(hidden=64, depth=2)
    train_step(unclipped, make_optimizer(unclipped, lr=1.0), x, y, clip_layers=())
    assert max(layer.weight.abs().max() for layer in quant_linears(unclipped)) > 1.0


def test_lr_schedule_is_exponential_from_start_to_end():
    config = TrainConfig(epochs=4, lr_start=1e-2, lr_end=1e-4, progress=False)
    result = train(mnist_mlp(hidden=32, depth=1), synthetic_splits(), config)
    expected = [1e-2 * (1e-4 / 1e-2) ** (t / 4) for t in range(4)]
    assert result.history["lr"].tolist() == pytest.approx(expected, rel=1e-12)
    # The Theano form: multiply by (lr_end/lr_start)**(1/epochs) after every epoch.
    decay = (1e-4 / 1e-2) ** (1 / 4)
    assert [lr_at_epoch(config, t + 1) / lr_at_epoch(config, t) for t in range(4)] == \
        pytest.approx([decay] * 4)
    assert lr_at_epoch(config, 4) == pytest.approx(1e-4)


def test_seed_everything_gives_reproducible_shuffles():
    a = torch.randperm(100, generator=seed_everything(7)), torch.rand(3)
    b = torch.randperm(100, generator=seed_everything(7)), torch.rand(3)
    c = torch.randperm(100, generator=seed_everything(8)), torch.rand(3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_selection_keeps_the_last_epoch_of_the_best_validation_error():
    """binary_net.train: `if val_err <= best_val_err`, so on a tie the later epoch wins."""
    rows = [{"epoch": e, "lr": 0.0, "train_loss": 0.0, "train_error": 0.0, "val_error": v,
             "test_error": t, "seconds": 0.0}
            for e, v, t in [(1, 0.3, 0.31), (2, 0.2, 0.22), (3, 0.25, 0.2), (4, 0.2, 0.21),
                            (5, 0.21, 0.19)]]
    assert [best_epoch(rows[:n]) for n in range(6)] == [0, 1, 2, 2, 4, 4]
    model = mnist_mlp(hidden=8, depth=1)
    result = finish(model, rows, model.state_dict(), TrainConfig(), "cpu")
    assert (result.best_epoch, result.best_val_error, result.test_error) == (4, 0.2, 0.21)


def test_fewer_training_examples_than_a_batch_is_a_clear_error():
    """Regression (issue 9.6): n_train < batch_size divided by zero in the epoch loop."""
    with pytest.raises(ValueError, match="n_train=50 is smaller than batch_size=100"):
        TrainConfig(n_train=50)
    small = synthetic_splits(150)  # 50 training examples, n_train unset
    with pytest.raises(ValueError, match="holds 50 examples, fewer than batch_size=100"):
        train(mnist_mlp(hidden=8, depth=1), small, TrainConfig(epochs=1, progress=False))
    empty = dict(small, val=(small["val"][0][:0], small["val"][1][:0]))
    with pytest.raises(ValueError, match="the val split is empty"):
        train(mnist_mlp(hidden=8, depth=1), empty, TrainConfig(epochs=1, batch_size=10,
                                                               progress=False))


def test_train_leaves_deterministic_mode_as_it_found_it():
    """Regression (issue 9.6): seeding switched deterministic algorithms on for the whole
    process. Now they are on during `train` only (checked from inside the loop)."""
    seen = []

    def spy_factory(model, lr, glorot_scaling):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return make_optimizer(model, lr, glorot_scaling)

    assert not torch.are_deterministic_algorithms_enabled()
    seed_everything(0)
    assert not torch.are_deterministic_algorithms_enabled()
    config = TrainConfig(epochs=1, batch_size=50, progress=False)
    train(mnist_mlp(hidden=8, depth=1), synthetic_splits(), config, optimizer_factory=spy_factory)
    assert seen == [True] and not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # a caller's strict mode survives a run
    try:
        train(mnist_mlp(hidden=8, depth=1), synthetic_splits(), config)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_train_rejects_a_config_of_the_wrong_type():
    with pytest.raises(TypeError, match="config must be a TrainConfig, a dict or None, got str"):
        train(mnist_mlp(hidden=8, depth=1), synthetic_splits(), "epochs=1")


def plain_sgd(model, lr, glorot_scaling):
    """An optimizer_factory: SGD, one group, no Glorot scaling."""
    return torch.optim.SGD([{"params": list(model.parameters()), "lr": lr, "lr_scale": 1.0}], lr=lr)


def test_optimizer_factory_replaces_adam():
    config = TrainConfig(epochs=2, progress=False)
    adam = train(small_net(hidden=16), synthetic_splits(), config)
    assert adam.history["train_loss"].equals(
        train(small_net(hidden=16), synthetic_splits(), config).history["train_loss"])
    sgd = train(small_net(hidden=16), synthetic_splits(), config, optimizer_factory=plain_sgd)
    assert not adam.history["train_loss"].equals(sgd.history["train_loss"])


# --- real MNIST -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_run(mnist):
    """One uninterrupted quick run, shared by the tests below."""
    return train(small_net(), mnist, TrainConfig(**QUICK))


@pytest.mark.slow
def test_short_run_learns_mnist(reference_run):
    history = reference_run.history
    assert len(history) == 3
    assert reference_run.test_error < 0.2  # chance is 0.9
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


@pytest.mark.slow
def test_best_validation_epoch_is_reported(reference_run, mnist):
    history = reference_run.history
    best = history[history["val_error"] == history["val_error"].min()].iloc[-1]
    assert reference_run.best_epoch == best["epoch"]
    assert reference_run.test_error == best["test_error"]
    # The returned model carries the best epoch's weights: re-evaluating reproduces them.
    x, y = mnist["val"].inputs()[:2000], mnist["val"].labels[:2000]
    assert evaluate(reference_run.model, x, y) == reference_run.best_val_error


@pytest.mark.slow
def test_same_seed_gives_bit_identical_run(reference_run, mnist):
    assert_same_run(reference_run, train(small_net(), mnist, TrainConfig(**QUICK)))


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(reference_run, mnist, tmp_path):
    config = TrainConfig(**QUICK, checkpoint=str(tmp_path / "quick.pt"))
    interrupted = train(small_net(), mnist, config, stop_after=1)
    assert len(interrupted.history) == 1
    # A fresh process would rebuild the model from scratch: a different init must not
    # matter, since everything comes back from the checkpoint.
    resumed = train(small_net(seed=99), mnist, config)
    assert_same_run(reference_run, resumed)

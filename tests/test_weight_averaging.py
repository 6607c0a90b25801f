"""Weight averages (`qnnlib.weight_averaging`) against hand-rolled float64 references,
and the promise that following a run leaves the run itself untouched."""
import pytest
import torch
from torch import nn

from qnnlib.bn_statistics import recompute_bn_statistics
from qnnlib.models import mnist_mlp
from qnnlib.training import TrainConfig, make_optimizer, train, train_epoch
from qnnlib.weight_averaging import ExponentialAverage, UniformAverage, averaged_model


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3))


def sgd_steps(net, optimizer, steps, seed=1):
    """`steps` optimizer steps on random regression targets; yields after each."""
    draws = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        inputs, targets = torch.randn(8, 5, generator=draws), torch.randn(8, 3, generator=draws)
        optimizer.zero_grad()
        nn.functional.mse_loss(net(inputs), targets).backward()
        optimizer.step()
        yield


def test_exponential_average_matches_the_recurrence_in_float64():
    net = small_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    decay = 0.9
    average = ExponentialAverage(net, optimizer, decay)
    reference = [p.detach().double().clone() for p in net.parameters()]
    for _ in sgd_steps(net, optimizer, 25):
        reference = [decay * a + (1 - decay) * p.detach().double()
                     for a, p in zip(reference, net.parameters())]
    for got, expected in zip(average.average, reference):
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    weight = net[0].weight.detach()
    assert not torch.allclose(average.average[0], weight)  # it lags the weights it follows
    average.remove()
    frozen = [a.clone() for a in average.average]
    for _ in sgd_steps(net, optimizer, 3, seed=2):
        pass
    assert all(torch.equal(a, f) for a, f in zip(average.average, frozen))


def test_uniform_average_is_the_mean_of_the_snapshots():
    net = small_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    average, snapshots = UniformAverage(net), []
    with pytest.raises(ValueError, match="no weights"):
        average.average
    for step, _ in enumerate(sgd_steps(net, optimizer, 12)):
        if step % 3 == 2:  # "epoch" ends
            average.add()
            snapshots.append([p.detach().clone() for p in net.parameters()])
    assert average.count == 4
    for index, got in enumerate(average.average):
        expected = torch.stack([s[index].double() for s in snapshots]).mean(0)
        torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-7)
        assert got.dtype == torch.float32


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5])
def test_decay_out_of_range_is_an_error(decay):
    net = small_net()
    with pytest.raises(ValueError, match="decay"):
        ExponentialAverage(net, torch.optim.SGD(net.parameters(), lr=0.1), decay)


def test_averaged_model_holds_the_average_with_its_own_bn_statistics():
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    average = [torch.full_like(p, 0.25) for p in net.parameters()]
    inputs = torch.randn(40, 5, generator=torch.Generator().manual_seed(3))
    scorer = averaged_model(net, average, inputs, batch_size=8)
    for got, expected in zip(scorer.parameters(), average):
        assert torch.equal(got.detach(), expected)
    reference = small_net()  # the same weights loaded by hand, statistics recomputed
    with torch.no_grad():
        for p, a in zip(reference.parameters(), average):
            p.copy_(a)
    recompute_bn_statistics(reference, inputs, batch_size=8)
    assert torch.equal(scorer[1].running_mean, reference[1].running_mean)
    assert torch.equal(scorer[1].running_var, reference[1].running_var)
    for key, value in net.state_dict().items():  # the model followed is not touched
        assert torch.equal(value, before[key])
    assert averaged_model(net, average, inputs, 8, into=scorer) is scorer
    with pytest.raises(ValueError, match="does not match"):
        averaged_model(net, average[:-1], inputs, 8)


def test_following_a_run_leaves_the_run_bit_identical():
    generator = torch.Generator().manual_seed(4)
    splits = {name: (torch.rand(n, 784, generator=generator) * 2 - 1,
                     torch.randint(0, 10, (n,), generator=generator))
              for name, n in (("train", 256), ("val", 64), ("test", 64))}
    config = TrainConfig(epochs=3, batch_size=32, seed=5, threads=1, progress=False)
    followed = []

    def epoch_with_averages(model, optimizer, *args):
        if not followed:
            followed.append(ExponentialAverage(model, optimizer, 0.9))
            followed.append(UniformAverage(model))
        outcome = train_epoch(model, optimizer, *args)
        followed[1].add()
        averaged_model(model, followed[0].average, args[0], 32)
        return outcome

    def net():
        torch.manual_seed(6)
        return mnist_mlp(hidden=32, depth=2)

    plain = train(net(), splits, config)
    watched = train(net(), splits, config, epoch_runner=epoch_with_averages)
    assert plain.history.drop(columns="seconds").equals(watched.history.drop(columns="seconds"))
    for a, b in zip(plain.model.state_dict().values(), watched.model.state_dict().values()):
        assert torch.equal(a, b)
    assert followed[1].count == 3


def test_averages_follow_the_projects_fused_adam():
    """The hook fires on the fused Adam of `make_optimizer` too: one step, decay 0.5, gives
    the midpoint of the weights before and after it."""
    torch.manual_seed(7)
    net = mnist_mlp(hidden=16, depth=1, in_features=5, num_classes=3)
    optimizer = make_optimizer(net, 1e-2)
    average = ExponentialAverage(net, optimizer, 0.5)
    before = [p.detach().clone() for p in net.parameters()]
    for _ in sgd_steps(net, optimizer, 1):
        pass
    for got, old, new in zip(average.average, before, net.parameters()):
        torch.testing.assert_close(got, (old + new.detach()) / 2, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(old, new) for old, new in zip(before, net.parameters()))

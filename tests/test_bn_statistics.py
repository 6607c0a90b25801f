"""BN population statistics (`qnnlib.bn_statistics`) against hand-computed averages of
batch statistics (Ioffe & Szegedy's inference rule)."""
import pytest
import torch
from torch import nn

from qnnlib.bn_statistics import recompute_bn_statistics, with_population_statistics
from qnnlib.models import mnist_mlp
from qnnlib.training import TrainConfig, train, train_epoch


def small_net(dropout=0.5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Dropout(dropout), nn.BatchNorm1d(4),
                         nn.Tanh(), nn.Linear(4, 3), nn.BatchNorm1d(3))


def reference_statistics(net, inputs, batch_size):
    """Means of the batch means and of the unbiased batch variances, layer by layer,
    computed with plain tensor operations (each BN normalised by its batch statistics,
    no dropout), in float64."""
    linear1, _, bn1, _, linear2, bn2 = (m.double() for m in net)
    means, variances = {1: [], 2: []}, {1: [], 2: []}
    for start in range(0, len(inputs) - batch_size + 1, batch_size):
        x = linear1(inputs[start:start + batch_size].double())
        means[1].append(x.mean(0))
        variances[1].append(x.var(0, unbiased=True))
        x = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + bn1.eps) * bn1.weight + bn1.bias
        x = linear2(torch.tanh(x))
        means[2].append(x.mean(0))
        variances[2].append(x.var(0, unbiased=True))
    return {k: (torch.stack(means[k]).mean(0), torch.stack(variances[k]).mean(0)) for k in (1, 2)}


def test_population_statistics_match_the_hand_computed_averages():
    net = small_net()
    with torch.no_grad():  # BN affine parameters away from their defaults
        net[2].weight.uniform_(0.5, 2.0)
        net[2].bias.uniform_(-1.0, 1.0)
    inputs = torch.randn(103, 5, generator=torch.Generator().manual_seed(1)) * 3 + 1
    recompute_bn_statistics(net, inputs, batch_size=10)  # 10 whole batches, 3 left out
    expected = reference_statistics(_copy(net), inputs, 10)
    for layer, bn in ((1, net[2]), (2, net[5])):
        mean, var = expected[layer]
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-5)
        assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 10
    assert net.training  # the mode it was in


def _copy(net):
    copy = small_net()
    copy.load_state_dict(net.state_dict())
    return copy


def test_dropout_is_off_and_weights_untouched():
    net = small_net(dropout=0.9)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "tracked" not in k}
    inputs = torch.randn(40, 5, generator=torch.Generator().manual_seed(2))
    recompute_bn_statistics(net, inputs, batch_size=8)
    twice = small_net(dropout=0.9)
    twice.load_state_dict(net.state_dict())
    recompute_bn_statistics(twice, inputs, batch_size=8)  # with dropout on, draws would differ
    torch.testing.assert_close(net[2].running_var, twice[2].running_var, rtol=0, atol=0)
    without_dropout = small_net(dropout=0.0)
    recompute_bn_statistics(without_dropout, inputs, batch_size=8)
    torch.testing.assert_close(net[5].running_mean, without_dropout[5].running_mean, rtol=0, atol=0)
    for key, value in before.items():
        assert torch.equal(net.state_dict()[key], value)


@pytest.mark.parametrize("examples, batch_size", [(5, 8), (8, 1)])
def test_too_few_examples_is_an_error(examples, batch_size):
    with pytest.raises(ValueError, match="whole minibatches"):
        recompute_bn_statistics(small_net(), torch.randn(examples, 5), batch_size)


@pytest.mark.parametrize("examples", [0, -3, 2.5, True])
def test_examples_must_be_a_positive_integer(examples):
    with pytest.raises(ValueError, match="positive integer"):
        with_population_statistics(train_epoch, examples)


def tiny_run(epoch_runner=None):
    generator = torch.Generator().manual_seed(3)
    inputs = torch.rand(300, 784, generator=generator) * 2 - 1
    labels = torch.randint(0, 10, (300,), generator=generator)
    splits = {"train": (inputs[:200], labels[:200]), "val": (inputs[200:250], labels[200:250]),
              "test": (inputs[250:], labels[250:])}
    torch.manual_seed(0)
    model = mnist_mlp(hidden=32, depth=2, dropout_in=0.0, dropout_hidden=0.3)
    config = TrainConfig(epochs=2, batch_size=20, seed=0, threads=1, progress=False, device="cpu")
    return train(model, splits, config, epoch_runner=epoch_runner), splits


def test_in_training_the_steps_are_unchanged_and_the_evaluation_uses_the_new_statistics():
    plain, _ = tiny_run()
    recomputed, splits = tiny_run(with_population_statistics(train_epoch, 100))
    for column in ("train_loss", "train_error"):  # a step never reads the running buffers
        assert plain.history[column].tolist() == recomputed.history[column].tolist()
    expected = _copy_mlp(recomputed.model)
    recompute_bn_statistics(expected, splits["train"][0][:100], 20)
    for key in ("running_mean", "running_var"):
        assert torch.equal(getattr(expected[2], key), getattr(recomputed.model[2], key))
    assert not torch.equal(plain.model[2].running_var, recomputed.model[2].running_var)


def _copy_mlp(model):
    torch.manual_seed(0)
    copy = mnist_mlp(hidden=32, depth=2, dropout_in=0.0, dropout_hidden=0.3)
    copy.load_state_dict(model.state_dict())
    return copy

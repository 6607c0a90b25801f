"""experiments.seeded_model, the one way notebooks seed and build: the same weights as a
bare torch.manual_seed + mnist_mlp (what notebook 04 did before), new ones per seed."""
import torch

from qnnlib import experiments, models

SPEC = {"hidden": 16, "depth": 2, "weight_bits": 2, "act_bits": 2}


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_seeded_model_equals_a_bare_manual_seed_build():
    torch.manual_seed(3)
    bare = models.mnist_mlp(**SPEC)
    seeded = experiments.seeded_model(SPEC, 3)
    assert all(torch.equal(a, b) for a, b in zip(weights(bare), weights(seeded)))
    other = experiments.seeded_model(SPEC, 4)
    assert not torch.equal(weights(other)[0], weights(seeded)[0])


def test_seeded_model_hands_callables_the_binarization_generator():
    seen = []
    model = experiments.seeded_model(lambda generator: seen.append(generator) or torch.nn.Linear(2, 2), 5)
    expected = experiments.binarization_generator(5)
    assert isinstance(model, torch.nn.Linear)
    assert torch.equal(torch.rand(4, generator=seen[0]), torch.rand(4, generator=expected))

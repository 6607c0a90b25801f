"""Averages of the real-valued weights along a training run, scored as their own model
(the CPU budget's search round 10, `scripts/budget_search.py`; not the paper's protocol).

A BNN's sign flips wherever a latent weight sits near zero, and late in a run Adam's
steps (about the lr whatever the gradient) keep those weights flipping back and forth.
An average of the latent weights over the last steps or epochs settles each sign by its
majority over that stretch. Two averages, both of every parameter (latent weights, biases,
BN's affine parameters):

- exponential (Polyak averaging with forgetting): after every optimizer step,
  a <- decay * a + (1 - decay) * w;
- uniform over epochs (stochastic weight averaging, Izmailov et al. 2018): the mean of
  the weights at the ends of epochs `start`, `start` + 1, ..., the current one.

BN's statistics belong to the weights that produced them, so an average is scored with
population statistics recomputed for it (`bn_statistics.recompute_bn_statistics`).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .bn_statistics import recompute_bn_statistics

__all__ = ["ExponentialAverage", "UniformAverage", "averaged_model"]


def _parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach() for p in model.parameters()]


class ExponentialAverage:
    """a <- decay * a + (1 - decay) * w after every step of `optimizer`, starting from the
    weights `model` holds now. `decay` in [0, 1): the half-life is ln 2 / -ln(decay) steps.

    The hook runs as the step ends, before `training.train_step` clips the weights to
    [-1, 1], so a weight the step pushed past +-1 enters the average up to one step beyond
    it; its sign, the only thing a binary layer reads, is the same."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay, self.weights = decay, _parameters(model)
        self.average = [w.clone() for w in self.weights]
        self._hook = optimizer.register_step_post_hook(lambda *_: self.update())

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.average, self.weights, 1.0 - self.decay)

    def remove(self) -> None:
        """Stop following the optimizer."""
        self._hook.remove()


class UniformAverage:
    """The mean of the weights `model` held at each `add()` (call it at the end of each
    epoch to be averaged)."""

    def __init__(self, model: nn.Module):
        self.weights, self.count = _parameters(model), 0
        self.total = [torch.zeros_like(w, dtype=torch.float64) for w in self.weights]

    @torch.no_grad()
    def add(self) -> None:
        torch._foreach_add_(self.total, [w.double() for w in self.weights])
        self.count += 1

    @property
    def average(self) -> list[torch.Tensor]:
        if not self.count:
            raise ValueError("no weights were added to the average yet")
        return [(t / self.count).to(w.dtype) for t, w in zip(self.total, self.weights)]


@torch.no_grad()
def averaged_model(model: nn.Module, average: list[torch.Tensor], bn_inputs: torch.Tensor,
                   batch_size: int, into: nn.Module | None = None) -> nn.Module:
    """A copy of `model` (or `into`, a copy made earlier, reused) holding the `average`
    parameters, with BN population statistics recomputed from `bn_inputs` in minibatches
    of `batch_size`. `model` itself is not touched."""
    scorer = copy.deepcopy(model) if into is None else into
    targets = [p.detach() for p in scorer.parameters()]
    if len(targets) != len(average) or any(t.shape != a.shape for t, a in zip(targets, average)):
        raise ValueError("the average does not match the model's parameters")
    torch._foreach_copy_(targets, average)
    recompute_bn_statistics(scorer, bn_inputs, batch_size)
    return scorer

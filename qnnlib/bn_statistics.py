"""Batch-norm population statistics recomputed from training data before each evaluation
(the CPU budget's search round 7, `scripts/budget_search.py`; not the paper's protocol).

The authors' code evaluates with BN's running averages (momentum 0.1), as `evaluate`
does by default. Those averages mix the statistics of the last few dozen weight updates,
and they are gathered with dropout on, which changes the variance the next layer sees.
Ioffe & Szegedy's own inference rule (Batch Normalization, 2015, Alg. 1, step 10) uses the
population statistics of the final weights instead: E[x] = E_B[mu_B] and
Var[x] = m/(m-1) E_B[sigma_B^2] over training minibatches of size m.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["recompute_bn_statistics", "with_population_statistics"]


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> None:
    """Replace every BatchNorm's running mean and variance by the average of its batch
    statistics over `inputs` (whole minibatches of `batch_size`, in order), with the rest
    of the model in eval mode (no dropout). The weights are not touched, and a training
    step never reads these buffers, so training goes on exactly as it would have.

    PyTorch's cumulative average (momentum None) keeps the unbiased batch variance, so
    the result is Ioffe & Szegedy's m/(m-1) E_B[sigma_B^2]."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    batches = len(inputs) // batch_size
    if not norms:
        return
    if batch_size < 2 or batches < 1:
        raise ValueError(f"BN statistics need whole minibatches of at least 2 examples: "
                         f"got {len(inputs)} examples in batches of {batch_size}")
    was_training, momenta = model.training, [norm.momentum for norm in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        for b in range(batches):
            model(inputs[b * batch_size:(b + 1) * batch_size])
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)


def with_population_statistics(epoch_runner, examples: int):
    """An `epoch_runner` for `training.train`: `epoch_runner`'s epoch (e.g.
    `training.train_epoch`), then the BN statistics recomputed from the first `examples`
    training examples, so that the evaluations after it (validation, test, the
    best-epoch snapshot) use them."""
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise ValueError(f"examples must be a positive integer, got {examples!r}")

    def run(model, optimizer, inputs, labels, config, shuffle):
        outcome = epoch_runner(model, optimizer, inputs, labels, config, shuffle)
        recompute_bn_statistics(model, inputs[:examples], config.batch_size)
        return outcome

    return run

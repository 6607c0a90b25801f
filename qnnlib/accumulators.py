"""Weight accumulators held at reduced precision (notebook 02, arXiv:1609.07061 Sec. 2.2).

The paper's training rule (Algorithm 1) keeps a real-valued accumulator W for every
binary weight: forward and backward use sign(W), the optimizer adds its small, noisy
steps to W, and sign(W) changes only after enough of them have piled up. Sec. 2.2 argues
that the accumulator needs "sufficient resolution" for SGD to work at all. This module
lets an experiment store W in a coarser number format without touching the training
loop, and counts the updates the coarse format swallows.

Formats (`AccumulatorFormat.parse`):

- ``"float32"``: the identity (the reference the others are compared with);
- ``"bfloat16"``, ``"float16"``: a round trip ``w.to(dtype).to(float32)``, i.e. IEEE 754
  round-to-nearest, ties-to-even. In [-1, 1] overflow cannot happen; float16 turns
  subnormal below 2**-14 (spacing 2**-24) and flushes |w| < 2**-25 to zero, which only
  matters for weights that are practically zero;
- ``"fixed<k>"``: fixed point with k fractional bits on [-1, 1]:
  ``clamp(round(w * 2**k) / 2**k, -1, 1)`` (ties-to-even, like the float casts). Storing
  it takes k + 2 bits: a sign bit, one integer bit for +-1, k fractional bits.
- ``"fixed<k>-sr"``: the same grid with *stochastic* rounding: with lo = floor(w 2**k) and
  f = w 2**k - lo in [0, 1), store (lo + 1) / 2**k with probability f, else lo / 2**k.
  It is unbiased, E[round(w)] = w, so an update smaller than the spacing survives in
  expectation instead of always being rounded away (Gupta et al. 2015, "Deep learning with
  limited numerical precision"). The draws come from an explicit `torch.Generator`.

How it hooks in: `low_precision_accumulators(model, fmt)` registers PyTorch's global
optimizer step hooks (`torch.optim.optimizer.register_optimizer_step_pre_hook` and
`register_optimizer_step_post_hook`), so it also reaches the optimizer that
`qnnlib.training.train` builds internally. Before each step it snapshots the model's
QuantLinear weights; after the step it rounds them to the format and counts lost
updates. Only those weights are rounded: biases, BatchNorm parameters and Adam's moment
estimates stay in float32, so the experiment isolates the accumulator.

Order with clipping: `training.train_step` clips W to [-1, 1] *after* `optimizer.step()`,
so the rounding here happens before the clip. The order is harmless: +-1 is
representable in every format and rounding is monotone, so round(clip(w)) == clip(round(w))
(for stochastic rounding in distribution: any w >= 1 rounds to at least 1).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                   register_optimizer_step_pre_hook)

from .accumulator_formats import FLOAT_FORMATS, ROUNDINGS, AccumulatorFormat, round_to_format  # noqa: F401
from .models import quant_linears

__all__ = ["AccumulatorFormat", "FLOAT_FORMATS", "LowPrecisionAccumulators",
           "low_precision_accumulators", "round_to_format"]

class LowPrecisionAccumulators:
    """Context manager: hold `model`'s QuantLinear weights in `fmt` during training
    (notebook 02, paper Sec. 2.2). Use `low_precision_accumulators(model, fmt)`.

    On entry the weights are rounded to the format (the accumulator starts in it too)
    and two global optimizer hooks are registered; on exit both are removed, also when
    the body raises. The hooks act only on optimizers that hold at least one of the
    model's QuantLinear weights. A stochastic format ("fixed<k>-sr") needs `generator`,
    the source of its rounding draws (one uniform number per weight entry and step).

    After each optimizer step, for every weight entry with old value w and float32
    result w' of the step:

    - the update is *real* when clip(w') != w (clip to [-clip, clip]; a step that only
      pushes a clipped weight further out is no update in float32 either);
    - it is *lost* when it is real and clip(round(w')) == w: the format rounds it away
      (the stored value itself is tested, so a stochastic format's one draw decides both).

    Counts: `steps`, `updates` (real updates), `lost`, `lost_fraction` = lost / updates,
    `flips` (entries whose stored sign, hence binary weight, changed; sign(0) = +1);
    `step_counts` holds one (updates, lost, flips) triple per step when `record_steps`.
    With `magnitude_edges` (increasing, e.g. [0, 1/64, 1/8, 1]), `updates_by_magnitude`
    and `lost_by_magnitude` split the counts by |w| before the step, bin i holding
    edges[i] <= |w| < edges[i+1] (the last bin is closed and takes anything larger).
    """

    def __init__(self, model: nn.Module, fmt: "str | AccumulatorFormat",
                 clip: float | None = 1.0, record_steps: bool = True,
                 magnitude_edges=None, generator: torch.Generator | None = None):
        self.format = AccumulatorFormat.parse(fmt)
        if self.format.stochastic and generator is None:
            raise ValueError(f"{self.format.name} rounds stochastically: pass a torch.Generator "
                             "so that the run is reproducible")
        self.generator = generator
        self.weights = [layer.weight for layer in quant_linears(model)]
        if not self.weights:
            raise ValueError("the model has no QuantLinear layers: nothing to hold")
        self.clip = clip
        self.record_steps = record_steps
        self.magnitude_edges = None
        if magnitude_edges is not None:
            edges = torch.as_tensor(magnitude_edges, dtype=torch.float32)
            if edges.ndim != 1 or len(edges) < 2 or not torch.all(edges[1:] > edges[:-1]):
                raise ValueError(f"magnitude_edges must increase, got {magnitude_edges!r}")
            self.magnitude_edges = edges
        self._ids = {id(w) for w in self.weights}
        self._handles = []
        self._before = None
        self.reset()

    def reset(self) -> None:
        """Zero all counts."""
        self.steps = 0
        self._counts = torch.zeros(3, dtype=torch.long)  # updates, lost, flips
        bins = 0 if self.magnitude_edges is None else len(self.magnitude_edges) - 1
        self._binned = torch.zeros(2, bins, dtype=torch.long)  # updates, lost per |w| bin
        self._step_counts: list[torch.Tensor] = []

    # -- counts -----------------------------------------------------------------
    @property
    def updates(self) -> int:
        """Weight entries changed by the float32 step (after clipping), summed over steps."""
        return int(self._counts[0])

    @property
    def lost(self) -> int:
        """Of those, the entries the format rounded back to their old value."""
        return int(self._counts[1])

    @property
    def flips(self) -> int:
        """Entries whose stored accumulator changed sign (binary weight flips), summed."""
        return int(self._counts[2])

    @property
    def updates_by_magnitude(self) -> list[int]:
        """`updates` per |w| bin of `magnitude_edges` (empty without edges)."""
        return self._binned[0].tolist()

    @property
    def lost_by_magnitude(self) -> list[int]:
        """`lost` per |w| bin of `magnitude_edges` (empty without edges)."""
        return self._binned[1].tolist()

    @property
    def lost_fraction(self) -> float:
        """lost / updates (0.0 before any update)."""
        return self.lost / self.updates if self.updates else 0.0

    @property
    def step_counts(self) -> list[tuple[int, int, int]]:
        """(updates, lost, flips) of every step, in order (empty unless `record_steps`)."""
        if not self._step_counts:
            return []
        return [tuple(row) for row in torch.stack(self._step_counts).tolist()]

    def counts(self) -> dict:
        """{"format", "steps", "updates", "lost", "lost_fraction", "flips"} as plain numbers."""
        return {"format": self.format.name, "steps": self.steps, "updates": self.updates,
                "lost": self.lost, "lost_fraction": self.lost_fraction, "flips": self.flips}

    # -- hooks ------------------------------------------------------------------
    def _ours(self, optimizer: torch.optim.Optimizer) -> bool:
        return any(id(p) in self._ids for group in optimizer.param_groups for p in group["params"])

    @torch.no_grad()
    def _pre_step(self, optimizer, args, kwargs) -> None:
        if self._ours(optimizer):
            self._before = [w.detach().clone() for w in self.weights]

    @torch.no_grad()
    def _post_step(self, optimizer, args, kwargs) -> None:
        if self._before is None or not self._ours(optimizer):
            return
        device = self.weights[0].device
        counts = torch.zeros(3, dtype=torch.long, device=device)
        binned = torch.zeros_like(self._binned, device=device)
        edges = None if self.magnitude_edges is None else self.magnitude_edges[1:-1].to(device)
        for w, old in zip(self.weights, self._before):
            new = w.detach()
            intended = new.clamp(-self.clip, self.clip) if self.clip is not None else new
            real = intended != old
            # Round once: a stochastic format must count and store the same draw. Rounding
            # and clipping commute (+-clip is on the grid), so clip(round) = round(clip).
            stored = self.format.round(new, self.generator)
            rounded = stored.clamp(-self.clip, self.clip) if self.clip is not None else stored
            lost = real & (rounded == old)
            counts[0] += real.sum()
            counts[1] += lost.sum()
            counts[2] += ((rounded >= 0) != (old >= 0)).sum()
            if edges is not None:
                index = torch.bucketize(old.abs().flatten(), edges, right=True)
                bins = binned.shape[1]
                binned[0] += torch.bincount(index[real.flatten()], minlength=bins)
                binned[1] += torch.bincount(index[lost.flatten()], minlength=bins)
            w.copy_(stored)
        self._before = None
        self.steps += 1
        counts = counts.cpu()
        self._counts += counts
        self._binned += binned.cpu()
        if self.record_steps:
            self._step_counts.append(counts)

    # -- context manager ----------------------------------------------------------
    def __enter__(self) -> "LowPrecisionAccumulators":
        with torch.no_grad():
            for w in self.weights:
                w.copy_(self.format.round(w, self.generator))
        self._handles = [register_optimizer_step_pre_hook(self._pre_step),
                         register_optimizer_step_post_hook(self._post_step)]
        return self

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._before = None
        return False


def low_precision_accumulators(model: nn.Module, fmt: "str | AccumulatorFormat",
                               clip: float | None = 1.0, record_steps: bool = True,
                               magnitude_edges=None,
                               generator: torch.Generator | None = None) -> LowPrecisionAccumulators:
    """Hold `model`'s weight accumulators in `fmt` inside a `with` block (notebook 02)::

        with low_precision_accumulators(model, "fixed8") as acc:
            result = train(model, splits, config)
        acc.lost_fraction

    `clip` should match the training loop's clipping bound (1.0, or None without
    clipping); it only affects which updates count as real. `generator` drives the draws
    of a stochastic format ("fixed8-sr"). See `LowPrecisionAccumulators`.
    """
    return LowPrecisionAccumulators(model, fmt, clip=clip, record_steps=record_steps,
                                    magnitude_edges=magnitude_edges, generator=generator)

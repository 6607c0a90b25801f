"""The paper's training epoch with the whole step captured once as a CUDA graph.

`GraphedEpoch` is a drop-in for `qnnlib.training.train_epoch` that computes the same
thing, step for step; `train_graphed` is `training.train` with it and fused Adam plugged
in (what `TrainConfig.cuda_graph` asks for; `qnn-train` calls it then):

- the same permutation (drawn from the same shuffle generator) and the same minibatches;
- the same step, `training.train_step`: forward with dropout, squared hinge loss,
  backward through the straight-through estimators, Adam with the per-layer Glorot
  learning-rate scale (one param group per layer), weights clipped to [-1, 1];
- the mean training loss and error of the epoch.

What changes is only how it is issued on a GPU:

- the data stay resident on the device (`training.split_tensors` put them there), and a
  minibatch is gathered on the device from a device-side permutation and step counter;
- after a few eager warm-up steps (real steps of the epoch, on a side stream, as CUDA
  graph capture requires) one step is captured and then replayed: one launch per step
  instead of hundreds, and capture itself refuses any host synchronisation inside it;
- Adam is `fused=True, capturable=True` (one kernel for every parameter tensor) with
  the learning rate of each group in a device tensor, refilled once per epoch from the
  float that `training.set_base_lr` sets (exponential decay x Glorot scale);
- loss and error are summed on the device and read once per epoch.

Fused Adam rounds differently from the for-each implementation in the last bits, so a
run with `cuda_graph` is its own computation: checkpoints record the flag and do not
resume across it. On a CPU (the dry run of `make gpu-train`) the same code runs eagerly.
"""
from __future__ import annotations

import torch

from qnnlib.models import quant_linears
from qnnlib import training
from qnnlib.training import LOSSES, make_optimizer, train_step

__all__ = ["GraphedEpoch", "fused_adam"]

WARMUP_STEPS = 3  # eager steps before capture (cuBLAS handles, Adam state, autograd)
_ADAM_KEYS = ("params", "lr", "lr_scale")


def fused_adam(model: torch.nn.Module, lr: float, glorot_scaling: bool = True) -> torch.optim.Adam:
    """`training.make_optimizer`'s param groups (Glorot-scaled lr per layer) in one fused,
    graph-capturable Adam."""
    groups = [{key: group[key] for key in _ADAM_KEYS}
              for group in make_optimizer(model, lr, glorot_scaling).param_groups]
    on_cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.Adam(groups, lr=lr, fused=True, capturable=on_cuda)


class GraphedEpoch:
    """Callable with the signature and result of `training.train_epoch`.

    The first call sets up the static buffers and (on CUDA) captures the step; later calls
    replay it. One instance serves one (model, optimizer, training set) for a whole run.
    `capture=False` runs the same steps eagerly on any device (tests compare the two).
    """

    def __init__(self, capture: bool = True):
        self.capture = capture
        self.graph = None
        self._bound = None

    def __call__(self, model, optimizer, inputs, labels, config, shuffle):
        model.train()
        if self._bound is None:
            self._setup(model, optimizer, inputs, labels, config)
        elif self._bound != (id(model), id(optimizer), id(inputs)):
            raise ValueError("a GraphedEpoch serves one model, optimizer and training set")
        batches = len(inputs) // config.batch_size
        if batches == 0:
            raise ValueError(f"n_train={len(inputs)} is smaller than batch_size={config.batch_size}")
        self.order.copy_(torch.randperm(len(inputs), generator=shuffle))
        for buffer in (self.counter, self.total_loss, self.total_wrong):
            buffer.zero_()
        floats = self._install_lrs(optimizer)
        try:
            done = self._capture(batches) if self._use_graph and self.graph is None else 0
            for _ in range(batches - done):
                self.graph.replay() if self.graph is not None else self._step()
        finally:
            for group, value in zip(optimizer.param_groups, floats):
                group["lr"] = value  # floats again for state_dict / set_base_lr
        return (self.total_loss.item() / batches,
                self.total_wrong.item() / (batches * config.batch_size))

    def _setup(self, model, optimizer, inputs, labels, config):
        device = inputs.device
        self._bound = (id(model), id(optimizer), id(inputs))
        self._use_graph = self.capture and device.type == "cuda"
        self.model, self.optimizer = model, optimizer
        self.inputs, self.labels = inputs, labels
        self.loss_fn = LOSSES[config.loss]
        self.clip_layers = quant_linears(model) if config.clip_weights else []
        self.order = torch.zeros(len(inputs), dtype=torch.long, device=device)
        self.counter = torch.zeros((), dtype=torch.long, device=device)
        self.offsets = torch.arange(config.batch_size, device=device)
        self.total_loss = torch.zeros((), device=device)
        self.total_wrong = torch.zeros((), dtype=torch.long, device=device)
        self.lrs = [torch.zeros((), device=device) for _ in optimizer.param_groups]

    def _install_lrs(self, optimizer) -> list:
        """Copy each group's float lr into its device tensor, which the captured fused
        Adam reads; return the floats to restore after the epoch."""
        floats = []
        for group, tensor in zip(optimizer.param_groups, self.lrs):
            value = group["lr"]
            value = float(value) if not isinstance(value, torch.Tensor) else float(value.item())
            tensor.fill_(value)
            group["lr"] = tensor
            floats.append(value)
        return floats

    def _step(self):
        """Minibatch `counter` of the permutation, one `train_step`, sums on the device."""
        index = self.order.index_select(0, self.counter * len(self.offsets) + self.offsets)
        loss, wrong = train_step(self.model, self.optimizer, self.inputs.index_select(0, index),
                                 self.labels.index_select(0, index), self.loss_fn,
                                 self.clip_layers)
        self.total_loss += loss
        self.total_wrong += wrong
        self.counter += 1

    def _capture(self, batches: int) -> int:
        """Run the warm-up steps (real steps of this epoch) on a side stream, then capture
        one step without running it. Returns the number of steps already done."""
        warmup = min(WARMUP_STEPS, batches)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        if batches > warmup:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step()
            self.graph = graph
        return warmup


def train_graphed(model: torch.nn.Module, splits: dict, config, **options) -> "training.TrainResult":
    """`training.train` with each step replayed as a CUDA graph (`GraphedEpoch`) and
    fused Adam unless another `optimizer_factory` is given; `config` must say
    `cuda_graph=True` (checkpoints record the flag)."""
    config = training.TrainConfig.from_dict(config) if isinstance(config, dict) else config
    if not config.cuda_graph:
        raise ValueError("train_graphed runs cuda_graph=True configurations; use training.train")
    options.setdefault("optimizer_factory", fused_adam)
    return training.train(model, splits, config, epoch_runner=GraphedEpoch(), **options)

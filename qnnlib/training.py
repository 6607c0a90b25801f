"""The training loop of the paper's MNIST experiment (arXiv:1609.07061 Sec. 2.2 / the
authors' Theano code, `binary_net.train` and `Train-time/mnist.py`).

Protocol, step by step (see DESIGN.md, "The paper's MNIST protocol"):

- Adam on minibatches of 100 from a shuffled training set (reshuffled every epoch);
- learning rate decayed exponentially per epoch, from `lr_start` to `lr_end`;
- each binary layer's weight step scaled by its Glorot factor 1/sqrt(1.5/(fan_in+fan_out));
- after every step the real-valued weight accumulators are clipped to [-1, 1];
- squared hinge loss on targets 2*onehot-1;
- after each epoch: validation error; the reported number is the test error at the
  epoch with the best validation error.

Determinism (`determinism`): one seed drives python, numpy, torch and a separate
shuffling generator; deterministic algorithms are on during `train`, so a rerun with the
same device and thread count is bit-identical. Checkpoints (`checkpoints`) hold every
piece of state, so a resumed run ends bit-identical to an uninterrupted one; a
checkpoint of another run, or of other code, is refused with the reason. The
hyper-parameters and their validation are in `train_config`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoints import load_checkpoint, rng_state, run_signature, save_checkpoint, set_rng_state
from .determinism import deterministic_algorithms, seed_everything
from .layers import squared_hinge_loss
from .models import quant_linears
from .train_config import LOSSES, TrainConfig

__all__ = [
    "seed_everything", "TrainConfig", "TrainResult", "lr_at_epoch", "make_optimizer",
    "evaluate", "train", "resolve_device", "run_signature",
]


@dataclass
class TrainResult:
    """What `train` returns: per-epoch history and the model at its best-validation epoch."""

    history: pd.DataFrame
    best_epoch: int
    best_val_error: float
    test_error: float
    model: nn.Module
    config: TrainConfig
    device: str

    @property
    def seconds(self) -> float:
        """Total training time over all epochs (resumed runs include earlier sessions)."""
        return float(self.history["seconds"].sum())


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" means CUDA when present, else CPU; asking for CUDA without it is an error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for, but torch sees no CUDA device")
    return device


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate used during 0-based `epoch`: lr_start * (lr_end/lr_start)**(epoch/epochs).

    The Theano code starts at LR_start and multiplies by (lr_end/lr_start)**(1/epochs)
    after each epoch; the closed form gives the same values without drift.
    """
    return config.lr_start * (config.lr_end / config.lr_start) ** (epoch / config.epochs)


def make_optimizer(model: nn.Module, lr: float, glorot_scaling: bool = True) -> torch.optim.Adam:
    """Adam with one param group per QuantLinear weight, its lr multiplied by the layer's
    Glorot factor (Theano: `param + W_LR_scale * (adam_update - param)`, which for Adam
    equals scaling the lr); biases and BN parameters share one group at the plain lr.

    Each group stores its `lr_scale`, so setting a new base lr keeps the scaling.
    `fused=True`: the same Adam update in one pass over each tensor; on one CPU thread
    it makes a 3 x 2048 training step about a quarter faster than the per-op loop.
    """
    groups, scaled = [], set()
    for layer in quant_linears(model):
        scale = float(layer.lr_scale) if glorot_scaling else 1.0
        groups.append({"params": [layer.weight], "lr": lr * scale, "lr_scale": scale})
        scaled.add(id(layer.weight))
    rest = [p for p in model.parameters() if id(p) not in scaled and p.requires_grad]
    if rest:
        groups.append({"params": rest, "lr": lr, "lr_scale": 1.0})
    return torch.optim.Adam(groups, lr=lr, fused=True)


def set_base_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Exponential decay step: each group gets lr times its own stored scale."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> float:
    """Error rate in [0, 1] in eval mode (BN running stats, no dropout), as `val_fn`."""
    was_training = model.training
    model.eval()
    wrong = 0
    for start in range(0, len(inputs), batch_size):
        scores = model(inputs[start:start + batch_size])
        wrong += (scores.argmax(dim=1) != labels[start:start + batch_size]).sum().item()
    model.train(was_training)
    return wrong / len(inputs)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
               labels: torch.Tensor, loss_fn=squared_hinge_loss, clip_layers=()):
    """One minibatch: forward, loss, backward, Adam step, then clip the accumulators to
    [-1, 1] (Sec. 2.3, Theano `clipping_scaling`): the sign ignores magnitude, so an
    unclipped W could grow without bound and take ever longer to flip back.

    `clip_layers` are the QuantLinear layers to clip (none when clipping is off).
    Returns (loss, number of wrong predictions) as tensors, to avoid a device sync."""
    scores = model(inputs)
    loss = loss_fn(scores, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    for layer in clip_layers:
        layer.clip_()
    return loss.detach(), (scores.detach().argmax(dim=1) != labels).sum()


def train_epoch(model, optimizer, inputs, labels, config: TrainConfig, shuffle: torch.Generator):
    """One pass over a fresh permutation of the training set; drops the last partial
    batch like the Theano code (`len(X) // batch_size` batches).

    Returns the mean minibatch loss and error seen *during* training (dropout on), as
    the Theano code reports its training loss."""
    model.train()
    order = torch.randperm(len(inputs), generator=shuffle).to(inputs.device)
    batches = len(inputs) // config.batch_size
    loss_fn = LOSSES[config.loss]
    clip_layers = quant_linears(model) if config.clip_weights else []
    total_loss = torch.zeros((), device=inputs.device)
    total_wrong = torch.zeros((), device=inputs.device, dtype=torch.long)
    for b in range(batches):
        index = order[b * config.batch_size:(b + 1) * config.batch_size]
        loss, wrong = train_step(model, optimizer, inputs[index], labels[index], loss_fn,
                                 clip_layers)
        total_loss += loss
        total_wrong += wrong
    return total_loss.item() / batches, total_wrong.item() / (batches * config.batch_size)


def split_tensors(splits: dict, config: TrainConfig, device: torch.device) -> dict:
    """(inputs, labels) on `device` for train/val/test, cut to n_train/n_val/n_test.

    Accepts `data.Split` objects (with `.inputs()` and `.labels`) or (inputs, labels)
    pairs, so tests can train on synthetic tensors."""
    limits = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    tensors = {}
    for name, limit in limits.items():
        split = splits[name]
        if isinstance(split, (tuple, list)):
            inputs, labels = split
        else:
            inputs, labels = split.inputs(), split.labels
        inputs = torch.as_tensor(inputs, dtype=torch.float32)
        labels = torch.as_tensor(labels, dtype=torch.long)
        tensors[name] = (inputs[:limit].to(device), labels[:limit].to(device))
    if len(tensors["train"][0]) < config.batch_size:
        raise ValueError(f"the training split holds {len(tensors['train'][0])} examples, fewer "
                         f"than batch_size={config.batch_size}: an epoch would hold no minibatch")
    for name in ("val", "test"):
        if len(tensors[name][0]) == 0:
            raise ValueError(f"the {name} split is empty: its error rate is undefined")
    return tensors


def clone_state(model: nn.Module) -> dict:
    """A detached copy of the state dict (the best-validation snapshot)."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def train(model: nn.Module, splits: dict, config: TrainConfig | dict | None = None,
          stop_after: int | None = None, optimizer_factory=None,
          identity: dict | None = None, epoch_runner=None) -> TrainResult:
    """Train `model` on splits {"train", "val", "test"} with the paper's protocol and
    return the history and the model at its best-validation epoch.

    `stop_after` ends the run after that many epochs in total (the checkpoint keeps
    the rest resumable): it simulates an interruption in tests.
    `optimizer_factory(model, lr, glorot_scaling)` replaces `make_optimizer` (e.g. the
    shift-based AdaMax ablation); its param groups must carry "lr_scale".
    `identity` describes the run beyond `config` (qnn-train: the whole resolved
    configuration); a checkpoint resumes only a run with the same description.
    `epoch_runner` replaces `train_epoch` (same arguments, same maths): the GPU path
    plugs in here from above (`qnnlib.gpu.graphed_training.train_graphed`, which
    `config.cuda_graph` asks for); this module does not know it.

    Selection: see `best_epoch`; the reported test error is the one of that epoch.
    Deterministic algorithms are on during the run and restored afterwards.
    """
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, a dict or None, got {type(config).__name__}")
    if config.cuda_graph and epoch_runner is None:
        raise ValueError("cuda_graph=True runs the captured epoch: train with "
                         "qnnlib.gpu.graphed_training.train_graphed (qnn-train does)")
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    with deterministic_algorithms(device):
        return _run(model, splits, config, device, stop_after, optimizer_factory or make_optimizer,
                    identity, epoch_runner or train_epoch)


def _run(model, splits, config: TrainConfig, device, stop_after, optimizer_factory,
         identity, epoch_fn) -> TrainResult:
    """The body of `train`, from seeding to the best-validation model."""
    shuffle = seed_everything(config.seed)
    model.to(device)
    data = split_tensors(splits, config, device)
    optimizer = optimizer_factory(model, config.lr_start, config.glorot_scaling)

    records, best_state = [], clone_state(model)
    checkpoint = Path(config.checkpoint) if config.checkpoint else None
    signature = run_signature(model, optimizer, config, device, data, identity) if checkpoint else None
    saved = load_checkpoint(checkpoint, signature) if checkpoint else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        records, best_state = saved["history"], saved["best_state"]
        set_rng_state(saved["rng"], model, shuffle)

    last = config.epochs if stop_after is None else min(stop_after, config.epochs)
    bar = tqdm(range(len(records), last), total=config.epochs, initial=len(records),
               desc="epochs", disable=not config.progress)
    deadline = time.monotonic() + (math.inf if config.max_seconds is None else config.max_seconds)
    last_save = time.monotonic()
    for epoch in bar:
        start = time.perf_counter()
        lr = lr_at_epoch(config, epoch)
        set_base_lr(optimizer, lr)
        train_loss, train_error = epoch_fn(model, optimizer, *data["train"], config, shuffle)
        val_error = evaluate(model, *data["val"])
        test_error = evaluate(model, *data["test"])
        records.append({"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
                        "train_error": train_error, "val_error": val_error,
                        "test_error": test_error, "seconds": time.perf_counter() - start})
        if best_epoch(records) == epoch + 1:
            best_state = clone_state(model)
        bar.set_postfix(loss=f"{train_loss:.4f}", val_err=f"{val_error:.4f}")
        # stop when another epoch like this one would overrun the time budget
        out_of_time = time.monotonic() + records[-1]["seconds"] > deadline
        if checkpoint and (out_of_time or epoch + 1 == last
                           or time.monotonic() - last_save >= config.checkpoint_seconds):
            last_save = time.monotonic()
            save_checkpoint(checkpoint, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "best_state": best_state, "history": records,
                "rng": rng_state(model, shuffle), "epoch": epoch + 1,
                "config": config.to_dict(), "signature": signature})
        if out_of_time:
            break
    bar.close()
    return finish(model, records, best_state, config, device)


def best_epoch(records: list[dict]) -> int:
    """The selected epoch (1-based): lowest validation error, the *later* one on a tie,
    as `binary_net.train`'s `if val_err <= best_val_err`. 0 when nothing ran yet."""
    best = None
    for row in records:
        if best is None or row["val_error"] <= best["val_error"]:
            best = row
    return best["epoch"] if best else 0


def finish(model, records, best_state, config, device) -> TrainResult:
    """Load the best-validation weights and report that epoch's validation and test
    error (the paper's number)."""
    history = pd.DataFrame(records, columns=["epoch", "lr", "train_loss", "train_error",
                                             "val_error", "test_error", "seconds"])
    model.load_state_dict(best_state)
    epoch = best_epoch(records)
    if not epoch:
        return TrainResult(history, 0, math.nan, math.nan, model, config, str(device))
    row = records[epoch - 1]
    return TrainResult(history, epoch, row["val_error"], row["test_error"], model, config, str(device))

"""`TrainConfig`: the hyper-parameters of one training run, checked when it is made.

Defaults are the paper's MNIST protocol (arXiv:1609.07061; DESIGN.md) except `epochs`.
Every field is validated in `__post_init__`, however the config was built (directly,
`from_dict`, `dataclasses.replace`): a wrong type, a NaN or infinite learning rate, a
size below one or an unknown loss or device fails at once with an error that names the
field, instead of deep inside the loop (or, worse, as a silently odd run).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layers import squared_hinge_loss

__all__ = ["TrainConfig", "LOSSES", "BOOKKEEPING_FIELDS"]

LOSSES = {"squared_hinge": squared_hinge_loss, "cross_entropy": F.cross_entropy}

# Fields that change how a run is reported or where it is stored, but not its numbers:
# a checkpoint may be resumed with different values of these. (The thread count can
# change the last bits of float sums, not the algorithm; see `training`.)
TRAINING_DEVICES = ("cpu", "cuda")
BOOKKEEPING_FIELDS = ("checkpoint", "progress", "threads", "max_seconds", "checkpoint_seconds")

_SEED_LIMIT = 2**63  # torch.manual_seed's range, non-negative part


@dataclass
class TrainConfig:
    """Hyper-parameters of one run; defaults are the paper's MNIST protocol except
    `epochs` (the paper trains 1000 epochs; 20 is a practical default)."""

    epochs: int = 20
    batch_size: int = 100
    lr_start: float = 3e-3
    lr_end: float = 3e-7
    glorot_scaling: bool = True
    clip_weights: bool = True
    loss: str = "squared_hinge"
    seed: int = 0
    device: str = "auto"
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    checkpoint: str | None = None
    progress: bool = True
    threads: int | None = None
    # GPU speed, same maths (qnnlib.gpu.graphed_training): each step replayed as a CUDA
    # graph, fused Adam. Bookkeeping: stop before `max_seconds` of training (the
    # checkpoint resumes the rest); save the checkpoint at most every `checkpoint_seconds`.
    cuda_graph: bool = False
    max_seconds: float | None = None
    checkpoint_seconds: float = 0.0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            setattr(self, name, _integer(name, getattr(self, name), minimum=1))
        for name in ("n_train", "n_val", "n_test", "threads"):
            if getattr(self, name) is not None:
                setattr(self, name, _integer(name, getattr(self, name), minimum=1))
        self.seed = _integer("seed", self.seed, minimum=0)
        if self.seed >= _SEED_LIMIT:
            raise ValueError(f"seed must be below 2**63, got {self.seed}")
        self.lr_start, self.lr_end = (_learning_rate(n, getattr(self, n)) for n in ("lr_start", "lr_end"))
        for name in ("max_seconds", "checkpoint_seconds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                      or not value >= 0):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        for name in ("glorot_scaling", "clip_weights", "progress", "cuda_graph"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.loss, str) or self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        self.device = _device(self.device)
        if self.checkpoint is not None:
            if not isinstance(self.checkpoint, (str, os.PathLike)):
                raise TypeError(f"checkpoint must be a path or None, got {self.checkpoint!r}")
            self.checkpoint = os.fspath(self.checkpoint)
        if self.n_train is not None and self.n_train < self.batch_size:
            raise ValueError(f"n_train={self.n_train} is smaller than batch_size={self.batch_size}: "
                             "an epoch would hold no minibatch")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a dict (a `params.yaml` section); unknown keys are an error, since a
        misspelt key silently falling back to a default would spoil a replication."""
        if not isinstance(values, dict):
            raise TypeError(f"TrainConfig values must be a dict, got {type(values).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known, key=str)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain dict, for JSON metrics and checkpoints."""
        return dataclasses.asdict(self)


def _integer(name: str, value, minimum: int) -> int:
    """`value` as a python int >= minimum (numpy integers accepted; bools and floats not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _learning_rate(name: str, value) -> float:
    """A finite, positive real number (the exponential decay takes its logarithm)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = " (YAML reads 3e-3 without a dot as a string: write 3.0e-3)" if isinstance(value, str) else ""
        raise TypeError(f"{name} must be a number, got {value!r}{hint}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value if type(value) in (int, float) else float(value)


def _device(value) -> str:
    """"auto", "cpu" or a CUDA device ("cuda", "cuda:1"): the devices the loop trains on
    (others torch knows, such as "meta", hold no data to train with)."""
    if not isinstance(value, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {value!r}")
    if value != "auto":
        try:
            kind = torch.device(value).type
        except RuntimeError as error:
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {value!r} ({error})") from None
        if kind not in TRAINING_DEVICES:
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {value!r}: "
                             f"training runs on {' or '.join(TRAINING_DEVICES)} only")
    return value

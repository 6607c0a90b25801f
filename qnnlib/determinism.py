"""One seed for every random number generator, and deterministic algorithms scoped to a run.

Reproducibility rules of the project (see `training`): a rerun on the same machine,
device and number of threads is bit-identical. That needs

- one seed for python, numpy and torch (`seed_everything`);
- deterministic algorithms while training (`deterministic_algorithms`, a context
  manager: the caller's setting comes back afterwards, so importing or training with
  qnnlib does not switch a whole process into deterministic mode);
- on CUDA, a fixed cuBLAS workspace. cuBLAS reads `CUBLAS_WORKSPACE_CONFIG` once, when
  it creates its first handle, so setting it inside a run is too late. This module sets
  it (unless the user did) when it is imported, which `qnnlib.training` does, and
  warns at training time if CUDA had already started before that.
"""
from __future__ import annotations

import contextlib
import operator
import os
import random
import warnings

import numpy as np
import torch

__all__ = ["seed_everything", "deterministic_algorithms", "CUBLAS_WORKSPACE_CONFIG"]

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
# Whether cuBLAS can still see the setting: true unless CUDA started (and may have
# created a cuBLAS handle) before anyone set the variable.
_CUBLAS_CONFIGURED_IN_TIME = ("CUBLAS_WORKSPACE_CONFIG" in os.environ
                              or not torch.cuda.is_initialized())
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and every CUDA device) from one integer, and
    return a fresh `torch.Generator` seeded with it (the data shuffling stream).
    The one seed helper of the project; it changes no other global setting."""
    seed = operator.index(seed)  # TypeError naming the type for 1.5, "1", None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def deterministic_algorithms(device: torch.device | str = "cpu"):
    """Inside the block, torch uses deterministic algorithms (warn-only: an op without
    one warns instead of failing); on exit the caller's setting is restored, also when
    the block raises. A caller that already asked for strict mode keeps it.

    On CPU this changes no result; on CUDA it picks deterministic kernels, and warns if
    cuBLAS may have started before its workspace setting (see the module docstring).
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if torch.device(device).type == "cuda" and not _CUBLAS_CONFIGURED_IN_TIME:
        warnings.warn("CUDA started before qnnlib set CUBLAS_WORKSPACE_CONFIG, so cuBLAS may "
                      f"not be deterministic: set CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE_CONFIG} "
                      "in the environment, or import qnnlib.training before using CUDA",
                      RuntimeWarning, stacklevel=3)
    if not enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)

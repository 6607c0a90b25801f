"""Helpers several test files share: the offline MNIST mirror and small learnable data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from qnnpipeline import paths


def mnist_mirror() -> Path:
    """The offline MNIST mirror: env QNN_DATA_MIRROR, else the shared datasets folder
    beside the checkout; skips the test when neither holds MNIST."""
    mirror = Path(os.environ.get("QNN_DATA_MIRROR") or paths.root().parent / "shared" / "datasets")
    if not (mirror / "mnist").is_dir() and not (mirror / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"no MNIST mirror at {mirror}")
    return mirror


def synthetic_splits(n: int = 600, features: int = 784, seed: int = 0) -> dict:
    """Random inputs in [-1, 1] labelled by the argmax of their first ten features
    (learnable), as (inputs, labels) train/val/test thirds."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, features, generator=g) * 2 - 1
    y = x[:, :10].argmax(dim=1)
    third = n // 3
    return {"train": (x[:third], y[:third]), "val": (x[third:2 * third], y[third:2 * third]),
            "test": (x[2 * third:], y[2 * third:])}

"""qnnlib.determinism: the cuBLAS workspace is configured before CUDA can start, and
deterministic mode is scoped (issue 9.6)."""
import os
import subprocess
import sys

import pytest
import torch

from qnnlib import determinism


def env_after_import(**env) -> str:
    """CUBLAS_WORKSPACE_CONFIG as a fresh interpreter sees it right after importing
    qnnlib.training (before any seeding or training)."""
    base = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    code = "import os, qnnlib.training; print(os.environ.get('CUBLAS_WORKSPACE_CONFIG'))"
    run = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True,
                         text=True, check=True)
    return run.stdout.strip()


def test_importing_training_configures_cublas_before_anything_runs():
    """Regression: the variable was set inside seed_everything, after cuBLAS may have
    started (it reads the variable once, at its first handle)."""
    assert env_after_import() == ":4096:8"
    assert env_after_import(CUBLAS_WORKSPACE_CONFIG=":16:8") == ":16:8"  # the user's choice wins


def test_late_cublas_configuration_warns_on_cuda_only(monkeypatch):
    monkeypatch.setattr(determinism, "_CUBLAS_CONFIGURED_IN_TIME", False)
    with pytest.warns(RuntimeWarning, match="CUDA started before qnnlib set CUBLAS_WORKSPACE_CONFIG"):
        with determinism.deterministic_algorithms("cuda"):
            pass
    with determinism.deterministic_algorithms("cpu"):  # no warning: nothing to configure
        assert torch.are_deterministic_algorithms_enabled()


def test_deterministic_mode_is_restored_also_after_an_error():
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="inside"):
        with determinism.deterministic_algorithms():
            assert torch.is_deterministic_algorithms_warn_only_enabled()
            raise RuntimeError("inside")
    assert not torch.are_deterministic_algorithms_enabled()


def test_seed_everything_seeds_every_stream_and_needs_an_integer():
    import random

    import numpy as np
    first = determinism.seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=first).item())
    second = determinism.seed_everything(5)
    b = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=second).item())
    assert a == b
    with pytest.raises(TypeError, match="'float' object cannot be interpreted as an integer"):
        determinism.seed_everything(1.5)

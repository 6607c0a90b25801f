"""Helpers several test files share: the offline MNIST mirror, small learnable data, and
files as committed at an earlier commit (the README and notebook 05 quote some)."""
from __future__ import annotations

import json
import os
import subprocess
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


def t_quantile_reference(probability: float, df: float) -> float:
    """Student's t quantile from mpmath's regularized incomplete beta function, independent
    of `qnnlib.experiments.t_quantile`: P(T <= t) = 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2."""
    import mpmath

    def cdf(t):
        return 1 - mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True) / 2
    return float(mpmath.findroot(lambda t: cdf(t) - probability, 2.0))


def welch_reference(a, b, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) of Welch's interval from raw per-seed values, the
    independent reference the notebook tests recompute recorded verdicts with; NaN bounds
    when a side has a single value, zero width when both sides are constant."""
    import math

    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    difference = float(a.mean() - b.mean())
    if min(len(a), len(b)) < 2:
        return difference, math.nan, math.nan
    var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if var_a + var_b == 0:
        return difference, difference, difference
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
    half = t_quantile_reference(0.5 + confidence / 2, df) * math.sqrt(var_a + var_b)
    return difference, difference - half, difference + half



def machine_name(provenance: dict) -> str:
    """How the README names the CPU of a record: "Intel Xeon" or "AMD EPYC"."""
    return "Intel Xeon" if provenance["cpu"].startswith("Intel") else " ".join(provenance["cpu"].split()[:2])


def shown(commit: str, path: str) -> str:
    """`path` as committed at `commit`. Fails on a commit this clone should hold; skips only
    in a shallow clone, which lacks the history."""
    result = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=paths.root(), capture_output=True, text=True)
    if result.returncode:
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=paths.root(),
                                 capture_output=True, text=True).stdout.strip() == "true"
        if shallow:
            pytest.skip(f"a shallow clone, without {commit}: this check needs the full history")
        pytest.fail(f"git show {commit}:{path}: {result.stderr.strip()}")
    return result.stdout


def committed_at(commit: str, name: str) -> dict:
    """results/metrics/<name>.json as committed at `commit`."""
    return json.loads(shown(commit, f"results/metrics/{name}.json"))

"""`make verify`: does this machine regenerate the committed results bit for bit?

Two parts, compared value by value with `results/reproducibility/fingerprints.json`,
which the `fingerprints` stage of `dvc repro` writes beside the results it checks:

- the numerics fingerprint: float32 work of the shapes the MNIST nets use (matrix
  products, linear layer, batch norm forward and backward, a long sum) and 20 training
  steps of a small BNN and its full-precision twin through `qnnlib`, one SHA-1 per
  result, so that a difference names the operation;
- trainings through `qnn-train` and the real MNIST data path: section `verify` of
  params.yaml (a small BNN, 2 epochs) and, without `--fast`, the first epoch of the budget
  BNN and of its control (sections `mnist_cpu` / `mnist_fp` with `train.epochs=1`: the
  learning rate of epoch 1 does not depend on the number of epochs, so this epoch is the
  budget runs' own first epoch, also compared with the first row of the committed
  budget histories). Each gives its trained weights' SHA-1, the raw errors and its
  history (the `seconds` column left out).

Prints "identical", or the first value that differs and how many do, and exits 1 on any
difference. The committed values were made with the pinned numerics (`qnnlib.numerics`),
which importing this package sets.

    python -m qnnpipeline.verify            # all of it (`make verify`: ~4 min on 2 cores)
    python -m qnnpipeline.verify --fast     # the fingerprint and the small training (~30 s)
    python -m qnnpipeline.verify --write    # rewrite the committed fingerprints
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from qnnlib import numerics
from qnnlib.layers import squared_hinge_loss
from qnnlib.models import build_model, quant_linears
from qnnlib.provenance import cpu_model, provenance
from qnnlib.training import make_optimizer, seed_everything, train_step

from . import cli, paths
from .runs import write_json

FILE = ("reproducibility", "fingerprints.json")
# (name, params.yaml section, --set overrides); the first is the fast check's.
TRAININGS = [("verify", "verify", []),
             ("mnist_cpu_epoch1", "mnist_cpu", ["train.epochs=1"]),
             ("mnist_fp_epoch1", "mnist_fp", ["train.epochs=1"])]


def digest(*tensors: torch.Tensor) -> str:
    """SHA-1 prefix of the tensors' bytes, in order."""
    sha = hashlib.sha1()
    for tensor in tensors:
        sha.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return sha.hexdigest()[:16]


def training_steps(kind: str, generator: torch.Generator, steps: int = 20) -> dict:
    """`steps` steps of `training.train_step` (Adam, clipping for the BNN) on random data."""
    seed_everything(1)
    model = build_model({"kind": kind, "hidden": 512, "depth": 2})
    model.train()
    optimizer = make_optimizer(model, lr=3e-3)
    clip = quant_linears(model) if kind == "bnn" else []
    inputs = torch.rand(steps, 100, 784, generator=generator) * 2 - 1
    labels = torch.randint(0, 10, (steps, 100), generator=generator)
    for step in range(steps):
        loss, _ = train_step(model, optimizer, inputs[step], labels[step], squared_hinge_loss, clip)
    return {f"{kind} {steps} steps: weights": digest(*model.state_dict().values()),
            f"{kind} {steps} steps: last loss": repr(loss.item())}


def workload() -> dict:
    """The numerics fingerprint (see module docstring), single-threaded."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(100, 784, generator=g) * 2 - 1
    w_in = torch.rand(2048, 784, generator=g).sub(0.5).sign()
    w = torch.rand(2048, 2048, generator=g).sub(0.5).sign()
    a = torch.rand(100, 2048, generator=g).sub(0.5).sign()
    grad = torch.randn(100, 2048, generator=g)
    out = {"matmul 100x784 @ 784x2048 (input layer)": digest(x @ w_in.T),
           "matmul 100x2048 @ 2048x2048, +-1 (hidden layer)": digest(a @ w.T),
           "matmul 100x2048 @ 2048x2048 (input gradient)": digest(grad @ w),
           "matmul 2048x100 @ 100x2048 (weight gradient)": digest(grad.T @ a),
           "linear with bias": digest(torch.nn.functional.linear(x, w_in, torch.ones(2048)))}
    norm = torch.nn.BatchNorm1d(2048, eps=1e-4, momentum=0.1)
    y = torch.randn(100, 2048, generator=g, requires_grad=True)
    z = norm(y)
    (z * grad).sum().backward()
    out["batch norm forward"] = digest(z)
    out["batch norm backward"] = digest(y.grad)
    out["sum of 10^6"] = digest(torch.randn(1_000_000, generator=g).sum())
    for kind in ("bnn", "full_precision"):
        out.update(training_steps(kind, g))
    return out


def train_run(name: str, section: str, overrides: list[str], folder: Path) -> subprocess.Popen:
    """Start `qnn-train` for one check, writing into `folder` only."""
    env = {**os.environ, "QNN_RESULTS_DIR": str(folder / "results"),
           "QNN_CHECKPOINT_DIR": str(folder / "checkpoints"), "QNN_DATA_DIR": str(paths.data())}
    command = [sys.executable, "-m", cli.__name__, "--config", str(paths.root() / "params.yaml"),
               "--section", section, "--out-name", name, "--set", "train.progress=false"]
    command += [flag for override in overrides for flag in ("--set", override)]
    return subprocess.Popen(command, env=env, cwd=paths.root(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_record(name: str, folder: Path) -> dict:
    """What one finished check run is compared by."""
    metrics = json.loads((folder / "results" / "metrics" / f"{name}.json").read_text())
    history = (folder / "results" / "tables" / f"{name}_history.csv").read_text().splitlines()
    state = torch.load(folder / "checkpoints" / f"{name}.pt", weights_only=True)
    return {"weights": digest(*state.values()),
            "best_epoch": metrics["best_epoch"],
            "best_val_error": repr(metrics["best_val_error"]),
            "test_error": repr(metrics["test_error"]),
            "history": without_seconds(history)}


def trainings(fast: bool) -> dict:
    """The check trainings, all at once (single-threaded each)."""
    chosen = TRAININGS[:1] if fast else TRAININGS
    with tempfile.TemporaryDirectory(prefix="qnn-verify-") as tmp:
        folder = Path(tmp)
        started = {name: train_run(name, section, overrides, folder)
                   for name, section, overrides in chosen}
        for name, process in started.items():
            output, _ = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"the check training {name!r} failed "
                                   f"(exit {process.returncode}):\n{output[-2000:]}")
        return {name: run_record(name, folder) for name in started}


def measure(fast: bool) -> dict:
    return {"workload": workload(), "runs": trainings(fast)}


def without_seconds(history: list[str]) -> list[str]:
    """History CSV rows without the `seconds` column (timing is not a result)."""
    columns = history[0].split(",")
    keep = [i for i, column in enumerate(columns) if column != "seconds"]
    return [",".join(row.split(",")[i] for i in keep) for row in history]


def budget_first_epochs(runs: dict) -> dict:
    """Epoch 1 of each budget check run beside epoch 1 of the committed budget run it
    repeats (results/tables/<section>_history.csv): (committed, measured)."""
    committed, measured = {}, {}
    for name, section, _ in TRAININGS:
        history = paths.results("tables", f"{section}_history.csv")
        if name in runs and section != name and history.is_file():
            committed[section] = without_seconds(history.read_text().splitlines())[:2]
            measured[section] = runs[name]["history"][:2]
    return {"budget_first_epoch": committed}, {"budget_first_epoch": measured}


def flatten(value, prefix: str = "") -> dict:
    """{"runs.verify.history[0]": ..., ...}: every leaf with its path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items()
                for k, v in flatten(item, f"{prefix}.{key}" if prefix else str(key)).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def differences(committed: dict, measured: dict) -> list[str]:
    """One line per value of `measured` that `committed` does not hold identically, in
    order (the first is where the two computations part)."""
    expected = flatten(committed)
    return [f"{key}: committed {expected.get(key, '(absent)')!s}, here {value!s}"
            for key, value in flatten(measured).items() if expected.get(key) != value]


def report(committed: dict, measured: dict, out=sys.stdout) -> int:
    """Print "identical" or the first difference; the exit status (0 or 1)."""
    found = differences(committed, measured)
    compared = len(flatten(measured))
    if not found:
        print(f"identical: all {compared} values equal the committed ones", file=out)
        return 0
    print(f"DIFFERENT: {len(found)} of {compared} values differ; the first:\n  {found[0]}", file=out)
    return 1


def committed_fingerprints() -> dict:
    path = paths.results(*FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{paths.relative(path)} is missing: run `dvc repro fingerprints` "
                                "(or python -m qnnpipeline.verify --write) on the reference machine")
    return json.loads(path.read_text())


def describe_numerics() -> str:
    used = numerics.settings()
    return (f"numerics: {used['profile']} (MKL branch {used['mkl_branch']}, "
            f"ATen {used['aten_capability']}); CPU: {cpu_model()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the fingerprint and the small training only")
    parser.add_argument("--write", action="store_true", help="rewrite the committed fingerprints")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    measured = measure(fast=args.fast and not args.write)
    print(describe_numerics())
    if args.write:
        record = {**measured, "provenance": provenance(threads=1, wall_seconds=time.perf_counter() - start)}
        path = write_json(paths.output(*FILE), record)
        print(f"wrote {paths.relative(path)}")
        return 0
    committed = {key: value for key, value in committed_fingerprints().items() if key in measured}
    # the budget runs' first epoch must also be that of the committed budget results
    committed_epochs, measured_epochs = budget_first_epochs(measured["runs"])
    status = report({**committed, **committed_epochs}, {**measured, **measured_epochs})
    print(f"({time.perf_counter() - start:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""What the budget-step benchmarks share (`optimizer_step.py`, `activation_step.py`): the
budget BNN's settings (`params.yaml: mnist_cpu`), their command line, one fixed random
minibatch of the budget's size, and the report with its provenance."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import qnnpipeline  # noqa: F401 (pinned numerics, as the budget runs)
import torch

from qnnlib.provenance import provenance
from qnnpipeline import paths
from qnnpipeline.params import train_section

BUDGET = train_section(paths.root() / "params.yaml", "mnist_cpu")


def command_line(doc: str, name: str, repeats: int, argv=None) -> argparse.Namespace:
    """--repeats (rounds of the race) and --out (default results/benchmarks/<name>.json)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--out", default=str(paths.results_dir() / "benchmarks" / f"{name}.json"))
    return parser.parse_args(argv)


def minibatch() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs in [-1, 1) and labels of one budget minibatch, the same on every call."""
    draws = torch.Generator().manual_seed(0)
    batch = BUDGET["train"]["batch_size"]
    return torch.rand(batch, 784, generator=draws) * 2 - 1, torch.randint(0, 10, (batch,), generator=draws)


def write_report(report: dict, out: str, start: float) -> None:
    """Add the provenance (one thread, wall time since `start`) and write `report` as JSON."""
    report["provenance"] = provenance(threads=1, wall_seconds=time.perf_counter() - start)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")

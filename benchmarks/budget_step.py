"""What the budget-step benchmarks share (`optimizer_step.py`, `activation_step.py`,
`forward_step.py`): the budget BNN's settings (`params.yaml: mnist_cpu`), their command line,
one fixed random minibatch of the budget's size, the race of a search lever's training step
against the budget's, and the report with its provenance."""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import qnnpipeline  # noqa: F401 (pinned numerics, as the budget runs)
import torch

from qnnlib.experiments import seeded_model
from qnnlib.models import quant_linears
from qnnlib.provenance import provenance
from qnnlib.timing import race
from qnnlib.training import make_optimizer, train_step
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


def race_lever(doc: str, name: str, models: dict, argv=None) -> int:
    """The command of a lever benchmark: whole training steps (`training.train_step`) of the
    budget's net and a lever's (`models`: name -> model settings, the budget's first), one
    thread, in alternation (`qnnlib.timing.race`, samples of about 0.5 s, so about five
    steps), so that drift in machine load hits both alike. Reports the medians and best
    samples with their ratios to the budget's (the best samples are the least disturbed by
    other processes) and the spread of the lever's ratio over the race's rounds."""
    args = command_line(doc, name, repeats=40, argv=argv)
    start = time.perf_counter()
    torch.set_num_threads(1)
    inputs, labels = minibatch()
    nets = {label: seeded_model(spec, 0) for label, spec in models.items()}
    optimizers = {label: make_optimizer(net, BUDGET["train"]["lr_start"]) for label, net in nets.items()}
    steps = {label: (lambda label=label: train_step(nets[label], optimizers[label], inputs, labels,
                                                   clip_layers=quant_linears(nets[label])))
             for label in models}
    timings = race(steps, repeats=args.repeats, min_sample_s=0.5)
    budget, lever = timings.values()
    # one ratio per round of the race: its two samples were taken back to back
    by_round = sorted(ours / theirs for ours, theirs in zip(lever.samples_s, budget.samples_s))
    report = {"net": "params.yaml mnist_cpu: 784-2048x3-10 BNN, ordered products", "batch": len(inputs), "threads": 1,
              "models": models, "repeats": args.repeats,
              "training_step": {label: {"median_ms": round(1e3 * timing.median_s, 2),
                                        "best_ms": round(1e3 * timing.best_s, 2),
                                        "ratio_to_budget": round(timing.median_s / budget.median_s, 3),
                                        "best_ratio_to_budget": round(timing.best_s / budget.best_s, 3)}
                                for label, timing in timings.items()},
              "lever_ratio_by_round": {"min": round(by_round[0], 3), "median": round(statistics.median(by_round), 3),
                                       "max": round(by_round[-1], 3)}}
    for label, entry in report["training_step"].items():
        print(f"{label}: {entry['median_ms']} ms (median), {entry['ratio_to_budget']}x the budget's step "
              f"(best samples: {entry['best_ratio_to_budget']}x)")
    print("lever / budget, one ratio per round of the race:", report["lever_ratio_by_round"])
    write_report(report, args.out, start)
    return 0

"""What the lever of search rounds 5, 12, 13, 15 and 17 costs per training step: the budget
BNN of `params.yaml: mnist_cpu` (784-2048x3-10, ordered products, batch 96, one thread,
deterministic sign, hidden dropout 0.3) against the same net with the paper's Torch7 choices
(stochastic sign of the activations, no dropout).

    python benchmarks/activation_step.py [--repeats 40] [--out results/benchmarks/activation_step.json]

Round 17 judged the lever's time by wall-clock minutes of runs trained side by side, which
move by a fifth from one day to the next on these machines; this measures it the way the
project measures speed, as a ratio within one run: whole training steps
(`training.train_step`) of the two nets in alternation (`qnnlib.timing.race`), so that drift
in machine load hits both alike, each sample about five steps. Writes the medians and best
samples with their ratios to the budget's (the best samples are the least disturbed by other
processes), the spread of the ratio over the race's rounds (min / median / max), with
provenance.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import qnnpipeline  # noqa: E402,F401 (pinned numerics, as the budget runs)
import torch  # noqa: E402

from benchmarks.budget_step import BUDGET, command_line, minibatch, write_report  # noqa: E402
from qnnlib.experiments import seeded_model  # noqa: E402
from qnnlib.models import quant_linears  # noqa: E402
from qnnlib.timing import race  # noqa: E402
from qnnlib.training import make_optimizer, train_step  # noqa: E402

BUDGET_NAME = "budget: deterministic sign, dropout 0 / 0.3"
LEVER_NAME = "lever: stochastic activations, no dropout"
MODELS = {BUDGET_NAME: BUDGET["model"],
          LEVER_NAME: {**BUDGET["model"], "dropout_hidden": 0.0, "act_mode": "stochastic"}}


def main(argv=None) -> int:
    args = command_line(__doc__, "activation_step", repeats=40, argv=argv)
    start = time.perf_counter()
    torch.set_num_threads(1)
    inputs, labels = minibatch()
    models = {name: seeded_model(spec, 0) for name, spec in MODELS.items()}
    optimizers = {name: make_optimizer(model, BUDGET["train"]["lr_start"]) for name, model in models.items()}
    steps = {name: (lambda name=name: train_step(models[name], optimizers[name], inputs, labels,
                                                 clip_layers=quant_linears(models[name])))
             for name in MODELS}
    timings = race(steps, repeats=args.repeats, min_sample_s=0.5)  # about 5 steps a sample
    budget, lever = timings[BUDGET_NAME], timings[LEVER_NAME]
    # one ratio per round of the race: its two samples were taken back to back
    by_round = sorted(ours / theirs for ours, theirs in zip(lever.samples_s, budget.samples_s))
    report = {"net": "params.yaml mnist_cpu: 784-2048x3-10 BNN, ordered products", "batch": len(inputs), "threads": 1,
              "models": MODELS, "repeats": args.repeats,
              "training_step": {name: {"median_ms": round(1e3 * timing.median_s, 2),
                                       "best_ms": round(1e3 * timing.best_s, 2),
                                       "ratio_to_budget": round(timing.median_s / budget.median_s, 3),
                                       "best_ratio_to_budget": round(timing.best_s / budget.best_s, 3)}
                                for name, timing in timings.items()},
              "lever_ratio_by_round": {"min": round(by_round[0], 3), "median": round(statistics.median(by_round), 3),
                                       "max": round(by_round[-1], 3)}}
    for name, entry in report["training_step"].items():
        print(f"{name}: {entry['median_ms']} ms (median), {entry['ratio_to_budget']}x the budget's step "
              f"(best samples: {entry['best_ratio_to_budget']}x)")
    print("lever / budget, one ratio per round of the race:", report["lever_ratio_by_round"])
    write_report(report, args.out, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())

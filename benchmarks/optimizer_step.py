"""What the paper's shift-based AdaMax costs against the budget's fused Adam, per op and fused
(`qnnlib.shift.ShiftAdaMax`, `qnnlib.fused_shift_adamax.FusedShiftAdaMax`): the budget BNN
of `params.yaml: mnist_cpu` (784-2048x3-10, ordered products, batch 96, one thread).

    python benchmarks/optimizer_step.py [--repeats 15] [--out results/benchmarks/optimizer_step.json]

Two races (`qnnlib.timing.race`: the three optimizers in alternation, so that drift in
machine load hits all alike): the optimizer's step alone, on fixed gradients, and a whole
training step (`training.train_step`: forward, loss, backward, step, clipping) on one
minibatch. The ratios to Adam of the medians are the numbers recorded; the budget
search's round 14 needs the fused step to cost about what Adam's does, so that 22 epochs
still fit in 25 minutes. Writes a JSON report with provenance.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import qnnpipeline  # noqa: E402,F401 (pinned numerics, as the budget runs)
import torch  # noqa: E402

from benchmarks.budget_step import BUDGET, command_line, minibatch, write_report  # noqa: E402
from qnnlib.experiments import seeded_model  # noqa: E402
from qnnlib.fused_shift_adamax import make_fused_shift_adamax  # noqa: E402
from qnnlib.models import quant_linears  # noqa: E402
from qnnlib.shift import make_shift_adamax  # noqa: E402
from qnnlib.timing import race  # noqa: E402
from qnnlib.training import make_optimizer, train_step  # noqa: E402

OPTIMIZERS = {"Adam (fused)": make_optimizer, "shift-based AdaMax, per op": make_shift_adamax,
              "shift-based AdaMax, fused": make_fused_shift_adamax}


def main(argv=None) -> int:
    args = command_line(__doc__, "optimizer_step", repeats=15, argv=argv)
    start = time.perf_counter()
    torch.set_num_threads(1)
    inputs, labels = minibatch()
    draws = torch.Generator().manual_seed(1)
    models = {name: seeded_model(BUDGET["model"], 0) for name in OPTIMIZERS}
    optimizers = {name: factory(models[name], 3e-3) for name, factory in OPTIMIZERS.items()}
    for model in models.values():  # the same small gradients for every step of the first race
        for parameter in model.parameters():
            parameter.grad = torch.randn(parameter.shape, generator=draws) * 1e-3
    step_alone = race({name: optimizer.step for name, optimizer in optimizers.items()}, repeats=args.repeats)
    whole = race({name: (lambda name=name: train_step(models[name], optimizers[name], inputs, labels,
                                                     clip_layers=quant_linears(models[name])))
                  for name in OPTIMIZERS}, repeats=args.repeats)
    report = {"net": "params.yaml mnist_cpu: 784-2048x3-10 BNN, ordered products", "batch": len(inputs), "threads": 1}
    for label, timings in (("optimizer_step", step_alone), ("training_step", whole)):
        adam = timings["Adam (fused)"].median_s
        report[label] = {name: {"median_ms": round(1e3 * timing.median_s, 2), "best_ms": round(1e3 * timing.best_s, 2),
                                "ratio_to_adam": round(timing.median_s / adam, 3)}
                         for name, timing in timings.items()}
        print(label, {name: entry["median_ms"] for name, entry in report[label].items()}, "ms (median)")
    write_report(report, args.out, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the lever of search rounds 6 and 11 costs per training step: the budget BNN of
`params.yaml: mnist_cpu` (784-2048x3-10, ordered products, batch 96, one thread, hidden
dropout 0.3) against the same net whose forward products behind the first layer are
XNOR-popcounts (`model.matmul: xnor`, `qnnlib.xnor_forward`; the backward stays ordered).

    python benchmarks/forward_step.py [--repeats 40] [--out results/benchmarks/forward_step.json]

Round 6 spent the faster step on more epochs (27 where the budget trains 22). This measures
the step as the project measures speed, as a ratio within one run (`budget_step.race_lever`:
whole training steps of the two nets in alternation, medians and best samples, the ratio's
spread over the race's rounds, with provenance).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.budget_step import BUDGET, race_lever  # noqa: E402

MODELS = {"budget: ordered products": BUDGET["model"],
          "lever: XNOR forward": {**BUDGET["model"], "matmul": "xnor"}}

if __name__ == "__main__":
    sys.exit(race_lever(__doc__, "forward_step", MODELS))

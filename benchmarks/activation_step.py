"""What the lever of search rounds 5, 12, 13, 15 and 17 costs per training step: the budget
BNN of `params.yaml: mnist_cpu` (784-2048x3-10, ordered products, batch 96, one thread,
deterministic sign, hidden dropout 0.3) against the same net with the paper's Torch7 choices
(stochastic sign of the activations, no dropout).

    python benchmarks/activation_step.py [--repeats 40] [--out results/benchmarks/activation_step.json]

Round 17 judged the lever's time by wall-clock minutes of runs trained side by side, which
move by a fifth from one day to the next on these machines; this measures it the way the
project measures speed, as a ratio within one run (`budget_step.race_lever`: whole training
steps of the two nets in alternation, medians and best samples, the ratio's spread over the
race's rounds, with provenance).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.budget_step import BUDGET, race_lever  # noqa: E402

MODELS = {"budget: deterministic sign, dropout 0 / 0.3": BUDGET["model"],
          "lever: stochastic activations, no dropout": {**BUDGET["model"], "dropout_hidden": 0.0,
                                                        "act_mode": "stochastic"}}

if __name__ == "__main__":
    sys.exit(race_lever(__doc__, "activation_step", MODELS))

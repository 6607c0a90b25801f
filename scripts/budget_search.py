"""The validation-only search behind the CPU-budget settings of `params.yaml: mnist_cpu`.

    python scripts/budget_search.py --round 1   # 3 x 1024: dropout and lr (about 25 min on 2 cores)
    python scripts/budget_search.py --round 2   # 3 x 2048, 20 epochs: hidden dropout (about 20 min)
    python scripts/budget_search.py --round 3   # the ordered step, search seed 100: lr (about 27 min)
    python scripts/budget_search.py --round 4   # search seed 100: the final lr (about 25 min)
    python scripts/budget_search.py --round 5   # search seed 100: batch 96, 22 epochs (about 24 min)
    python scripts/budget_search.py --round 6   # search seed 100: the XNOR forward, 27 epochs
    python scripts/budget_search.py --round 7   # seeds 100-103: BN population statistics (about 50 min)
    python scripts/budget_search.py --round 8   # seeds 100-103: cross-entropy loss (about 50 min)
    python scripts/budget_search.py --round 9   # seeds 100-103: the final lr 3e-6 (about 50 min)
    python scripts/budget_search.py --round 10  # seeds 100-103: weight averages (about 55 min)
    python scripts/budget_search.py --round 11  # seeds 101-103: round 6's XNOR forward (about 55 min)
    python scripts/budget_search.py --round 12  # seeds 101-103: round 5's stochastic activations (about 50 min)
    python scripts/budget_search.py --round 13  # seeds 104-105: round 12's question, both arms (about 50 min)

Trains each candidate BNN of a round (seed 0 unless the round names another; one thread
each, two at a time, through `qnnlib.executor`) and replaces those candidates' rows of
results/search/mnist_budget_search.csv: validation and training error per epoch. The
test set is not read for the choice (`train` evaluates it, the CSV leaves it out).
Round 2 starts from round 1's winner (dropout 0 / 0.2, lr 3e-3) at the width the budget
affords; 20 epochs fit the budget once Adam is fused.
Rounds 1 and 2 ran seed 0 (also a reported seed) with each library's native numerics.
Round 3 runs under the pinned numerics with the ordered products (`model.matmul`), which
bring 20 epochs back within 25 minutes per run, and on seed 100, apart from the reported
seeds 0-2: it asks whether the learning rate round 1 favoured (1e-2) also wins at the
budget's dropout and width. Round 4 (seed 100 again) asks how far the learning rate
should fall by the last epoch: the paper decays to 3e-7 (over 1000 epochs); the budget
so far fell 100x, to 3e-5, and its last epochs were still improving. Round 3's lr 3e-3
run is round 4's baseline (same seed and settings): 3e-6 won (1.45 % against 1.50 %).
A full budget run of seed 0 with 3e-6 (`dvc repro mnist_budget` with `lr_end: 3.0e-6`;
its validation curve is round 4's "seed 0 check" row) reached 1.61 % against 1.48 %, so
the seeds disagree and the budget keeps 3e-5. (That seed-0 run's own validation curve is
the round-4 row "seed 0 (budget run)", copied from its history: both came from
`dvc repro mnist_budget`, not from this script.)
Round 5 (seed 100) spends a faster step on more epochs: the ordered kernel computes the
forward product in panels of 48 batch columns (AVX-512), so batch 100 fills three panels
and wastes a third of the forward work; batch 96 fills two, and 22 epochs take the time 20
did. Against round 3's 1.50 % (same seed, batch 100, 20 epochs), batch 96 for 22 epochs
reached 1.34 %; with two choices of the paper's Torch7 row of this shape instead
(stochastic activations, no dropout) it reached 1.36 %. The budget takes the first,
which changes only the batch and the length.
Round 6 (seed 100) spends the XNOR-popcount forward (`matmul: xnor`, about 1.2x faster
per step) on 27 epochs: it reached 1.45 % (dropout 0 / 0.3) and 1.52 % (0 / 0.4), both
worse than round 5's 1.34 % on the same seed, so the budget keeps round 5's settings.
Round 7 (seeds 100-103) trains round 5's settings and scores each epoch twice: with BN's
running averages (the authors' code) and with population statistics recomputed from
10,000 training examples (`qnnlib.bn_statistics`). A paired comparison, the same weights
both ways: best validation error 1.43 ± 0.08 % against 1.44 ± 0.09 %, a difference of
-0.01 ± 0.05 points over the four seeds: no gain, so the budget keeps the running
averages. (Seed 100's running-average curve is round 5's winner again, bit for bit.)
Round 8 (seeds 100-103) trains round 5's settings with cross-entropy (the loss of the
peer recipes, larq's among them) in place of the paper's squared hinge loss, paired by
seed with round 7's running-average rows (the same settings and seeds, hinge loss): best
validation error 1.55 ± 0.06 % against 1.44 ± 0.09 %, worse on every seed (+0.12 ± 0.08
points), so the budget keeps the squared hinge loss.
Round 9 (seeds 100-103) settles round 4's split (3e-6 won on seed 100, lost on seed 0):
round 5's settings with the final lr 3e-6 instead of 3e-5, paired by seed with round 7's
running-average rows: 1.50 ± 0.07 % against 1.44 ± 0.09 %, better on no seed (+0.06 ±
0.05 points), so the budget keeps 3e-5.
Round 10 (seeds 100-103) trains round 5's settings and, from epoch 12 on, also scores four
averages of the weights along the run (`qnnlib.weight_averaging`; each with BN population
statistics of 10,000 training examples recomputed for it): exponential averages after
every step with decay 0.999 and 0.9997, and uniform averages of the epoch ends from epoch
17 and from epoch 12. The run itself is round 7's (its latest-weights curves reproduce
round 7's running-average rows bit for bit), so each comparison is paired within a run.
Best validation error: 1.42 ± 0.01 % (EMA 0.999), 1.52 ± 0.05 % (EMA 0.9997), 1.46 ±
0.04 % (epochs 17-), 1.50 ± 0.04 % (epochs 12-) against 1.44 ± 0.09 % for the latest
weights; paired differences -0.01 ± 0.08, +0.09 ± 0.06, +0.03 ± 0.06 and +0.06 ± 0.10
points. None is better on every seed (EMA 0.999 on two of four), so the budget keeps
scoring the latest weights.
Round 11 (seeds 101-103) repeats round 6's first candidate (the XNOR forward for 27
epochs, dropout 0 / 0.3), which had run on seed 100 alone, so that its verdict rests on
four seeds: with round 6's run, paired by seed with round 7's running-average rows, 1.46 ±
0.02 % against 1.44 ± 0.09 % validation, +0.02 ± 0.08 points, better on two of four seeds:
no gain, so the budget keeps round 5's ordered forward and 22 epochs.
Round 12 (seeds 101-103) repeats round 5's second candidate (stochastic activations, no
dropout: the paper's Torch7 row), which had run on seed 100 alone: with round 5's run,
paired by seed with round 7's running-average rows, 1.40 ± 0.04 % against 1.44 ± 0.09 %
validation, -0.04 ± 0.09 points, better on two of four seeds: within the spread of the
paired differences, so the budget keeps the deterministic sign and dropout 0 / 0.3.
Round 13 (seeds 104-105) asks round 12's question again on two fresh seeds, both arms
(round 5's two candidates), so that six seeds pair. Its rule, set before it ran: the
stochastic activations replace the budget's settings only if the 95 % t interval of the
paired differences in best validation error (six seeds) lies below zero.
"""
from __future__ import annotations

import qnnpipeline  # noqa: F401 (first: pins the CPU numerics before torch starts)
import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from qnnlib import executor
from qnnlib.data import load_mnist
from qnnlib.experiments import seeded_model
from qnnlib.bn_statistics import with_population_statistics
from qnnlib.training import TrainConfig, evaluate, train, train_epoch
from qnnlib.weight_averaging import ExponentialAverage, UniformAverage, averaged_model

ROUND_1 = {  # name: (model, train) overrides of a 3 x 1024 BNN, paper protocol otherwise
    "paper dropout, lr 1e-3": ({}, {"lr_start": 1e-3, "lr_end": 1e-5}),
    "paper dropout, lr 3e-3": ({}, {"lr_start": 3e-3, "lr_end": 3e-5}),
    "paper dropout, lr 1e-2": ({}, {"lr_start": 1e-2, "lr_end": 1e-4}),
    "dropout 0 / 0.2, lr 3e-3": ({"dropout_in": 0.0, "dropout_hidden": 0.2},
                                 {"lr_start": 3e-3, "lr_end": 3e-5}),
}
ROUND_2 = {  # 3 x 2048, 20 epochs, input dropout 0, lr 3e-3 -> 3e-5
    "3 x 2048, 20 epochs, dropout 0 / 0.2": ({"hidden": 2048, "dropout_in": 0.0, "dropout_hidden": 0.2},
                                             {"epochs": 20, "lr_start": 3e-3, "lr_end": 3e-5}),
    "3 x 2048, 20 epochs, dropout 0 / 0.3": ({"hidden": 2048, "dropout_in": 0.0, "dropout_hidden": 0.3},
                                             {"epochs": 20, "lr_start": 3e-3, "lr_end": 3e-5}),
}
_ROUND_3_BASE = {"hidden": 2048, "dropout_in": 0.0, "dropout_hidden": 0.3, "matmul": "ordered"}
ROUND_3 = {  # 3 x 2048, 20 epochs, dropout 0 / 0.3, ordered products, seed 100
    "3 x 2048, ordered, lr 3e-3": (_ROUND_3_BASE, {"epochs": 20, "seed": 100,
                                                   "lr_start": 3e-3, "lr_end": 3e-5}),
    "3 x 2048, ordered, lr 1e-2": (_ROUND_3_BASE, {"epochs": 20, "seed": 100,
                                                   "lr_start": 1e-2, "lr_end": 1e-4}),
}
ROUND_4 = {  # round 3's winner, the final lr lower: 1000x, and the paper's 3e-7 (10,000x)
    "3 x 2048, ordered, lr 3e-3 -> 3e-6": (_ROUND_3_BASE, {"epochs": 20, "seed": 100,
                                                           "lr_start": 3e-3, "lr_end": 3e-6}),
    "3 x 2048, ordered, lr 3e-3 -> 3e-7": (_ROUND_3_BASE, {"epochs": 20, "seed": 100,
                                                           "lr_start": 3e-3, "lr_end": 3e-7}),
}
_ROUND_5_TRAIN = {"epochs": 22, "batch_size": 96, "seed": 100, "lr_start": 3e-3, "lr_end": 3e-5}
ROUND_5 = {  # batch 96 (whole kernel panels: a faster step) buys 22 epochs in the budget
    "batch 96, 22 epochs, dropout 0 / 0.3": (_ROUND_3_BASE, _ROUND_5_TRAIN),
    "batch 96, 22 epochs, stochastic activations, no dropout": (
        {**_ROUND_3_BASE, "dropout_hidden": 0.0, "act_mode": "stochastic"}, _ROUND_5_TRAIN),
}
_ROUND_6_MODEL = {**_ROUND_3_BASE, "matmul": "xnor"}
_ROUND_6_TRAIN = {**_ROUND_5_TRAIN, "epochs": 27}
ROUND_6 = {  # the XNOR-popcount forward (a faster step) buys 27 epochs in the budget
    "xnor forward, 27 epochs, dropout 0 / 0.3": (_ROUND_6_MODEL, _ROUND_6_TRAIN),
    "xnor forward, 27 epochs, dropout 0 / 0.4": ({**_ROUND_6_MODEL, "dropout_hidden": 0.4},
                                                 _ROUND_6_TRAIN),
}
POPULATION, RUNNING = "BN population statistics of 10k examples", "BN running averages (same run)"
ROUND_7 = {  # round 5's settings, scored with BN population statistics, on four search seeds
    f"{POPULATION}, seed {seed}": (_ROUND_3_BASE, {**_ROUND_5_TRAIN, "seed": seed,
                                                   "bn_stats_examples": 10_000})
    for seed in (100, 101, 102, 103)
}
ROUND_8 = {  # round 5's settings with cross-entropy in place of the paper's squared hinge loss
    f"cross-entropy loss, seed {seed}": (_ROUND_3_BASE, {**_ROUND_5_TRAIN, "seed": seed,
                                                         "loss": "cross_entropy"})
    for seed in (100, 101, 102, 103)
}
ROUND_9 = {  # round 5's settings with round 4's lower final lr (3e-6), which split seeds 100 and 0
    f"final lr 3e-6, seed {seed}": (_ROUND_3_BASE, {**_ROUND_5_TRAIN, "seed": seed, "lr_end": 3e-6})
    for seed in (100, 101, 102, 103)
}
RAW = "latest weights, BN running averages"
AVERAGES = {  # name: ("exponential", decay per step) or ("uniform", first epoch averaged)
    "EMA 0.999": ("exponential", 0.999),        # half-life 693 steps, 1.3 epochs of batch 96
    "EMA 0.9997": ("exponential", 0.9997),      # half-life 2310 steps, 4.4 epochs
    "SWA epochs 17-": ("uniform", 17),          # the last 6 of 22 epochs
    "SWA epochs 12-": ("uniform", 12),          # the last 11
}
FIRST_SCORED_EPOCH = 12  # averages are scored from here on (each score costs ~6 s)
ROUND_10 = {  # round 5's settings; each epoch scores the weights and their averages
    f"{RAW}, seed {seed}": (_ROUND_3_BASE, {**_ROUND_5_TRAIN, "seed": seed, "averages": True})
    for seed in (100, 101, 102, 103)
}
ROUND_11 = {  # round 6's first candidate (one seed, 100) on three more search seeds
    f"xnor forward, 27 epochs, dropout 0 / 0.3, seed {seed}": (_ROUND_6_MODEL, {**_ROUND_6_TRAIN, "seed": seed})
    for seed in (101, 102, 103)
}
ROUND_12 = {  # round 5's second candidate (the paper's Torch7 choices, one seed, 100) on more seeds
    f"batch 96, 22 epochs, stochastic activations, no dropout, seed {seed}": (
        {**_ROUND_3_BASE, "dropout_hidden": 0.0, "act_mode": "stochastic"},
        {**_ROUND_5_TRAIN, "seed": seed})
    for seed in (101, 102, 103)
}
ROUND_13 = {  # round 12's question on two fresh seeds, both arms: six paired seeds in all
    f"{name}, seed {seed}": (model, {**_ROUND_5_TRAIN, "seed": seed})
    for seed in (104, 105)
    for name, (model, _) in ROUND_5.items()
}
ROUNDS = {1: ROUND_1, 2: ROUND_2, 3: ROUND_3, 4: ROUND_4, 5: ROUND_5, 6: ROUND_6, 7: ROUND_7,
          8: ROUND_8, 9: ROUND_9, 10: ROUND_10, 11: ROUND_11, 12: ROUND_12, 13: ROUND_13}
BASE_MODEL = {"kind": "bnn", "hidden": 1024, "depth": 3, "dropout_in": 0.2, "dropout_hidden": 0.5,
              "act_mode": "deterministic"}
BASE_TRAIN = {"epochs": 15, "batch_size": 100, "seed": 0, "threads": 1, "progress": False}
DEFAULT_LOSS = TrainConfig.loss  # the paper's squared hinge
OUT = Path("results/search/mnist_budget_search.csv")


def run(round_and_name: tuple[int, str]) -> pd.DataFrame:
    round_number, name = round_and_name
    model_overrides, train_overrides = ROUNDS[round_number][name]
    torch.set_num_threads(1)
    settings = {**BASE_TRAIN, **train_overrides}
    bn_examples = settings.pop("bn_stats_examples", 0)
    with_averages = settings.pop("averages", False)
    model = seeded_model({**BASE_MODEL, **model_overrides}, settings["seed"])
    splits, running = load_mnist(root="data"), []
    epoch_runner = None
    if bn_examples:  # the same run scored both ways: running averages first, then replaced
        val = validation(splits, settings.get("n_val"))

        def epoch_then_score_running_averages(model, *args):
            outcome = train_epoch(model, *args)
            running.append(evaluate(model, *val))
            return outcome

        epoch_runner = with_population_statistics(epoch_then_score_running_averages, bn_examples)
    averaged_scores = []  # (epoch, average's name, validation error)
    if with_averages:
        epoch_runner = scoring_averages(averaged_scores, splits, settings.get("n_val"))
    result = train(model, splits, TrainConfig.from_dict(settings), epoch_runner=epoch_runner)
    history = result.history[["epoch", "lr", "train_error", "val_error", "seconds"]]
    table = history.assign(round=round_number, candidate=name, seed=settings["seed"],
                           batch_size=settings["batch_size"], loss=settings.get("loss", DEFAULT_LOSS),
                           **{**BASE_MODEL, **model_overrides})
    if running:
        paired = table.assign(candidate=name.replace(POPULATION, RUNNING), val_error=running)
        table = pd.concat([table, paired], ignore_index=True)
    if averaged_scores:  # the averages' rows: same run, epochs from FIRST_SCORED_EPOCH on
        scores = pd.DataFrame(averaged_scores, columns=["epoch", "average", "val_error"])
        rows = [table.drop(columns="val_error").merge(group.drop(columns="average"), on="epoch")
                .assign(candidate=name.replace(RAW, f"{average}, BN population statistics"))
                for average, group in scores.groupby("average", sort=False)]
        table = pd.concat([table, *rows], ignore_index=True)
    return table


def validation(splits: dict, n_val: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation split's (inputs, labels) as `train` cuts them (the first `n_val`)."""
    return (torch.as_tensor(splits["val"].inputs(), dtype=torch.float32)[:n_val],
            torch.as_tensor(splits["val"].labels, dtype=torch.long)[:n_val])


def scoring_averages(scores: list, splits: dict, n_val: int | None, bn_examples: int = 10_000):
    """An epoch runner: `train_epoch`, then each of AVERAGES of the weights so far scored on
    validation with BN population statistics of `bn_examples` training examples, appended
    to `scores` as (epoch, name, error). The run itself goes on exactly as without it."""
    val = validation(splits, n_val)
    averages, scorer, epochs_done = {}, None, 0

    def run(model, optimizer, inputs, labels, config, shuffle):
        nonlocal scorer, epochs_done
        if not averages:
            for name, (kind, value) in AVERAGES.items():
                averages[name] = (ExponentialAverage(model, optimizer, value)
                                  if kind == "exponential" else UniformAverage(model))
        outcome = train_epoch(model, optimizer, inputs, labels, config, shuffle)
        epochs_done += 1
        for name, (kind, first) in AVERAGES.items():
            if kind == "uniform" and epochs_done >= first:
                averages[name].add()
        if epochs_done >= FIRST_SCORED_EPOCH:
            for name, average in averages.items():
                if isinstance(average, UniformAverage) and not average.count:
                    continue  # its first epoch is still to come
                scorer = averaged_model(model, average.average, inputs[:bn_examples],
                                        config.batch_size, into=scorer)
                scores.append((epochs_done, name, evaluate(scorer, *val)))
        return outcome

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round", type=int, choices=sorted(ROUNDS), required=True)
    round_number = parser.parse_args(argv).round
    jobs = [(round_number, name) for name in ROUNDS[round_number]]
    try:  # two at a time, one thread each, through the project's one executor
        outcome = executor.run_tasks(run, jobs, workers=2, names=[name for _, name in jobs])
    finally:
        executor.shutdown()
    table = pd.concat(outcome.results, ignore_index=True)
    trained = table[table["candidate"].isin([name for _, name in jobs])]  # not the rescored copies
    minutes = trained.groupby("candidate", sort=False)["seconds"].sum().div(60).round(1)
    print("training time (min):", minutes.to_string(), sep="\n")  # machine-bound: not in the CSV
    table = table.drop(columns="seconds")
    if OUT.exists():  # keep the rows of other candidates (round 4 also holds its seed-0 check)
        previous = pd.read_csv(OUT)
        others = previous[~previous["candidate"].isin(set(table["candidate"]))]
        others = others.assign(loss=others.get("loss", DEFAULT_LOSS)).fillna({"loss": DEFAULT_LOSS})
        table = pd.concat([others, table], ignore_index=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.sort_values("round", kind="stable").to_csv(OUT, index=False, float_format="%.6g")
    best = table[table["round"] == round_number].groupby("candidate", sort=False)["val_error"].min()
    print(best.mul(100).round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())

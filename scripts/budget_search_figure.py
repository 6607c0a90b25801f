"""The budget search at a glance: every lever tried on three or more search seeds, as its
per-seed differences in best validation error from the budget's own settings.

    python scripts/budget_search_figure.py   # results/search/mnist_budget_search_paired.{png,pdf}

`scripts/budget_search.py` redraws it after each round.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from qnnpipeline import viz

SEARCH = Path("results/search/mnist_budget_search.csv")
FIGURE = SEARCH.with_name("mnist_budget_search_paired")

# The budget's own settings (round 5's winner) under each name a round gave its run:
# round 5 and 13, round 7 (scored with BN's running averages) and round 10 (its weights)
BUDGET_RUNS = ("batch 96, 22 epochs, dropout 0 / 0.3", "BN running averages (same run)",
               "latest weights, BN running averages")


def paired_differences(search: pd.DataFrame) -> pd.DataFrame:
    """Every lever tried on three or more search seeds against the budget's settings on
    the same seeds: one row per (lever, seed) with both best validation errors (%) and
    their difference. Rounds 5-6 left one seed (100) of some levers; later rounds named
    each run after its seed, so the name less its seed is the lever."""
    searched = search[(search["round"] >= 5) & (search["seed"] >= 100)]
    lever = searched["candidate"].str.replace(r", seed \d+$", "", regex=True)
    rounds = searched.groupby(lever)["round"].unique().map(sorted)
    best = 100 * searched.groupby([lever, "seed"])["val_error"].min()
    budget = best[best.index.get_level_values(0).isin(BUDGET_RUNS)].groupby("seed").min()
    levers = best[~best.index.get_level_values(0).isin(BUDGET_RUNS)].rename("lever_error").reset_index()
    levers = levers.rename(columns={"candidate": "lever"}).merge(
        budget.rename("budget_error").reset_index(), on="seed")
    levers["difference"] = levers["lever_error"] - levers["budget_error"]
    levers["rounds"] = levers["lever"].map(lambda name: ", ".join(map(str, rounds[name])))
    levers["last_round"] = levers["lever"].map(lambda name: rounds[name][-1])
    levers = levers[levers.groupby("lever")["seed"].transform("size") >= 3]
    return levers.sort_values(["last_round", "lever", "seed"]).reset_index(drop=True)


def draw_paired_differences(search: pd.DataFrame, stem: Path = FIGURE):
    """results/search/mnist_budget_search_paired.{png,pdf}: each seed's paired difference
    per lever (dots), mean ± sd over its seeds (bar), zero = the budget's settings."""
    differences = paired_differences(search)
    order = differences.groupby("lever", sort=False)["difference"].mean().index
    viz.set_theme()
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(order) + 1.2))
    sns.swarmplot(differences, x="difference", y="lever", order=order, color="0.55", size=5, ax=ax)
    sns.pointplot(differences, x="difference", y="lever", order=order, errorbar="sd",
                  linestyle="none", marker="D", color="C0", capsize=0.25, ax=ax)
    ax.axvline(0, color="0.2", linewidth=1)
    about = differences.groupby("lever").agg(seeds=("seed", "size"), rounds=("rounds", "first"))
    ax.set_yticks(range(len(order)), [
        f"{name}\n({'rounds' if ',' in about.rounds[name] else 'round'} {about.rounds[name]}; "
        f"{about.seeds[name]} seeds)" for name in order])
    ax.set(xlabel="best validation error minus the budget's settings on the same seed (points;\n"
                  "below 0: the lever did better); dots: seeds, diamond and bar: mean ± sd", ylabel="")
    fig.savefig(stem.with_suffix(".png"), dpi=300, metadata={"Software": None})  # as viz.savefig
    fig.savefig(stem.with_suffix(".pdf"), metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return differences


def main() -> int:
    differences = draw_paired_differences(pd.read_csv(SEARCH))
    summary = differences.groupby("lever", sort=False)["difference"].agg(["size", "mean", "std"])
    print(summary.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())

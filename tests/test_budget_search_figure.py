"""The search figure's pairing: each lever's best validation error per seed minus the
budget's own run of that seed, whichever round and name that run was recorded under."""
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from budget_search_figure import draw_paired_differences, paired_differences  # noqa: E402


def rows(round_number, candidate, seed, errors):
    return [{"round": round_number, "candidate": candidate, "seed": seed, "epoch": epoch + 1,
             "val_error": error} for epoch, error in enumerate(errors)]


@pytest.fixture
def search():
    budget = "batch 96, 22 epochs, dropout 0 / 0.3"
    stochastic = "batch 96, 22 epochs, stochastic activations, no dropout"
    table = (rows(4, "lr 3e-6, seed 0 check", 0, [0.020, 0.010])            # a reported seed: left out
             + rows(5, budget, 100, [0.020, 0.0150])                        # the budget, seed 100 ...
             + rows(7, "BN running averages (same run), seed 100", 100, [0.020, 0.0150])  # ... again
             + rows(7, "BN running averages (same run), seed 101", 101, [0.0160, 0.0170])
             + rows(13, f"{budget}, seed 102", 102, [0.0180, 0.0140])
             + rows(5, stochastic, 100, [0.0140, 0.0160])                   # one seed in round 5,
             + rows(12, f"{stochastic}, seed 101", 101, [0.0190, 0.0150])  # two more later
             + rows(13, f"{stochastic}, seed 102", 102, [0.0145, 0.0150])
             + rows(8, "cross-entropy loss, seed 100", 100, [0.0170, 0.0160])
             + rows(8, "cross-entropy loss, seed 101", 101, [0.0180, 0.0190])
             + rows(6, "xnor forward, 27 epochs", 100, [0.0100, 0.0100]))  # one seed: left out
    return pd.DataFrame(table)


def test_each_lever_pairs_with_the_budget_run_of_its_seed(search):
    differences = paired_differences(search)
    by_lever = {lever: dict(zip(group["seed"], group["difference"].round(6)))
                for lever, group in differences.groupby("lever")}
    assert by_lever == {"batch 96, 22 epochs, stochastic activations, no dropout":
                        {100: -0.1, 101: -0.1, 102: 0.05}}  # in points: 1.4-1.5, 1.5-1.6, 1.45-1.4
    rounds = differences.drop_duplicates("lever").set_index("lever")["rounds"]
    assert rounds.to_dict() == {"batch 96, 22 epochs, stochastic activations, no dropout": "5, 12, 13"}


def test_levers_on_fewer_than_three_seeds_are_left_out(search):
    extra = pd.DataFrame(rows(8, "cross-entropy loss, seed 102", 102, [0.0150]))
    levers = set(paired_differences(pd.concat([search, extra]))["lever"])
    assert levers == {"batch 96, 22 epochs, stochastic activations, no dropout", "cross-entropy loss"}


def test_the_figure_is_written_as_png_and_pdf(search, tmp_path):
    draw_paired_differences(search, tmp_path / "paired")
    assert (tmp_path / "paired.png").stat().st_size > 0 and (tmp_path / "paired.pdf").stat().st_size > 0

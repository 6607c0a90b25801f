"""The committed budget trainings, and their other seeds, rerun on a CPU of the other
vendor, gave the same bits (`scripts/cross_machine_rerun.py` keeps each rerun; see the
README, "How to check")."""
import json

import pandas as pd
import pytest
import yaml

from qnnpipeline import paths

STAGES = {"mnist_budget": ("mnist_cpu", "mnist_fp"),
          "mnist_seeds": ("mnist_cpu_seed1", "mnist_cpu_seed2", "mnist_fp_seed1", "mnist_fp_seed2")}
TRAININGS = [(stage, run) for stage, runs in STAGES.items() for run in runs]


def rerun(stage):
    return json.loads((paths.root() / "results" / "reproducibility" / f"{stage}_rerun.json").read_text())


def committed_metrics(run):
    return json.loads((paths.root() / "results" / "metrics" / f"{run}.json").read_text())


def committed_checkpoint_md5(run):
    lock = yaml.safe_load((paths.root() / "dvc.lock").read_text())
    outs = {out["path"]: out["md5"] for out in lock["stages"]["mnist_budget"]["outs"]}
    return outs[f"checkpoints/{run}.pt"]


@pytest.mark.parametrize("stage", STAGES)
def test_the_rerun_was_made_elsewhere_from_committed_code(stage):
    record = rerun(stage)
    committed = committed_metrics(STAGES[stage][0])["provenance"]
    assert record["stage"] == stage
    assert record["provenance"]["cpu"].split()[0] != committed["cpu"].split()[0]  # another vendor
    assert record["provenance"]["dirty"] is False
    assert record["provenance"]["numerics"]["profile"] == committed["numerics"]["profile"]
    assert set(record["runs"]) == set(STAGES[stage])


@pytest.mark.parametrize("stage, run", TRAININGS)
def test_every_epoch_of_the_rerun_matches_the_committed_history(stage, run):
    committed = pd.read_csv(paths.root() / "results" / "tables" / f"{run}_history.csv", dtype=str)
    committed = committed.drop(columns="seconds")
    lines = [",".join(committed.columns)] + [",".join(row) for row in committed.itertuples(index=False)]
    assert rerun(stage)["runs"][run]["history"] == lines


@pytest.mark.parametrize("stage, run", TRAININGS)
def test_the_rerun_chose_the_same_epoch_and_scored_the_same(stage, run):
    committed = committed_metrics(run)
    for key in ("best_epoch", "best_val_error", "test_error", "epochs"):
        assert rerun(stage)["runs"][run][key] == committed[key], key


@pytest.mark.parametrize("run", STAGES["mnist_budget"])
def test_the_rerun_saved_the_same_weights_byte_for_byte(run):
    assert rerun("mnist_budget")["runs"][run]["checkpoint_md5"] == committed_checkpoint_md5(run)


def test_the_rerun_summarised_the_seeds_as_committed():
    committed = committed_metrics("mnist_seeds")
    assert rerun("mnist_seeds")["summary"] == {key: committed[key] for key in ("runs", "seeds", "difference")}


def test_the_readme_quotes_the_reruns_as_recorded():
    readme = " ".join((paths.root() / "README.md").read_text().split())
    minutes = lambda seconds: f"{seconds / 60:.1f}"
    budget, seeds = rerun("mnist_budget"), rerun("mnist_seeds")
    errors = [f"{100 * committed_metrics(run)['test_error']:.2f} %" for run in STAGES["mnist_budget"]]
    assert f"checkout of commit {budget['provenance']['commit'][:7]} on an Intel Xeon" in readme
    assert f"test errors ({errors[0]} and {errors[1]})" in readme
    assert (f"{minutes(budget['runs']['mnist_cpu']['wall_seconds'])} min (BNN) and "
            f"{minutes(budget['runs']['mnist_fp']['wall_seconds'])} min (control) per run") in readme
    committed = [minutes(committed_metrics(run)["provenance"]["wall_seconds"]) for run in STAGES["mnist_budget"]]
    assert f"against {committed[0]} and {committed[1]} min on the AMD EPYC" in readme
    # the other seeds: the commit, and the range of the rerun's wall times per training
    walls = [run["wall_seconds"] for run in seeds["runs"].values()]
    assert f"seeds 1 and 2 of both runs (`mnist_seeds`) from commit {seeds['provenance']['commit'][:7]}" in readme
    assert f"{minutes(min(walls))}-{minutes(max(walls))} min per run" in readme
    made = [committed_metrics(run)["provenance"]["wall_seconds"] for run in STAGES["mnist_seeds"]]
    assert f"against {minutes(min(made))}-{minutes(max(made))} min on the AMD EPYC" in readme
    summary = committed_metrics("mnist_seeds")
    bnn, control = (summary["runs"][run] for run in STAGES["mnist_budget"])
    difference = summary["difference"]
    assert (f"(BNN {bnn['test_error_pct_mean']:.2f} ± {bnn['test_error_pct_sd']:.2f} %, control "
            f"{control['test_error_pct_mean']:.2f} ± {control['test_error_pct_sd']:.2f} %, difference "
            f"{difference['difference_pct']:+.2f} points, 95 % CI {difference['ci_low_pct']:+.2f} to "
            f"{difference['ci_high_pct']:+.2f})") in readme

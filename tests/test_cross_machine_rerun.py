"""The committed budget trainings, rerun on a CPU of the other vendor, gave the same bits
(`scripts/cross_machine_rerun.py` keeps the rerun; see the README, "How to check")."""
import json

import pandas as pd
import pytest
import yaml

from qnnpipeline import paths

RECORD = paths.root() / "results" / "reproducibility" / "mnist_budget_rerun.json"
RUNS = ("mnist_cpu", "mnist_fp")


@pytest.fixture(scope="module")
def rerun():
    return json.loads(RECORD.read_text())


def committed_metrics(run):
    return json.loads((paths.root() / "results" / "metrics" / f"{run}.json").read_text())


def committed_checkpoint_md5(run):
    lock = yaml.safe_load((paths.root() / "dvc.lock").read_text())
    outs = {out["path"]: out["md5"] for out in lock["stages"]["mnist_budget"]["outs"]}
    return outs[f"checkpoints/{run}.pt"]


def test_the_rerun_was_made_elsewhere_from_committed_code(rerun):
    committed = committed_metrics("mnist_cpu")["provenance"]
    assert rerun["provenance"]["cpu"].split()[0] != committed["cpu"].split()[0]  # another vendor
    assert rerun["provenance"]["dirty"] is False
    assert rerun["provenance"]["numerics"]["profile"] == committed["numerics"]["profile"]
    assert set(rerun["runs"]) == set(RUNS)


@pytest.mark.parametrize("run", RUNS)
def test_every_epoch_of_the_rerun_matches_the_committed_history(rerun, run):
    committed = pd.read_csv(paths.root() / "results" / "tables" / f"{run}_history.csv", dtype=str)
    committed = committed.drop(columns="seconds")
    lines = [",".join(committed.columns)] + [",".join(row) for row in committed.itertuples(index=False)]
    assert rerun["runs"][run]["history"] == lines


@pytest.mark.parametrize("run", RUNS)
def test_the_rerun_chose_the_same_epoch_and_scored_the_same(rerun, run):
    committed = committed_metrics(run)
    for key in ("best_epoch", "best_val_error", "test_error", "epochs"):
        assert rerun["runs"][run][key] == committed[key], key


@pytest.mark.parametrize("run", RUNS)
def test_the_rerun_saved_the_same_weights_byte_for_byte(rerun, run):
    assert rerun["runs"][run]["checkpoint_md5"] == committed_checkpoint_md5(run)


def test_the_readme_quotes_the_rerun_as_recorded(rerun):
    readme = " ".join((paths.root() / "README.md").read_text().split())
    minutes = lambda seconds: f"{seconds / 60:.1f}"
    errors = [f"{100 * committed_metrics(run)['test_error']:.2f} %" for run in RUNS]
    assert f"checkout of commit {rerun['provenance']['commit'][:7]} on an Intel Xeon" in readme
    assert f"test errors ({errors[0]} and {errors[1]})" in readme
    assert (f"{minutes(rerun['runs']['mnist_cpu']['wall_seconds'])} min (BNN) and "
            f"{minutes(rerun['runs']['mnist_fp']['wall_seconds'])} min (control) per run") in readme
    committed = [minutes(committed_metrics(run)["provenance"]["wall_seconds"]) for run in RUNS]
    assert f"against {committed[0]} and {committed[1]} min on the AMD EPYC" in readme

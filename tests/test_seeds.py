"""`python -m qnnpipeline.seeds`: a run's own seed is read, the others are trained, and
the summary's mean, sd and interval agree with a hand computation."""
import json
import statistics

import pandas as pd
import pytest

from qnnpipeline import claims, seeds
from support import mnist_mirror, welch_reference
from test_cli import outputs, write_params  # noqa: F401  (the fixture and the tiny params)


def add_seeds_section(params, runs=("tiny",), seed_list=(0, 1), jobs=2):
    params.write_text(params.read_text() + f"tiny_seeds:\n  runs: {list(runs)}\n"
                      f"  seeds: {list(seed_list)}\n  jobs: {jobs}\n")
    return params


def fake_run(results, name, seed, test, val, epoch=3):
    folder = results / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(
        {"test_error": test, "best_val_error": val, "best_epoch": epoch, "epochs": 5,
         "config": {"seed": seed}}))


def test_plan_reads_the_runs_own_seed_and_trains_the_others(tmp_path):
    params = add_seeds_section(write_params(tmp_path), seed_list=[2, 0, 5])
    spec, triples = seeds.plan(params, "tiny_seeds")
    assert triples == [("tiny", 2, "tiny_seed2"), ("tiny", 0, "tiny"), ("tiny", 5, "tiny_seed5")]
    assert spec["jobs"] == 2


@pytest.mark.parametrize("body, message", [
    ("tiny_seeds: {runs: [tiny]}\n", "non-empty 'runs' and 'seeds'"),
    ("tiny_seeds: {runs: [tiny], seeds: [1, 1]}\n", "distinct integers"),
    ("tiny_seeds: {runs: [tiny], seeds: [1], jobs: 0}\n", "positive integer"),
    ("tiny_seeds: {runs: [nothere], seeds: [1]}\n", "section 'nothere' not in"),
])
def test_bad_sections_are_refused(tmp_path, body, message):
    params = write_params(tmp_path)
    params.write_text(params.read_text() + body)
    with pytest.raises(ValueError, match=message):
        seeds.plan(params, "tiny_seeds")


def test_summary_agrees_with_a_hand_computation(outputs):
    results = outputs / "results"
    errors = {"bnn": [0.020, 0.018, 0.022], "fp": [0.015, 0.016, 0.014]}
    triples = []
    for run, values in errors.items():
        for seed, value in enumerate(values):
            name = run if seed == 0 else f"{run}_seed{seed}"
            fake_run(results, name, seed, value, value - 0.001)
            triples.append((run, seed, name))
    table, summary = seeds.summarise(triples)
    assert len(table) == 6
    for run, values in errors.items():
        assert summary[run]["test_error_pct_mean"] == pytest.approx(100 * statistics.mean(values), abs=1e-3)
        assert summary[run]["test_error_pct_sd"] == pytest.approx(100 * statistics.stdev(values), abs=1e-3)
        assert summary[run]["n_seeds"] == 3
    # the summary describes the runs as they are; a retrained own seed makes it stale
    own = json.loads((results / "metrics" / "bnn.json").read_text())
    assert claims.is_current({"runs": summary}, "bnn", own)
    assert not claims.is_current({"runs": summary}, "bnn", {**own, "test_error": 0.019})
    assert not claims.is_current({"runs": summary}, "bnn", {**own, "config": {"seed": 0, "epochs": 9}})
    assert not claims.is_current(None, "bnn", own) and not claims.is_current({"runs": summary}, "bnn", None)
    fake_run(results, "bnn_seed2", 7, 0.02, 0.02)  # a run trained with another seed
    with pytest.raises(ValueError, match="trained with seed 7, not 2"):
        seeds.summarise(triples)
    with pytest.raises(FileNotFoundError, match="no metrics"):
        seeds.summarise([("bnn", 9, "bnn_seed9")])


@pytest.mark.slow
def test_main_trains_the_other_seeds_and_writes_the_summary(outputs):
    params = add_seeds_section(write_params(outputs, mnist_mirror()), seed_list=[0, 1, 2])
    fake_run(outputs / "results", "tiny", 0, 0.5, 0.5)  # the stage's own run: read, not retrained
    assert seeds.main(["--config", str(params), "--section", "tiny_seeds"]) == 0
    table = pd.read_csv(outputs / "results" / "tables" / "tiny_seeds.csv")
    assert table["name"].tolist() == ["tiny", "tiny_seed1", "tiny_seed2"]
    assert table.loc[0, "test_error_pct"] == pytest.approx(50.0)
    trained = table["test_error_pct"].iloc[1:]
    assert trained.between(0, 90).all() and trained.nunique() == 2  # other seeds, other runs
    metrics = json.loads((outputs / "results" / "metrics" / "tiny_seeds.json").read_text())
    assert metrics["runs"]["tiny"]["n_seeds"] == 3 and metrics["provenance"]["commit"]


def test_summarise_only_trains_nothing(outputs):
    params = add_seeds_section(write_params(outputs), runs=("tiny", "other"), seed_list=[0, 1, 2])
    params.write_text(params.read_text() + "other:\n  model: {hidden: 8, depth: 1}\n  train: {epochs: 1}\n")
    errors = {"tiny": [0.50, 0.30, 0.40], "other": [0.20, 0.25, 0.21]}
    for run, values in errors.items():
        for seed, value in enumerate(values):
            fake_run(outputs / "results", run if seed == 0 else f"{run}_seed{seed}", seed, value, value)
    assert seeds.main(["--config", str(params), "--section", "tiny_seeds", "--summarise-only"]) == 0
    metrics = json.loads((outputs / "results" / "metrics" / "tiny_seeds.json").read_text())
    assert metrics["runs"]["tiny"]["test_error_pct_mean"] == pytest.approx(40.0)
    assert not (outputs / "checkpoints" / "tiny_seed1.pt").exists()
    own = json.loads((outputs / "results" / "metrics" / "tiny.json").read_text())
    assert claims.is_current(metrics, "tiny", own)
    # BNN minus control, as the shared record: Welch's interval in points, verdict over 3 seeds
    difference, low, high = welch_reference(errors["tiny"], errors["other"])
    recorded = metrics["difference"]
    assert recorded["runs"] == ["tiny", "other"] and (recorded["n_a"], recorded["n_b"]) == (3, 3)
    assert recorded["difference_pct"] == pytest.approx(100 * difference, abs=1e-3)
    assert (recorded["ci_low_pct"], recorded["ci_high_pct"]) == pytest.approx((100 * low, 100 * high), abs=1e-3)
    assert recorded["verdict"] == ("higher" if low > 0 else "no clear difference")

"""The budget-step benchmarks' shared minibatch (`benchmarks/budget_step.py`), and
`benchmarks/activation_step.py` and `forward_step.py` run as scripts from the checkout,
writing the reports whose committed copies the README quotes (checked in
test_nb_05_mnist_results and test_readme_quotes)."""
import importlib.util
import json
import subprocess
import sys

import yaml

from qnnpipeline import paths

BENCHMARKS = paths.root() / "benchmarks"
SPEC = importlib.util.spec_from_file_location("budget_step", BENCHMARKS / "budget_step.py")
budget_step = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(budget_step)


def test_the_minibatch_is_fixed_and_of_the_budgets_size():
    inputs, labels = budget_step.minibatch()
    again, again_labels = budget_step.minibatch()
    batch = yaml.safe_load((paths.root() / "params.yaml").read_text())["mnist_cpu"]["train"]["batch_size"]
    assert inputs.shape == (batch, 784) and labels.shape == (batch,)
    assert inputs.min() >= -1 and inputs.max() < 1 and set(labels.tolist()) <= set(range(10))
    assert inputs.equal(again) and labels.equal(again_labels)


def test_activation_step_writes_the_race_of_the_two_nets(tmp_path):
    out = tmp_path / "activation_step.json"
    subprocess.run([sys.executable, str(BENCHMARKS / "activation_step.py"), "--repeats", "2", "--out", str(out)],
                   check=True, capture_output=True, cwd=paths.root())  # as a user runs it
    report = json.loads(out.read_text())
    budget, lever = report["models"].values()
    assert lever == {**budget, "dropout_hidden": 0.0, "act_mode": "stochastic"} and budget["kind"] == "bnn"
    steps = report["training_step"]
    assert list(steps) == list(report["models"])
    first, second = steps.values()
    assert first["ratio_to_budget"] == first["best_ratio_to_budget"] == 1.0
    assert abs(second["ratio_to_budget"] - second["median_ms"] / first["median_ms"]) < 2e-3
    spread = report["lever_ratio_by_round"]
    assert 0 < spread["min"] <= spread["median"] <= spread["max"]
    assert report["repeats"] == 2 and report["provenance"]["threads"] == 1
    assert report["provenance"]["numerics"]["profile"] == "portable"  # as the budget runs


def test_forward_step_races_the_xnor_forward_against_the_budget(tmp_path):
    out = tmp_path / "forward_step.json"
    subprocess.run([sys.executable, str(BENCHMARKS / "forward_step.py"), "--repeats", "2", "--out", str(out)],
                   check=True, capture_output=True, cwd=paths.root())
    report = json.loads(out.read_text())
    budget, lever = report["models"].values()
    assert budget["matmul"] == "ordered" and lever == {**budget, "matmul": "xnor"}
    first, second = report["training_step"].values()
    assert first["ratio_to_budget"] == 1.0 and second["median_ms"] > 0
    assert abs(second["ratio_to_budget"] - second["median_ms"] / first["median_ms"]) < 2e-3
    assert report["provenance"]["wall_seconds"] > 0

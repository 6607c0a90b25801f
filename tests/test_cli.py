"""Tests of `qnn-train` (qnnlib.cli): a tiny run writes every output; bad input fails
clearly before any training."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from qnnpipeline import cli, paths
from qnnlib.models import build_model
from support import mnist_mirror


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """Redirect results and checkpoints into the test's folder."""
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return tmp_path


def write_params(folder: Path, mirror: Path | None = None) -> Path:
    """A params.yaml with one tiny section; lr_start written as people write it (3e-3,
    which plain yaml.safe_load would read as a string)."""
    path = folder / "params.yaml"
    path.write_text(f"""\
tiny:
  model: {{hidden: 64, depth: 1}}
  train: {{epochs: 1, lr_start: 3e-3, n_train: 1000, n_val: 500, n_test: 500,
          progress: false, threads: 1}}
  data: {{dataset: mnist, root: "{folder / 'data'}", mirror: {json.dumps(str(mirror)) if mirror else 'null'},
         download: false}}
""")
    return path


@pytest.mark.slow
def test_cli_trains_and_writes_every_output(outputs, capsys):
    params = write_params(outputs, mnist_mirror())
    code = cli.main(["--config", str(params), "--section", "tiny", "--out-name", "tiny_run",
                     "--set", "train.epochs=2", "--set", "model.hidden=32"])
    assert code == 0
    metrics = json.loads((outputs / "results" / "metrics" / "tiny_run.json").read_text())
    assert metrics["epochs"] == 2 and metrics["config"]["lr_start"] == 3e-3
    assert 0 <= metrics["test_error"] < 0.9
    history = pd.read_csv(outputs / "results" / "tables" / "tiny_run_history.csv")
    assert history["epoch"].tolist() == [1, 2]
    # The saved weights load into the model rebuilt from the saved description.
    description = json.loads((outputs / "checkpoints" / "tiny_run.json").read_text())
    assert description["model"] == {"hidden": 32, "depth": 1}
    model = build_model(description["model"])
    model.load_state_dict(torch.load(outputs / "checkpoints" / "tiny_run.pt"))
    assert "test error" in capsys.readouterr().out


def test_set_values_are_typed():
    config = cli.apply_overrides({"model": {}, "train": {}, "data": {}},
                                 ["epochs=3", "train.lr_end=3e-7", "model.kind=full_precision",
                                  "train.n_train=null"])
    assert config["train"] == {"epochs": 3, "lr_end": 3e-7, "n_train": None}
    assert config["model"] == {"kind": "full_precision"}


@pytest.mark.parametrize("extra, message", [
    (["--set", "train.epoch=2"], "epoch"),             # unknown TrainConfig key
    (["--set", "model.width=2"], "width"),             # unknown model key
    (["--set", "optim.lr=2"], "optim"),                # unknown part
    (["--section", "missing"], "missing"),             # unknown section
])
def test_bad_input_fails_with_a_clear_message(outputs, capsys, extra, message):
    params = write_params(outputs)
    code = cli.main(["--config", str(params), "--section", "tiny", *extra])
    assert code != 0
    error = capsys.readouterr().err
    assert "qnn-train: error" in error and message in error
    assert not (outputs / "results").exists()  # failed before doing anything


def test_missing_config_file_as_a_module(tmp_path):
    """`python -m qnnlib.cli` works and exits nonzero with a message, no traceback."""
    run = subprocess.run([sys.executable, "-m", "qnnpipeline.cli", "--config",
                          str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, cwd=paths.root(), timeout=120)
    assert run.returncode != 0
    assert "config file not found" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_cli_trains_several_sections_side_by_side(tmp_path, monkeypatch):
    params = write_params(tmp_path, mnist_mirror())
    text = params.read_text()
    params.write_text(text + text.replace("tiny:", "tiny_twin:").replace("{hidden: 64", "{kind: full_precision, hidden: 64"))
    env = {**os.environ, "QNN_RESULTS_DIR": str(tmp_path / "results"),
           "QNN_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
    run = subprocess.run([sys.executable, "-m", "qnnpipeline.cli", "--config", str(params),
                          "--section", "tiny", "--section", "tiny_twin"],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    for name in ("tiny", "tiny_twin"):
        assert (tmp_path / "results" / "metrics" / f"{name}.json").exists()
        assert (tmp_path / "checkpoints" / f"{name}.pt").exists()
    twin = json.loads((tmp_path / "checkpoints" / "tiny_twin.json").read_text())
    assert twin["model"]["kind"] == "full_precision"


def test_cli_refuses_out_name_with_several_sections(tmp_path, capsys):
    with pytest.raises(SystemExit, match="2"):
        cli.main(["--config", str(write_params(tmp_path)), "--section", "a", "--section", "b",
                  "--out-name", "x"])
    assert "name one run: give a single --section" in capsys.readouterr().err


# --- reproducibility (issue 9.2) and the checkpoint/weights clash (issue 9.3) ----------


def run_in_fresh_process(params: Path, folder: Path, name: str, *overrides: str) -> dict:
    """`python -m qnnpipeline.cli` in a new interpreter; returns its metrics without the
    fields that describe the machine and the clock, plus its history and weights."""
    env = {**os.environ, "QNN_RESULTS_DIR": str(folder / "results"),
           "QNN_CHECKPOINT_DIR": str(folder / "checkpoints")}
    command = [sys.executable, "-m", "qnnpipeline.cli", "--config", str(params), "--section",
               "tiny", "--out-name", name]
    command += [flag for override in overrides for flag in ("--set", override)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((folder / "results" / "metrics" / f"{name}.json").read_text())
    for clock_or_machine in ("seconds", "provenance"):
        metrics.pop(clock_or_machine)
    history = pd.read_csv(folder / "results" / "tables" / f"{name}_history.csv")
    weights = torch.load(folder / "checkpoints" / f"{name}.pt", weights_only=True)
    return {"metrics": metrics, "history": history.drop(columns="seconds"), "weights": weights}


@pytest.mark.slow
def test_same_seed_gives_identical_runs_in_fresh_processes(tmp_path):
    """Regression (issue 9.2): qnn-train built the model before seeding, so two processes
    with the same seed started from different weights and disagreed from epoch 1."""
    params = write_params(tmp_path, mnist_mirror())
    first = run_in_fresh_process(params, tmp_path, "first")
    second = run_in_fresh_process(params, tmp_path, "second")
    assert first["metrics"] == second["metrics"]
    pd.testing.assert_frame_equal(first["history"], second["history"], check_exact=True)
    assert first["weights"].keys() == second["weights"].keys()
    assert all(torch.equal(first["weights"][k], second["weights"][k]) for k in first["weights"])


def initial_weights(params: Path, *overrides: str) -> dict:
    """The model `qnn-train` would train, before any training (no data loaded)."""
    args = cli.build_parser().parse_args(["--config", str(params), "--section", "tiny",
                                          *[f for o in overrides for f in ("--set", o)]])
    args.section = "tiny"
    _, _, model = cli.prepare(args)
    return {key: value.clone() for key, value in model.state_dict().items()}


def test_the_seed_decides_the_initial_weights(tmp_path):
    """The same seed gives the same initial weights whatever the global RNG did before
    (it is seeded before the model is built); another seed gives other weights."""
    params = write_params(tmp_path)
    torch.manual_seed(12345)
    seed0 = initial_weights(params)
    torch.rand(1000)  # whatever ran before in the process must not matter
    again = initial_weights(params)
    seed1 = initial_weights(params, "train.seed=1")
    assert all(torch.equal(seed0[k], again[k]) for k in seed0)
    assert not torch.equal(seed0["1.weight"], seed1["1.weight"])


def test_checkpoint_at_the_weights_path_is_refused(outputs, monkeypatch, capsys):
    """Regression (issue 9.3): `--checkpoint checkpoints/NAME.pt` (relative to the project,
    as dvc.yaml writes it) was accepted; save_model then overwrote the checkpoint with
    weights and the next resume failed. Refused before anything runs."""
    params = write_params(outputs)
    (outputs / "dvc.yaml").write_text("stages: {}\n")  # with params.yaml: a project folder
    monkeypatch.chdir(outputs)  # run from it: checkpoints/ is outputs/checkpoints
    assert cli.main(["--config", str(params), "--section", "tiny", "--checkpoint",
                     "checkpoints/tiny.pt"]) == 2
    assert "is where run 'tiny' writes its results" in capsys.readouterr().err
    assert not (outputs / "results").exists()


@pytest.mark.parametrize("target", ["checkpoints/tiny.pt", "checkpoints/tiny.json",
                                    "results/metrics/tiny.json"])
def test_checkpoint_set_through_set_meets_the_same_guard(outputs, monkeypatch, capsys, target):
    """Issue 19.11: `--set train.checkpoint=<model file>` bypassed the guard of
    --checkpoint and overwrote the file. The guard reads the resolved setting."""
    params = write_params(outputs)
    (outputs / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(outputs)
    monkeypatch.setenv("QNN_RESULTS_DIR", str(outputs / "results"))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(outputs / "checkpoints"))
    assert cli.main(["--config", str(params), "--section", "tiny",
                     "--set", f"train.checkpoint={target}"]) == 2
    assert "writes its results" in capsys.readouterr().err
    assert not (outputs / "results").exists()

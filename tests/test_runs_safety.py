"""Runs that cannot lie or lose work (issue 19): each test failed on the code before it.

Resume covers the whole run (1), runs are resumable by default (4), a run's files are
written together (5), unwritable folders fail before training (6), two runs of one name
cannot collide (7), SIGTERM to `qnn-train` stops its child trainings (8), and bad
checkpoint paths or devices get a clear error (10)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from qnnlib.checkpoints import run_signature, signature_differences
from qnnlib.models import build_model
from qnnlib.training import TrainConfig, make_optimizer, train
from qnnpipeline import cli, runs
from support import mnist_mirror, synthetic_splits

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A params.yaml with one tiny section, results and checkpoints in the test's folder."""
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    params = tmp_path / "params.yaml"
    params.write_text(f"""\
tiny:
  model: {{kind: bnn, hidden: 32, depth: 1}}
  train: {{epochs: 2, lr_start: 3.0e-3, n_train: 500, n_val: 200, n_test: 200,
          progress: false, threads: 1}}
  data: {{dataset: mnist, root: "{tmp_path / 'data'}", mirror: {json.dumps(str(mnist_mirror()))},
         download: false}}
""")
    return tmp_path, params


def qnn_train(params, *flags) -> int:
    return cli.main(["--config", str(params), "--section", "tiny", *flags])


# 1. The signature covers the whole run -----------------------------------------------

@pytest.mark.parametrize("other", [{"kind": "full_precision"}, {"dropout_hidden": 0.3}])
def test_signature_tells_models_of_the_same_shapes_apart(other):
    config = TrainConfig(epochs=1, progress=False)
    signatures = []
    for model_config in ({"hidden": 16, "depth": 1}, {"hidden": 16, "depth": 1, **other}):
        model = build_model(model_config)
        signatures.append(run_signature(model, make_optimizer(model, 1e-3), config, "cpu",
                                        identity={"model": model_config}))
    assert signature_differences(*signatures)


def test_resume_refuses_a_run_with_another_model_kind(project, capsys):
    """A binary run's checkpoint, resumed as a full-precision run under another name,
    was accepted and reported the binary run's error as full precision."""
    folder, params = project
    checkpoint = str(folder / "shared_resume.pt")
    assert qnn_train(params, "--checkpoint", checkpoint, "--set", "train.epochs=1") == 0
    assert qnn_train(params, "--checkpoint", checkpoint, "--set", "train.epochs=1",
                     "--set", "model.kind=full_precision", "--out-name", "fp") == 2
    assert "model.kind" in capsys.readouterr().err
    assert not (folder / "results" / "metrics" / "fp.json").exists()


# 4. Resumable by default ------------------------------------------------------------

def test_runs_resume_by_default_and_clean_up(project):
    folder, params = project
    resume = folder / "checkpoints" / "tiny_resume.pt"
    # a zero time budget stops after the first epoch, as a kill would
    assert qnn_train(params, "--set", "train.max_seconds=0") == 0
    assert resume.is_file()
    first = json.loads((folder / "results" / "metrics" / "tiny.json").read_text())
    assert first["epochs"] == 1
    assert qnn_train(params) == 0
    history = (folder / "results" / "tables" / "tiny_history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]
    assert not resume.exists()  # finished: nothing left to resume
    # the resumed run equals one never interrupted
    assert qnn_train(params, "--no-checkpoint", "--out-name", "straight") == 0
    straight = (folder / "results" / "tables" / "straight_history.csv").read_text().splitlines()
    assert [line.rsplit(",", 1)[0] for line in straight] == [line.rsplit(",", 1)[0] for line in history]


def test_a_default_checkpoint_of_another_run_is_set_aside(project, capsys):
    folder, params = project
    assert qnn_train(params, "--set", "train.max_seconds=0") == 0
    assert qnn_train(params, "--set", "model.hidden=16") == 0
    assert "starting afresh" in capsys.readouterr().err
    metrics = json.loads((folder / "results" / "metrics" / "tiny.json").read_text())
    assert metrics["epochs"] == 2 and metrics["model"]["hidden"] == 16


# 5. A run's files are written together ------------------------------------------------

def _trained():
    return train(build_model({"hidden": 16, "depth": 1}), synthetic_splits(),
                 TrainConfig(epochs=1, progress=False))


@pytest.mark.parametrize("failing", ["torch.save", "history", "metrics"])
def test_a_failed_write_leaves_the_previous_complete_run(tmp_path, monkeypatch, failing):
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    config = {"model": {"hidden": 16, "depth": 1}, "data": {"dataset": "mnist"}}
    files = runs.save_run(_trained(), config, "run")
    before = {key: path.read_bytes() for key, path in files.items()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    if failing == "torch.save":
        monkeypatch.setattr(runs.torch, "save", disk_full)
    elif failing == "history":
        monkeypatch.setattr("pandas.DataFrame.to_csv", disk_full)
    else:
        monkeypatch.setattr(runs, "metrics_record", disk_full)
    with pytest.raises(OSError, match="No space"):
        runs.save_run(_trained(), {**config, "model": {"hidden": 16, "depth": 1, "dropout_in": 0.1}}, "run")
    assert {key: path.read_bytes() for key, path in files.items()} == before
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_run_files_get_the_usual_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    old = os.umask(0o022)
    try:
        files = runs.save_run(_trained(), {"model": {}, "data": {}}, "run")
    finally:
        os.umask(old)
    assert {path.stat().st_mode & 0o777 for path in files.values()} == {0o644}


# 6. Unwritable folders fail before training ------------------------------------------

def test_an_unwritable_results_folder_fails_before_training(project, monkeypatch, capsys):
    folder, params = project
    blocked = folder / "blocked"
    blocked.write_text("a file where the results folder should be")  # root ignores chmod
    monkeypatch.setenv("QNN_RESULTS_DIR", str(blocked))
    assert qnn_train(params) == 2
    captured = capsys.readouterr()
    assert "cannot write run 'tiny'" in captured.err and "best epoch" not in captured.out
    assert not (folder / "checkpoints" / "tiny_resume.pt").exists()


# 7. Two runs of one name ---------------------------------------------------------------

def test_a_second_run_of_the_same_name_is_refused_naming_the_holder(tmp_path, monkeypatch):
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path))
    with runs.RunLock("twin"):
        with pytest.raises(runs.RunBusy, match=f"pid {os.getpid()}"):
            with runs.RunLock("twin"):
                pass
    assert not (tmp_path / "twin.lock").exists()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    (tmp_path / "twin.lock").write_text(f"pid {dead.pid} on {socket.gethostname()}, since then\n")
    with runs.RunLock("twin"):
        assert f"pid {os.getpid()}" in (tmp_path / "twin.lock").read_text()


def test_writers_of_one_file_never_share_a_temporary_name(tmp_path):
    target, errors = tmp_path / "same.json", []

    def write(value):
        try:
            for _ in range(50):
                runs.write_json(target, {"writer": value})
        except OSError as error:  # FileNotFoundError when a shared .tmp was renamed away
            errors.append(error)
    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and json.loads(target.read_text())["writer"] in range(4)


# 8. SIGTERM to the console script ------------------------------------------------------

def test_sigterm_to_qnn_train_stops_its_child_trainings(project):
    folder, params = project
    text = params.read_text().replace("epochs: 2", "epochs: 500")
    params.write_text(text + text.replace("tiny:", "other:"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # as the console script runs it: main() called, not `python -m qnnpipeline.cli`
    parent = subprocess.Popen([sys.executable, "-c", "import sys; from qnnpipeline.cli import main; "
                               "sys.exit(main())", "--config", str(params),
                               "--section", "tiny", "--section", "other"], env=env, cwd=folder)
    process = psutil.Process(parent.pid)
    deadline = time.monotonic() + 60
    # its trainings run here and on a local Ray: every process under it must end with it
    while len(process.children(recursive=True)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    children = process.children(recursive=True)
    assert len(children) >= 2
    parent.send_signal(signal.SIGTERM)
    parent.wait(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive


# 10. Bad checkpoint paths and devices --------------------------------------------------

def test_an_empty_checkpoint_is_refused_clearly(project, capsys):
    folder, params = project
    empty = folder / "empty.pt"
    empty.write_bytes(b"")
    assert qnn_train(params, "--checkpoint", str(empty)) == 2
    assert "cannot resume from" in capsys.readouterr().err


def test_a_folder_as_checkpoint_is_refused(project, capsys):
    folder, params = project
    assert qnn_train(params, "--checkpoint", str(folder)) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["meta", "nonsense"])
def test_a_device_that_holds_no_data_is_refused(project, capsys, device):
    folder, params = project
    assert qnn_train(params, "--set", f"train.device={device}") == 2
    assert "device must be 'auto', 'cpu' or 'cuda[:N]'" in capsys.readouterr().err

"""Attacks from the hostile review that held, and had no test of their own until now
(tests/ATTACKS.md maps every attack to the tests that keep it held).

- a real SIGKILL in the middle of an epoch, then a resume: ends bit-identical;
- a real SIGKILL while a checkpoint is being written: the half-written bytes are never
  read back as a checkpoint, the previous one is resumed from;
- a checkpoint whose pickle would run os.system, given to `qnn-train`;
- NaN, infinite and negative learning rates and wrong types given as `--set` text;
- `--set` values carrying YAML python tags, dunder keys and path-like run names.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qnnlib import checkpoints
from qnnlib.models import mnist_mlp
from qnnlib.training import TrainConfig, train
from qnnpipeline import params as params_module
from support import mnist_mirror, synthetic_splits

pytestmark = pytest.mark.usefixtures("one_thread")

TESTS = Path(__file__).resolve().parent
# synthetic_splits(): 200 training examples, so 4 minibatches of 50 per epoch
RUN = {"epochs": 3, "batch_size": 50, "progress": False, "threads": 1}
BATCHES_PER_EPOCH = 4

# Runs in a fresh interpreter, trains with a checkpoint and SIGKILLs itself: in the
# middle of epoch 2 ("mid_epoch") or halfway through writing epoch 2's checkpoint
# ("during_save"), after epoch 1's checkpoint is on disk. No handler, no `finally` runs.
KILLED_RUN = f"""
import io, os, signal, sys
sys.path.insert(0, {str(TESTS)!r})
import torch
from qnnlib import training
from qnnlib.models import mnist_mlp
from support import synthetic_splits

mode, path = sys.argv[1], sys.argv[2]
kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
if mode == "mid_epoch":
    real_step, steps = training.train_step, [0]
    def step(*args, **kwargs):
        steps[0] += 1
        if steps[0] == {BATCHES_PER_EPOCH} + 2:  # the second minibatch of epoch 2
            kill()
        return real_step(*args, **kwargs)
    training.train_step = step
elif mode == "during_save":
    real_save, saves = torch.save, [0]
    def save(state, file, *args, **kwargs):
        saves[0] += 1
        if saves[0] == 2:  # epoch 2's checkpoint: half of its bytes reach the disk
            buffer = io.BytesIO()
            real_save(state, buffer, *args, **kwargs)
            file.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
            file.flush()
            os.fsync(file.fileno())
            kill()
        return real_save(state, file, *args, **kwargs)
    torch.save = save
torch.manual_seed(0)
training.train(mnist_mlp(hidden=16, depth=1), synthetic_splits(), {{**{RUN!r}, "checkpoint": path}})
print("not killed")
"""


def killed_run(mode: str, path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", KILLED_RUN, mode, str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, (run.returncode, run.stdout, run.stderr[-2000:])


def tiny_run(checkpoint: Path, init_seed: int = 0):
    torch.manual_seed(init_seed)
    return train(mnist_mlp(hidden=16, depth=1), synthetic_splits(),
                 TrainConfig(**RUN, checkpoint=str(checkpoint)))


def assert_same_run(resumed, whole):
    columns = ["epoch", "lr", "train_loss", "train_error", "val_error", "test_error"]
    assert resumed.history[columns].equals(whole.history[columns])
    assert (resumed.best_epoch, resumed.test_error) == (whole.best_epoch, whole.test_error)
    expected = whole.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """The same run, never interrupted."""
    return tiny_run(tmp_path_factory.mktemp("whole") / "whole.pt")


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, whole_run):
    path = tmp_path / "run.pt"
    killed_run("mid_epoch", path)
    assert torch.load(path, weights_only=True)["epoch"] == 1  # what survived the kill
    resumed = tiny_run(path, init_seed=99)  # a new process rebuilds the model anew
    assert len(resumed.history) == 3
    assert_same_run(resumed, whole_run)


def test_sigkill_during_checkpoint_save_never_yields_a_half_file(tmp_path, whole_run):
    path = tmp_path / "run.pt"
    killed_run("during_save", path)
    # the checkpoint path still holds epoch 1's complete file; the half-written bytes sit
    # in a temporary file of another name, which a resume never opens
    assert torch.load(path, weights_only=True)["epoch"] == 1
    half = [p for p in tmp_path.iterdir() if p != path]
    assert len(half) == 1 and half[0].stat().st_size > 0
    # and offered as a checkpoint by name, the half file is refused, not read as valid
    with pytest.raises(ValueError, match="not a checkpoint this version can read safely"):
        tiny_run(half[0])
    assert_same_run(tiny_run(path, init_seed=99), whole_run)


# --- qnn-train ----------------------------------------------------------------------------


class _Exploit:
    """Unpickling this runs os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """A data folder the first qnn-train call fills from the offline mirror (then reused)."""
    return tmp_path_factory.mktemp("mnist")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Results and checkpoints redirected; a tiny params section."""
    for variable, folder in (("QNN_RESULTS_DIR", "results"), ("QNN_CHECKPOINT_DIR", "checkpoints")):
        monkeypatch.setenv(variable, str(tmp_path / folder))
    (tmp_path / "params.yaml").write_text(
        "tiny:\n  model: {hidden: 16, depth: 1}\n"
        "  train: {epochs: 1, n_train: 200, n_val: 100, n_test: 100, progress: false, threads: 1}\n"
        "  data: {download: false}\n")
    return tmp_path


def qnn_train(project, *arguments, capsys):
    from qnnpipeline import cli
    code = cli.main(["--config", str(project / "params.yaml"), "--section", "tiny", *arguments])
    return code, capsys.readouterr().err


def assert_nothing_written(project):
    for folder in ("results", "checkpoints"):
        assert not any(path.is_file() for path in (project / folder).rglob("*")), folder


def with_data(project, monkeypatch, mnist_root):
    monkeypatch.setenv("QNN_DATA_DIR", str(mnist_root))
    return ["--set", f"data.mirror={mnist_mirror()}"]


def test_qnn_train_refuses_a_malicious_checkpoint_and_runs_none_of_it(project, monkeypatch, mnist_root, capsys):
    marker, evil = project / "pwned", project / "evil.pt"
    torch.save({"signature": {}, "payload": _Exploit(marker)}, evil)
    saved = evil.read_bytes()
    code, err = qnn_train(project, *with_data(project, monkeypatch, mnist_root),
                          "--checkpoint", str(evil), capsys=capsys)
    assert code == 2, err
    assert "qnn-train: error: cannot resume from" in err and "never unpickled" in err, err
    assert not marker.exists()
    assert evil.read_bytes() == saved  # a named checkpoint is the user's: kept as it was
    assert_nothing_written(project)


def test_malicious_file_at_the_default_checkpoint_is_never_unpickled(project, monkeypatch, mnist_root, capsys):
    """The default checkpoints/NAME_resume.pt holding a malicious pickle: refused with the
    reason (whatever qnn-train then does with the useless file), the payload never runs."""
    marker = project / "pwned"
    evil = project / "checkpoints" / "tiny_resume.pt"
    evil.parent.mkdir()
    torch.save({"signature": {}, "payload": _Exploit(marker)}, evil)
    code, err = qnn_train(project, *with_data(project, monkeypatch, mnist_root), capsys=capsys)
    assert "cannot resume from" in err and "never unpickled" in err, err
    assert code in (0, 2)
    assert not marker.exists()


@pytest.mark.parametrize("override, message", [
    ("train.lr_start=nan", "lr_start must be a number, got 'nan'"),       # YAML: the string nan
    ("train.lr_start=NaN", "lr_start must be a number, got 'NaN'"),
    ("train.lr_start=.NaN", "lr_start must be a finite number > 0"),       # YAML: the float nan
    ("train.lr_start=.inf", "lr_start must be a finite number > 0"),
    ("train.lr_end=-.inf", "lr_end must be a finite number > 0"),
    ("train.lr_start=1e400", "lr_start must be a finite number > 0"),      # overflows to inf
    ("train.lr_start=-3e-3", "lr_start must be a finite number > 0"),
    ("train.lr_end=0", "lr_end must be a finite number > 0"),
    ("train.lr_start=[0.1]", "lr_start must be a number"),
    ("train.epochs=1.5", "epochs must be an integer"),
    ("train.epochs=true", "epochs must be an integer"),
    ("train.progress=yes please", "progress must be true or false"),
    ("model.hidden=1e3", "hidden must be a positive integer"),
    ("model.dropout_in=.nan", "dropout_in must be a number in [0, 1)"),
])
def test_bad_numbers_given_with_set_are_refused_before_anything_runs(project, capsys, override, message):
    code, err = qnn_train(project, "--set", override, capsys=capsys)
    assert code == 2 and err.startswith("qnn-train: error:") and message in err, err
    assert_nothing_written(project)


def test_bad_numbers_in_the_params_file_are_refused_too(project, capsys):
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("epochs: 1,", "epochs: 1, lr_start: .nan,"))
    code, err = qnn_train(project, capsys=capsys)
    assert code == 2 and "lr_start must be a finite number > 0, got nan" in err, err


PYTHON_TAGS = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    "!!python/object/apply:os.system\n- touch {marker}",
    '!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
    "!!python/name:os.system",
    '!!python/module:os',
]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_yaml_python_tags_in_set_are_never_executed(project, capsys, tag):
    marker = project / "pwned"
    code, err = qnn_train(project, "--set", f"model.kind={tag.format(marker=marker)}", capsys=capsys)
    assert code == 2 and "--set model.kind: value" in err and "is not valid YAML" in err, err
    assert "could not determine a constructor for the tag" in err, err
    assert not marker.exists()


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_yaml_python_tags_in_the_params_file_are_never_executed(tmp_path, tag):
    marker = tmp_path / "pwned"
    params = tmp_path / "params.yaml"
    params.write_text("tiny:\n  model:\n    kind: " + tag.format(marker=marker).replace("\n", "\n      ") + "\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        params_module.train_section(params, "tiny")
    assert not marker.exists()


def test_set_values_are_data_never_code(project, capsys):
    """Text that would do something if evaluated stays a string, and is refused as one."""
    marker = project / "pwned"
    for value in (f"__import__('os').system('touch {marker}')", f"$(touch {marker})",
                  f"bnn; touch {marker}"):
        config = params_module.apply_overrides({"model": {}, "train": {}, "data": {}},
                                               [f"model.kind={value}"])
        assert config["model"]["kind"] == value
        code, err = qnn_train(project, "--set", f"model.kind={value}", capsys=capsys)
        assert code == 2 and "kind must be one of" in err, err
    assert not marker.exists()


@pytest.mark.parametrize("override, message", [
    ("__class__=1", "unknown TrainConfig keys: ['__class__']"),
    ("train.__dict__={epochs: 1000}", "unknown TrainConfig keys: ['__dict__']"),
    ("model.__class__=x", "unknown model config keys ['__class__']"),
    ("model.__init__=1", "unknown model config keys ['__init__']"),
    ("__class__.__init__=1", "must be model.KEY, train.KEY or data.KEY"),
    ("__builtins__.eval=1", "must be model.KEY, train.KEY or data.KEY"),
    # data keys are checked by load_mnist, after the (empty) output folders are made
    ("data.__class__=1", "'__class__'"),
])
def test_dunder_keys_in_set_are_refused(project, capsys, override, message):
    code, err = qnn_train(project, "--set", override, capsys=capsys)
    assert code == 2 and err.startswith("qnn-train: error:") and message in err, err
    assert_nothing_written(project)


@pytest.mark.parametrize("arguments", [
    ["--out-name", "/tmp/abs"],
    ["--out-name", "sub/name"],
    ["--out-name", ".."],
    ["--out-name", "a\\b"],
    ["--out-name", "name\n"],
    ["--section", "../tiny"],
])
def test_path_like_run_names_are_refused(project, capsys, arguments):
    with pytest.raises(SystemExit) as stop:
        qnn_train(project, *arguments, capsys=capsys)
    assert stop.value.code == 2 and "must be a plain name" in capsys.readouterr().err
    assert_nothing_written(project)

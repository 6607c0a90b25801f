"""Tests of resumable checkpoints (qnnlib.checkpoints through training.train): a resume
either continues the same computation or refuses with the reason, and loading a file
never runs code from it."""
import os
import re
import subprocess
import sys

import pytest
import torch

from qnnlib import checkpoints
from qnnlib.models import mnist_mlp
from qnnlib.training import TrainConfig, train
from support import synthetic_splits

pytestmark = pytest.mark.usefixtures("one_thread")


def plain_sgd(model, lr, glorot_scaling):
    """An optimizer_factory: SGD, one group, no Glorot scaling."""
    return torch.optim.SGD([{"params": list(model.parameters()), "lr": lr, "lr_scale": 1.0}], lr=lr)


def run(path, stop_after=None, hidden=16, factory=None, splits=None, **overrides):
    """A tiny run checkpointed at `path`, from a seeded initialisation."""
    torch.manual_seed(0)
    config = TrainConfig(**{"epochs": 2, "batch_size": 50, "progress": False,
                            "checkpoint": str(path), **overrides})
    return train(mnist_mlp(hidden=hidden, depth=1), splits or synthetic_splits(), config,
                 stop_after=stop_after, optimizer_factory=factory)


@pytest.fixture
def interrupted(tmp_path):
    """A checkpoint after epoch 1 of 2, and its bytes (to check refusals keep it)."""
    path = tmp_path / "run.pt"
    run(path, stop_after=1)
    return path, path.read_bytes()


def rewrite_signature(path, **changes):
    """Edit the signature stored in a checkpoint, as an older version would have written it."""
    state = torch.load(path, weights_only=True)
    for key, value in changes.items():
        part, _, field = key.partition("__")
        state["signature"][part][field] = value
    torch.save(state, path)


def test_checkpoint_of_another_run_is_refused_and_kept(interrupted):
    path, saved = interrupted
    with pytest.raises(ValueError, match=r"differs in: lr_start\)"):
        run(path, lr_start=1e-3)
    with pytest.raises(ValueError, match="model architecture"):
        run(path, hidden=32)
    with pytest.raises(ValueError, match="optimizer"):
        run(path, factory=plain_sgd)
    with pytest.raises(ValueError, match="training data"):
        run(path, splits=synthetic_splits(seed=1))
    assert path.read_bytes() == saved


def test_checkpoint_from_older_code_or_packages_is_refused(interrupted):
    """Regression (issue 9.3): the signature held no identity of the code, so a finished
    checkpoint written before a library fix was reused and its old numbers came out."""
    path, _ = interrupted
    identity = checkpoints.code_identity()
    rewrite_signature(path, code__qnnlib="0123456789abcdef")
    with pytest.raises(ValueError, match="code \\(the qnnlib modules that compute a run changed"):
        run(path)
    rewrite_signature(path, code__qnnlib=identity["qnnlib"], code__torch="1.0.0")
    with pytest.raises(ValueError, match=re.escape(f"torch version (1.0.0 -> {identity['torch']})")):
        run(path)


def test_code_identity_ignores_docstrings_and_comments_but_not_code():
    source = 'def f(x):\n    """Doc."""\n    return x + 1  # why\n'
    def digest(text):
        import ast
        return ast.dump(checkpoints._strip_docstrings(ast.parse(text)))
    assert digest(source) == digest(source.replace('"""Doc."""', '"""Other."""').replace("why", ""))
    assert digest(source) != digest(source.replace("x + 1", "x + 2"))


def test_computation_modules_cover_what_training_imports():
    """Every qnnlib module that a training run can execute is in the code hash."""
    code = ("import sys, qnnlib.training, qnnlib.shift, qnnlib.accumulators, qnnlib.experiments,"
            " qnnlib.gpu.graphed_training;"
            "print(' '.join(m.split('.', 1)[1] for m in sys.modules if m.startswith('qnnlib.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    packages = {"gpu": "gpu/__init__", "kernels": "kernels/__init__"}
    assert {packages.get(m, m.replace(".", "/")) for m in loaded} <= set(checkpoints.COMPUTATION_MODULES)


def test_device_auto_is_resolved_before_comparing(interrupted):
    """Regression (issue 9.3): "auto" was compared unresolved, so a checkpoint written with
    device="cpu" was refused by the same run asking for "auto" on a CPU machine (and an
    "auto" checkpoint written on CUDA would be accepted on CPU)."""
    if torch.cuda.is_available():
        pytest.skip("auto means cuda here")
    path, _ = interrupted  # written with device="auto", i.e. cpu
    whole = run(path.with_name("whole.pt"), device="cpu")
    resumed = run(path, device="cpu")
    assert resumed.history.drop(columns="seconds").equals(whole.history.drop(columns="seconds"))
    rewrite_signature(path, config__device="cuda")
    with pytest.raises(ValueError, match=r"differs in: device\)"):
        run(path)


def test_trained_weights_are_not_a_checkpoint(tmp_path):
    """Regression (issue 9.3): a state_dict where a checkpoint was expected (qnn-train's
    checkpoints/NAME.pt) died with KeyError: 'signature'."""
    path = tmp_path / "weights.pt"
    torch.save(mnist_mlp(hidden=16, depth=1).state_dict(), path)
    with pytest.raises(ValueError, match="is not a training checkpoint \\(no run signature\\)"):
        run(path)


def test_truncated_checkpoint_is_refused(interrupted):
    path, saved = interrupted
    path.write_bytes(saved[:len(saved) // 2])
    with pytest.raises(ValueError, match="not a checkpoint this version can read safely"):
        run(path)


class _Exploit:
    """Unpickling this calls os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_loading_a_malicious_checkpoint_runs_no_code(tmp_path):
    """Security (issue 9): the old loader used weights_only=False and would run this."""
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"signature": {}, "payload": _Exploit(marker)}, path)
    with pytest.raises(ValueError, match="never unpickled"):
        run(path)
    assert not marker.exists()


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    """Python, numpy and torch streams continue exactly after saving and restoring."""
    import random
    import numpy as np
    model, shuffle = mnist_mlp(hidden=8, depth=1), torch.Generator().manual_seed(3)
    checkpoints.save_checkpoint(tmp_path / "rng.pt", {"rng": checkpoints.rng_state(model, shuffle)})
    expected = (random.random(), np.random.rand(), torch.rand(1).item(),
                torch.rand(1, generator=shuffle).item())
    state = torch.load(tmp_path / "rng.pt", weights_only=True)
    checkpoints.set_rng_state(state["rng"], model, shuffle)
    assert (random.random(), np.random.rand(), torch.rand(1).item(),
            torch.rand(1, generator=shuffle).item()) == expected

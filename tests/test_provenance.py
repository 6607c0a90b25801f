"""The provenance record's git state: outputs a pipeline run writes do not make it dirty,
changed code does."""
import shutil
import subprocess

import pytest

from qnnlib.provenance import git_state, provenance

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(folder, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=folder,
                   check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path):
    for name, text in {"src/model.py": "a", "results/metrics/m.json": "{}", "dvc.lock": "x"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "start")
    return tmp_path


def test_pipeline_outputs_do_not_make_the_code_dirty(checkout):
    clean = git_state(checkout / "src")
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (checkout / "results/metrics/m.json").write_text('{"new": 1}')
    (checkout / "dvc.lock").write_text("y")
    assert git_state(checkout / "src")["dirty"] is False


@pytest.mark.parametrize("name", ["src/model.py", "dvc.lock.bak"])
def test_changed_code_is_dirty(checkout, name):
    (checkout / name).write_text("b")
    if name.endswith(".bak"):  # a new file is not tracked: only tracked changes count
        git(checkout, "add", name)
    assert git_state(checkout)["dirty"] is True


def test_outside_a_checkout_both_are_none(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_record_has_every_field():
    record = provenance(threads=2, wall_seconds=1.26)
    assert {"commit", "dirty", "packages", "cpu", "gpu", "threads", "wall_seconds"} <= set(record)
    assert record["threads"] == 2 and record["wall_seconds"] == 1.3
    assert record["packages"]["torch"]

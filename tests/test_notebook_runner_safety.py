"""The papermill runner loses no work and leaves no processes behind.

A run that fails or is stopped leaves the executed notebook and the tables of the last
good run as they were; SIGTERM or Ctrl-C to the runner also ends the kernel and every
process the notebook started. Each test runs a tiny notebook of a throwaway project."""
import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import papermill
import psutil
import pytest

from qnnpipeline import paths
from qnnpipeline.notebooks import run_notebook

NAME = "01_tiny"
COMMITTED_NOTEBOOK = '{"committed": "the last good run"}\n'
COMMITTED_TABLE = "committed table\n"


def write_notebook(folder, *cells: str) -> None:
    """notebooks/01_tiny.ipynb: a `seed` parameter cell, then `cells`."""
    parameters = nbformat.v4.new_code_cell("seed = 0", metadata={"tags": ["parameters"]})
    notebook = nbformat.v4.new_notebook(cells=[parameters, *map(nbformat.v4.new_code_cell, cells)])
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(notebook, folder / "notebooks" / f"{NAME}.ipynb")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder whose results/ hold an earlier run's notebook, table and an input."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params.yaml").write_text("seed: 0\ntiny: {}\n")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    for kind, name, text in (("notebooks", f"{NAME}.ipynb", COMMITTED_NOTEBOOK),
                             ("tables", f"{NAME}.csv", COMMITTED_TABLE),
                             ("tables", "input.csv", "an input of another stage\n")):
        (tmp_path / "results" / kind).mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / kind / name).write_text(text)
    monkeypatch.setenv("QNN_PROJECT_DIR", str(tmp_path))
    for variable in ("QNN_RESULTS_DIR", paths.PIPELINE_RUN):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


def results_files(project) -> dict:
    """Every file under results/, hidden ones included, with its text."""
    return {str(p.relative_to(project / "results")): p.read_text()
            for p in sorted((project / "results").rglob("*")) if p.is_file()}


def test_a_successful_run_reads_committed_inputs_and_replaces_its_outputs(project):
    write_notebook(project, "from qnnpipeline import paths",
                   "text = paths.results('tables', 'input.csv').read_text()\n"
                   f"paths.output('tables', '{NAME}.csv').write_text('new: ' + text)\n"
                   f"paths.output('metrics', '{NAME}.json').write_text('{{}}')")
    executed = run_notebook(NAME)
    assert executed == project / "results" / "notebooks" / f"{NAME}.ipynb"
    assert executed.read_text() != COMMITTED_NOTEBOOK
    results = results_files(project)
    assert results[f"tables/{NAME}.csv"] == "new: an input of another stage\n"
    assert "provenance" in json.loads(results[f"metrics/{NAME}.json"])
    assert json.loads(results[f"notebooks/{NAME}.ipynb"])["metadata"]["papermill"]["output_path"] \
        == f"results/notebooks/{NAME}.ipynb"  # not the temporary file it was executed into
    assert sorted(results) == sorted([f"metrics/{NAME}.json", f"notebooks/{NAME}.ipynb",
                                      f"tables/{NAME}.csv", "tables/input.csv"])  # no temporary files


def test_a_failing_notebook_leaves_the_last_good_run_and_keeps_its_error(project):
    write_notebook(project, "from qnnpipeline import paths",
                   f"paths.output('tables', '{NAME}.csv').write_text('half')\nraise RuntimeError('cell 3 fails')")
    before = results_files(project)
    with pytest.raises(papermill.PapermillExecutionError, match="cell 3 fails") as raised:
        run_notebook(NAME)
    failed = project / "results" / "notebooks" / "failed" / f"{NAME}.ipynb"
    assert any("failed" in note for note in raised.value.__notes__)
    assert "cell 3 fails" in failed.read_text()  # the error banner, as papermill wrote it
    failed.unlink()
    assert results_files(project) == before


STOPPABLE = """\
import multiprocessing, os, subprocess, sys, time
from qnnpipeline import paths
paths.output('tables', '01_tiny.csv').write_text('half')
worker = multiprocessing.get_context('fork').Process(target=time.sleep, args=(600,))
worker.start()
child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
(paths.root() / 'pids.tmp').write_text(f'[{os.getpid()}, {worker.pid}, {child.pid}]')
os.replace(paths.root() / 'pids.tmp', paths.root() / 'pids.json')  # whole, when the test reads it
worker.join()"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_runner_ends_the_kernel_and_its_workers(project, signum):
    write_notebook(project, STOPPABLE)
    before = results_files(project)
    command = [sys.executable, "-m", "qnnpipeline.notebooks", NAME]
    # SIGINT reaches Python only where the parent does not ignore it (a background job does)
    runner = subprocess.Popen(command, cwd=project, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pids_file, pids = project / "pids.json", []
    try:
        deadline = time.monotonic() + 60
        while not pids_file.is_file() and runner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = json.loads(pids_file.read_text())  # kernel, forked worker, subprocess
        runner.send_signal(signum)
        assert runner.wait(timeout=20) != 0
        deadline = time.monotonic() + 5
        while any(map(alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if alive(pid)]
        assert results_files(project) == before
    finally:
        runner.kill()
        for pid in filter(alive, pids):
            os.kill(pid, signal.SIGKILL)

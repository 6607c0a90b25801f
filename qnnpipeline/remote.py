"""`qnn-train` runs as tasks of `qnnlib.executor`: trained wherever the executor puts them
(a local Ray, or a node of a cluster), their files brought home to this checkout.

Used by `qnn-train --section A --section B` (sections side by side) and by the seed
repeats (`qnnpipeline.seeds`). A task that finds this checkout's folders (a local Ray, or
a cluster sharing the file system) trains in place, as `qnn-train` does here: resumable
checkpoints and locks work as usual. Elsewhere it trains in a scratch folder of its node
and returns the run's four files, which `run_sections` writes here as soon as that run
finishes (weights first, metrics last).
"""
from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qnnlib import executor

from . import paths
from .runs import run_files, write_temporary

__all__ = ["SectionJob", "train_section", "run_sections"]


@dataclass(frozen=True)
class SectionJob:
    """One `qnn-train` run: its arguments (one section, a name, overrides), the text of its
    parameter file, and a marker by which a worker recognises this checkout."""

    name: str
    arguments: tuple[str, ...]
    params_text: str
    marker: str
    marker_text: str
    home: tuple[tuple[str, str], ...]  # this checkout's folders, as environment variables


def train_section(job: SectionJob) -> dict[str, bytes] | None:
    """Run `job` (on a worker). None when it trained in this checkout; else its files."""
    from . import cli

    with tempfile.TemporaryDirectory(prefix="qnn-task-") as scratch:
        params = Path(scratch) / "params.yaml"
        params.write_text(job.params_text)
        at_home = _reads(job.marker) == job.marker_text
        folders = dict(job.home) if at_home else {
            "QNN_RESULTS_DIR": f"{scratch}/results", "QNN_CHECKPOINT_DIR": f"{scratch}/checkpoints",
            "QNN_DATA_DIR": os.environ.get("QNN_DATA_DIR") or f"{scratch}/data"}
        saved = {key: os.environ.get(key) for key in folders}
        os.environ.update(folders)
        try:
            status = cli.main(["--config", str(params), *job.arguments])
            if status:
                raise RuntimeError(f"qnn-train {job.name} exited with status {status}")
            return None if at_home else {key: path.read_bytes() for key, path in run_files(job.name).items()}
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _reads(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def bring_home(name: str, files: dict[str, bytes] | None) -> None:
    """Write a run's files from another node into this checkout (in `run_files` order:
    weights, description, history, metrics last), each through a temporary file; None:
    the run trained in this checkout, nothing to write."""
    if files is None:
        return
    for key, path in run_files(name).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(write_temporary(path, lambda file, data=files[key]: file.write(data)), path)


def _home_folders():
    """This checkout's folders as the environment variables that name them (those that
    can be resolved: tests redirect the folders without a checkout around them)."""
    for variable, folder in (("QNN_PROJECT_DIR", paths.root), ("QNN_RESULTS_DIR", paths.results_dir),
                             ("QNN_CHECKPOINT_DIR", paths.checkpoints), ("QNN_DATA_DIR", paths.data)):
        try:
            yield variable, str(folder())
        except paths.ProjectNotFound:
            continue


def run_sections(config_path, runs: list[tuple[str, list[str]]], workers: int,
                 address: str | None = None) -> None:
    """Train `runs` ([(name, qnn-train arguments)]) through the executor, `workers` at once;
    TasksFailed names the runs that failed, after the others have come home."""
    marker = paths.checkpoints() / f".executor-{secrets.token_hex(8)}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker_text = secrets.token_hex(16)
    marker.write_text(marker_text)
    params_text = Path(config_path).read_text()
    home = tuple(_home_folders())
    jobs = [SectionJob(name, tuple(arguments), params_text, str(marker.resolve()), marker_text, home)
            for name, arguments in runs]
    try:
        executor.run_tasks(train_section, jobs, workers, names=[name for name, _ in runs], address=address,
                           on_result=lambda index, files: bring_home(jobs[index].name, files))
    finally:
        marker.unlink(missing_ok=True)

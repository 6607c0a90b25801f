"""Shared check for every notebook: papermill with small parameters, then nbval.

nbval re-executes the papermill copy and compares each cell's output with what
papermill stored, so a notebook passes only if it runs and its printed results
reproduce exactly (timings and progress bars belong in `# NBVAL_IGNORE_OUTPUT` cells).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qnnpipeline import paths
from qnnpipeline.notebooks import run_notebook

SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")


def assert_provenance(record: dict) -> None:
    """Commit, dirty flag, packages, hardware, threads and wall time of the run."""
    assert len(record["commit"]) == 40 and isinstance(record["dirty"], bool)
    assert record["packages"]["torch"] and record["cpu"] and record["threads"] >= 1
    assert record["wall_seconds"] > 0


def run_and_validate(name: str, parameters: dict, tmp_path: Path, monkeypatch) -> Path:
    """Execute notebook `name` into `tmp_path`, validate it with nbval, return the results dir."""
    results = tmp_path / "results"
    # nbval runs in tmp_path: name the checkout (data/, params) and the offline MNIST mirror
    monkeypatch.setenv("QNN_PROJECT_DIR", str(paths.root()))
    shared = paths.root().parent / "shared" / "datasets"
    if not os.environ.get("QNN_DATA_MIRROR") and (shared / "mnist").is_dir():
        monkeypatch.setenv("QNN_DATA_MIRROR", str(shared))
    monkeypatch.setenv("QNN_RESULTS_DIR", str(results))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    executed = run_notebook(name, parameters, output_dir=tmp_path)
    assert_provenance(json.loads(executed.read_text())["metadata"]["qnn_provenance"])
    metrics = results / "metrics" / f"{name}.json"
    if metrics.is_file():
        assert_provenance(json.loads(metrics.read_text())["provenance"])
    command = [sys.executable, "-m", "pytest", "--nbval", str(executed), "-q", "-p", "no:cacheprovider",
               "--rootdir", str(tmp_path), "--nbval-sanitize-with", str(SANITIZE)]
    check = subprocess.run(command, cwd=tmp_path, env=os.environ.copy(), capture_output=True, text=True)
    assert check.returncode == 0, f"nbval failed for {name}:\n{check.stdout[-6000:]}\n{check.stderr[-2000:]}"
    return results

"""Fixtures several test files share, and a check that the suite leaves the committed
results as it found them."""
import subprocess
from pathlib import Path

import qnnpipeline  # noqa: F401 (first: the suite computes with the pinned numerics, as the pipeline)
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small trainings on a shared 2-core machine: one torch thread avoids OpenMP threads
    waiting on each other, and fixes the summation order so reruns are bit-identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _results_state() -> str:
    """`git status` of the committed results: tests write into temporary folders only."""
    root = Path(__file__).resolve().parents[1]
    try:
        return subprocess.run(["git", "status", "--porcelain", "--", "results"], cwd=root,
                              capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def pytest_sessionstart(session):
    session.config.results_state = _results_state()


def pytest_terminal_summary(terminalreporter):
    """Warn when the committed results changed during the run (a test wrote outside its
    temporary folders). A warning, not a failure: a pipeline run beside the suite also
    changes them."""
    changed = _results_state()
    if changed != getattr(terminalreporter.config, "results_state", changed):
        terminalreporter.write_line(f"WARNING: the committed results changed during the tests:\n{changed}")

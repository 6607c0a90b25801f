"""One anchor for every path in the project.

papermill runs notebooks from `results/notebooks/`, nbval from `notebooks/`, pytest from
the project root: resolving everything from this file keeps them all pointing at the
same folders. `QNN_RESULTS_DIR` redirects every result (tests use a temporary folder).
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DATA = Path(os.environ.get("QNN_DATA_DIR", ROOT / "data"))
CHECKPOINTS = Path(os.environ.get("QNN_CHECKPOINT_DIR", ROOT / "checkpoints"))


def results_dir() -> Path:
    """Root of all outputs; read at call time so tests can redirect it."""
    return Path(os.environ.get("QNN_RESULTS_DIR", ROOT / "results"))


def results(kind: str, name: str = "") -> Path:
    """`results/<kind>/<name>`, creating the folder: kind is figures, metrics, tables..."""
    folder = results_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name if name else folder

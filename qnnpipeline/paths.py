"""Where the pipeline reads and writes: folders of the project checkout.

The project folder is `QNN_PROJECT_DIR` when set, else the nearest folder at or above
the working directory that holds both `params.yaml` and `dvc.yaml`. papermill runs the
notebooks from `notebooks/`, pytest and dvc from the project root: all find the same
checkout. Nothing depends on where the package is installed.

`QNN_RESULTS_DIR`, `QNN_DATA_DIR` and `QNN_CHECKPOINT_DIR` redirect one folder each
(tests and interactive runs use a scratch folder). Reading a path creates nothing;
`output(kind, name)` also creates the folder a writer needs.
"""
from __future__ import annotations

import os
from pathlib import Path

MARKERS = ("params.yaml", "dvc.yaml")


class ProjectNotFound(RuntimeError):
    """Raised when no project checkout can be found."""


def root() -> Path:
    """The project checkout (see module docstring)."""
    if os.environ.get("QNN_PROJECT_DIR"):
        folder = Path(os.environ["QNN_PROJECT_DIR"]).resolve()
        if not all((folder / marker).is_file() for marker in MARKERS):
            raise ProjectNotFound(f"QNN_PROJECT_DIR={folder} holds no params.yaml and dvc.yaml")
        return folder
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if all((folder / marker).is_file() for marker in MARKERS):
            return folder
    raise ProjectNotFound(f"no params.yaml and dvc.yaml at or above {here}: run from a checkout "
                          "of the project, or set QNN_PROJECT_DIR")


def _folder(variable: str, default: str) -> Path:
    return Path(os.environ[variable]).resolve() if os.environ.get(variable) else root() / default


def notebooks() -> Path:
    """The narrated source notebooks."""
    return root() / "notebooks"


def data() -> Path:
    """Downloaded and verified datasets (`QNN_DATA_DIR` overrides)."""
    return _folder("QNN_DATA_DIR", "data")


def checkpoints() -> Path:
    """Trained weights and resumable checkpoints (`QNN_CHECKPOINT_DIR` overrides)."""
    return _folder("QNN_CHECKPOINT_DIR", "checkpoints")


def results_dir() -> Path:
    """Root of all outputs (`QNN_RESULTS_DIR` overrides)."""
    return _folder("QNN_RESULTS_DIR", "results")


def results(kind: str, name: str = "") -> Path:
    """`results/<kind>/<name>`, kind being figures, metrics, tables, ...; creates nothing."""
    folder = results_dir() / kind
    return folder / name if name else folder


def output(kind: str, name: str) -> Path:
    """`results(kind, name)` after creating its folder: for writers."""
    path = results(kind, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def relative(path: Path) -> str:
    """`path` relative to the project when inside it (what gets printed and recorded)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(root()))
    except (ValueError, ProjectNotFound):
        return str(path)

"""Where the pipeline reads and writes: folders of the project checkout.

The project folder is `QNN_PROJECT_DIR` when set, else the nearest folder at or above
the working directory that holds both `params.yaml` and `dvc.yaml`. papermill runs the
notebooks from `notebooks/`, pytest and dvc from the project root: all find the same
checkout. Nothing depends on where the package is installed.

`QNN_RESULTS_DIR`, `QNN_DATA_DIR` and `QNN_CHECKPOINT_DIR` redirect one folder each
(tests use a temporary folder). Reading a path creates nothing; `output(kind, name)`
also creates the folder a writer needs.

Interactive runs never overwrite the committed results: inside a Jupyter kernel that
the pipeline did not start (`QNN_PIPELINE_RUN` unset; the papermill runner
`qnnpipeline.notebooks` sets it) and without `QNN_RESULTS_DIR`, outputs go to the git-ignored
`scratch/results/`, and `results(kind, name)` reads a file from there when it exists,
else the committed one (so notebooks 05/06 still find the trained runs).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

MARKERS = ("params.yaml", "dvc.yaml")
PIPELINE_RUN = "QNN_PIPELINE_RUN"   # set by the papermill runner: write to results/
SCRATCH = "scratch/results"         # where interactive kernels write instead
_told_scratch = False


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


def in_jupyter_kernel() -> bool:
    """True inside a running Jupyter kernel (not merely a process that imported ipykernel,
    as the papermill runner and pytest do)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def interactive() -> bool:
    """True in a Jupyter kernel that the pipeline did not start, with no QNN_RESULTS_DIR."""
    return (not os.environ.get(PIPELINE_RUN) and not os.environ.get("QNN_RESULTS_DIR")
            and in_jupyter_kernel())


def results_dir() -> Path:
    """Root of all outputs (`QNN_RESULTS_DIR` overrides; `scratch/results` in an
    interactive kernel, see module docstring)."""
    global _told_scratch
    if interactive():
        folder = root() / SCRATCH
        if not _told_scratch:
            _told_scratch = True
            print(f"Interactive run: outputs go to {SCRATCH}/, not results/ (the pipeline "
                  f"writes results/; set QNN_RESULTS_DIR to choose another folder).")
        return folder
    return _folder("QNN_RESULTS_DIR", "results")


def results(kind: str, name: str = "") -> Path:
    """`results/<kind>/<name>`, kind being figures, metrics, tables, ...; creates nothing.
    In an interactive kernel, a file not (yet) in scratch/results is read from results/."""
    folder = results_dir() / kind
    if not name:
        return folder
    if interactive() and not (folder / name).exists():
        committed = root() / "results" / kind / name
        if committed.exists():
            return committed
    return folder / name


def output(kind: str, name: str) -> Path:
    """`results(kind, name)` after creating its folder: for writers (never the committed
    copy that `results` falls back to in an interactive kernel)."""
    path = results_dir() / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def relative(path: Path) -> str:
    """`path` relative to the project when inside it (what gets printed and recorded)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(root()))
    except (ValueError, ProjectNotFound):
        return str(path)

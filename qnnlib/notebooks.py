"""Run a narrated notebook with papermill, parameters taken from `params.yaml`.

`python -m qnnlib.notebooks 01_binarization` is what every notebook stage of
`dvc.yaml` runs: it reads the notebook's section of `params.yaml` (named in the
notebook's `qnn_params_section` metadata, or by `--section`), executes
`notebooks/<name>.ipynb` into `results/notebooks/<name>.ipynb` and strips the
timestamps papermill and Jupyter record, so a rerun with the same results rewrites
the same file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import paths
from .cli import load_yaml

PARAMS_FILE = paths.ROOT / "params.yaml"
VOLATILE_METADATA = ("start_time", "end_time", "duration", "exception", "iopub.execute_input",
                     "iopub.status.busy", "iopub.status.idle", "shell.execute_reply", "execution")


def params_section(name: str) -> str:
    """`01_binarization` -> `binarization`: the notebook's section in params.yaml."""
    return name.split("_", 1)[1] if name[:2].isdigit() else name


def load_params(section: str, params_file: Path = PARAMS_FILE) -> dict:
    """The `section` of params.yaml, merged over its top-level `seed` when it has none."""
    if not params_file.exists():
        raise FileNotFoundError(f"{params_file} not found: run from a checkout of the project")
    params = load_yaml(params_file.read_text()) or {}
    if section not in params:
        raise KeyError(f"params.yaml has no section {section!r}; sections: {sorted(params)}")
    merged = dict(params[section])
    merged.setdefault("seed", params.get("seed", 0))
    return merged


def strip_volatile_metadata(notebook_path: Path) -> None:
    """Remove run timestamps and durations, and make paths relative to the project, so
    executed notebooks diff cleanly and say nothing about the machine they ran on."""
    nb = json.loads(notebook_path.read_text())
    run = nb.get("metadata", {}).get("papermill", {})
    run.update({key: None for key in ("start_time", "end_time", "duration")})
    for key in ("input_path", "output_path"):  # where the checkout lives is nobody's business
        if run.get(key) and Path(run[key]).is_relative_to(paths.ROOT):
            run[key] = str(Path(run[key]).relative_to(paths.ROOT))
    for cell in nb["cells"]:
        meta = cell.get("metadata", {})
        for key in VOLATILE_METADATA:
            meta.pop(key, None)
        meta.get("papermill", {}).update({key: None for key in ("start_time", "end_time", "duration")})
    notebook_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n")


def run_notebook(name: str, parameters: dict | None = None, output_dir: Path | None = None,
                 progress: bool = False) -> Path:
    """Execute `notebooks/<name>.ipynb` with `parameters`; return the executed copy's path."""
    import papermill

    source = paths.NOTEBOOKS / f"{name}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"no notebook {source.name} in {paths.NOTEBOOKS.name}/")
    output_dir = Path(output_dir) if output_dir else paths.results("notebooks")
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / source.name
    papermill.execute_notebook(str(source), str(executed), parameters=parameters or {},
                               cwd=str(paths.NOTEBOOKS), progress_bar=progress, kernel_name="python3")
    strip_volatile_metadata(executed)
    return executed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="notebook stem, e.g. 01_binarization")
    parser.add_argument("--section", help="params.yaml section (default: derived from the name)")
    parser.add_argument("--output-dir", type=Path, help="default: results/notebooks/")
    args = parser.parse_args(argv)
    parameters = load_params(args.section or params_section(args.name))
    executed = run_notebook(args.name, parameters, args.output_dir, progress=True)
    print(f"wrote {executed.relative_to(paths.ROOT) if executed.is_relative_to(paths.ROOT) else executed}")


if __name__ == "__main__":
    main()

"""Run a narrated notebook with papermill, parameters taken from `params.yaml`.

`python -m qnnpipeline.notebooks 01_binarization` is what every notebook stage of
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
from .params import notebook_params, notebook_section

VOLATILE_METADATA = ("start_time", "end_time", "duration", "exception", "iopub.execute_input",
                     "iopub.status.busy", "iopub.status.idle", "shell.execute_reply", "execution")


def strip_volatile_metadata(notebook_path: Path) -> None:
    """Remove run timestamps and durations, and make paths relative to the project, so
    executed notebooks diff cleanly and say nothing about the machine they ran on."""
    nb = json.loads(notebook_path.read_text())
    run = nb.get("metadata", {}).get("papermill", {})
    run.update({key: None for key in ("start_time", "end_time", "duration")})
    for key in ("input_path", "output_path"):  # where the checkout lives is nobody's business
        if run.get(key):
            run[key] = paths.relative(run[key])
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

    source = paths.notebooks() / f"{name}.ipynb"
    if not source.is_file():
        known = sorted(p.stem for p in paths.notebooks().glob("*.ipynb"))
        raise FileNotFoundError(f"no notebook {source.name} in notebooks/; known: {known}")
    output_dir = Path(output_dir) if output_dir else paths.results("notebooks")
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / source.name
    papermill.execute_notebook(str(source), str(executed), parameters=parameters or {},
                               cwd=str(paths.notebooks()), progress_bar=progress, kernel_name="python3")
    strip_volatile_metadata(executed)
    return executed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="notebook stem, e.g. 01_binarization")
    parser.add_argument("--section", help="params.yaml section (default: derived from the name)")
    parser.add_argument("--output-dir", type=Path, help="default: results/notebooks/")
    args = parser.parse_args(argv)
    parameters = notebook_params(args.section or notebook_section(args.name))
    executed = run_notebook(args.name, parameters, args.output_dir, progress=True)
    print(f"wrote {paths.relative(executed)}")


if __name__ == "__main__":
    main()

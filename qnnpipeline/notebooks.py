"""Run a narrated notebook with papermill, parameters taken from `params.yaml`.

`python -m qnnpipeline.notebooks 01_binarization` is what every notebook stage of
`dvc.yaml` runs: it reads the notebook's section of `params.yaml` (named in the
notebook's `qnn_params_section` metadata, or by `--section`), executes
`notebooks/<name>.ipynb` into `results/notebooks/<name>.ipynb` and strips the
timestamps papermill and Jupyter record, so a rerun with the same results rewrites
the same file. The kernel computes with the pinned numerics (`qnnlib.numerics`), or
with the profile the notebook names in its `qnn_numerics` metadata (06: "native").
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from qnnlib import numerics
from qnnlib.provenance import provenance

from . import paths
from .runs import write_json
from .params import notebook_params, notebook_section  # noqa: F401 (re-exported)

VOLATILE_METADATA = ("start_time", "end_time", "duration", "exception", "iopub.execute_input",
                     "iopub.status.busy", "iopub.status.idle", "shell.execute_reply", "execution")


def strip_volatile_metadata(notebook_path: Path, record: dict | None = None) -> None:
    """Remove run timestamps and durations, and make paths relative to the project, so
    executed notebooks diff cleanly; store the run's provenance `record` (commit,
    packages, hardware, threads, wall time) in the notebook's metadata instead."""
    nb = json.loads(notebook_path.read_text())
    if record is not None:
        nb.setdefault("metadata", {})["qnn_provenance"] = record
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


def notebook_numerics(source: Path) -> str:
    """The numerics profile a notebook's kernel runs with: its `qnn_numerics` metadata
    (06 times the libraries' fastest code), else the pipeline's own (`numerics.profile`)."""
    return json.loads(source.read_text()).get("metadata", {}).get("qnn_numerics") or numerics.profile()


def check_parameters(source: Path, parameters: dict) -> None:
    """Refuse parameters the notebook does not declare in its `parameters` cell: papermill
    would inject them silently, and a misspelt knob would leave the default in force."""
    import papermill

    if not isinstance(parameters, dict):
        raise TypeError(f"parameters must be a dict, got {type(parameters).__name__}")
    declared = set(papermill.inspect_notebook(str(source)))
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise ValueError(f"{source.name} declares no parameters {unknown}; it declares {sorted(declared)}")


def run_notebook(name: str, parameters: dict | None = None, output_dir: Path | None = None,
                 progress: bool = False) -> Path:
    """Execute `notebooks/<name>.ipynb` with `parameters`; return the executed copy's path."""
    import papermill

    known = sorted(p.stem for p in paths.notebooks().glob("*.ipynb"))
    if name not in known:
        raise FileNotFoundError(f"no notebook {name!r} in notebooks/; known: {known}")
    source = paths.notebooks() / f"{name}.ipynb"
    check_parameters(source, parameters or {})
    output_dir = Path(output_dir) if output_dir else paths.results("notebooks")
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / source.name
    # The kernel inherits this process's environment: QNN_PIPELINE_RUN tells qnnpipeline.paths
    # that the pipeline runs the notebook, so it writes results/ (not scratch/, as interactively).
    start = time.perf_counter()
    previous = os.environ.get(paths.PIPELINE_RUN)
    os.environ[paths.PIPELINE_RUN] = "1"
    profile = notebook_numerics(source)
    try:
        with numerics.pinned_environment(profile):
            papermill.execute_notebook(str(source), str(executed), parameters=parameters or {},
                                       cwd=str(paths.notebooks()), progress_bar=progress,
                                       kernel_name="python3")
            kernel_numerics = numerics.settings(effective=False)
    finally:
        if previous is None:
            os.environ.pop(paths.PIPELINE_RUN, None)
        else:
            os.environ[paths.PIPELINE_RUN] = previous
    record = provenance(threads=(parameters or {}).get("threads"),
                        wall_seconds=time.perf_counter() - start, numeric_settings=kernel_numerics)
    strip_volatile_metadata(executed, record)
    stamp_metrics(name, record)
    return executed


def stamp_metrics(name: str, record: dict) -> None:
    """Add the run's provenance to the notebook's metrics file, results/metrics/<name>.json."""
    metrics_path = paths.results_dir() / "metrics" / f"{name}.json"  # never a fallback copy
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["provenance"] = record
        write_json(metrics_path, metrics)


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

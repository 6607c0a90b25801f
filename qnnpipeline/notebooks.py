"""Run a narrated notebook with papermill, parameters taken from `params.yaml`.

`python -m qnnpipeline.notebooks 01_binarization` is what every notebook stage of
`dvc.yaml` runs: it reads the notebook's section of `params.yaml` (named in the
notebook's `qnn_params_section` metadata, or by `--section`), executes
`notebooks/<name>.ipynb` into `results/notebooks/<name>.ipynb` and strips the
timestamps papermill and Jupyter record, so a rerun with the same results rewrites
the same file. The kernel computes with the pinned numerics (`qnnlib.numerics`), or
with the profile the notebook names in its `qnn_numerics` metadata (06: "native").

A run that fails or is stopped loses nothing: the last good run's executed notebook and
results stay until a run has finished, and SIGTERM or Ctrl-C ends the kernel and every
process the notebook started (see `run_notebook`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import time
import uuid
from pathlib import Path

from qnnlib import numerics
from qnnlib.provenance import provenance

from . import paths
from .runs import write_json
from .params import notebook_params, notebook_section  # noqa: F401 (re-exported)

VOLATILE_METADATA = ("start_time", "end_time", "duration", "exception", "iopub.execute_input",
                     "iopub.status.busy", "iopub.status.idle", "shell.execute_reply", "execution")
RUN_ID = "QNN_NOTEBOOK_RUN"  # set for the kernel, inherited by all it starts: how the runner finds them


def strip_volatile_metadata(notebook_path: Path, record: dict | None = None,
                            output_path: Path | None = None) -> None:
    """Remove run timestamps and durations, and make paths relative to the project, so
    executed notebooks diff cleanly; store the run's provenance `record` (commit,
    packages, hardware, threads, wall time) in the notebook's metadata instead.
    `output_path`: where the notebook goes, when executed into a temporary file."""
    nb = json.loads(notebook_path.read_text())
    if record is not None:
        nb.setdefault("metadata", {})["qnn_provenance"] = record
    run = nb.get("metadata", {}).get("papermill", {})
    if output_path is not None:
        run["output_path"] = str(output_path)
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
    """Execute `notebooks/<name>.ipynb` with `parameters`; return the executed copy's path.

    Only a run that finishes replaces the last good run's files: the kernel writes into a
    staged copy of the results folder and the notebook into a temporary file, and both are
    moved into place at the end. A notebook that fails leaves its executed copy, error
    banner included, in `failed/<name>.ipynb` beside the executed copy (out of the book)."""
    import papermill

    known = sorted(p.stem for p in paths.notebooks().glob("*.ipynb"))
    if name not in known:
        raise FileNotFoundError(f"no notebook {name!r} in notebooks/; known: {known}")
    source = paths.notebooks() / f"{name}.ipynb"
    check_parameters(source, parameters or {})
    output_dir = Path(output_dir) if output_dir else paths.results("notebooks")
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / source.name
    failed = output_dir / "failed" / source.name
    results = paths.results_dir()
    start = time.perf_counter()
    with staged_copy(results, name) as staging, file_beside(executed) as partial:
        copied = file_signatures(staging)
        try:
            kernel_numerics = execute(source, partial, parameters or {}, staging, progress)
        except papermill.PapermillExecutionError as error:
            failed.parent.mkdir(exist_ok=True)
            os.replace(partial, failed)
            error.add_note(f"The failed run is in {paths.relative(failed)}; {paths.relative(executed)} "
                           f"and the results of the last good run are unchanged.")
            raise
        record = provenance(threads=(parameters or {}).get("threads"),
                            wall_seconds=time.perf_counter() - start, numeric_settings=kernel_numerics)
        strip_volatile_metadata(partial, record, output_path=executed)
        stamp_metrics(name, record, staging)
        publish(staging, results, unchanged=copied)
        os.replace(partial, executed)
    failed.unlink(missing_ok=True)  # an earlier failure is fixed
    return executed


def execute(source: Path, executed: Path, parameters: dict, results: Path, progress: bool) -> dict:
    """Run `source` with papermill into `executed`, the kernel writing to `results`; return
    the kernel's numeric settings. No process of the run outlives this call."""
    import papermill

    run_id = uuid.uuid4().hex
    # The kernel inherits this process's environment: QNN_PIPELINE_RUN tells qnnpipeline.paths
    # that the pipeline runs the notebook, so it writes results (not scratch/, as interactively).
    # QNN_GRID_STORE: run_grid keeps each finished run, so a rerun after an interruption
    # trains only the runs still missing (qnnlib.grid_store; keys cover code and data).
    kernel_environment = {paths.PIPELINE_RUN: "1", "QNN_RESULTS_DIR": str(results), RUN_ID: run_id,
                          "QNN_GRID_STORE": str(paths.checkpoints() / "grids" / source.stem)}
    try:
        with environment(kernel_environment), numerics.pinned_environment(notebook_numerics(source)):
            papermill.execute_notebook(str(source), str(executed), parameters=parameters,
                                       cwd=str(paths.notebooks()), progress_bar=progress,
                                       kernel_name="python3")
            return numerics.settings(effective=False)
    finally:
        stop_processes(run_id)


@contextlib.contextmanager
def environment(variables: dict):
    """`variables` set in os.environ inside the block (for the kernel), restored after it."""
    with numerics.restored_environment(variables):
        os.environ.update(variables)
        yield


def stop_processes(run_id: str, grace_seconds: float = 3.0) -> None:
    """End the kernel of run `run_id` and every process it started. They are found by the
    RUN_ID variable they inherited, not as children: a kernel that exits orphans its
    workers. SIGTERM first, SIGKILL for those still running after `grace_seconds`."""
    import psutil  # required by dvc and ipython: there wherever the pipeline runs

    def of_this_run(process) -> bool:
        try:
            return process.pid != os.getpid() and process.environ().get(RUN_ID) == run_id
        except psutil.Error:  # gone meanwhile, or another user's
            return False

    running = [process for process in psutil.process_iter() if of_this_run(process)]
    for process in running:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, still_running = psutil.wait_procs(running, timeout=grace_seconds)
    for process in still_running:
        with contextlib.suppress(psutil.Error):
            process.kill()


@contextlib.contextmanager
def staged_copy(results: Path, name: str):
    """A copy of `results` for notebook `name`'s kernel: it reads the inputs other stages
    wrote (05 reads the training runs) and overwrites only copies; `publish` moves what it
    wrote into `results`. Kept inside `results` so those moves are renames on one file
    system, and hidden, like everything the copy leaves out."""
    results.mkdir(parents=True, exist_ok=True)
    staging = results / f".staging-{name}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(results, staging, ignore=shutil.ignore_patterns(".*"))
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def file_signatures(folder: Path) -> dict:
    """{path relative to `folder`: (size, modification time)} of each file under `folder`."""
    return {path.relative_to(folder): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in folder.rglob("*") if path.is_file()}


def publish(staging: Path, results: Path, unchanged: dict) -> None:
    """Move each file the run wrote in `staging` to its place in `results`; each move is an
    atomic rename, so a reader never sees half a file. Files whose signature is still the
    one in `unchanged` are the copies of inputs: moving them back could undo what another
    process wrote to `results` meanwhile."""
    for relative, signature in file_signatures(staging).items():
        if unchanged.get(relative) == signature:
            continue
        target = results / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target)


@contextlib.contextmanager
def file_beside(target: Path):
    """A new hidden path in `target`'s folder (so `os.replace` onto `target` is atomic),
    deleted on the way out unless it was moved. Not `*.ipynb`: the book renders those."""
    path = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial.json")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def stamp_metrics(name: str, record: dict, results: Path) -> None:
    """Add the run's provenance to the notebook's metrics file, <results>/metrics/<name>.json."""
    metrics_path = results / "metrics" / f"{name}.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["provenance"] = record
        write_json(metrics_path, metrics)


def exit_on_sigterm(signum, frame) -> None:
    """SIGTERM (from `kill`, dvc, a CI timeout) ends the run as Ctrl-C does, by an exception:
    the default action would end this process at once, before the `finally` blocks that stop
    the kernel and its workers and remove the temporary files."""
    raise SystemExit(128 + signum)


def main(argv=None) -> None:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
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

"""The reader's notebooks: parameter cells that match params.yaml, sources without outputs,
and interactive runs that write to scratch/results instead of the committed results/."""
import ast
import json
import os
import shutil
import subprocess
import sys

import pytest

from qnnpipeline import paths
from qnnpipeline.notebooks import run_notebook
from qnnpipeline.params import notebook_params, notebook_section
from support import mnist_mirror

NOTEBOOKS = sorted(paths.notebooks().glob("[0-9][0-9]_*.ipynb"))


def parameter_defaults(notebook) -> dict:
    """The literal assignments of the cell tagged `parameters` (what papermill overrides)."""
    cells = [cell for cell in json.loads(notebook.read_text())["cells"]
             if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{notebook.name}: {len(cells)} cells tagged 'parameters', expected 1"
    defaults = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, \
            f"{notebook.name}: the parameter cell holds only `name = literal` lines"
        defaults[node.targets[0].id] = ast.literal_eval(node.value)
    return defaults


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameter_cell_defaults_equal_params_yaml(notebook):
    """Run top to bottom in JupyterLab, a notebook uses what `dvc repro` gives it."""
    assert parameter_defaults(notebook) == notebook_params(notebook_section(notebook.stem))


def test_parameter_check_reports_a_difference(tmp_path):
    notebook = tmp_path / "01_x.ipynb"
    cell = {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "outputs": [],
            "execution_count": None, "source": ["seed = 0\n", "epochs = 5\n"]}
    notebook.write_text(json.dumps({"cells": [cell]}))
    (tmp_path / "params.yaml").write_text("seed: 0\nx:\n  epochs: 6\n")
    assert parameter_defaults(notebook) != notebook_params("x", tmp_path / "params.yaml")
    cell["source"] = ["epochs = max(5, 6)\n"]
    notebook.write_text(json.dumps({"cells": [cell]}))
    with pytest.raises(ValueError, match="malformed node"):
        parameter_defaults(notebook)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_notebooks_carry_no_outputs(notebook):
    """Sources are stored stripped (the nbstripout git filter strips them on `git add`)."""
    cells = json.loads(notebook.read_text())["cells"]
    dirty = [i for i, cell in enumerate(cells) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{notebook.name}: cells {dirty} carry outputs; run `nbstripout {notebook}`"


def test_gitattributes_strip_sources_only():
    """The filter applies to notebooks/ and never to the executed copies under results/."""
    lines = (paths.root() / ".gitattributes").read_text().splitlines()
    assert {"notebooks/*.ipynb filter=nbstripout", "notebooks/*.ipynb diff=ipynb"} <= set(lines)
    assert "results/**/*.ipynb -filter -diff" in lines


def test_git_add_strips_outputs_from_sources_only(tmp_path):
    """The filter as `make` installs it: outputs vanish from notebooks/ on `git add`,
    the executed copies under results/ keep theirs, and cell ids stay."""
    shutil.copy(paths.root() / ".gitattributes", tmp_path)
    cell = {"cell_type": "code", "execution_count": 3, "id": "keep-me", "metadata": {},
            "source": ["1 + 1"], "outputs": [{"output_type": "execute_result", "execution_count": 3,
                                              "data": {"text/plain": ["2"]}, "metadata": {}}]}
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    for folder in ("notebooks", "results/notebooks"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "x.ipynb").write_text(json.dumps(notebook))
    git = ["git", "-C", str(tmp_path), "-c", f"filter.nbstripout.clean={sys.executable} -m nbstripout --keep-id",
           "-c", "filter.nbstripout.smudge=cat", "-c", "filter.nbstripout.required=true"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    stored = {folder: json.loads(subprocess.run(git + ["show", f":{folder}/x.ipynb"], check=True,
                                                capture_output=True, text=True).stdout)["cells"][0]
              for folder in ("notebooks", "results/notebooks")}
    assert stored["notebooks"]["outputs"] == [] and stored["notebooks"]["execution_count"] is None
    assert stored["notebooks"]["id"] == "keep-me"
    assert stored["results/notebooks"] == cell


# --- where outputs go ---------------------------------------------------------------------

@pytest.fixture
def kernel_like(monkeypatch):
    """A process that looks like a Jupyter kernel nobody from the pipeline started."""
    monkeypatch.setattr(paths, "in_jupyter_kernel", lambda: True)
    monkeypatch.delenv(paths.PIPELINE_RUN, raising=False)
    monkeypatch.delenv("QNN_RESULTS_DIR", raising=False)


def test_interactive_kernel_writes_to_scratch_and_reads_committed_results(kernel_like, monkeypatch, tmp_path):
    for name in ("params.yaml", "dvc.yaml"):
        (tmp_path / name).write_text("")
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "run.csv").write_text("committed")
    monkeypatch.setenv("QNN_PROJECT_DIR", str(tmp_path))
    assert paths.interactive()
    assert paths.results_dir() == tmp_path / "scratch" / "results"
    assert paths.output("tables", "run.csv") == tmp_path / "scratch" / "results" / "tables" / "run.csv"
    # an input another stage committed (and scratch lacks) is read from results/ ...
    assert paths.results("tables", "run.csv") == tmp_path / "results" / "tables" / "run.csv"
    assert paths.results("tables", "absent.csv") == tmp_path / "scratch" / "results" / "tables" / "absent.csv"
    # ... until the interactive run writes its own
    (tmp_path / "scratch" / "results" / "tables" / "run.csv").write_text("scratch")
    assert paths.results("tables", "run.csv").read_text() == "scratch"


def test_pipeline_and_explicit_folders_are_not_interactive(kernel_like, monkeypatch, tmp_path):
    monkeypatch.setenv(paths.PIPELINE_RUN, "1")
    assert not paths.interactive() and paths.results_dir() == paths.root() / "results"
    monkeypatch.delenv(paths.PIPELINE_RUN)
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path))
    assert not paths.interactive() and paths.results_dir() == tmp_path


def test_the_runner_tells_the_kernel_it_is_the_pipeline(monkeypatch, tmp_path):
    import papermill

    seen = {}

    def fake_execute(source, executed, **kwargs):
        seen["flag"] = os.environ.get(paths.PIPELINE_RUN)
        shutil.copy(source, executed)

    monkeypatch.delenv(paths.PIPELINE_RUN, raising=False)
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path / "results"))  # never the committed results
    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    run_notebook("05_mnist_results", output_dir=tmp_path)
    assert seen["flag"] == "1" and paths.PIPELINE_RUN not in os.environ


@pytest.mark.slow
def test_an_interactive_run_leaves_results_untouched(tmp_path):
    """A copy of the project; notebook 01 run in a kernel as JupyterLab would (papermill
    without the runner, other parameters): everything lands in scratch/results."""
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(paths.root() / name, project / name)
    shutil.copy(paths.notebooks() / "01_binarization.ipynb", project / "notebooks")
    env = {key: value for key, value in os.environ.items()
           if key not in (paths.PIPELINE_RUN, "QNN_RESULTS_DIR")}
    env.update(QNN_PROJECT_DIR=str(project), QNN_DATA_DIR=str(tmp_path / "data"),
               QNN_DATA_MIRROR=str(mnist_mirror()))
    small = dict(hidden=16, depth=1, n_train=200, n_val=100, n_test=100, epochs=1, n_seeds=1,
                 mc_points=21, mc_draws=50, threads=1)
    code = ("import papermill, sys; papermill.execute_notebook(sys.argv[1], sys.argv[2], "
            f"parameters={small!r}, cwd=sys.argv[3], kernel_name='python3')")
    run = subprocess.run([sys.executable, "-c", code, str(project / "notebooks" / "01_binarization.ipynb"),
                          str(tmp_path / "out.ipynb"), str(project / "notebooks")],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (project / "results").exists()
    scratch = project / "scratch" / "results"
    assert (scratch / "figures" / "01_binarization_test_error.png").is_file()
    assert (scratch / "metrics" / "01_binarization.json").is_file()
    printed = json.dumps(json.loads((tmp_path / "out.ipynb").read_text())["cells"])
    assert "Interactive run: outputs go to scratch/results/" in printed


def test_importing_ipykernel_does_not_make_a_kernel(monkeypatch):
    """The papermill runner and pytest import ipykernel; only a running kernel is interactive."""
    import ipykernel  # noqa: F401

    monkeypatch.delenv(paths.PIPELINE_RUN, raising=False)
    monkeypatch.delenv("QNN_RESULTS_DIR", raising=False)
    assert not paths.in_jupyter_kernel() and not paths.interactive()

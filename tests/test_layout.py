"""The core (qnnlib) stands apart from the pipeline (qnnpipeline): importing every core
module pulls in no notebook or DVC tooling, and results go to the checkout, never to
where the package is installed."""
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qnnlib
from qnnpipeline import paths

PIPELINE_TOOLS = ("papermill", "dvc", "nbval", "nbformat", "jupyter_client", "qnnpipeline",
                  "matplotlib", "seaborn")


def core_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(qnnlib.__path__, "qnnlib.")
                  if not info.name.endswith("__main__"))


def test_core_lists_its_modules():
    found = core_modules()
    for module in ("qnnlib.quantizers", "qnnlib.training", "qnnlib.data", "qnnlib.kernels.cpu",
                   "qnnlib.deploy", "qnnlib.energy", "qnnlib.provenance"):
        assert module in found


def test_core_imports_no_pipeline_tooling():
    """A fresh interpreter imports every core module; no pipeline tool may be loaded."""
    code = ("import importlib, sys\n"
            f"for name in {core_modules()!r}:\n"
            "    importlib.import_module(name)\n"
            f"print(sorted(m for m in {PIPELINE_TOOLS!r} if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]", f"core modules import pipeline tooling: {run.stdout}"


def make_checkout(folder: Path) -> Path:
    (folder / "notebooks").mkdir(parents=True)
    (folder / "params.yaml").write_text("seed: 0\n")
    (folder / "dvc.yaml").write_text("stages: {}\n")
    return folder


def test_results_follow_the_working_directory(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path / "project")
    for variable in ("QNN_PROJECT_DIR", "QNN_RESULTS_DIR", "QNN_DATA_DIR", "QNN_CHECKPOINT_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("QNN_PIPELINE_RUN", "1")  # as the pipeline runs a notebook
    monkeypatch.chdir(checkout / "notebooks")  # where papermill runs the notebooks
    assert paths.root() == checkout.resolve()
    assert paths.results("metrics", "a.json") == checkout.resolve() / "results" / "metrics" / "a.json"
    assert paths.data() == checkout.resolve() / "data"
    assert not (checkout / "results").exists(), "reading a path must create nothing"
    written = paths.output("metrics", "a.json")
    assert written.parent.is_dir()
    package = Path(qnnlib.__file__).resolve().parents[1]
    assert not paths.results_dir().is_relative_to(package) or package == checkout


def test_environment_variables_choose_the_checkout(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QNN_PROJECT_DIR", str(checkout))
    monkeypatch.delenv("QNN_RESULTS_DIR", raising=False)
    monkeypatch.setenv("QNN_PIPELINE_RUN", "1")
    assert paths.results_dir() == checkout.resolve() / "results"
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path / "scratch"))
    assert paths.results_dir() == (tmp_path / "scratch").resolve()


def test_outside_a_checkout_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("QNN_PROJECT_DIR", raising=False)
    monkeypatch.delenv("QNN_RESULTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(paths.ProjectNotFound, match="run from a checkout"):
        paths.results_dir()
    monkeypatch.setenv("QNN_PROJECT_DIR", str(tmp_path))
    with pytest.raises(paths.ProjectNotFound, match="holds no params.yaml"):
        paths.root()


def test_installed_package_writes_into_the_checkout(tmp_path):
    """A non-editable install: the pipeline, run from a checkout, writes results there and
    not beside site-packages."""
    checkout = make_checkout(tmp_path / "project")
    site = tmp_path / "site"
    source = Path(__file__).resolve().parents[1]
    for package in ("qnnlib", "qnnpipeline"):  # a copy stands in for `pip install .`
        shutil.copytree(source / package, site / package)
    code = "from qnnpipeline import paths; print(paths.output('metrics', 'x.json'))"
    env = {**os.environ, "PYTHONPATH": str(site)}
    for variable in ("QNN_PROJECT_DIR", "QNN_RESULTS_DIR"):
        env.pop(variable, None)
    run = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert Path(run.stdout.strip()) == checkout.resolve() / "results" / "metrics" / "x.json"
    assert not (site / "results").exists()

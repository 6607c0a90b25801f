"""Hostile input to the pipeline's entry points: `qnn-train` with its `--set` overrides,
params files, and the notebook runner. Each bad input ends in a clear error naming what
is wrong, before anything is trained or written."""
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qnnpipeline import cli, notebooks, paths
from qnnpipeline.params import apply_overrides, notebook_params, train_section


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Results, checkpoints and data redirected; a params file whose data cannot be found,
    so that any input that passes validation stops at loading, before training."""
    for variable, folder in (("QNN_RESULTS_DIR", "results"), ("QNN_CHECKPOINT_DIR", "checkpoints"),
                             ("QNN_DATA_DIR", "data")):
        monkeypatch.setenv(variable, str(tmp_path / folder))
    (tmp_path / "empty-mirror").mkdir()
    monkeypatch.setenv("QNN_DATA_MIRROR", str(tmp_path / "empty-mirror"))
    params = tmp_path / "params.yaml"
    params.write_text("tiny:\n  model: {hidden: 16, depth: 1}\n"
                      "  train: {epochs: 1, progress: false}\n  data: {download: false}\n")
    return tmp_path


def run_cli(project, *arguments, capsys):
    code = cli.main(["--config", str(project / "params.yaml"), "--section", "tiny", *arguments])
    return code, capsys.readouterr().err


def assert_nothing_written(project):
    for folder in ("results", "checkpoints"):
        assert not (project / folder).exists() or not any((project / folder).rglob("*"))


@pytest.mark.parametrize("override, message", [
    ("train.epochs=abc", "epochs"),
    ("train.epochs=-3", "epochs"),
    ("train.lr_start=.nan", "lr_start"),
    ("train.batch_size=0", "batch_size"),
    ("train.no_such_key=1", "no_such_key"),
    ("model.hidden=-5", "hidden"),
    ("model.kind=transformer", "kind"),
    ("data.dataset=cifar", "dataset"),
    ("optimizer.lr=1", "must be model.KEY"),
    ("=3", "key=value"),
    ("train.epochs", "key=value"),
    ("train.epochs=[1, 2", "not valid YAML"),
])
def test_bad_overrides_fail_clearly(project, capsys, override, message):
    code, err = run_cli(project, "--set", override, capsys=capsys)
    assert code == 2 and err.startswith("qnn-train: error:") and message in err, err
    assert_nothing_written(project)


def test_missing_data_is_a_clear_error_not_a_traceback(project, capsys):
    code, err = run_cli(project, capsys=capsys)
    assert code == 2 and "qnn-train: error:" in err and "mnist" in err.lower()
    assert_nothing_written(project)


@pytest.mark.parametrize("arguments, message", [
    (["--out-name", "../escape"], "plain name"),
    (["--out-name", ".hidden"], "plain name"),
])
def test_bad_names_are_refused(project, capsys, arguments, message):
    with pytest.raises(SystemExit) as stop:
        run_cli(project, *arguments, capsys=capsys)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_checkpoint_at_the_weights_is_refused(project, capsys):
    code, err = run_cli(project, "--checkpoint", "tiny.pt", capsys=capsys)
    assert code == 2 and "is where run 'tiny' writes its results" in err
    assert_nothing_written(project)


@pytest.mark.parametrize("text, message", [
    ("tiny: [1, 2]\n", "must be a mapping"),
    ("tiny:\n  model: 3\n", "tiny.model must be a mapping"),
    ("tiny:\n  optimizer: {}\n", "unknown keys"),
    ("- a list\n", "mapping of sections"),
    ("tiny: {model: [\n", "not valid YAML"),
])
def test_malformed_params_files(tmp_path, text, message):
    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(ValueError, match=message):
        train_section(params, "tiny")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(string.ascii_letters + "._=", max_size=20),
       value=st.text(string.printable, max_size=20))
def test_random_overrides_never_crash(project, capsys, key, value):
    """Any `--set` text either fails validation with a message or stops at the missing
    data: never a traceback, never a written file."""
    code, err = run_cli(project, "--set", f"{key}={value}", capsys=capsys)
    assert code == 2 and err.startswith("qnn-train: error:"), err
    assert_nothing_written(project)


def test_override_values_keep_yaml_types():
    config = {"model": {}, "train": {}, "data": {}}
    apply_overrides(config, ["train.lr_end=3e-5", "epochs=4", "model.hidden=64", "data.dataset=mnist"])
    assert config == {"model": {"hidden": 64}, "train": {"lr_end": 3e-5, "epochs": 4},
                      "data": {"dataset": "mnist"}}


@pytest.mark.parametrize("name", ["99_nothing", "../README", "01_binarization.ipynb", ""])
def test_runner_refuses_unknown_notebooks(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebook"):
        notebooks.run_notebook(name, {}, output_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_runner_refuses_undeclared_parameters(tmp_path):
    with pytest.raises(ValueError, match=r"declares no parameters \['epochz'\]"):
        notebooks.run_notebook("01_binarization", {"epochz": 3}, output_dir=tmp_path)
    with pytest.raises(TypeError, match="parameters must be a dict"):
        notebooks.run_notebook("01_binarization", [("epochs", 3)], output_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_every_params_section_fits_its_notebook():
    """params.yaml names only parameters that each notebook declares."""
    for source in sorted(paths.notebooks().glob("[0-9][0-9]_*.ipynb")):
        section = notebooks.notebook_section(source.stem)
        notebooks.check_parameters(source, notebook_params(section))


def test_unknown_params_section(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"seed": 0, "a": {"x": 1}}))
    with pytest.raises(KeyError, match="no section 'b'"):
        notebook_params("b", params)

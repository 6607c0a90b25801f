"""params.yaml refuses a key given twice in one mapping: plain YAML keeps the last one
silently, so an edit to the first copy of a knob would change nothing."""
import pytest

from qnnpipeline import paths
from qnnpipeline.params import apply_overrides, load_yaml, notebook_params, read_document, train_section


def test_a_duplicated_top_level_key_is_refused_with_its_name_and_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\nbinarization:\n  epochs: 3\nseed: 2\n")
    with pytest.raises(ValueError, match=r"(?s)duplicate key 'seed'.*line 4") as raised:
        read_document(params)
    assert str(params) in str(raised.value)


def test_a_duplicated_nested_key_is_refused_by_every_reader(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\nnb:\n  epochs: 3\n  lr: 0.1\n  epochs: 4\n")
    with pytest.raises(ValueError, match=r"(?s)duplicate key 'epochs' \(first on line 3\).*line 5"):
        notebook_params("nb", params)
    params.write_text("seed: 1\ntiny:\n  model: {hidden: 8}\n  train: {epochs: 1, epochs: 2}\n")
    with pytest.raises(ValueError, match=r"(?s)duplicate key 'epochs'.*line 4"):
        train_section(params, "tiny")


def test_a_duplicated_key_in_a_set_value_is_refused():
    config = {"model": {}, "train": {}, "data": {}}
    with pytest.raises(ValueError, match=r"(?s)--set train.schedule: .*duplicate key 'lr'"):
        apply_overrides(config, ["train.schedule={lr: 1, lr: 2}"])


def test_overriding_a_merged_key_is_not_a_duplicate():
    """`<<: *base` then `epochs: 5` is YAML's way to derive a section from another."""
    document = load_yaml("base: &base {epochs: 3, lr: 0.1}\nlong:\n  <<: *base\n  epochs: 5\n")
    assert document["long"] == {"epochs": 5, "lr": 0.1}


def test_the_committed_params_yaml_loads():
    document = read_document(paths.root() / "params.yaml")
    assert "seed" in document and all(isinstance(key, str) for key in document)

"""params.yaml and `--set` overrides: the one YAML dialect of the pipeline."""
from __future__ import annotations

import re
from pathlib import Path
from typing import TextIO

import yaml

from . import paths

SECTION_KEYS = ("model", "train", "data")


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `3e-3` as a float: YAML 1.1 (PyYAML) needs a dot
    (`3.0e-3`), and learning rates are naturally written without one. It refuses a key
    given twice in one mapping, which PyYAML accepts, keeping the last value: an edit to
    the first copy of a knob would silently change nothing."""

    def construct_mapping(self, node, deep=False):
        first_seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = first_seen.setdefault(key, key_node)
            except TypeError:  # unhashable: the base class explains that one
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {key!r} (first on line {first.start_mark.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?\d+(?:\.\d*)?[eE][-+]?\d+$"), list("-+0123456789"))


def load_yaml(source: str | TextIO):
    """YAML text (a `--set` value) or an open file (params.yaml), with `3e-3` read as a
    float and duplicate keys refused."""
    return yaml.load(source, Loader=_YamlLoader)


def read_document(config_path: str | Path) -> dict:
    """The whole YAML file as a dict, with a clear error when it is missing or malformed."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise ValueError(f"config file not found: {config_path}")
    try:
        with config_path.open() as stream:  # so that errors name the file, not "<unicode string>"
            document = load_yaml(stream)
    except yaml.YAMLError as error:
        raise ValueError(f"{config_path} is not valid YAML: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ValueError(f"{config_path} must hold a mapping of sections, got {type(document).__name__}")
    return document


def notebook_section(name: str) -> str:
    """`01_binarization` -> `binarization`: the notebook's section in params.yaml."""
    return name.split("_", 1)[1] if name[:2].isdigit() else name


def notebook_params(section: str, params_file: Path | None = None) -> dict:
    """The `section` of params.yaml, merged over its top-level `seed` when it has none."""
    params = read_document(params_file or paths.root() / "params.yaml")
    if section not in params:
        raise KeyError(f"params.yaml has no section {section!r}; sections: {sorted(params)}")
    if not isinstance(params[section], dict):
        raise ValueError(f"params.yaml section {section!r} must be a mapping")
    merged = dict(params[section])
    merged.setdefault("seed", params.get("seed", 0))
    return merged


def train_section(config_path: str | Path, section: str) -> dict:
    """The {"model", "train", "data"} dict of one training section of the YAML file."""
    document = read_document(config_path)
    if section not in document:
        raise ValueError(f"section {section!r} not in {config_path}; sections: {sorted(document)}")
    values = document[section] or {}
    if not isinstance(values, dict):
        raise ValueError(f"section {section!r} must be a mapping of {list(SECTION_KEYS)}")
    unknown = sorted(set(values) - set(SECTION_KEYS))
    if unknown:
        raise ValueError(f"section {section!r} has unknown keys {unknown}; "
                         f"expected {list(SECTION_KEYS)}")
    for key in SECTION_KEYS:
        if values.get(key) is not None and not isinstance(values[key], dict):
            raise ValueError(f"{section}.{key} must be a mapping, got {values[key]!r}")
    return {key: dict(values.get(key) or {}) for key in SECTION_KEYS}


def apply_overrides(config: dict, assignments: list[str]) -> dict:
    """Apply `--set part.key=value` (part: model, train or data; a bare key means train)."""
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {assignment!r}")
        part, dot, field = key.strip().partition(".")
        if not dot:
            part, field = "train", part
        if part not in SECTION_KEYS or not field:
            raise ValueError(f"--set key must be model.KEY, train.KEY or data.KEY, got {key!r}")
        try:
            config[part][field] = load_yaml(text)
        except yaml.YAMLError as error:
            raise ValueError(f"--set {key}: value {text!r} is not valid YAML ({error})") from None
    return config

"""`qnn-train`: train one MNIST network from a `params.yaml` section (what dvc stages run).

    qnn-train --config params.yaml --section train [--set train.epochs=3 ...]
              [--out-name NAME] [--checkpoint PATH]
    qnn-train --config params.yaml --section mnist_cpu --section mnist_fp   # side by side

The section holds {"model": build_model keys, "train": TrainConfig keys,
"data": load_mnist keys}. Writes results/metrics/NAME.json,
results/tables/NAME_history.csv, checkpoints/NAME.pt (best-validation state_dict) and
checkpoints/NAME.json (the section, so deploy code and notebooks can rebuild the model).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from . import paths

SECTION_KEYS = ("model", "train", "data")


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `3e-3` as a float: YAML 1.1 (PyYAML) needs a dot
    (`3.0e-3`), and learning rates are naturally written without one."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?\d+(?:\.\d*)?[eE][-+]?\d+$"), list("-+0123456789"))


def load_yaml(text: str):
    """YAML text (a params file or a `--set` value) with `3e-3` read as a float."""
    return yaml.load(text, Loader=_YamlLoader)


def read_section(config_path: str | Path, section: str) -> dict:
    """The {"model", "train", "data"} dict of one section of the YAML file."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise ValueError(f"config file not found: {config_path}")
    document = load_yaml(config_path.read_text()) or {}
    if section not in document:
        raise ValueError(f"section {section!r} not in {config_path}; "
                         f"sections: {sorted(document)}")
    values = document[section] or {}
    unknown = sorted(set(values) - set(SECTION_KEYS))
    if unknown:
        raise ValueError(f"section {section!r} has unknown keys {unknown}; "
                         f"expected {list(SECTION_KEYS)}")
    return {key: dict(values.get(key) or {}) for key in SECTION_KEYS}


def apply_overrides(config: dict, assignments: list[str]) -> dict:
    """Apply `--set part.key=value` (part: model, train or data; a bare key means train)."""
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {assignment!r}")
        part, dot, field = key.strip().partition(".")
        if not dot:
            part, field = "train", part
        if part not in SECTION_KEYS:
            raise ValueError(f"--set key must start with one of {list(SECTION_KEYS)}, got {key!r}")
        config[part][field] = load_yaml(text)
    return config


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (see module docstring)."""
    parser = argparse.ArgumentParser(prog="qnn-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="params.yaml", help="YAML parameter file")
    parser.add_argument("--section", dest="sections", action="append",
                        help="top-level section to run (default: train); several sections "
                             "train side by side in separate processes")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override, e.g. train.epochs=3 or model.hidden=512")
    parser.add_argument("--out-name", help="name of the outputs (default: the section)")
    parser.add_argument("--checkpoint", help="resumable training checkpoint path")
    return parser


def prepare(args):
    """Everything that can fail on bad input, before any data is loaded or trained on."""
    from .models import build_model
    from .training import TrainConfig

    config = apply_overrides(read_section(args.config, args.section), args.overrides)
    if args.checkpoint:
        config["train"]["checkpoint"] = args.checkpoint
    train_config = TrainConfig.from_dict(config["train"])
    model = build_model(config["model"])
    return config, train_config, model


def save_model(model: torch.nn.Module, config: dict, name: str) -> tuple[Path, Path]:
    """checkpoints/NAME.pt (state_dict on CPU) and checkpoints/NAME.json (how to rebuild it)."""
    folder = Path(paths.CHECKPOINTS)
    folder.mkdir(parents=True, exist_ok=True)
    weights, description = folder / f"{name}.pt", folder / f"{name}.json"
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    torch.save(state, weights)
    description.write_text(json.dumps({"model": config["model"], "data": config["data"]},
                                      indent=2) + "\n")
    return weights, description


def train_in_parallel(args) -> int:
    """One process per section, all at once: on a small machine two single-threaded
    runs finish sooner than the same two runs one after the other with two threads."""
    base = [sys.executable, "-m", "qnnlib.cli", "--config", str(args.config)]
    base += [flag for override in args.overrides for flag in ("--set", override)]
    runs = [subprocess.Popen([*base, "--section", section]) for section in args.sections]
    return max(run.wait() for run in runs)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `qnn-train` and `python -m qnnlib.cli`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.sections = args.sections or ["train"]
    if len(args.sections) > 1 and (args.out_name or args.checkpoint):
        parser.error("--out-name and --checkpoint name one run: give a single --section")
    try:  # every section, before any of them starts training
        prepared = [prepare(argparse.Namespace(**{**vars(args), "section": section}))
                    for section in args.sections]
    except (ValueError, TypeError) as error:
        print(f"qnn-train: error: {error}", file=sys.stderr)
        return 2
    if len(args.sections) > 1:
        return train_in_parallel(args)
    config, train_config, model = prepared[0]
    name = args.out_name or args.sections[0]

    from .data import load_mnist
    from .training import save_results, train

    splits = load_mnist(**config["data"])
    result = train(model, splits, train_config)
    written = save_results(result, name)
    weights, description = save_model(result.model, config, name)
    print(f"best epoch {result.best_epoch}: val error {100 * result.best_val_error:.2f} %, "
          f"test error {100 * result.test_error:.2f} %")
    for path in [*written.values(), weights, description]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

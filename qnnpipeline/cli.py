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
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import paths
from .params import apply_overrides, train_section
from .runs import save_model, save_results


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
    from qnnlib.models import build_model
    from qnnlib.training import TrainConfig, seed_everything

    config = apply_overrides(train_section(args.config, args.section), args.overrides)
    if args.checkpoint:
        config["train"]["checkpoint"] = args.checkpoint
    train_config = TrainConfig.from_dict(config["train"])
    # Seed before building: the initial weights are part of the run (as in run_grid).
    seed_everything(train_config.seed)
    model = build_model(config["model"])
    return config, train_config, model


def train_in_parallel(args) -> int:
    """One process per section, all at once: on a small machine two single-threaded
    runs finish sooner than the same two runs one after the other with two threads."""
    base = [sys.executable, "-m", "qnnpipeline.cli", "--config", str(args.config)]
    base += [flag for override in args.overrides for flag in ("--set", override)]
    runs = [subprocess.Popen([*base, "--section", section]) for section in args.sections]
    try:
        return max(run.wait() for run in runs)
    finally:  # stopped early (Ctrl-C, SIGTERM from dvc): leave no orphan training behind
        for run in runs:
            if run.poll() is None:
                run.terminate()


def check_names(parser, args) -> None:
    """Refuse output names that are not plain file stems, and a resumable checkpoint at the
    path where the trained weights will be written (each would destroy the other)."""
    for name in [args.out_name, *args.sections]:
        if name is not None and (not re.fullmatch(r"[\w.-]+", name) or name.startswith(".")):
            parser.error(f"run name {name!r} must be a plain name (letters, digits, _ . -)")
    weights = {(paths.checkpoints() / f"{args.out_name or s}.{ext}").resolve()
               for s in args.sections for ext in ("pt", "json")}
    # training.train opens the path as given (relative to the working directory, as
    # dvc.yaml's checkpoints/NAME_resume.pt); also refuse a name inside checkpoints/.
    given = [Path(args.checkpoint), paths.checkpoints() / args.checkpoint] if args.checkpoint else []
    if {path.resolve() for path in given} & weights:
        parser.error(f"--checkpoint {args.checkpoint} is where the trained weights go: "
                     "name the resumable checkpoint differently (e.g. NAME_resume.pt)")


def train_one(config: dict, train_config, model, name: str) -> None:
    """Load the data, train, and write the run's metrics, history and weights."""
    from qnnlib.data import load_mnist
    from qnnlib.training import train

    start = time.perf_counter()
    splits = load_mnist(**{"root": paths.data(), **config["data"]})
    result = train(model, splits, train_config)
    written = save_results(result, name, wall_seconds=time.perf_counter() - start)
    weights, description = save_model(result.model, config, name)
    print(f"best epoch {result.best_epoch}: val error {100 * result.best_val_error:.2f} %, "
          f"test error {100 * result.test_error:.2f} %")
    for path in [*written.values(), weights, description]:
        print(f"wrote {paths.relative(path)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `qnn-train` and `python -m qnnpipeline.cli`."""
    from qnnlib.data import DataError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.sections = args.sections or ["train"]
    if len(args.sections) > 1 and (args.out_name or args.checkpoint):
        parser.error("--out-name and --checkpoint name one run: give a single --section")
    check_names(parser, args)
    try:  # every section, before any of them starts training
        prepared = [prepare(argparse.Namespace(**{**vars(args), "section": section}))
                    for section in args.sections]
        if len(args.sections) > 1:
            return train_in_parallel(args)
        train_one(*prepared[0], args.out_name or args.sections[0])
    except (ValueError, TypeError, DataError) as error:
        print(f"qnn-train: error: {error}", file=sys.stderr)
        return 2
    return 0


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)  # so the `finally` above runs on SIGTERM too
    sys.exit(main())

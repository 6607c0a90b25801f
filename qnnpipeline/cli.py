"""`qnn-train`: train one MNIST network from a `params.yaml` section (what dvc stages run).

    qnn-train --config params.yaml --section train [--set train.epochs=3 ...]
              [--out-name NAME] [--checkpoint PATH | --no-checkpoint]
    qnn-train --config params.yaml --section mnist_cpu --section mnist_fp   # side by side

The section holds {"model": build_model keys, "train": TrainConfig keys,
"data": load_mnist keys}. Writes results/metrics/NAME.json,
results/tables/NAME_history.csv, checkpoints/NAME.pt (best-validation state_dict) and
checkpoints/NAME.json (the section, so deploy code and notebooks can rebuild the model),
all together (`runs.save_run`).

Runs are resumable by default: each epoch is checkpointed to checkpoints/NAME_resume.pt,
so a run killed mid-way resumes where it stopped when the same command runs again; that
file is removed once the run has finished (a checkpoint named with --checkpoint is kept).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
import threading
import time
from pathlib import Path

from qnnlib.train_config import BOOKKEEPING_FIELDS

from . import paths
from .params import apply_overrides, train_section
from .remote import run_sections
from .runs import RunBusy, RunLock, check_writable, run_files, save_run


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
    parser.add_argument("--checkpoint", help="resumable training checkpoint path "
                        "(default: checkpoints/NAME_resume.pt, removed once the run finishes)")
    parser.add_argument("--ray-address", help="several sections: train them on this Ray cluster "
                        "(default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--no-checkpoint", action="store_true",
                        help="no resumable checkpoint (a killed run starts again from epoch 0)")
    return parser


def default_checkpoint(name: str) -> Path:
    return paths.checkpoints() / f"{name}_resume.pt"


def prepare(args):
    """Everything that can fail on bad input, before any data is loaded or trained on."""
    from qnnlib.models import build_model
    from qnnlib.training import TrainConfig, seed_everything

    config = apply_overrides(train_section(args.config, args.section), args.overrides)
    name = args.out_name or args.section
    if args.checkpoint:
        config["train"]["checkpoint"] = args.checkpoint
    elif args.no_checkpoint:
        config["train"]["checkpoint"] = None
    elif not config["train"].get("checkpoint"):
        config["train"]["checkpoint"] = str(default_checkpoint(name))
    check_checkpoint(config["train"]["checkpoint"], name)
    train_config = TrainConfig.from_dict(config["train"])
    # Seed before building: the initial weights are part of the run (as in run_grid).
    seed_everything(train_config.seed)
    model = build_model(config["model"])
    return config, train_config, model


def train_in_parallel(args) -> int:
    """Every section at once, each a single-threaded task of `qnnlib.executor` (a local
    Ray, or the cluster at --ray-address / $RAY_ADDRESS): on a small machine two
    single-threaded runs finish sooner than the same two one after the other."""
    from qnnlib.executor import TasksFailed

    overrides = [flag for override in args.overrides for flag in ("--set", override)]
    runs = [(section, ["--section", section, *overrides]) for section in args.sections]
    try:
        run_sections(args.config, runs, workers=len(runs), address=args.ray_address)
    except TasksFailed as failed:
        print(f"qnn-train: error: {failed}", file=sys.stderr)
        return 1
    return 0


def check_names(parser, args) -> None:
    """Refuse output names that are not plain file stems."""
    for name in [args.out_name, *args.sections]:
        if name is not None and (not re.fullmatch(r"[\w.-]+", name) or name.startswith(".")):
            parser.error(f"run name {name!r} must be a plain name (letters, digits, _ . -)")
    if args.checkpoint and args.no_checkpoint:
        parser.error("--checkpoint and --no-checkpoint contradict each other")


def check_checkpoint(checkpoint, name: str) -> None:
    """Refuse a resumable checkpoint (from --checkpoint or `--set train.checkpoint=`) at a
    path the run writes its results to, which each would destroy, or at a folder."""
    if not checkpoint:
        return
    if not isinstance(checkpoint, str):
        raise TypeError(f"train.checkpoint must be a path, got {checkpoint!r}")
    # training.train opens the path as given (relative to the working directory, as
    # dvc.yaml's checkpoints/NAME_resume.pt); also refuse a name inside checkpoints/.
    given = {Path(checkpoint).resolve(), (paths.checkpoints() / checkpoint).resolve()}
    if given & {path.resolve() for path in run_files(name).values()}:
        raise ValueError(f"checkpoint {checkpoint} is where run {name!r} writes its results: "
                         "name the resumable checkpoint differently (e.g. NAME_resume.pt)")
    if Path(checkpoint).is_dir():
        raise ValueError(f"checkpoint {checkpoint} is a folder: name a file, e.g. {name}_resume.pt")


def train_one(config: dict, train_config, model, name: str) -> None:
    """Load the data, train, and write the run's files (`runs.save_run`), holding the
    run's lock throughout. Folders are checked for writing before any training."""
    from qnnlib.data import load_mnist
    from qnnlib.training import train

    if train_config.cuda_graph:  # the GPU path plugs in here, from above the loop
        from qnnlib.gpu.graphed_training import train_graphed as train
    start = time.perf_counter()
    check_writable(name)
    with RunLock(name):
        splits = load_mnist(**{"root": paths.data(), **config["data"]})
        identity = {**config, "train": {key: value for key, value in config["train"].items()
                                        if key not in BOOKKEEPING_FIELDS}}
        checkpoint = train_config.checkpoint
        owned = checkpoint is not None and Path(checkpoint) == default_checkpoint(name)
        try:
            result = train(model, splits, train_config, identity=identity)
        except ValueError as refused:
            if not (owned and str(refused).startswith("cannot resume")):
                raise
            # the default checkpoint of an earlier, different run: useless here
            print(f"qnn-train: starting afresh: {refused}", file=sys.stderr)
            Path(checkpoint).unlink()  # the refusal came before the model was touched
            result = train(model, splits, train_config, identity=identity)
        finished = len(result.history) == train_config.epochs
        if owned and finished:  # the metrics name no checkpoint that will not be there
            result = dataclasses.replace(result, config=dataclasses.replace(result.config, checkpoint=None))
        written = save_run(result, config, name, wall_seconds=time.perf_counter() - start)
        if owned and finished:
            Path(checkpoint).unlink(missing_ok=True)  # nothing left to resume
    print(f"best epoch {result.best_epoch}: val error {100 * result.best_val_error:.2f} %, "
          f"test error {100 * result.test_error:.2f} %")
    for path in written.values():
        print(f"wrote {paths.relative(path)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `qnn-train` and `python -m qnnpipeline.cli`."""
    from qnnlib.data import DataError

    _stop_on_sigterm()
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
    except (ValueError, TypeError, DataError, RunBusy, OSError) as error:
        print(f"qnn-train: error: {error}", file=sys.stderr)
        return 2
    return 0


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _stop_on_sigterm() -> None:
    """SIGTERM ends qnn-train as Ctrl-C does, through every `finally` (child trainings
    stopped, lock released), whether it runs as `qnn-train` or `python -m`."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


if __name__ == "__main__":
    sys.exit(main())
